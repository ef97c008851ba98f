// Reset-password page (/reset-password#token=…): sets a new password with the token from the
// mailed link (SPEC 10), which signs in here and signs out everywhere else. Served at
// /static/reset-password.js. The token is the proof, no session is needed: plain fetch.
import { MESSAGES, NETWORK, busy, fieldError, link, messageIn, postJson, problemOf, retryText, say, takeToken } from './flows.js';

// First: out of the address bar and the history, before anything else can fail.
const token = takeToken();

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const form = /** @type {HTMLFormElement} */ ($('reset-form'));
const input = /** @type {HTMLInputElement} */ ($('reset-password'));
const inputError = $('reset-password-error');
const button = /** @type {HTMLButtonElement} */ ($('reset-submit'));
const errorBox = $('error');
const statusBox = $('status');

/**
 * The link cannot be used (any more): say so, and offer a new one.
 * @param {string} text
 * @param {string} [linkText]
 */
function deadLink(text, linkText = 'Request a new link') {
  form.hidden = true;
  say(errorBox, text + ' ', link('/forgot-password', linkText, 'new-link'), '.');
}

if (token === null) {
  deadLink('This page was opened without the code from the password reset email. Open the link from the email again (all of it), or', 'request a new link');
} else {
  form.hidden = false;
  input.focus();
}

form.addEventListener('submit', (event) => {
  event.preventDefault();
  if (token === null) return;
  busy(button, async () => {
    say(errorBox);
    fieldError(input, inputError, '');
    try {
      const res = await postJson('/api/v1/auth/password/reset', { token, password: input.value });
      if (res.ok) {
        say(statusBox, 'Your password was changed. Taking you to your account…');
        // replace: Back must not return to a page whose link is used up.
        location.replace('/account');
        return;
      }
      const problem = await problemOf(res);
      switch (problem.code) {
        case 'token_invalid':
          deadLink('This reset link cannot be used: it is invalid, was already used, or has expired (links last 30 minutes).');
          return;
        case 'weak_password':
          // The token is still good: the person can try another password.
          fieldError(input, inputError, MESSAGES.weak_password);
          input.focus();
          return;
        default:
          say(
            errorBox,
            messageIn(MESSAGES, problem.code, problem.title || `Something went wrong (HTTP ${res.status}). Please try again.`) + retryText(res),
          );
      }
    } catch {
      say(errorBox, NETWORK);
    }
  });
});

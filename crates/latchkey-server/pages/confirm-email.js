// Confirm-email page (/confirm-email#token=…): switches the account to the new address with
// the token from the mailed link (SPEC 10). Served at /static/confirm-email.js.
// Only on a click, never on load: a mail scanner that opens links and runs scripts must not
// confirm a change. The token is the proof, no session is needed: plain fetch.
import { secureFetch } from '/client/latchkey.js';
import { MESSAGES, NETWORK, busy, messageIn, postJson, problemOf, retryText, say, signedInUser, takeToken } from './flows.js';

const token = takeToken();

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const form = /** @type {HTMLFormElement} */ ($('confirm-form'));
const button = /** @type {HTMLButtonElement} */ ($('confirm-submit'));
const errorBox = $('error');
const statusBox = $('status');

const ADVICE = 'You can ask for a new link by changing your address again on your account page.';

if (token === null) {
  say(errorBox, `This page was opened without the code from the confirmation email. Open the link from the email again (all of it). ${ADVICE}`);
} else {
  form.hidden = false;
}

form.addEventListener('submit', (event) => {
  event.preventDefault();
  if (token === null) return;
  busy(button, async () => {
    say(errorBox);
    try {
      const res = await postJson('/api/v1/auth/email/change/confirm', { token });
      if (res.ok) {
        /** @type {{ user?: { email?: string } }} */
        const body = await res.json().catch(() => ({}));
        const email = body.user?.email;
        form.hidden = true;
        say(statusBox, email ? `Your email address is now ${email}.` : 'Your email address was changed.');
        // Opened on another device than the one signed in: the way on is signing in.
        if (!(await signedInUser(secureFetch))) {
          const next = /** @type {HTMLAnchorElement} */ ($('account-link'));
          next.href = '/login?next=%2Faccount';
          next.textContent = 'Sign in';
        }
        return;
      }
      const problem = await problemOf(res);
      if (problem.code === 'token_invalid') {
        form.hidden = true;
        say(errorBox, `This confirmation link cannot be used: it is invalid, was already used, or has expired (links last 1 hour). ${ADVICE}`);
        return;
      }
      if (problem.code === 'email_taken') {
        form.hidden = true;
        say(errorBox, 'Another account has started using this address since you asked for the change, so your address was not changed. You can choose a different one on your account page.');
        return;
      }
      say(errorBox, messageIn(MESSAGES, problem.code, problem.title || `Something went wrong (HTTP ${res.status}). Please try again.`) + retryText(res));
    } catch {
      say(errorBox, NETWORK);
    }
  });
});

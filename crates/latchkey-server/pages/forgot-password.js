// Forgot-password page (/forgot-password): asks for a reset link (SPEC 10). Served at
// /static/forgot-password.js. No session is involved: plain fetch.
import { MESSAGES, NETWORK, busy, messageIn, postJson, problemOf, retryText, say } from './flows.js';

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const form = /** @type {HTMLFormElement} */ ($('forgot-form'));
const input = /** @type {HTMLInputElement} */ ($('forgot-email'));
const button = /** @type {HTMLButtonElement} */ ($('forgot-submit'));
const errorBox = $('error');
const statusBox = $('status');

form.addEventListener('submit', (event) => {
  event.preventDefault();
  busy(button, async () => {
    say(errorBox);
    say(statusBox);
    const email = input.value.trim();
    try {
      const res = await postJson('/api/v1/auth/password/forgot', { email });
      if (res.status === 202 || res.ok) {
        // The same answer whether or not an account exists: the page says no more than that.
        form.hidden = true;
        $('intro').hidden = true;
        say(
          statusBox,
          `If an account exists for ${email}, we sent a link to reset its password. It expires in 30 minutes.`,
        );
        return;
      }
      const problem = await problemOf(res);
      const text = messageIn(MESSAGES, problem.code, problem.title || `Something went wrong (HTTP ${res.status}). Please try again.`);
      say(errorBox, text + retryText(res));
      if (problem.code === 'invalid_email') input.focus();
    } catch {
      say(errorBox, NETWORK);
    }
  });
});

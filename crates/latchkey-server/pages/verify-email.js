// Verify-email page (/verify-email#token=…): confirms the address with the token from the
// mailed link as soon as it opens (SPEC 10). Served at /static/verify-email.js.
// The token is the proof, no session is needed: plain fetch for it; secureFetch only to find
// out whether someone is signed in, to point them to the right place.
import { secureFetch } from '/client/latchkey.js';
import { MESSAGES, NETWORK, link, messageIn, postJson, problemOf, retryText, say, signedInUser, takeToken } from './flows.js';

const token = takeToken();

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const errorBox = $('error');
const statusBox = $('status');

const whoIsSignedIn = () => signedInUser(secureFetch);

/** After a success: on to the account page, or to signing in for someone who is not. */
async function offerNext() {
  const me = await whoIsSignedIn();
  const next = /** @type {HTMLAnchorElement} */ ($('next-link'));
  if (!me) {
    next.href = '/login?next=%2Faccount';
    next.textContent = 'Sign in';
  }
  $('next').hidden = false;
}

/**
 * Explains a link that did not work, with what to do next.
 * @param {string} text
 */
async function cannotVerify(text) {
  const me = await whoIsSignedIn();
  if (me?.email_verified) {
    say(errorBox, `${text} Your address ${me.email} is already verified, so there is nothing more to do.`);
    $('next').hidden = false;
  } else if (me) {
    say(errorBox, `${text} You can send yourself a new link from `, link('/account', 'your account page', 'resend-hint'), '.');
  } else {
    say(errorBox, `${text} Sign in, and you can send yourself a new link from your account page. `, link('/login?next=%2Faccount', 'Sign in', 'signin-link'));
  }
}

async function verify() {
  if (token === null) {
    await cannotVerify('This page was opened without the code from the verification email. Open the link from the email again (all of it).');
    return;
  }
  try {
    const res = await postJson('/api/v1/auth/email/verify', { token });
    if (res.ok) {
      /** @type {{ user?: { email?: string } }} */
      const body = await res.json().catch(() => ({}));
      const email = body.user?.email;
      say(statusBox, email ? `Your email address is verified (${email}).` : 'Your email address is verified.');
      await offerNext();
      return;
    }
    const problem = await problemOf(res);
    if (problem.code === 'token_invalid') {
      await cannotVerify('This verification link cannot be used: it is invalid, was already used, or has expired (links last 24 hours).');
      return;
    }
    say(errorBox, messageIn(MESSAGES, problem.code, problem.title || `Something went wrong (HTTP ${res.status}). Please try again.`) + retryText(res));
  } catch {
    say(errorBox, NETWORK);
  }
}

try {
  await verify();
} finally {
  $('progress').hidden = true;
  $('main').removeAttribute('aria-busy');
}

// Home page (/): tells whether you are signed in. Served at /static/home.js.
import { secureFetch } from '/client/latchkey.js';

// Restored from the back/forward cache (e.g. Back after signing out): check again.
addEventListener('pageshow', (event) => {
  if (event.persisted) location.reload();
});

const status = /** @type {HTMLElement} */ (document.getElementById('status'));
const loginLink = /** @type {HTMLAnchorElement} */ (document.getElementById('link-login'));
const accountLink = /** @type {HTMLAnchorElement} */ (document.getElementById('link-account'));

/**
 * @param {'signed-in' | 'signed-out' | 'error'} state
 * @param {string} text
 */
function show(state, text) {
  status.dataset.state = state;
  status.textContent = text;
  const signedIn = state === 'signed-in';
  // The primary action is the one that makes sense now.
  loginLink.className = signedIn ? 'button secondary' : 'button';
  accountLink.className = signedIn ? 'button' : 'button secondary';
  loginLink.textContent = signedIn ? 'Use another account' : 'Sign in or create an account';
  if (signedIn) accountLink.after(loginLink); // primary first, in reading and tab order
}

const notSignedIn = () => show('signed-out', 'You are not signed in.');

try {
  // Visitors who are not signed in are not sent to /login from here: this handler only says so.
  // cache: 'no-store': on Back after sign-out, Chrome would answer from its HTTP cache.
  const res = await secureFetch('/api/v1/me', { cache: 'no-store' }, notSignedIn);
  if (res.ok) {
    const me = await res.json();
    show('signed-in', `You are signed in as ${me.name ? `${me.name} (${me.email})` : me.email}.`);
  } else if (res.status === 401) {
    notSignedIn();
  } else {
    show('error', `Could not check your session (HTTP ${res.status}).`);
  }
} catch {
  show('error', 'Could not reach the server to check your session. Try again later.');
}

// Passkey sign-in on /login (SPEC 11): the "Sign in with a passkey" button, and conditional
// UI — the browser offers the account's passkeys in the email field's autofill
// (`autocomplete="username webauthn"`). Served at /static/login-passkeys.js; the ceremony
// itself is /client/latchkey-passkeys.js. No email is typed: the passkey names the account.

import { loginPageNext } from './next.js';
import { PasskeyError, conditionalMediationAvailable, isSupported, passkeySecondStep, signInWithPasskey } from '/client/latchkey-passkeys.js';

const MESSAGES = {
  passkey_unknown: 'This passkey is not registered here (it may have been removed from your account). Sign in with your password.',
  passkey_invalid: 'The passkey could not be verified. Please try again.',
  passkey_challenge_expired: 'The passkey request took too long. Please try again.',
  passkeys_not_configured: 'Passkeys are not available on this server.',
  invalid_credentials: 'This account cannot sign in.',
  rate_limited: 'Too many attempts. Please wait a moment and try again.',
  unsupported: 'This browser does not support passkeys.',
  network: 'Could not reach the server. Check your connection and try again.',
};

const next = loginPageNext(new URLSearchParams(location.search).get('next'), location.origin);
const errorBox = /** @type {HTMLElement} */ (document.getElementById('error'));
const statusBox = /** @type {HTMLElement} */ (document.getElementById('status'));
const button = /** @type {HTMLButtonElement} */ (document.getElementById('passkey-login'));

/** @param {unknown} error */
function report(error) {
  if (error instanceof PasskeyError && error.code === 'cancelled') return;
  const code = error instanceof PasskeyError ? error.code : 'network';
  statusBox.textContent = '';
  errorBox.textContent = Object.hasOwn(MESSAGES, code)
    ? MESSAGES[/** @type {keyof typeof MESSAGES} */ (code)]
    : 'Passkey sign-in failed. Please try again.';
}

/** @type {AbortController | null} */
let conditional = null;
/** Conditional requests this page may still start: each costs a `login/start` (counted in
 * the per-IP sign-in limit), and a browser may end one at once (no passkeys, or refused). */
let conditionalBudget = 3;

/** Offers passkeys in the email field's autofill, until one is chosen or this is aborted. */
async function startConditional() {
  if (conditionalBudget <= 0 || !(await conditionalMediationAvailable())) return;
  conditionalBudget -= 1;
  const controller = new AbortController();
  conditional = controller;
  try {
    await signInWithPasskey({ mediation: 'conditional', signal: controller.signal });
    location.assign(next);
  } catch (error) {
    if (controller.signal.aborted || conditional !== controller) return; // the button took over
    conditional = null;
    const code = error instanceof PasskeyError ? error.code : '';
    if (code === 'passkeys_not_configured') {
      /** @type {HTMLElement} */ (document.getElementById('passkey-section')).hidden = true;
      return;
    }
    // A passkey the person chose and the server refused: shown, and offered again. Anything
    // else in the background (the browser ended the offer, a network hiccup) stays quiet and
    // is not retried: the page may be showing another message (`?error=`).
    if (!['passkey_invalid', 'passkey_unknown', 'passkey_challenge_expired', 'invalid_credentials'].includes(code)) return;
    report(error);
    startConditional();
  }
}

// The server says whether it has a relying party (a domain-name PUBLIC_URL); without one the
// page does not start ceremonies it cannot finish.
const enabled = document.body.dataset.passkeys === 'true';

if (enabled && isSupported()) {
  /** @type {HTMLElement} */ (document.getElementById('passkey-section')).hidden = false;
  // One divider under the sign-in buttons: the OpenID providers', when they are shown
  // (login.js, which runs first, shows them).
  if (!(/** @type {HTMLElement} */ (document.getElementById('google-section')).hidden)) {
    /** @type {HTMLElement} */ (document.getElementById('passkey-divider')).hidden = true;
  }
  button.addEventListener('click', async () => {
    if (button.disabled) return;
    errorBox.textContent = '';
    conditional?.abort();
    conditional = null;
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
    try {
      await signInWithPasskey();
      location.assign(next);
      return;
    } catch (error) {
      report(error);
    } finally {
      button.disabled = false;
      button.removeAttribute('aria-busy');
    }
    startConditional();
  });
  startConditional();
}

// The second step of a password sign-in (SPEC 11), when the account has a passkey: the
// "Use your passkey" button (mfa.js announces the step). With only a passkey to offer, the
// code form goes away.
document.addEventListener('latchkey:second-step', (event) => {
  const { methods } = /** @type {CustomEvent<{ methods: string[] }>} */ (event).detail;
  conditional?.abort();
  conditional = null;
  conditionalBudget = 0;
  if (!enabled || !methods.includes('passkey') || !isSupported()) return;
  const section = /** @type {HTMLElement} */ (document.getElementById('mfa-passkey-section'));
  const secondButton = /** @type {HTMLButtonElement} */ (document.getElementById('mfa-passkey'));
  section.hidden = false;
  if (!methods.includes('totp') && !methods.includes('recovery_code')) {
    for (const id of ['mfa-form', 'mfa-switch', 'mfa-passkey-divider']) {
      /** @type {HTMLElement} */ (document.getElementById(id)).hidden = true;
    }
    /** @type {HTMLElement} */ (document.getElementById('mfa-hint')).textContent =
      'Confirm with your passkey (your device\'s screen lock or security key).';
  }
  secondButton.addEventListener('click', async () => {
    if (secondButton.disabled) return;
    errorBox.textContent = '';
    secondButton.disabled = true;
    secondButton.setAttribute('aria-busy', 'true');
    try {
      await passkeySecondStep();
      location.assign(next);
      return;
    } catch (error) {
      if (error instanceof PasskeyError && error.code === 'mfa_expired') {
        errorBox.textContent = 'This sign-in expired or had too many attempts. Enter your password again.';
        setTimeout(() => location.reload(), 1500);
        return;
      }
      report(error);
    } finally {
      secondButton.disabled = false;
      secondButton.removeAttribute('aria-busy');
    }
  });
  secondButton.focus();
});

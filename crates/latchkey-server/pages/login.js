// Login page (/login): sign in, sign up, Google and the other OpenID providers. Served at
// /static/login.js.
// Login and signup use plain fetch: their 401/409 are answers, not expired sessions.

import { loginPageNext } from './next.js';
import { showSecondStep } from './mfa.js';

const params = new URLSearchParams(location.search);

/**
 * The named OpenID providers the server has on (SPEC 13): `data-providers`, JSON the server
 * writes from its configuration. Anything malformed counts as none.
 * @returns {{ name: string, label: string }[]}
 */
function namedProviders() {
  try {
    const list = JSON.parse(document.body.dataset.providers || '[]');
    if (!Array.isArray(list)) return [];
    return list.filter((p) => p && typeof p.name === 'string' && /^[a-z0-9][a-z0-9-]{0,31}$/.test(p.name) && typeof p.label === 'string');
  } catch {
    return [];
  }
}
const providers = namedProviders();

// Which provider a `?error=` came from: a named provider's callback adds `&provider=NAME`;
// Google's adds nothing. Only a configured provider's label is shown, never URL text.
const failedAt = params.get('provider');
const who = failedAt === null ? 'Google' : providers.find((p) => p.name === failedAt)?.label || 'Your provider';

/** Readable text for the `?error=` codes and the API's problem `code`s. */
const MESSAGES = {
  oauth_state_mismatch: `${who} sign-in could not be completed: the attempt expired or was started in another tab. Please try again.`,
  oauth_denied: `${who} sign-in was cancelled.`,
  oauth_failed: `${who} sign-in failed. Please try again.`,
  email_not_verified: `${who} has not verified the email address of that account, so it cannot be used here. Verify it with ${who}, or sign in with your password.`,
  provider_not_configured: `${who} sign-in is not enabled on this server.`,
  invalid_credentials: 'Wrong email or password.',
  email_taken: 'An account with this email already exists. Sign in instead.',
  weak_password: 'Choose a password of 8 to 256 characters.',
  invalid_email: 'Enter a valid email address.',
  rate_limited: 'Too many attempts. Please wait a moment and try again.',
  invalid_request: 'The form could not be sent as it is. Check the fields and try again.',
  cross_origin_rejected: 'The request was refused because it did not come from this site. Reload the page and try again.',
  email_unverified: 'Your email address is not verified yet. Open the link in the verification email we sent you, then sign in. No email? Use "Forgot password?": resetting your password also verifies your address.',
  mail_not_configured: 'This server does not send email. Ask the administrator of this site for help.',
  overloaded: 'The server is busy. Please try again in a moment.',
};

// Finding 1 (issue 9): the rule lives in next.js, shared with the server's by one table of cases.
const next = loginPageNext(params.get('next'), location.origin);
const errorBox = /** @type {HTMLElement} */ (document.getElementById('error'));
const statusBox = /** @type {HTMLElement} */ (document.getElementById('status'));

/** @param {string} text */
function showError(text) {
  statusBox.textContent = '';
  errorBox.textContent = text;
}

/** @param {string} text */
function showStatus(text) {
  errorBox.textContent = '';
  statusBox.textContent = text;
}

/**
 * Known codes only: text from the URL is never echoed into the page.
 * @param {string | null | undefined} code
 * @param {string} [fallback]
 */
const messageFor = (code, fallback) =>
  code && Object.hasOwn(MESSAGES, code)
    ? MESSAGES[/** @type {keyof typeof MESSAGES} */ (code)]
    : fallback || 'Sign-in failed. Please try again.';

// Google sign-in, when the server has it on (it replaces __GOOGLE_ENABLED__ in the page),
// and one button per named provider; each link passes on the checked `next`.
const googleOn = document.body.dataset.google === 'true';
const google = /** @type {HTMLAnchorElement} */ (document.getElementById('google'));
google.href = '/api/v1/auth/google/login?next=' + encodeURIComponent(next);
google.hidden = !googleOn;
const buttons = /** @type {HTMLElement} */ (document.getElementById('oidc-buttons'));
for (const p of providers) {
  const a = document.createElement('a');
  a.className = 'button secondary full';
  a.href = `/api/v1/auth/oidc/${p.name}/login?next=` + encodeURIComponent(next);
  a.dataset.testid = `oidc-login-${p.name}`;
  a.dataset.provider = p.name;
  a.textContent = `Sign in with ${p.label}`;
  buttons.append(a);
}
if (googleOn || providers.length > 0) {
  /** @type {HTMLElement} */ (document.getElementById('google-section')).hidden = false;
}

// An error sent back here, e.g. by an OpenID callback: /login?error=oauth_denied
const errorCode = params.get('error');
if (errorCode) showError(messageFor(errorCode));

// Back from Google (or another OpenID provider) for an account with a second factor (SPEC
// 11): /login?mfa=totp,recovery_code&next=… with the second-factor cookie set. After
// DOMContentLoaded, so that every module of the page (the passkey step) is listening.
const mfaMethods = params.get('mfa');
if (mfaMethods) {
  document.addEventListener('DOMContentLoaded', () => showSecondStep(mfaMethods.split(',').filter(Boolean), next));
}

/**
 * @param {HTMLFormElement} form
 * @param {string} url
 * @param {(data: FormData) => Record<string, string>} body
 */
function handle(form, url, body) {
  const button = /** @type {HTMLButtonElement} */ (form.querySelector('button[type="submit"]'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (button.disabled) return;
    showError('');
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
    try {
      const res = await fetch(url, {
        method: 'POST',
        credentials: 'include',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json, application/problem+json' },
        body: JSON.stringify(body(new FormData(form))),
      });
      if (res.ok) {
        /** @type {{ verification_required?: boolean, mfa_required?: boolean, methods?: string[] }} */
        let answer = {};
        try {
          answer = await res.json();
        } catch {
          // a sign-in needs no body
        }
        if (answer?.verification_required === true) {
          // REQUIRE_EMAIL_VERIFICATION (SPEC 10): the account exists, but nobody is signed in.
          verificationSent(form);
          return;
        }
        if (answer?.mfa_required === true) {
          // SPEC 11: the password was right; the second factor comes next (mfa.js).
          showSecondStep(Array.isArray(answer.methods) ? answer.methods : [], next);
          return;
        }
        location.assign(next);
        return;
      }
      /** @type {{ code?: string, title?: string }} */
      let problem = {};
      try {
        problem = await res.json();
      } catch {
        // not JSON: keep the generic message
      }
      let text = messageFor(problem.code, problem.title || `Something went wrong (HTTP ${res.status}). Please try again.`);
      const retryAfter = Number(res.headers.get('Retry-After'));
      if (res.status === 429 && retryAfter > 0) text += ` You can try again in ${retryAfter} second${retryAfter === 1 ? '' : 's'}.`;
      showError(text);
    } catch {
      showError('Could not reach the server. Check your connection and try again.');
    } finally {
      button.disabled = false;
      button.removeAttribute('aria-busy');
    }
  });
}

const value = (/** @type {FormData} */ data, /** @type {string} */ name) => String(data.get(name) ?? '');

/**
 * After a signup that must verify its address first: say where the link went, and prepare
 * the sign-in form for when it has been opened.
 * @param {HTMLFormElement} form the signup form
 */
function verificationSent(form) {
  const email = value(new FormData(form), 'email').trim();
  showStatus(`We sent a verification link to ${email}. Open it, then sign in.`);
  form.reset();
  /** @type {HTMLInputElement} */ (document.getElementById('login-email')).value = email;
  /** @type {HTMLInputElement} */ (document.getElementById('login-password')).focus();
}

handle(/** @type {HTMLFormElement} */ (document.getElementById('login-form')), '/api/v1/auth/login', (data) => ({
  email: value(data, 'email').trim(),
  password: value(data, 'password'),
}));

handle(/** @type {HTMLFormElement} */ (document.getElementById('signup-form')), '/api/v1/auth/signup', (data) => {
  const name = value(data, 'name').trim();
  return {
    email: value(data, 'email').trim(),
    password: value(data, 'password'),
    ...(name ? { name } : {}),
  };
});

// Account page (/account): profile, sessions, sign out. Served at /static/account.js.
// Every API call goes through secureFetch; a session that cannot be renewed shows a toast (no
// alert), then /login?next=/account.
import { createClient } from '/client/latchkey.js';
import { toastAuthFail } from '/client/latchkey-toast.js';
const { secureFetch } = createClient({ onAuthFail: toastAuthFail({ loginPath: '/login' }) });
import { MESSAGES, busy, fieldError, jsonPost, link, messageIn, problemOf, retryText, say } from './flows.js';
import { mountMfaSection } from './mfa.js';
import { mountEventsSection } from './account-events.js';

// Never show private data from the back/forward cache (e.g. after signing out): reload instead.
addEventListener('pageshow', (event) => {
  if (event.persisted) location.reload();
});

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const main = $('main');
const errorBox = $('error');
const statusBox = $('status');
const tbody = /** @type {HTMLTableSectionElement} */ ($('sessions').querySelector('tbody'));

/** @param {string} text */
const showError = (text) => {
  statusBox.textContent = '';
  errorBox.textContent = text;
};
/** @param {string} text */
const showStatus = (text) => {
  errorBox.textContent = '';
  statusBox.textContent = text;
};

/**
 * Private data never comes from the HTTP cache: the API's answers carry no Cache-Control, and
 * on Back/Forward Chrome serves a page's fetches from its cache even when stale — after
 * sign-out, Back would show the profile again.
 * @type {RequestInit}
 */
const PRIVATE = { cache: 'no-store' };

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

/**
 * A <time> element for an RFC 3339 string (or Unix seconds), shown in the user's locale.
 * @param {unknown} value
 */
function timeElement(value) {
  const el = document.createElement('time');
  const date = typeof value === 'number' ? new Date(value < 1e12 ? value * 1000 : value) : new Date(String(value));
  if (value == null || Number.isNaN(date.getTime())) {
    el.textContent = value == null ? '—' : String(value);
    return el;
  }
  el.dateTime = date.toISOString();
  el.textContent = dateFormat.format(date);
  return el;
}

/**
 * "Firefox on Linux" from a User-Agent header.
 * @param {string | null | undefined} ua
 */
function describeAgent(ua) {
  if (!ua) return 'Unknown device';
  const browser =
    (/\bEdg(e|A|iOS)?\//.test(ua) && 'Edge') ||
    (/\bOPR\//.test(ua) && 'Opera') ||
    (/\b(Firefox|FxiOS)\//.test(ua) && 'Firefox') ||
    (/(Chrome|Chromium|CriOS)\//.test(ua) && 'Chrome') ||
    (/\bVersion\/[\d.]+.*Safari\//.test(ua) && 'Safari') ||
    (/^curl\//i.test(ua) && 'curl') ||
    null;
  const os =
    (/Windows/.test(ua) && 'Windows') ||
    (/Android/.test(ua) && 'Android') ||
    (/iPhone|iPad|iPod/.test(ua) && 'iOS') ||
    (/Mac OS X|Macintosh/.test(ua) && 'macOS') ||
    (/CrOS/.test(ua) && 'ChromeOS') ||
    (/Linux|X11/.test(ua) && 'Linux') ||
    null;
  if (browser && os) return `${browser} on ${os}`;
  return browser || os || (ua.length > 60 ? ua.slice(0, 57) + '…' : ua);
}

/**
 * @param {HTMLTableRowElement} row
 * @param {string} label shown before the value on narrow screens
 * @param {...(string | Node)} content
 */
function cell(row, label, ...content) {
  const td = row.insertCell();
  td.dataset.label = label;
  td.append(...content);
  return td;
}

/**
 * @typedef {{ id: string, created_at: string, last_used_at: string, user_agent?: string | null, ip?: string | null, current: boolean }} Session
 * @param {Session[]} sessions
 */
function renderSessions(sessions) {
  const sorted = [...sessions].sort(
    (a, b) => Number(b.current) - Number(a.current) || String(b.last_used_at).localeCompare(String(a.last_used_at)),
  );
  tbody.replaceChildren();
  for (const session of sorted) {
    const row = tbody.insertRow();
    row.dataset.sessionId = String(session.id);
    row.dataset.current = String(Boolean(session.current));
    row.dataset.testid = 'session-row';

    const wrap = document.createElement('span');
    wrap.className = 'device-cell';
    const device = document.createElement('span');
    device.className = 'device';
    device.textContent = describeAgent(session.user_agent);
    if (session.user_agent) device.title = session.user_agent;
    wrap.append(device);
    if (session.current) {
      const badge = document.createElement('span');
      badge.className = 'badge';
      badge.dataset.testid = 'this-device';
      badge.textContent = 'This device';
      wrap.append(' ', badge);
    }
    cell(row, 'Device', wrap);
    cell(row, 'Last used', timeElement(session.last_used_at));
    cell(row, 'IP address', session.ip || '—').className = 'ip';
    cell(row, 'Signed in', timeElement(session.created_at));
    const actions = cell(row, 'Actions');
    if (!session.current) {
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'danger small revoke';
      button.dataset.testid = 'revoke-session';
      button.textContent = 'Revoke';
      button.setAttribute('aria-label', `Revoke the session of ${device.textContent}, last used ${row.cells[1].textContent}`);
      button.addEventListener('click', () => revoke(session.id, row, button));
      actions.append(button);
    }
  }
}

/**
 * @param {string} id
 * @param {HTMLTableRowElement} row
 * @param {HTMLButtonElement} button
 */
async function revoke(id, row, button) {
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  try {
    const res = await secureFetch(`/api/v1/auth/sessions/${encodeURIComponent(id)}`, { method: 'DELETE' });
    if (res.status === 204 || res.status === 404) {
      // 404: already gone (revoked elsewhere or expired) — the outcome the user asked for.
      row.remove();
      showStatus('Session revoked. That device is signed out.');
      $('logout').focus();
      return;
    }
    if (res.status !== 401) showError(`Could not revoke the session (HTTP ${res.status}).`);
  } catch (error) {
    showError(networkMessage(error));
  }
  button.disabled = false;
  button.removeAttribute('aria-busy');
}

/** @param {unknown} error */
function networkMessage(error) {
  return error instanceof Error && /refresh failed/.test(error.message)
    ? 'Could not renew your session right now. You are still signed in; try again in a moment.'
    : 'Could not reach the server. Check your connection and try again.';
}

/**
 * @param {HTMLButtonElement} button
 * @param {string} url
 */
function signOutButton(button, url) {
  button.addEventListener('click', async () => {
    for (const b of document.querySelectorAll('#signout-section button')) /** @type {HTMLButtonElement} */ (b).disabled = true;
    button.setAttribute('aria-busy', 'true');
    try {
      const res = await secureFetch(url, { method: 'POST' });
      if (res.status === 204) {
        // replace: Back must not come back to this page's data.
        location.replace('/login');
        return;
      }
      if (res.status !== 401) showError(`Could not sign out (HTTP ${res.status}). Please try again.`);
    } catch (error) {
      showError(networkMessage(error));
    }
    for (const b of document.querySelectorAll('#signout-section button')) /** @type {HTMLButtonElement} */ (b).disabled = false;
    button.removeAttribute('aria-busy');
  });
}

signOutButton(/** @type {HTMLButtonElement} */ ($('logout')), '/api/v1/auth/logout');
signOutButton(/** @type {HTMLButtonElement} */ ($('logout-all')), '/api/v1/auth/logout-all');

/** The signed-in user, as /api/v1/me last said. */
let user = { email: '', email_verified: true };

/** Reloads the sessions table (after a password change signed the other devices out). */
async function reloadSessions() {
  try {
    const res = await secureFetch('/api/v1/auth/sessions', PRIVATE);
    if (res.ok) renderSessions((await res.json()).sessions || []);
  } catch {
    // the table stays as it was
  }
}

/** @param {boolean} verified */
function showVerified(verified) {
  user.email_verified = verified;
  $('me-verified').textContent = verified ? 'Yes' : 'No';
  $('verify-banner').hidden = verified;
}

/** The problem's text for the account forms, or a generic one with the status. */
const problemText = (/** @type {Response} */ res, /** @type {{ code?: string, title?: string }} */ problem) =>
  messageIn(MESSAGES, problem.code, problem.title || `Something went wrong (HTTP ${res.status}). Please try again.`) + retryText(res);

/**
 * 403 reauthentication_required: the sign-in is too old for this change (SPEC 11).
 * @param {HTMLElement} box
 * @param {string} what e.g. "changing your password"
 */
function askToSignInAgain(box, what) {
  say(
    box,
    `For your security, ${what} needs a recent sign-in, and yours was more than 10 minutes ago. `,
    link('/login?next=%2Faccount', 'Sign in again', 'reauth-link'),
    ', then try once more.',
  );
}

// "Resend verification email" in the banner.
const resend = /** @type {HTMLButtonElement} */ ($('verify-resend'));
resend.addEventListener('click', () =>
  busy(resend, async () => {
    const box = $('verify-status');
    say(box);
    try {
      const res = await secureFetch('/api/v1/auth/email/verify/send', { method: 'POST' });
      if (res.status === 202 || res.ok) {
        say(box, `We sent a new verification link to ${user.email}. It expires in 24 hours.`);
        return;
      }
      if (res.status === 401) return; // onAuthFail is taking the user to /login
      const problem = await problemOf(res);
      if (problem.code === 'already_verified') {
        showVerified(true);
        showStatus('Your email address is already verified.');
      } else if (res.status === 429) {
        say(box, 'You asked for several links in a short time. Please try again later.' + retryText(res));
      } else {
        say(box, problemText(res, problem));
      }
    } catch (error) {
      say(box, networkMessage(error));
    }
  }),
);

// "Change password".
{
  const form = /** @type {HTMLFormElement} */ ($('password-form'));
  const current = /** @type {HTMLInputElement} */ ($('current-password'));
  const fresh = /** @type {HTMLInputElement} */ ($('new-password'));
  const button = /** @type {HTMLButtonElement} */ ($('password-submit'));
  const errorBox = $('password-error');
  const statusBox = $('password-status');
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    busy(button, async () => {
      say(errorBox);
      say(statusBox);
      fieldError(current, $('current-password-error'), '');
      fieldError(fresh, $('new-password-error'), '');
      try {
        const res = await secureFetch(
          '/api/v1/auth/password/change',
          jsonPost({ current_password: current.value, new_password: fresh.value }),
        );
        if (res.status === 204 || res.ok) {
          form.reset();
          say(statusBox, 'Your password was changed. Every other device was signed out; this one stays signed in.');
          await reloadSessions();
          return;
        }
        if (res.status === 401) return; // the session is gone: onAuthFail is taking over
        const problem = await problemOf(res);
        switch (problem.code) {
          case 'invalid_credentials':
            fieldError(current, $('current-password-error'), 'This is not your current password.');
            say(errorBox, 'Your password was not changed: the current password is wrong.');
            current.focus();
            break;
          case 'weak_password':
            fieldError(fresh, $('new-password-error'), MESSAGES.weak_password);
            say(errorBox, 'Your password was not changed: choose another new password.');
            fresh.focus();
            break;
          case 'reauthentication_required':
            askToSignInAgain(errorBox, 'changing your password');
            break;
          default:
            say(errorBox, problemText(res, problem));
        }
      } catch (error) {
        say(errorBox, networkMessage(error));
      }
    });
  });
}

// "Change email address": a confirmation link goes to the new address (SPEC 10).
{
  const form = /** @type {HTMLFormElement} */ ($('email-form'));
  const address = /** @type {HTMLInputElement} */ ($('new-email'));
  const password = /** @type {HTMLInputElement} */ ($('email-password'));
  const button = /** @type {HTMLButtonElement} */ ($('email-submit'));
  const errorBox = $('email-error');
  const statusBox = $('email-status');
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    busy(button, async () => {
      say(errorBox);
      say(statusBox);
      fieldError(address, $('new-email-error'), '');
      fieldError(password, $('email-password-error'), '');
      const newEmail = address.value.trim();
      if (newEmail.toLowerCase() === user.email.toLowerCase()) {
        fieldError(address, $('new-email-error'), 'This is already your email address.');
        address.focus();
        return;
      }
      try {
        const res = await secureFetch('/api/v1/auth/email/change', jsonPost({ new_email: newEmail, password: password.value }));
        if (res.status === 202 || res.ok) {
          form.reset();
          say(
            statusBox,
            `We sent a confirmation link to ${newEmail}. Open it within 1 hour to finish the change; until then your address stays ${user.email}.`,
          );
          return;
        }
        if (res.status === 401) return;
        const problem = await problemOf(res);
        switch (problem.code) {
          case 'invalid_email':
            fieldError(address, $('new-email-error'), MESSAGES.invalid_email);
            address.focus();
            break;
          case 'email_taken':
            fieldError(address, $('new-email-error'), 'Another account already uses this address.');
            address.focus();
            break;
          case 'invalid_credentials':
            fieldError(password, $('email-password-error'), 'This is not your current password.');
            say(errorBox, 'Your address was not changed: the password is wrong.');
            password.focus();
            break;
          case 'reauthentication_required':
            askToSignInAgain(errorBox, 'changing your email address');
            break;
          default:
            say(errorBox, problemText(res, problem));
        }
      } catch (error) {
        say(errorBox, networkMessage(error));
      }
    });
  });
}

async function load() {
  try {
    // Both calls may hit an expired access token at once: secureFetch makes one refresh for both.
    const [meRes, sessionsRes] = await Promise.all([
      secureFetch('/api/v1/me', PRIVATE),
      secureFetch('/api/v1/auth/sessions', PRIVATE),
    ]);
    if (meRes.status === 401 || sessionsRes.status === 401) {
      // onAuthFail has already run (and is taking the user to /login).
      $('loading').textContent = 'Your session has expired.';
      return;
    }
    if (!meRes.ok || !sessionsRes.ok) {
      $('loading').hidden = true;
      showError(`Could not load your account (HTTP ${meRes.ok ? sessionsRes.status : meRes.status}).`);
      return;
    }
    const me = await meRes.json();
    const { sessions } = await sessionsRes.json();

    $('me-email').textContent = me.email;
    $('me-name').textContent = me.name || '—';
    $('me-verified').textContent = me.email_verified ? 'Yes' : 'No';
    const providers = Array.isArray(me.providers) ? me.providers : [];
    $('me-providers').textContent = providers
      .map((/** @type {unknown} */ p) => ({ password: 'Password', google: 'Google' })[String(p)] || String(p))
      .join(', ') || '—';
    $('me-created').replaceChildren(timeElement(me.created_at));
    $('me-id').textContent = me.id;
    renderSessions(Array.isArray(sessions) ? sessions : []);

    // Email (SPEC 10): the unverified banner, and the forms that need the account's password.
    user = { email: String(me.email), email_verified: me.email_verified === true };
    $('verify-email').textContent = user.email;
    showVerified(user.email_verified);
    /** @type {HTMLInputElement} */ ($('password-username')).value = user.email;
    const hasPassword = providers.includes('password');
    $('security-panes').hidden = !hasPassword;
    $('no-password').hidden = hasPassword;

    $('loading').hidden = true;
    for (const id of ['profile', 'security-section', 'sessions-section', 'signout-section']) $(id).hidden = false;
    // Second factors (SPEC 11): their own section, wired by mfa.js.
    mountMfaSection(secureFetch);
    // Security events (SPEC 12): the latest few, by account-events.js.
    mountEventsSection(secureFetch);
  } catch (error) {
    $('loading').hidden = true;
    showError(networkMessage(error));
  } finally {
    main.removeAttribute('aria-busy');
  }
}

load();

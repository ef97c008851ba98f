// "Recent security activity" on /account (SPEC 12): the latest security events of the
// signed-in user, from GET /api/v1/auth/events. Served at /static/account-events.js;
// account.js calls mountEventsSection once the page is signed in. Text only (textContent),
// no inline script or style: the page's CSP stays strict.

/** How many events the section shows. */
const LATEST = 10;

/** What each event type reads as. */
const LABELS = {
  signup: 'Account created',
  login_succeeded: 'Signed in',
  login_failed: 'Failed sign-in attempt',
  mfa_failed: 'Wrong second-factor code',
  refresh_reused: 'A stolen or replayed session token was refused',
  session_revoked: 'Session signed out',
  logout_all: 'Signed out everywhere',
  password_changed: 'Password changed',
  password_reset_requested: 'Password reset requested',
  password_reset: 'Password reset',
  email_verified: 'Email address verified',
  email_changed: 'Email address changed',
  mfa_enabled: 'Two-step sign-in turned on',
  mfa_disabled: 'Two-step sign-in turned off',
  passkey_added: 'Passkey added',
  passkey_removed: 'Passkey removed',
  identity_linked: 'Sign-in provider linked',
  user_disabled: 'Account disabled',
};

/** Who revoked a session (`detail.by`). */
const BY = {
  user: 'by you',
  admin: 'by an administrator',
  reuse: 'after token reuse',
  password_change: 'after a password change',
};

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

/**
 * @typedef {{ type: string, time: string, ip?: string | null, user_agent?: string | null, session_id?: string | null, detail?: Record<string, unknown> }} SecurityEvent
 * @param {SecurityEvent} event
 */
function describe(event) {
  const label = Object.hasOwn(LABELS, event.type) ? LABELS[/** @type {keyof typeof LABELS} */ (event.type)] : event.type;
  const by = event.detail && typeof event.detail.by === 'string' && Object.hasOwn(BY, event.detail.by)
    ? ` ${BY[/** @type {keyof typeof BY} */ (event.detail.by)]}`
    : '';
  return label + by;
}

/**
 * Loads and shows the latest events.
 * @param {(input: string, init?: RequestInit) => Promise<Response>} secureFetch
 */
export async function mountEventsSection(secureFetch) {
  const section = /** @type {HTMLElement} */ (document.getElementById('events-section'));
  const list = /** @type {HTMLOListElement} */ (document.getElementById('events'));
  const empty = /** @type {HTMLElement} */ (document.getElementById('events-empty'));
  const errorBox = /** @type {HTMLElement} */ (document.getElementById('events-error'));
  section.hidden = false;
  try {
    const res = await secureFetch(`/api/v1/auth/events?limit=${LATEST}`, { cache: 'no-store' });
    if (!res.ok) {
      errorBox.textContent = `Could not load your recent activity (HTTP ${res.status}).`;
      return;
    }
    const body = await res.json();
    /** @type {SecurityEvent[]} */
    const events = Array.isArray(body.events) ? body.events : [];
    list.replaceChildren();
    for (const event of events) {
      const item = document.createElement('li');
      item.dataset.testid = 'event';
      item.dataset.type = String(event.type);
      const what = document.createElement('span');
      what.className = 'event-what';
      what.textContent = describe(event);
      const when = document.createElement('time');
      const date = new Date(String(event.time));
      if (!Number.isNaN(date.getTime())) {
        when.dateTime = date.toISOString();
        when.textContent = dateFormat.format(date);
      }
      item.append(what, ' · ', when);
      if (event.ip) {
        const ip = document.createElement('span');
        ip.className = 'ip';
        ip.textContent = String(event.ip);
        item.append(' · ', ip);
      }
      list.append(item);
    }
    empty.hidden = events.length > 0;
  } catch {
    errorBox.textContent = 'Could not load your recent activity. Check your connection and reload the page.';
  }
}

// Shared by the email pages (SPEC 10): /forgot-password, /reset-password, /verify-email,
// /confirm-email and the forms on /account. Served at /static/flows.js.
// Importing it touches no DOM: the pure parts are tested by node (pages/test/flows.test.mjs).

/** Readable text for the API's problem `code`s on the email pages. */
export const MESSAGES = {
  invalid_email: 'Enter a valid email address.',
  weak_password: 'Choose a password of 8 to 256 characters.',
  rate_limited: 'Too many attempts. Please wait a moment and try again.',
  invalid_request: 'The form could not be sent as it is. Check the fields and try again.',
  cross_origin_rejected: 'The request was refused because it did not come from this site. Reload the page and try again.',
  mail_not_configured: 'This server does not send email, so this cannot be done here. Ask the administrator of this site for help.',
  overloaded: 'The server is busy. Please try again in a moment.',
};

/** Longest token accepted from a link (the server's are 43 characters). */
const MAX_TOKEN_LEN = 512;

/**
 * The `token` of a fragment like `#token=abc`; null when there is none (or it cannot be one).
 * @param {string | null | undefined} hash `location.hash`, with or without its `#`
 * @returns {string | null}
 */
export function tokenFromHash(hash) {
  if (typeof hash !== 'string') return null;
  const token = new URLSearchParams(hash.replace(/^#/, '')).get('token');
  if (!token || token.length > MAX_TOKEN_LEN || /[\s\u0000-\u001f\u007f]/.test(token)) return null;
  return token;
}

/**
 * Reads the token from this page's fragment, then removes the fragment from the address bar
 * and the history entry, so it is not left behind in the history or a bookmark.
 * @returns {string | null}
 */
export function takeToken() {
  const token = tokenFromHash(location.hash);
  if (location.hash || location.href.endsWith('#')) {
    history.replaceState(history.state, '', location.pathname + location.search);
  }
  return token;
}

/**
 * Known codes only: text from a response is shown only as a fallback title.
 * @param {Record<string, string>} table
 * @param {string | null | undefined} code
 * @param {string} fallback
 */
export const messageIn = (table, code, fallback) =>
  code && Object.hasOwn(table, code) ? table[code] : fallback;

/**
 * The problem document of an error response (`{}` when its body is not JSON).
 * @param {Response} res
 * @returns {Promise<{ code?: string, title?: string, status?: number }>}
 */
export async function problemOf(res) {
  try {
    const body = await res.json();
    return body && typeof body === 'object' ? body : {};
  } catch {
    return {};
  }
}

/**
 * " You can try again in N seconds." for a 429 with Retry-After, else "".
 * @param {Response} res
 */
export function retryText(res) {
  const after = Number(res.headers.get('Retry-After'));
  return res.status === 429 && after > 0 ? ` You can try again in ${after} second${after === 1 ? '' : 's'}.` : '';
}

/** Text for a failed fetch (no answer at all). */
export const NETWORK = 'Could not reach the server. Check your connection and try again.';

/**
 * POSTs JSON to an endpoint that needs no session (the token is the proof, or nobody is
 * signed in yet): plain fetch, since a 401 from these is not an expired access token.
 * @param {string} url
 * @param {unknown} body
 */
export function postJson(url, body) {
  return fetch(url, {
    method: 'POST',
    credentials: 'include',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json, application/problem+json' },
    body: JSON.stringify(body),
  });
}

/** The same options for `secureFetch` (pages with a session). */
export const jsonPost = (/** @type {unknown} */ body) => ({
  method: 'POST',
  headers: { 'Content-Type': 'application/json', Accept: 'application/json, application/problem+json' },
  body: JSON.stringify(body),
});

/**
 * The signed-in user, or null (nobody, or it cannot be told). For pages that need no
 * session: nobody is sent to /login from here (onAuthFail does nothing).
 * @param {(url: string, options?: RequestInit, onAuthFail?: () => void) => Promise<Response>} secureFetch
 * @returns {Promise<{ email: string, email_verified: boolean } | null>}
 */
export async function signedInUser(secureFetch) {
  try {
    const res = await secureFetch('/api/v1/me', { cache: 'no-store' }, () => {});
    return res.ok ? await res.json() : null;
  } catch {
    return null;
  }
}

/**
 * An `<a>` (never HTML from strings).
 * @param {string} href
 * @param {string} text
 * @param {string} [testid]
 */
export function link(href, text, testid) {
  const a = document.createElement('a');
  a.href = href;
  a.textContent = text;
  if (testid) a.dataset.testid = testid;
  return a;
}

/**
 * Replaces a message box's content with text and links, e.g. `say(box, 'Go to ', link(…), '.')`.
 * @param {HTMLElement} box
 * @param {...(string | Node)} parts
 */
export function say(box, ...parts) {
  box.replaceChildren(...parts.filter((p) => p !== ''));
}

/**
 * Marks a button busy while `work` runs (and ignores clicks meanwhile).
 * @param {HTMLButtonElement} button
 * @param {() => Promise<void>} work
 */
export async function busy(button, work) {
  if (button.disabled) return;
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  try {
    await work();
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
  }
}

/**
 * Shows a message under one field and marks the field invalid (or clears both with '').
 * The message element is named by the field's aria-describedby.
 * @param {HTMLInputElement} input
 * @param {HTMLElement} message
 * @param {string} text
 */
export function fieldError(input, message, text) {
  message.textContent = text;
  if (text) input.setAttribute('aria-invalid', 'true');
  else input.removeAttribute('aria-invalid');
}

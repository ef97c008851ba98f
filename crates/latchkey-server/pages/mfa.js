// Second factors (SPEC 11) on the pages: the second step of /login, and the "Two-step
// sign-in" section of /account (TOTP enrolment with its QR code, recovery codes shown once,
// turning it off, reauthentication). Served at /static/mfa.js; login.js and account.js call
// the two exported functions and otherwise know nothing of second factors.

/** Readable text for the second-factor problem codes. */
const MESSAGES = {
  invalid_code: 'That code is not right. Check the app (codes change every 30 seconds) and try again.',
  invalid_request: 'The code could not be sent as it is. Reload the page and try again.',
  mfa_expired: 'This sign-in expired or had too many wrong codes. Enter your password again.',
  rate_limited: 'Too many wrong codes. Please wait and try again.',
  invalid_credentials: 'That is not right. Try again.',
  totp_already_enabled: 'An authenticator app is already set up.',
  cross_origin_rejected: 'The request was refused because it did not come from this site. Reload the page and try again.',
};

const text = (/** @type {{ code?: string, title?: string }} */ p, /** @type {number} */ status) =>
  (p.code && Object.hasOwn(MESSAGES, p.code) ? MESSAGES[/** @type {keyof typeof MESSAGES} */ (p.code)] : p.title) ||
  `Something went wrong (HTTP ${status}). Please try again.`;

/** @param {Response} res */
async function problem(res) {
  try {
    const body = await res.json();
    return body && typeof body === 'object' ? body : {};
  } catch {
    return {};
  }
}

const json = (/** @type {unknown} */ body) => ({
  method: 'POST',
  credentials: /** @type {RequestCredentials} */ ('include'),
  headers: { 'Content-Type': 'application/json', Accept: 'application/json, application/problem+json' },
  body: JSON.stringify(body),
});

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));

// ---------------------------------------------------------------------------------------
// /login: the second step, after a right password answered `{mfa_required: true, methods}`.

/**
 * Shows the code form in place of the password forms. Plain fetch: the second-factor
 * endpoint's 401 means "sign in again", not an expired access token.
 * @param {string[]} methods what the server offers (`totp`, `recovery_code`, `passkey`)
 * @param {string} next where to go once signed in
 */
export function showSecondStep(methods, next) {
  const step = $('mfa-step');
  const form = /** @type {HTMLFormElement} */ ($('mfa-form'));
  const input = /** @type {HTMLInputElement} */ ($('mfa-code'));
  const label = $('mfa-code-label');
  const hint = $('mfa-hint');
  const swap = /** @type {HTMLButtonElement} */ ($('mfa-switch'));
  const button = /** @type {HTMLButtonElement} */ ($('mfa-submit'));
  const errorBox = $('error');
  for (const id of ['login-panes', 'google-section', 'passkey-section']) $(id).hidden = true;
  step.hidden = false;
  // The passkey way through this step lives in login-passkeys.js.
  document.dispatchEvent(new CustomEvent('latchkey:second-step', { detail: { methods, next } }));
  let method = methods.includes('totp') ? 'totp' : 'recovery_code';
  const show = () => {
    const totp = method === 'totp';
    label.textContent = totp ? 'Code from your authenticator app' : 'Recovery code';
    hint.textContent = totp
      ? 'Open your authenticator app and enter the 6-digit code it shows for this site.'
      : 'Enter one of the recovery codes you saved when you turned on two-step sign-in. Each works once.';
    input.inputMode = totp ? 'numeric' : 'text';
    input.autocomplete = totp ? 'one-time-code' : 'off';
    swap.textContent = totp ? 'Use a recovery code instead' : 'Use the authenticator app instead';
    swap.hidden = !(methods.includes('totp') && methods.includes('recovery_code'));
    input.value = '';
  };
  show();
  input.focus();
  swap.addEventListener('click', () => {
    method = method === 'totp' ? 'recovery_code' : 'totp';
    show();
    input.focus();
  });
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (button.disabled) return;
    errorBox.textContent = '';
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
    try {
      const res = await fetch('/api/v1/auth/mfa/verify', json({ method, code: input.value }));
      if (res.ok) {
        location.assign(next);
        return;
      }
      const p = await problem(res);
      errorBox.textContent = text(p, res.status);
      if (res.status === 401) {
        // The pending sign-in is gone: back to the password.
        step.hidden = true;
        $('login-panes').hidden = false;
        /** @type {HTMLInputElement} */ ($('login-password')).value = '';
        /** @type {HTMLInputElement} */ ($('login-password')).focus();
        return;
      }
      input.select();
    } catch {
      errorBox.textContent = 'Could not reach the server. Check your connection and try again.';
    } finally {
      button.disabled = false;
      button.removeAttribute('aria-busy');
    }
  });
}

// ---------------------------------------------------------------------------------------
// /account: the "Two-step sign-in" section.

const SVG_NS = 'http://www.w3.org/2000/svg';
const SVG_ELEMENTS = new Set(['svg', 'rect', 'path', 'g']);
const SVG_ATTRIBUTES = new Set(['xmlns', 'version', 'width', 'height', 'viewBox', 'x', 'y', 'd', 'fill', 'stroke', 'shape-rendering']);

/**
 * The server's QR code SVG as DOM nodes: parsed as XML (nothing runs), then rebuilt keeping
 * only drawing elements and attributes. The page's CSP (`default-src 'self'`) allows no
 * `data:` images, and inline SVG needs none.
 * @param {string} source
 * @returns {SVGElement | null}
 */
export function safeSvg(source) {
  const doc = new DOMParser().parseFromString(source, 'image/svg+xml');
  if (doc.getElementsByTagName('parsererror').length) return null;
  /** @param {Element} from @returns {Element | null} */
  const copy = (from) => {
    if (from.namespaceURI !== SVG_NS || !SVG_ELEMENTS.has(from.localName)) return null;
    const to = document.createElementNS(SVG_NS, from.localName);
    for (const a of from.attributes) if (SVG_ATTRIBUTES.has(a.name)) to.setAttribute(a.name, a.value);
    for (const child of from.children) {
      const c = copy(child);
      if (c) to.append(c);
    }
    return to;
  };
  const svg = copy(doc.documentElement);
  return svg instanceof SVGElement ? svg : null;
}

/**
 * Wires the section. `secureFetch` is the client's (401 → refresh → sign-in page).
 * @param {(url: string, options?: RequestInit) => Promise<Response>} secureFetch
 */
export function mountMfaSection(secureFetch) {
  const section = $('mfa-section');
  const errorBox = $('mfa-error');
  const statusBox = $('mfa-status');
  const state = $('mfa-state');
  const start = /** @type {HTMLButtonElement} */ ($('totp-start'));
  const enrol = $('totp-enrol');
  const confirmForm = /** @type {HTMLFormElement} */ ($('totp-confirm-form'));
  const codeInput = /** @type {HTMLInputElement} */ ($('totp-code'));
  const disable = /** @type {HTMLButtonElement} */ ($('totp-disable'));
  const regenerate = /** @type {HTMLButtonElement} */ ($('recovery-regenerate'));
  const reauthForm = /** @type {HTMLFormElement} */ ($('reauth-form'));
  const reauthPassword = /** @type {HTMLInputElement} */ ($('reauth-password'));
  /** What to do again once reauthenticated. @type {null | (() => Promise<void>)} */
  let again = null;

  const say = (/** @type {HTMLElement} */ box, /** @type {string} */ t) => {
    (box === errorBox ? statusBox : errorBox).textContent = '';
    box.textContent = t;
  };

  /**
   * Runs `action`; when the server wants a recent sign-in, asks for the password first and
   * runs it again after.
   * @param {() => Promise<Response | null>} action null when it handled its own answer
   * @param {(res: Response) => Promise<void>} done on 2xx
   */
  async function guarded(action, done) {
    say(errorBox, '');
    try {
      const res = await action();
      if (!res || res.status === 401) return;
      if (res.ok) return void (await done(res));
      const p = await problem(res);
      if (p.code === 'reauthentication_required') {
        again = () => guarded(action, done);
        reauthForm.hidden = false;
        say(statusBox, 'For your security, confirm your password to change two-step sign-in.');
        reauthPassword.focus();
        return;
      }
      say(errorBox, text(p, res.status));
    } catch {
      say(errorBox, 'Could not reach the server. Check your connection and try again.');
    }
  }

  async function refresh() {
    const res = await secureFetch('/api/v1/auth/mfa', { cache: 'no-store' });
    if (!res.ok) return;
    const s = await res.json();
    state.textContent = s.totp
      ? `On: an authenticator app. ${s.recovery_codes_left} recovery code${s.recovery_codes_left === 1 ? '' : 's'} left.`
      : 'Off: signing in needs only your password.';
    state.dataset.on = String(Boolean(s.totp));
    start.hidden = Boolean(s.totp);
    disable.hidden = !s.totp;
    regenerate.hidden = !s.totp;
    section.hidden = false;
  }

  /** @param {string[]} codes */
  function showCodes(codes) {
    const list = $('recovery-codes');
    list.replaceChildren(
      ...codes.map((c) => {
        const li = document.createElement('li');
        const code = document.createElement('code');
        code.textContent = c;
        li.append(code);
        return li;
      }),
    );
    $('recovery-box').hidden = false;
  }

  start.addEventListener('click', () =>
    guarded(
      () => secureFetch('/api/v1/auth/mfa/totp/setup', { method: 'POST' }),
      async (res) => {
        const s = await res.json();
        const qr = $('totp-qr');
        const svg = safeSvg(String(s.qr_svg));
        qr.replaceChildren(...(svg ? [svg] : []));
        svg?.setAttribute('role', 'img');
        svg?.setAttribute('aria-label', 'QR code for your authenticator app');
        $('totp-secret').textContent = String(s.secret).replace(/(.{4})(?=.)/g, '$1 ');
        enrol.hidden = false;
        start.hidden = true;
        codeInput.focus();
      },
    ),
  );

  confirmForm.addEventListener('submit', (event) => {
    event.preventDefault();
    guarded(
      () =>
        secureFetch('/api/v1/auth/mfa/totp/confirm', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ code: codeInput.value }),
        }),
      async (res) => {
        const { recovery_codes } = await res.json();
        enrol.hidden = true;
        confirmForm.reset();
        showCodes(recovery_codes);
        say(statusBox, 'Two-step sign-in is on. Save the recovery codes below: they are shown only now.');
        await refresh();
      },
    );
  });

  disable.addEventListener('click', () =>
    guarded(
      () => secureFetch('/api/v1/auth/mfa/totp', { method: 'DELETE' }),
      async () => {
        $('recovery-box').hidden = true;
        say(statusBox, 'Two-step sign-in is off.');
        await refresh();
      },
    ),
  );

  regenerate.addEventListener('click', () =>
    guarded(
      () => secureFetch('/api/v1/auth/mfa/recovery-codes', { method: 'POST' }),
      async (res) => {
        showCodes((await res.json()).recovery_codes);
        say(statusBox, 'New recovery codes: the old ones no longer work. Save these now.');
        await refresh();
      },
    ),
  );

  reauthForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      const res = await secureFetch('/api/v1/auth/reauthenticate', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ method: 'password', password: reauthPassword.value }),
      });
      if (res.status === 401) return;
      if (!res.ok) {
        say(errorBox, text(await problem(res), res.status));
        return;
      }
      reauthForm.reset();
      reauthForm.hidden = true;
      say(statusBox, '');
      const next = again;
      again = null;
      await next?.();
    } catch {
      say(errorBox, 'Could not reach the server. Check your connection and try again.');
    }
  });

  refresh().catch(() => {});
}

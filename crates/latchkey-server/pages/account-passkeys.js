// The passkeys section of /account (SPEC 11): list, add, rename, remove. Served at
// /static/account-passkeys.js; the WebAuthn ceremony itself is /client/latchkey-passkeys.js.
import { secureFetch } from '/client/latchkey.js';
import { PasskeyError, isSupported, reauthenticateWithPasskey, registerPasskey } from '/client/latchkey-passkeys.js';
import { busy, jsonPost, link, problemOf, retryText, say } from './flows.js';

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const section = $('passkeys-section');
const list = /** @type {HTMLUListElement} */ ($('passkeys'));
const errorBox = $('passkeys-error');
const statusBox = $('passkeys-status');
const form = /** @type {HTMLFormElement} */ ($('passkey-add-form'));
const nameInput = /** @type {HTMLInputElement} */ ($('passkey-name'));
const addButton = /** @type {HTMLButtonElement} */ ($('passkey-add'));

const MESSAGES = {
  cancelled: 'No passkey was added: the request was cancelled or timed out.',
  passkey_exists: 'This device or security key already holds a passkey for your account.',
  passkey_invalid: 'The passkey could not be verified. Please try again.',
  passkey_challenge_expired: 'The request took too long. Please try again.',
  passkey_unknown: 'This passkey is not registered with your account.',
  passkeys_not_configured: 'Passkeys are not available on this server.',
  last_sign_in_method: 'This passkey is the only way to sign in to your account, so it cannot be removed. Add another passkey first.',
  invalid_request: 'Choose a name of at most 100 characters, without control characters.',
  unsupported: 'This browser does not support passkeys.',
  network: 'Could not reach the server. Check your connection and try again.',
};

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
/** @param {string | null | undefined} value */
const when = (value) => {
  const d = value ? new Date(value) : null;
  return d && !Number.isNaN(d.getTime()) ? dateFormat.format(d) : 'never';
};

/** How many passkeys the list shows. */
let count = 0;

/**
 * 403 reauthentication_required: with a passkey on the account, confirm with it and run
 * `again`; otherwise sign in again.
 * @param {HTMLElement} box
 * @param {string} what
 * @param {() => Promise<void>} again
 */
function askToSignInAgain(box, what, again) {
  const intro = `For your security, ${what} needs a recent sign-in, and yours was more than 10 minutes ago. `;
  if (count === 0 || !isSupported()) {
    say(box, intro, link('/login?next=%2Faccount', 'Sign in again', 'passkey-reauth-link'), ', then try once more.');
    return;
  }
  const confirm = document.createElement('button');
  confirm.type = 'button';
  confirm.className = 'secondary small';
  confirm.dataset.testid = 'passkey-reauth';
  confirm.textContent = 'Confirm with your passkey';
  confirm.addEventListener('click', () =>
    busy(confirm, async () => {
      try {
        await reauthenticateWithPasskey({ fetch: secureFetch });
        say(box);
        await again();
      } catch (error) {
        if (error instanceof PasskeyError && error.status === 401) return;
        say(box, message(error instanceof PasskeyError ? error.code : 'network', 'Could not confirm with the passkey.'));
      }
    }),
  );
  say(box, intro, confirm, ' or ', link('/login?next=%2Faccount', 'sign in again', 'passkey-reauth-link'), '.');
}

/** @param {string | undefined} code @param {string} fallback */
const message = (code, fallback) => (code && Object.hasOwn(MESSAGES, code) ? MESSAGES[/** @type {keyof typeof MESSAGES} */ (code)] : fallback);

/**
 * @typedef {{ id: string, name: string, created_at: string, last_used_at: string | null }} Passkey
 * @param {Passkey[]} passkeys
 */
function render(passkeys) {
  count = passkeys.length;
  list.replaceChildren();
  $('passkeys-empty').hidden = passkeys.length > 0;
  for (const p of passkeys) {
    const item = document.createElement('li');
    item.className = 'passkey';
    item.dataset.testid = 'passkey-row';
    item.dataset.passkeyId = p.id;
    const name = document.createElement('strong');
    name.className = 'passkey-name';
    name.dataset.testid = 'passkey-name';
    name.textContent = p.name;
    const meta = document.createElement('span');
    meta.className = 'muted';
    meta.textContent = ` · added ${when(p.created_at)} · last used ${when(p.last_used_at)}`;
    const rename = document.createElement('button');
    rename.type = 'button';
    rename.className = 'secondary small';
    rename.dataset.testid = 'passkey-rename';
    rename.textContent = 'Rename';
    rename.setAttribute('aria-label', `Rename the passkey ${p.name}`);
    rename.addEventListener('click', () => startRename(item, p));
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.className = 'danger small';
    remove.dataset.testid = 'passkey-remove';
    remove.textContent = 'Remove';
    remove.setAttribute('aria-label', `Remove the passkey ${p.name}`);
    remove.addEventListener('click', () => busy(remove, () => removePasskey(p)));
    const actions = document.createElement('span');
    actions.className = 'actions';
    actions.append(rename, ' ', remove);
    item.append(name, meta, ' ', actions);
    list.append(item);
  }
}

async function reload() {
  const res = await secureFetch('/api/v1/auth/passkeys', { cache: 'no-store' });
  if (!res.ok) return false;
  render((await res.json()).passkeys || []);
  return true;
}

/** @param {HTMLLIElement} item @param {Passkey} p */
function startRename(item, p) {
  const f = document.createElement('form');
  f.className = 'inline-form';
  f.dataset.testid = 'passkey-rename-form';
  const label = document.createElement('label');
  label.className = 'visually-hidden';
  label.htmlFor = `rename-${p.id}`;
  label.textContent = 'New name';
  const input = document.createElement('input');
  input.id = `rename-${p.id}`;
  input.maxLength = 200;
  input.value = p.name;
  input.dataset.testid = 'passkey-rename-input';
  const save = document.createElement('button');
  save.type = 'submit';
  save.className = 'small';
  save.textContent = 'Save';
  save.dataset.testid = 'passkey-rename-save';
  f.append(label, input, ' ', save);
  f.addEventListener('submit', (event) => {
    event.preventDefault();
    busy(save, async () => {
      say(errorBox);
      const res = await secureFetch(`/api/v1/auth/passkeys/${encodeURIComponent(p.id)}`, {
        ...jsonPost({ name: input.value }),
        method: 'PATCH',
      });
      if (res.status === 401) return;
      if (res.ok) {
        say(statusBox, 'Passkey renamed.');
        await reload();
        return;
      }
      const problem = await problemOf(res);
      say(errorBox, message(problem.code, `Could not rename the passkey (HTTP ${res.status}).`));
    });
  });
  item.replaceChildren(f);
  input.focus();
}

/** @param {Passkey} p */
async function removePasskey(p) {
  say(errorBox);
  say(statusBox);
  try {
    const res = await secureFetch(`/api/v1/auth/passkeys/${encodeURIComponent(p.id)}`, { method: 'DELETE' });
    if (res.status === 401) return;
    if (res.status === 204 || res.status === 404) {
      say(statusBox, `The passkey “${p.name}” was removed.`);
      await reload();
      return;
    }
    const problem = await problemOf(res);
    if (problem.code === 'reauthentication_required') askToSignInAgain(errorBox, 'removing a passkey', () => removePasskey(p));
    else say(errorBox, message(problem.code, `Could not remove the passkey (HTTP ${res.status}).`) + retryText(res));
  } catch {
    say(errorBox, MESSAGES.network);
  }
}

/** Adds a passkey named as the form says. */
async function addPasskey() {
  say(errorBox);
  say(statusBox);
  try {
    const passkey = await registerPasskey({ name: nameInput.value.trim(), fetch: secureFetch });
    form.reset();
    say(statusBox, `Passkey “${passkey.name}” added. You can now sign in with it, without your password.`);
    await reload();
  } catch (error) {
    const code = error instanceof PasskeyError ? error.code : 'network';
    if (error instanceof PasskeyError && error.status === 401) return; // onAuthFail took over
    if (code === 'reauthentication_required') askToSignInAgain(errorBox, 'adding a passkey', addPasskey);
    else say(errorBox, message(code, error instanceof Error ? error.message : 'Could not add the passkey.'));
  }
}

form.addEventListener('submit', (event) => {
  event.preventDefault();
  busy(addButton, addPasskey);
});

if (!isSupported()) {
  form.hidden = true;
  $('passkeys-unsupported').hidden = false;
}

reload()
  .then((ok) => {
    section.hidden = !ok;
  })
  .catch(() => {
    // the section stays hidden; account.js reports connection problems
  });

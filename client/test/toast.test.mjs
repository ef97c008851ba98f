// The optional toast module (client/latchkey-toast.js) in happy-dom's DOM, and its use as
// secureFetch's onAuthFail.
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { Window } from 'happy-dom';
import { fakeFetch, json, problem, captureConsole, REFRESH } from './helpers.mjs';

delete globalThis.BroadcastChannel;
const { createClient } = await import('../latchkey.js');
const { createToast, toast, toastAuthFail } = await import('../latchkey-toast.js');

let window, document, replaced, alerts, logs;
/** A fresh DOM with a focused text field, and a recording `location` at `pathname + search`. */
function page(pathname = '/account', search = '') {
  window = new Window({ url: `http://localhost${pathname}${search}` });
  document = window.document;
  document.body.innerHTML = '<main><label>Note <input id="note"></label><button id="save">Save</button></main>';
  document.getElementById('note').focus();
  Object.assign(globalThis, { window, document, HTMLElement: window.HTMLElement });
  globalThis.location = {
    pathname,
    search,
    href: `http://localhost${pathname}${search}`,
    replace: (url) => replaced.push(url),
    assign: () => assert.fail('location.assign: Back would return to the page that redirected'),
  };
}
beforeEach(() => {
  replaced = [];
  alerts = [];
  globalThis.alert = (m) => alerts.push(m);
  logs = captureConsole();
  page();
});
afterEach(async () => {
  logs.restore();
  await window.happyDOM.abort();
  await window.happyDOM.close();
  for (const name of ['window', 'document', 'HTMLElement', 'location', 'alert']) delete globalThis[name];
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const escape = (target = document.activeElement || document.body) =>
  target.dispatchEvent(new window.KeyboardEvent('keydown', { key: 'Escape', bubbles: true, cancelable: true }));
const toasts = () => [...document.querySelectorAll('.latchkey-toast')];
const signedOut = () => fakeFetch((call) => problem(401, call.path === REFRESH ? 'refresh_expired' : 'token_expired'));

test('a toast is a role=alert message with a Dismiss button, and does not take the focus', () => {
  const input = document.getElementById('note');
  const handle = toast('Saved. <b>not markup</b>');
  assert.equal(document.activeElement, input, 'the focus stays where it was');
  const [el] = toasts();
  assert.equal(el, handle.element);
  const alert = el.querySelector('[role="alert"]');
  assert.ok(alert, 'role="alert"');
  assert.equal(alert.getAttribute('aria-atomic'), 'true');
  assert.equal(alert.textContent, 'Saved. <b>not markup</b>', 'text, never HTML');
  assert.equal(alert.querySelector('b'), null);
  const close = el.querySelector('button');
  assert.equal(close.getAttribute('type'), 'button', 'never submits a form');
  assert.equal(close.getAttribute('aria-label'), 'Dismiss');
  assert.equal(el.parentElement.className, 'latchkey-toast-region');
  assert.equal(el.parentElement.parentElement, document.body);
  assert.ok(handle.open());
  handle.dismiss();
  assert.deepEqual(toasts(), []);
});

test('styled through the CSSOM (CSP-safe), or not at all with styled: false', () => {
  const region = () => document.querySelector('.latchkey-toast-region');
  createToast()('styled');
  assert.equal(region().style.position, 'fixed');
  assert.equal(toasts()[0].style.display, 'flex');
  region().remove();
  createToast({ styled: false })('plain');
  assert.equal(region().style.position, '');
  assert.equal(toasts()[0].style.display, '');
  assert.equal(toasts()[0].querySelector('.latchkey-toast-close').style.border, '');
});

test('the Dismiss button removes it; onDismiss runs once', () => {
  let dismissed = 0;
  const handle = createToast()('bye', { onDismiss: () => dismissed++ });
  handle.element.querySelector('button').click();
  assert.deepEqual(toasts(), []);
  assert.equal(handle.open(), false);
  handle.dismiss();
  assert.equal(dismissed, 1);
});

test('Escape dismisses the newest toast, one per press, and gives the focus back if it was in it', () => {
  const input = document.getElementById('note');
  const show = createToast();
  const first = show('first');
  const second = show('second');
  second.element.querySelector('button').focus();
  assert.equal(document.activeElement.className, 'latchkey-toast-close');
  escape();
  assert.deepEqual(toasts(), [first.element], 'the newest went');
  assert.equal(document.activeElement, input, 'the focus is back in the text field');
  escape(input);
  assert.deepEqual(toasts(), []);
  assert.equal(document.activeElement, input);
});

test('an Escape that something else handled (preventDefault) leaves the toast', () => {
  createToast()('stays');
  document.getElementById('note').addEventListener('keydown', (e) => e.preventDefault());
  escape();
  assert.equal(toasts().length, 1);
});

test('no Escape listener is left once every toast is gone', () => {
  const added = [];
  const removed = [];
  const { addEventListener: add, removeEventListener: remove } = document;
  document.addEventListener = (type, fn, o) => (added.push(type), add.call(document, type, fn, o));
  document.removeEventListener = (type, fn, o) => (removed.push(type), remove.call(document, type, fn, o));
  const show = createToast();
  const a = show('a');
  const b = show('b');
  a.dismiss();
  assert.deepEqual(removed, []);
  b.dismiss();
  assert.deepEqual(added, ['keydown']);
  assert.deepEqual(removed, ['keydown']);
});

test('timeoutMs dismisses by itself', async () => {
  const handle = createToast({ timeoutMs: 20 })('soon gone');
  assert.ok(handle.open());
  await sleep(60);
  assert.equal(handle.open(), false);
  assert.deepEqual(toasts(), []);
});

test('an action is a real link', () => {
  let clicked = 0;
  const { element } = toast('Saved', { action: { label: 'Undo', href: '/undo', onClick: () => clicked++ } });
  const link = element.querySelector('a.latchkey-toast-action');
  assert.equal(link.getAttribute('href'), '/undo');
  assert.equal(link.textContent, 'Undo');
  link.dispatchEvent(new window.MouseEvent('click', { bubbles: true, cancelable: true }));
  assert.equal(clicked, 1);
});

test('toastAuthFail as onAuthFail: one toast for all waiting calls, no alert, focus kept, then /login?next=… after the delay', async () => {
  page('/account', '?tab=sessions');
  const input = document.getElementById('note');
  const fake = signedOut();
  const { secureFetch } = createClient({ fetch: fake.fetch, onAuthFail: toastAuthFail({ delayMs: 50 }) });
  const responses = await Promise.all([1, 2, 3].map((i) => secureFetch(`/api/v1/x/${i}`)));
  for (const res of responses) assert.equal(res.status, 401);
  assert.equal(fake.count(REFRESH), 1);
  assert.deepEqual(alerts, [], 'the default alert() is not used');
  assert.equal(toasts().length, 1);
  const [el] = toasts();
  assert.equal(el.querySelector('[role="alert"]').textContent, 'Session expired. Please log in again.');
  assert.equal(el.querySelector('a').getAttribute('href'), '/login?next=%2Faccount%3Ftab%3Dsessions');
  assert.equal(document.activeElement, input);
  assert.deepEqual(replaced, [], 'not at once');
  await sleep(120);
  assert.deepEqual(replaced, ['/login?next=%2Faccount%3Ftab%3Dsessions']);
});

test('toastAuthFail: a click on "Log in" goes at once (replace); a modified click is left to the browser', () => {
  toastAuthFail({ delayMs: Infinity })();
  const link = toasts()[0].querySelector('a');
  const ctrl = new window.MouseEvent('click', { bubbles: true, cancelable: true, ctrlKey: true });
  link.dispatchEvent(ctrl);
  assert.deepEqual(replaced, []);
  const plain = new window.MouseEvent('click', { bubbles: true, cancelable: true });
  link.dispatchEvent(plain);
  assert.equal(plain.defaultPrevented, true);
  assert.deepEqual(replaced, ['/login?next=%2Faccount']);
});

test('toastAuthFail: dismissing cancels the navigation; the next failure shows it again', async () => {
  const onAuthFail = toastAuthFail({ delayMs: 40, loginPath: '/signin' });
  onAuthFail();
  onAuthFail(); // still shown: not a second toast
  assert.equal(toasts().length, 1);
  escape();
  assert.deepEqual(toasts(), []);
  await sleep(100);
  assert.deepEqual(replaced, [], 'the person stays on the page');
  onAuthFail();
  assert.equal(toasts().length, 1);
  await sleep(100);
  assert.deepEqual(replaced, ['/signin?next=%2Faccount']);
});

test('toastAuthFail does nothing on the login page', () => {
  page('/login', '?next=%2Faccount');
  toastAuthFail({ delayMs: 0 })();
  assert.deepEqual(toasts(), []);
  assert.deepEqual(replaced, []);
});

test('a 403 reauthentication_required never reaches the toast', async () => {
  const fake = fakeFetch(() => problem(403, 'reauthentication_required'));
  const { secureFetch } = createClient({ fetch: fake.fetch, onAuthFail: toastAuthFail() });
  assert.equal((await secureFetch('/api/v1/auth/password/change', { method: 'POST', body: '{}' })).status, 403);
  assert.deepEqual(toasts(), []);
});

test('a successful refresh shows no toast', async () => {
  let ok = false;
  const fake = fakeFetch((call) => (call.path === REFRESH ? ((ok = true), json(200)) : ok ? json(200) : problem(401, 'token_expired')));
  const { secureFetch } = createClient({ fetch: fake.fetch, onAuthFail: toastAuthFail() });
  assert.equal((await secureFetch('/api/v1/me')).status, 200);
  assert.deepEqual(toasts(), []);
});

test('a toast that the page removed itself does not stop Escape from reaching the next one', () => {
  const show = createToast();
  show('removed by the page');
  document.querySelector('.latchkey-toast-region').remove();
  const next = show('next');
  escape();
  assert.equal(next.open(), false);
});

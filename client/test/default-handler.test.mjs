// The default onAuthFail and the module-level secureFetch (SPEC section 9).
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { fakeFetch, json, problem, captureConsole, REFRESH } from './helpers.mjs';

delete globalThis.BroadcastChannel;
const { createClient, secureFetch } = await import('../latchkey.js');

let logs, alerts, assigned;
/** Fakes the browser globals the default handler uses. */
function page(pathname, search = '') {
  globalThis.location = {
    pathname,
    search,
    href: `http://localhost${pathname}${search}`,
    replace: (url) => assigned.push(url),
    assign: () => assert.fail('location.assign: Back would return to the page that redirected'),
  };
}
beforeEach(() => {
  logs = captureConsole();
  alerts = [];
  assigned = [];
  globalThis.alert = (message) => alerts.push(message);
});
afterEach(() => {
  logs.restore();
  delete globalThis.alert;
  delete globalThis.location;
});

const signedOut = () => fakeFetch((call) => problem(401, call.path === REFRESH ? 'refresh_expired' : 'token_expired'));

test('default onAuthFail: one alert, then /login?next=<path and query>, for all waiting calls', async () => {
  page('/account', '?tab=sessions&x=a b');
  const fake = signedOut();
  const client = createClient({ fetch: fake.fetch });
  const responses = await Promise.all([1, 2, 3].map((i) => client.secureFetch(`/api/v1/x/${i}`)));
  for (const res of responses) assert.equal(res.status, 401);
  assert.deepEqual(alerts, ['Session expired. Please log in again.']);
  assert.deepEqual(assigned, ['/login?next=' + encodeURIComponent('/account?tab=sessions&x=a b')]);
  assert.equal(assigned[0], '/login?next=%2Faccount%3Ftab%3Dsessions%26x%3Da%20b');
});

test('default onAuthFail after a second 401 on the retry', async () => {
  page('/account');
  const fake = fakeFetch((call) => (call.path === REFRESH ? json(200) : problem(401, 'session_revoked')));
  const res = await createClient({ fetch: fake.fetch }).secureFetch('/api/v1/me');
  assert.equal(res.status, 401);
  assert.deepEqual(alerts, ['Session expired. Please log in again.']);
  assert.deepEqual(assigned, ['/login?next=%2Faccount']);
});

test('default onAuthFail does nothing on the login page (no alert, no navigation)', async () => {
  page('/login', '?next=%2Faccount');
  const res = await createClient({ fetch: signedOut().fetch }).secureFetch('/api/v1/me');
  assert.equal(res.status, 401);
  assert.deepEqual(alerts, []);
  assert.deepEqual(assigned, []);
});

test('loginUrl option: used for the redirect and for the "already there" check', async () => {
  page('/account');
  await createClient({ fetch: signedOut().fetch, loginUrl: '/signin' }).secureFetch('/api/v1/me');
  assert.deepEqual(assigned, ['/signin?next=%2Faccount']);
  page('/signin');
  await createClient({ fetch: signedOut().fetch, loginUrl: '/signin' }).secureFetch('/api/v1/me');
  assert.equal(alerts.length, 1);
  assert.equal(assigned.length, 1);
});

test('a client onAuthFail replaces the default (no alert, no navigation)', async () => {
  page('/');
  let called = 0;
  await createClient({ fetch: signedOut().fetch, onAuthFail: () => called++ }).secureFetch('/api/v1/me');
  assert.equal(called, 1);
  assert.deepEqual(alerts, []);
  assert.deepEqual(assigned, []);
});

test('module-level secureFetch uses the global fetch (looked up at call time) and the default handler', async () => {
  page('/account');
  const original = globalThis.fetch;
  const fake = signedOut();
  globalThis.fetch = fake.fetch; // the test stubs it; the module never does
  try {
    const res = await secureFetch('/api/v1/me');
    assert.equal(res.status, 401);
    assert.deepEqual(fake.calls.map((c) => [c.path, c.init.credentials]), [
      ['/api/v1/me', 'include'],
      [REFRESH, 'include'],
    ]);
    assert.deepEqual(alerts, ['Session expired. Please log in again.']);
    let mine = 0;
    await secureFetch('/api/v1/me', {}, () => mine++);
    assert.equal(mine, 1);
    assert.equal(alerts.length, 1);
  } finally {
    globalThis.fetch = original;
  }
});

test('default onAuthFail: a 403 reauthentication_required shows no alert and does not navigate', async () => {
  page('/account');
  const fake = fakeFetch(() => problem(403, 'reauthentication_required'));
  const res = await createClient({ fetch: fake.fetch }).secureFetch('/api/v1/auth/password/change', { method: 'POST', body: '{}' });
  assert.equal(res.status, 403);
  assert.equal(fake.count(REFRESH), 0);
  assert.deepEqual(alerts, []);
  assert.deepEqual(assigned, []);
  assert.deepEqual(logs.logged, []);
});

test('default onAuthFail: a refresh answering 403 alerts once and goes to /login', async () => {
  page('/account');
  const fake = fakeFetch((call) => (call.path === REFRESH ? problem(403, 'cross_origin_rejected') : problem(401, 'token_expired')));
  const res = await createClient({ fetch: fake.fetch }).secureFetch('/api/v1/me');
  assert.equal(res.status, 401);
  assert.deepEqual(alerts, ['Session expired. Please log in again.']);
  assert.deepEqual(assigned, ['/login?next=%2Faccount']);
});

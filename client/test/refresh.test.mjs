// Single-flight refresh, retry and the failure paths (SPEC section 9).
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { deferred, fakeApi, fakeFetch, json, problem, tick, captureConsole, REFRESH } from './helpers.mjs';

delete globalThis.BroadcastChannel; // one "tab" per test; see broadcast.test.mjs for several
const { createClient } = await import('../latchkey.js');

let logs;
beforeEach(() => (logs = captureConsole()));
afterEach(() => logs.restore());

test('100 concurrent calls failing with 401 make exactly one refresh, and all succeed', async () => {
  const api = fakeApi();
  const onAuthFail = () => assert.fail('onAuthFail must not run');
  const { secureFetch } = createClient({ fetch: api.fetch, onAuthFail });
  const responses = await Promise.all(Array.from({ length: 100 }, (_, i) => secureFetch(`/api/v1/items/${i}`)));
  assert.equal(api.count(REFRESH), 1);
  for (const [i, res] of responses.entries()) {
    assert.equal(res.status, 200);
    assert.equal((await res.json()).path, `/api/v1/items/${i}`);
  }
  assert.equal(api.calls.length, 100 + 1 + 100); // first tries, one refresh, one retry each
  const refresh = api.calls.find((c) => c.path === REFRESH);
  assert.equal(refresh.method, 'POST');
  assert.equal(refresh.credentials, 'include');
});

test('a later failure starts a new refresh once the previous one has settled', async () => {
  const api = fakeApi();
  const { secureFetch } = createClient({ fetch: api.fetch });
  assert.equal((await secureFetch('/api/v1/me')).status, 200);
  api.state.valid = false; // the new access token expired too
  await tick(5);
  assert.equal((await secureFetch('/api/v1/me')).status, 200);
  assert.equal(api.count(REFRESH), 2);
});

test('a 401 again after a successful refresh calls onAuthFail once and resolves with that 401', async () => {
  const fake = fakeFetch((call) => (call.path === REFRESH ? json(200) : problem(401, 'session_revoked')));
  let failures = 0;
  const { secureFetch } = createClient({ fetch: fake.fetch, onAuthFail: () => failures++ });
  const responses = await Promise.all(Array.from({ length: 5 }, () => secureFetch('/api/v1/me')));
  assert.equal(failures, 1);
  assert.equal(fake.count(REFRESH), 1);
  assert.equal(fake.count('/api/v1/me'), 10); // tried once, retried once, never more
  const retries = fake.calls.filter((c) => c.path === '/api/v1/me').slice(5);
  responses.forEach((res, i) => {
    assert.equal(res.status, 401);
    assert.equal(res, retries[i].response);
  });
});

for (const status of [401, 403]) {
  test(`refresh answering ${status}: onAuthFail once for all waiters, each resolves with its original 401`, async () => {
    const fake = fakeFetch(async (call) => {
      if (call.path === REFRESH) {
        await tick(5);
        return problem(status, 'refresh_invalid');
      }
      return problem(401, 'token_expired');
    });
    let failures = 0;
    const { secureFetch } = createClient({ fetch: fake.fetch, onAuthFail: () => failures++ });
    const responses = await Promise.all(Array.from({ length: 20 }, (_, i) => secureFetch(`/api/v1/x/${i}`)));
    assert.equal(failures, 1);
    assert.equal(fake.count(REFRESH), 1);
    assert.equal(fake.calls.length, 21); // no retries
    responses.forEach((res, i) => {
      assert.equal(res.status, 401);
      assert.equal(res, fake.calls.find((c) => c.path === `/api/v1/x/${i}`).response);
    });
  });
}

test('a per-call onAuthFail overrides the client one, and each distinct handler runs once', async () => {
  const fake = fakeFetch((call) => problem(401, call.path === REFRESH ? 'refresh_missing' : 'token_missing'));
  const seen = [];
  const { secureFetch } = createClient({ fetch: fake.fetch, onAuthFail: () => seen.push('client') });
  const mine = () => seen.push('call');
  await Promise.all([secureFetch('/a', {}, mine), secureFetch('/b', {}, mine), secureFetch('/c')]);
  assert.deepEqual(seen.sort(), ['call', 'client']);
  assert.equal(fake.count(REFRESH), 1);
});

const refreshFailures = {
  'a network error': () => Promise.reject(new TypeError('fetch failed')),
  'a 500': () => problem(500, 'internal'),
  'a 503': () => problem(503, 'unavailable'),
  'a 429': () => problem(429, 'rate_limited'),
};
for (const [name, answer] of Object.entries(refreshFailures)) {
  test(`refresh failing with ${name} rejects the waiting calls, keeps the session, no onAuthFail`, async () => {
    let refreshes = 0;
    const fake = fakeFetch(async (call) => {
      if (call.path === REFRESH) {
        await tick(2);
        return ++refreshes === 1 ? answer() : json(200);
      }
      return refreshes >= 2 ? json(200) : problem(401, 'token_expired');
    });
    const { secureFetch } = createClient({ fetch: fake.fetch, onAuthFail: () => assert.fail('not a logout') });
    const results = await Promise.allSettled(Array.from({ length: 10 }, () => secureFetch('/api/v1/me')));
    assert.equal(fake.count(REFRESH), 1);
    for (const r of results) {
      assert.equal(r.status, 'rejected');
      assert.ok(r.reason instanceof Error);
      assert.match(r.reason.message, /refresh failed/);
      assert.ok(r.reason.cause instanceof Error, 'cause attached');
    }
    assert.equal(fake.count('/api/v1/me'), 10); // no retry after a failed refresh
    // The session was kept: the next 401 tries again and succeeds.
    assert.equal((await secureFetch('/api/v1/me')).status, 200);
    assert.equal(fake.count(REFRESH), 2);
  });
}

test('the refresh call has its own timeout', async () => {
  const fake = fakeFetch((call) => (call.path === REFRESH ? new Promise(() => {}) : problem(401, 'token_expired')));
  const { secureFetch } = createClient({
    fetch: fake.fetch,
    refreshTimeoutMs: 50,
    onAuthFail: () => assert.fail('a timeout is not a logout'),
  });
  // AbortSignal.timeout's timer does not keep Node's event loop alive (browsers have no such notion).
  const keepAlive = setTimeout(() => {}, 5000);
  const started = Date.now();
  const results = await Promise.allSettled([secureFetch('/a'), secureFetch('/b')]);
  clearTimeout(keepAlive);
  const elapsed = Date.now() - started;
  assert.ok(elapsed >= 45 && elapsed < 2000, `took ${elapsed} ms`);
  for (const r of results) {
    assert.equal(r.status, 'rejected');
    assert.match(r.reason.message, /refresh failed/);
    assert.equal(r.reason.cause.name, 'TimeoutError');
  }
  const refresh = fake.calls.find((c) => c.path === REFRESH);
  assert.ok(refresh.init.signal instanceof AbortSignal);
  assert.equal(fake.count(REFRESH), 1);
});

test('the default refresh timeout is 10 s', async () => {
  const originalTimeout = AbortSignal.timeout;
  const asked = [];
  AbortSignal.timeout = (ms) => (asked.push(ms), originalTimeout.call(AbortSignal, ms));
  try {
    const api = fakeApi();
    await createClient({ fetch: api.fetch }).secureFetch('/api/v1/me');
    assert.deepEqual(asked, [10000]);
  } finally {
    AbortSignal.timeout = originalTimeout;
  }
});

test('a 401 arriving after this page completed a refresh (request sent before) retries without refreshing again', async () => {
  const slow = deferred();
  let valid = false;
  let slowCalls = 0;
  const fake = fakeFetch(async (call) => {
    if (call.path === REFRESH) return (valid = true), json(200);
    if (call.path === '/slow' && ++slowCalls === 1) {
      await slow.promise;
      return problem(401, 'token_expired'); // was sent with the old token
    }
    return valid ? json(200) : problem(401, 'token_expired');
  });
  const { secureFetch } = createClient({ fetch: fake.fetch, onAuthFail: () => assert.fail('no logout') });
  const pending = secureFetch('/slow');
  await tick(2); // let /slow be sent first
  assert.equal((await secureFetch('/fast')).status, 200); // refreshes
  slow.resolve();
  assert.equal((await pending).status, 200);
  assert.equal(fake.count(REFRESH), 1);
  assert.equal(slowCalls, 2);
});

test('a 401 arriving after this page saw the refresh denied does not ask again nor alert twice', async () => {
  const slow = deferred();
  const fake = fakeFetch(async (call) => {
    if (call.path === '/slow') await slow.promise;
    return problem(401, call.path === REFRESH ? 'refresh_expired' : 'token_expired');
  });
  let failures = 0;
  const { secureFetch } = createClient({ fetch: fake.fetch, onAuthFail: () => failures++ });
  const pending = secureFetch('/slow');
  await tick(2);
  assert.equal((await secureFetch('/fast')).status, 401);
  slow.resolve();
  const late = await pending;
  assert.equal(late.status, 401);
  assert.equal(late, fake.calls.find((c) => c.path === '/slow').response);
  assert.equal(fake.count(REFRESH), 1);
  assert.equal(failures, 1);
});

test('the warning is exactly the one line, once per handled 401, and nothing else is logged', async () => {
  const api = fakeApi();
  const { secureFetch } = createClient({ fetch: api.fetch });
  await Promise.all([secureFetch('/a'), secureFetch('/b')]);
  await secureFetch('/c'); // 200 now: no warning
  assert.deepEqual(logs.logged, [
    ['warn', 'Access token expired or invalid \u2013 attempting refresh.'],
    ['warn', 'Access token expired or invalid \u2013 attempting refresh.'],
  ]);
});

// What is sent, what is returned untouched, bodies, abort, globals (SPEC section 9).
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { deferred, fakeApi, fakeFetch, json, problem, tick, captureConsole, REFRESH } from './helpers.mjs';

delete globalThis.BroadcastChannel;
const globalFetch = globalThis.fetch;
const globalsBefore = Object.getOwnPropertyNames(globalThis).sort();
const { createClient } = await import('../latchkey.js');

let logs;
beforeEach(() => (logs = captureConsole()));
afterEach(() => logs.restore());

const noAuthFail = () => assert.fail('onAuthFail must not run');

test('credentials: include is always sent, whatever the caller passed, on tries, retries and refresh', async () => {
  const api = fakeApi();
  const { secureFetch } = createClient({ fetch: api.fetch, onAuthFail: noAuthFail });
  await secureFetch('/api/v1/a', { credentials: 'omit' });
  await secureFetch('/api/v1/b', { credentials: 'same-origin', method: 'PUT', body: 'x' });
  await secureFetch(new Request('http://localhost/api/v1/c', { credentials: 'omit' }));
  assert.ok(api.calls.length >= 4);
  for (const call of api.calls) assert.equal(call.init.credentials, 'include', call.path);
});

test('the caller options are passed through and not mutated', async () => {
  const api = fakeApi({ expired: false });
  const { secureFetch } = createClient({ fetch: api.fetch });
  const options = { method: 'PATCH', headers: { 'x-test': '1' }, body: '{}', cache: 'no-store' };
  const frozen = Object.freeze({ ...options });
  await secureFetch('/api/v1/x', frozen);
  const { init } = api.calls[0];
  assert.equal(init.method, 'PATCH');
  assert.deepEqual(init.headers, { 'x-test': '1' });
  assert.equal(init.cache, 'no-store');
  assert.equal(frozen.credentials, undefined);
});

for (const [status, code] of [[403, 'cross_origin_rejected'], [404, 'not_found'], [500, 'internal'], [429, 'rate_limited'], [204, null], [200, null]]) {
  test(`a ${status} is returned as is, without refresh`, async () => {
    const fake = fakeFetch(() => (code ? problem(status, code) : new Response(null, { status })));
    const { secureFetch } = createClient({ fetch: fake.fetch, onAuthFail: noAuthFail });
    const res = await secureFetch('/api/v1/thing', { method: 'DELETE' });
    assert.equal(res, fake.calls[0].response);
    assert.equal(fake.calls.length, 1);
    assert.equal(fake.count(REFRESH), 0);
    assert.deepEqual(logs.logged, []);
  });
}

const excluded = [
  '/api/v1/auth/refresh',
  '/api/v1/auth/login',
  '/api/v1/auth/signup',
  '/api/v1/auth/logout',
  '/api/v1/auth/login?x=1',
  '/api/v1/auth/logout/',
  'http://localhost/api/v1/auth/login',
  // SPEC 9 and 11: re-authentication, the second step of a sign-in, passkey sign-in.
  '/api/v1/auth/mfa/verify',
  '/api/v1/auth/mfa/verify/',
  '/api/v1/auth/mfa/passkey/start',
  '/api/v1/auth/mfa/passkey/finish',
  '/api/v1/auth/passkeys/login/start',
  '/api/v1/auth/passkeys/login/finish',
  'http://localhost/api/v1/auth/passkeys/login/finish?x=1',
];
for (const url of excluded) {
  test(`a 401 from ${url} is returned as is and never triggers a refresh`, async () => {
    const fake = fakeFetch(() => problem(401, 'invalid_credentials'));
    const { secureFetch } = createClient({ fetch: fake.fetch, onAuthFail: noAuthFail });
    const res = await secureFetch(url, { method: 'POST', body: '{"email":"a@b.c","password":"x"}' });
    assert.equal(res.status, 401);
    assert.equal(res, fake.calls[0].response);
    assert.equal(fake.calls.length, 1);
    assert.deepEqual(logs.logged, []);
  });
}

for (const [method, url] of [
  ['POST', '/api/v1/auth/logout-all'],
  ['GET', '/api/v1/auth/sessions'],
  ['DELETE', '/api/v1/auth/sessions/abc'],
  ['GET', '/api/v1/auth/login-history'],
  ['GET', '/api/v1/me'],
  // Signed-in endpoints next to the excluded ones (SPEC 11): enrolment and passkey management.
  ['POST', '/api/v1/auth/mfa/totp/setup'],
  ['POST', '/api/v1/auth/mfa/totp/confirm'],
  ['GET', '/api/v1/auth/mfa'],
  ['DELETE', '/api/v1/auth/mfa/totp'],
  ['POST', '/api/v1/auth/mfa/recovery-codes'],
  ['GET', '/api/v1/auth/passkeys'],
  ['POST', '/api/v1/auth/passkeys/register/start'],
  ['PATCH', '/api/v1/auth/passkeys/login-key'],
  ['POST', '/api/v1/auth/reauthenticate-later'],
  ['POST', '/api/v1/auth/reauthenticate'],
  ['POST', '/api/v1/auth/reauthenticate/passkey/start'],
  ['GET', '/api/v1/auth/loginx'],
]) {
  test(`a 401 from ${method} ${url} (needs an access token) is refreshed and retried`, async () => {
    const api = fakeApi();
    const { secureFetch } = createClient({ fetch: api.fetch, onAuthFail: noAuthFail });
    assert.equal((await secureFetch(url, { method })).status, 200);
    assert.deepEqual(api.calls.map((c) => c.path), [new URL(url, 'http://x').pathname, REFRESH, new URL(url, 'http://x').pathname]);
  });
}

test('a 401 from a custom refreshUrl is not refreshed either, and that URL is the one refreshed', async () => {
  let valid = false;
  const api = fakeFetch((call) => (call.path === '/auth/renew' ? ((valid = true), json(200)) : valid ? json(200) : problem(401, 'token_expired')));
  const { secureFetch } = createClient({ fetch: api.fetch, refreshUrl: '/auth/renew', onAuthFail: noAuthFail });
  assert.equal((await secureFetch('/api/v1/me')).status, 200);
  assert.deepEqual(api.calls.map((c) => c.path), ['/api/v1/me', '/auth/renew', '/api/v1/me']);
  const fake = fakeFetch(() => problem(401, 'refresh_missing'));
  const res = await createClient({ fetch: fake.fetch, refreshUrl: '/auth/renew' }).secureFetch('/auth/renew', { method: 'POST' });
  assert.equal(res.status, 401);
  assert.equal(fake.calls.length, 1);
});

/** The bodies that must be retried intact, with what the server must receive. */
const bodies = {
  'a JSON string': () => [JSON.stringify({ email: 'ada@example.com', n: [1, 2, 3], s: 'é–€' }), '{"email":"ada@example.com","n":[1,2,3],"s":"é–€"}'],
  URLSearchParams: () => [new URLSearchParams({ a: '1', b: 'two words&more' }), 'a=1&b=two+words%26more'],
  'a Blob': () => [new Blob(['blob-', 'bytes'], { type: 'text/plain' }), 'blob-bytes'],
  'an ArrayBuffer': () => [new TextEncoder().encode('array buffer').buffer, 'array buffer'],
  'a Uint8Array': () => [new TextEncoder().encode('typed array'), 'typed array'],
};
for (const [name, make] of Object.entries(bodies)) {
  test(`a POST with ${name} is retried with the same bytes`, async () => {
    const api = fakeApi();
    const { secureFetch } = createClient({ fetch: api.fetch, onAuthFail: noAuthFail });
    const [body, expected] = make();
    const res = await secureFetch('/api/v1/things', { method: 'POST', body, headers: { 'content-type': 'text/plain' } });
    assert.equal(res.status, 200);
    const sends = api.calls.filter((c) => c.path === '/api/v1/things');
    assert.equal(sends.length, 2);
    for (const send of sends) {
      assert.equal(send.method, 'POST');
      assert.equal(send.text, expected);
    }
    assert.equal((await res.json()).body, expected);
  });
}

test('a POST with FormData (fields and a file) is retried intact', async () => {
  const api = fakeApi();
  const { secureFetch } = createClient({ fetch: api.fetch, onAuthFail: noAuthFail });
  const form = new FormData();
  form.append('name', 'Ada');
  form.append('avatar', new Blob(['PNG…bytes']), 'a.png');
  assert.equal((await secureFetch('/api/v1/upload', { method: 'POST', body: form })).status, 200);
  const sends = api.calls.filter((c) => c.path === '/api/v1/upload');
  assert.equal(sends.length, 2);
  for (const send of sends) {
    assert.equal(send.form.length, 2);
    assert.deepEqual(send.form[0], ['name', 'Ada']);
    assert.equal(send.form[1][0], 'avatar');
    assert.equal(send.form[1][1].name, 'a.png');
    assert.equal(await send.form[1][1].text(), 'PNG…bytes');
  }
  // The multipart bytes a real fetch would send are the same too (up to the random boundary).
  const multipart = async (fd) => {
    const r = new Response(fd);
    const boundary = r.headers.get('content-type').split('boundary=')[1];
    return (await r.text()).replaceAll(boundary, 'B');
  };
  assert.equal(await multipart(sends[1].rawBody), await multipart(sends[0].rawBody));
});

test('a Request object (with a body) is cloned before the first send and retried intact', async () => {
  const api = fakeApi();
  const { secureFetch } = createClient({ fetch: api.fetch, onAuthFail: noAuthFail });
  const request = new Request('http://localhost/api/v1/things', {
    method: 'POST',
    body: '{"a":1}',
    headers: { 'content-type': 'application/json' },
  });
  const res = await secureFetch(request);
  assert.equal(res.status, 200);
  const sends = api.calls.filter((c) => c.path === '/api/v1/things');
  assert.equal(sends.length, 2);
  for (const send of sends) {
    assert.equal(send.method, 'POST');
    assert.equal(send.text, '{"a":1}');
    assert.notEqual(send.input, request, 'a clone was sent');
  }
  assert.equal(request.bodyUsed, false);
});

test('a ReadableStream body cannot be replayed: the 401 comes back, no refresh, no retry', async () => {
  const fake = fakeFetch(() => problem(401, 'token_expired'));
  const { secureFetch } = createClient({ fetch: fake.fetch, onAuthFail: noAuthFail });
  const body = new ReadableStream({
    start(c) {
      c.enqueue(new TextEncoder().encode('chunk'));
      c.close();
    },
  });
  const res = await secureFetch('/api/v1/upload', { method: 'POST', body, duplex: 'half' });
  assert.equal(res.status, 401);
  assert.equal(res, fake.calls[0].response);
  assert.equal(fake.calls.length, 1);
  assert.equal(fake.count(REFRESH), 0);
});

test('an already aborted signal rejects with AbortError before anything is sent', async () => {
  const fake = fakeFetch(() => json(200));
  const { secureFetch } = createClient({ fetch: fake.fetch });
  const controller = new AbortController();
  controller.abort();
  await assert.rejects(secureFetch('/api/v1/me', { signal: controller.signal }), { name: 'AbortError' });
  const request = new Request('http://localhost/api/v1/me', { signal: controller.signal });
  await assert.rejects(secureFetch(request), { name: 'AbortError' });
  assert.equal(fake.calls.length, 0);
});

test('aborting while waiting on the refresh rejects that call only; the others proceed', async () => {
  const gate = deferred();
  const api = fakeApi({ refresh: async () => (await gate.promise, json(200)) });
  const { secureFetch } = createClient({ fetch: api.fetch, onAuthFail: noAuthFail });
  const controller = new AbortController();
  const aborted = secureFetch('/api/v1/aborted', { signal: controller.signal });
  const others = [secureFetch('/api/v1/one'), secureFetch('/api/v1/two')];
  await tick(10); // all three are now waiting on the refresh
  assert.equal(api.count(REFRESH), 1);
  controller.abort();
  await assert.rejects(aborted, { name: 'AbortError' });
  gate.resolve();
  for (const res of await Promise.all(others)) assert.equal(res.status, 200);
  assert.equal(api.count(REFRESH), 1);
  assert.equal(api.count('/api/v1/aborted'), 1, 'the aborted call is not retried');
});

test('aborting during the retry rejects with AbortError as fetch does', async () => {
  const controller = new AbortController();
  const fake = fakeFetch(async (call) => {
    if (call.path === REFRESH) return json(200);
    if (fake.count('/slow') === 1) return problem(401, 'token_expired');
    controller.abort();
    return new Promise(() => {});
  });
  const { secureFetch } = createClient({ fetch: fake.fetch });
  await assert.rejects(secureFetch('/slow', { signal: controller.signal }), { name: 'AbortError' });
});

test('network errors of the request itself reject as fetch does', async () => {
  const fake = fakeFetch(() => Promise.reject(new TypeError('fetch failed')));
  const { secureFetch } = createClient({ fetch: fake.fetch });
  await assert.rejects(secureFetch('/api/v1/me'), TypeError);
});

test('the global fetch is never replaced and no global is added', async () => {
  const api = fakeApi();
  const client = createClient({ fetch: api.fetch });
  await client.secureFetch('/api/v1/me');
  assert.equal(globalThis.fetch, globalFetch);
  const { secureFetch } = await import('../latchkey.js');
  assert.equal(typeof secureFetch, 'function');
  assert.equal(globalThis.fetch, globalFetch);
  assert.deepEqual(Object.getOwnPropertyNames(globalThis).sort(), globalsBefore);
});

// SPEC 11: a 403 `reauthentication_required` asks the caller to re-authenticate (a password
// or code prompt): it is not an expired session. No refresh, no warning, no onAuthFail.
const sensitive = [
  ['POST', '/api/v1/auth/password/change'],
  ['POST', '/api/v1/auth/email/change'],
  ['POST', '/api/v1/auth/mfa/totp/setup'],
  ['POST', '/api/v1/auth/passkeys/register/start'],
  ['DELETE', '/api/v1/auth/passkeys/abc'],
];
for (const [method, url] of sensitive) {
  test(`a 403 reauthentication_required from ${method} ${url} is the caller's business`, async () => {
    const fake = fakeFetch(() => problem(403, 'reauthentication_required'));
    const { secureFetch } = createClient({ fetch: fake.fetch, onAuthFail: noAuthFail });
    const res = await secureFetch(url, { method, body: method === 'DELETE' ? undefined : '{}' });
    assert.equal(res, fake.calls[0].response, 'the very response fetch gave');
    assert.equal(res.status, 403);
    assert.equal((await res.json()).code, 'reauthentication_required', 'its body is unread');
    assert.deepEqual(fake.calls.map((c) => c.path), [url]);
    assert.deepEqual(logs.logged, []);
  });
}

test('a retry answered 403 reauthentication_required after a refresh resolves with it, no onAuthFail', async () => {
  // Expired access token on a sensitive action: refresh, retry, and then the server asks for
  // a recent authentication (refresh keeps auth_time): the page prompts, not a sign-out.
  let refreshed = false;
  const fake = fakeFetch((call) => {
    if (call.path === REFRESH) return (refreshed = true), json(200);
    return refreshed ? problem(403, 'reauthentication_required') : problem(401, 'token_expired');
  });
  const { secureFetch } = createClient({ fetch: fake.fetch, onAuthFail: noAuthFail });
  const res = await secureFetch('/api/v1/auth/password/change', { method: 'POST', body: '{"current_password":"a","new_password":"b"}' });
  assert.equal(res.status, 403);
  assert.equal((await res.json()).code, 'reauthentication_required');
  assert.deepEqual(fake.calls.map((c) => c.path), ['/api/v1/auth/password/change', REFRESH, '/api/v1/auth/password/change']);
  assert.equal(fake.calls[2].text, fake.calls[0].text, 'the retry sent the same body');
});

for (const code of ['reauthentication_required', 'cross_origin_rejected']) {
  test(`a refresh answering 403 ${code} still ends the session: onAuthFail once, the caller gets its 401`, async () => {
    const fake = fakeFetch((call) => (call.path === REFRESH ? problem(403, code) : problem(401, 'token_expired')));
    let failures = 0;
    const { secureFetch } = createClient({ fetch: fake.fetch, onAuthFail: () => failures++ });
    const [a, b] = await Promise.all([secureFetch('/api/v1/me'), secureFetch('/api/v1/auth/sessions')]);
    assert.equal(failures, 1);
    assert.equal(a.status, 401);
    assert.equal(b.status, 401);
    assert.equal(fake.count(REFRESH), 1);
    assert.equal(fake.calls.length, 3, 'no retry');
  });
}

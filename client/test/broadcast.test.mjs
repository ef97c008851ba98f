// Across tabs: a refresh another tab just completed is reused (SPEC section 9).
// Two clients in one process stand for two tabs; Node 20 has a global BroadcastChannel.
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { deferred, fakeFetch, json, problem, tick, captureConsole, REFRESH } from './helpers.mjs';

const { createClient } = await import('../latchkey.js');

let logs;
beforeEach(() => (logs = captureConsole()));
afterEach(() => logs.restore());

/** One server (and cookie jar) shared by the tabs: requests sent before a refresh carry the old token. */
function sharedServer() {
  const state = { generation: 0 };
  const gates = new Map(); // path -> deferred: hold the answer of that path's first request
  const fake = fakeFetch(async (call) => {
    if (call.path === REFRESH) {
      state.generation++;
      return json(200);
    }
    const sentWith = state.generation;
    const gate = gates.get(call.path);
    if (gate) {
      gates.delete(call.path);
      await gate.promise;
    }
    return sentWith > 0 ? json(200) : problem(401, 'token_expired');
  });
  return Object.assign(fake, { state, gates });
}

test('a tab whose request failed before another tab refreshed reuses that refresh', async () => {
  const server = sharedServer();
  const tabA = createClient({ fetch: server.fetch });
  const tabB = createClient({ fetch: server.fetch });
  const hold = deferred();
  server.gates.set('/b', hold);
  const pendingB = tabB.secureFetch('/b'); // sent now, with the old token
  await tick(5);
  assert.equal((await tabA.secureFetch('/a')).status, 200); // tab A refreshes
  await tick(20); // the announcement reaches tab B
  hold.resolve(); // tab B's 401 arrives only now
  const res = await pendingB;
  assert.equal(res.status, 200);
  assert.equal(server.count(REFRESH), 1, 'tab B did not refresh again');
  assert.equal(server.count('/b'), 2, 'tab B retried');
});

test('an announcement older than the failing request does not stop the tab from refreshing', async () => {
  const server = sharedServer();
  const tabA = createClient({ fetch: server.fetch });
  const tabB = createClient({ fetch: server.fetch });
  await tabA.secureFetch('/a'); // refresh #1, announced
  await tick(20);
  server.state.generation = 0; // that access token expired meanwhile
  await tick(5);
  const res = await tabB.secureFetch('/b'); // sent after the announcement
  assert.equal(res.status, 200);
  assert.equal(server.count(REFRESH), 2);
});

test('an announcement that is not recent any more (> 2 s) is not reused', async () => {
  const server = sharedServer();
  const tabB = createClient({ fetch: server.fetch });
  const announcer = new BroadcastChannel('latchkey-auth');
  const hold = deferred();
  server.gates.set('/b', hold);
  const pendingB = tabB.secureFetch('/b');
  await tick(5);
  const realNow = Date.now;
  try {
    announcer.postMessage({ type: 'refreshed', at: Date.now() });
    await tick(20);
    Date.now = () => realNow() + 3000; // the 401 arrives three seconds later
    hold.resolve();
    assert.equal((await pendingB).status, 200);
  } finally {
    Date.now = realNow;
    announcer.close();
  }
  assert.equal(server.count(REFRESH), 1, 'tab B refreshed itself');
});

test('refreshing tabs announce on BroadcastChannel "latchkey-auth" with a timestamp', async () => {
  const server = sharedServer();
  const listener = new BroadcastChannel('latchkey-auth');
  const heard = [];
  listener.onmessage = (e) => heard.push(e.data);
  try {
    const before = Date.now();
    await createClient({ fetch: server.fetch }).secureFetch('/a');
    await tick(20);
    assert.equal(heard.length, 1);
    assert.equal(heard[0].type, 'refreshed');
    assert.ok(heard[0].at >= before && heard[0].at <= Date.now());
  } finally {
    listener.close();
  }
});

test('foreign or malformed messages on the channel are ignored', async () => {
  const server = sharedServer();
  const tab = createClient({ fetch: server.fetch });
  const other = new BroadcastChannel('latchkey-auth');
  const hold = deferred();
  server.gates.set('/b', hold);
  try {
    const pending = tab.secureFetch('/b');
    await tick(5);
    for (const junk of [null, 'refreshed', { type: 'other', at: Date.now() }, { type: 'refreshed', at: 'soon' }]) other.postMessage(junk);
    await tick(20);
    hold.resolve();
    assert.equal((await pending).status, 200);
    assert.equal(server.count(REFRESH), 1, 'refreshed itself');
  } finally {
    other.close();
  }
});

test('two tabs failing at the same time each refresh (no cross-tab lock), and both succeed', async () => {
  const server = sharedServer();
  const tabs = [createClient({ fetch: server.fetch }), createClient({ fetch: server.fetch })];
  const responses = await Promise.all(tabs.map((t, i) => t.secureFetch(`/t${i}`)));
  for (const res of responses) assert.equal(res.status, 200);
  assert.ok(server.count(REFRESH) <= 2);
});

test('works without BroadcastChannel', async () => {
  const saved = globalThis.BroadcastChannel;
  delete globalThis.BroadcastChannel;
  try {
    const server = sharedServer();
    const tab = createClient({ fetch: server.fetch });
    assert.equal((await tab.secureFetch('/a')).status, 200);
    assert.equal(server.count(REFRESH), 1);
  } finally {
    globalThis.BroadcastChannel = saved;
  }
});

test('the library never uses navigator.locks', async () => {
  const source = await (await import('node:fs/promises')).readFile(new URL('../latchkey.js', import.meta.url), 'utf8');
  assert.doesNotMatch(source, /navigator\s*\.\s*locks|\.locks\b/);
});

// Finding 1 (issue 9): the login page's `next` rule (pages/next.js) against the one table of
// cases that the server's rule (crates/latchkey/src/oidc/next.rs) is tested with too.
// Run: node --test crates/latchkey-server/pages/test/
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { loginPageNext, safeNext } from '../next.js';

const table = JSON.parse(readFileSync(new URL('../../../latchkey/src/oidc/next_cases.json', import.meta.url), 'utf8'));
const ORIGIN = 'http://127.0.0.1:8080';

test('finding 1: the table holds 50+ refused values and the kept paths', () => {
  assert.ok(table.cases.filter((c) => c.expected === null).length >= 50);
  assert.ok(table.cases.some((c) => c.expected !== null));
});

test('finding 1: safeNext agrees with the shared table on every case', () => {
  const wrong = [];
  for (const { input, expected } of table.cases) {
    const got = safeNext(input, ORIGIN);
    if (got !== expected) wrong.push({ input, expected, got });
  }
  assert.deepEqual(wrong, []);
});

test('finding 1: whatever safeNext keeps stays on the origin when the browser follows it', () => {
  for (const { input } of table.cases) {
    const got = safeNext(input, ORIGIN);
    if (got === null) continue;
    const to = new URL(got, ORIGIN);
    assert.equal(to.origin, ORIGIN, JSON.stringify(input));
    assert.equal(to.href.slice(ORIGIN.length), got, `${JSON.stringify(input)}: already resolved`);
  }
});

test('finding 1: the rule does not depend on the origin it is given', () => {
  for (const origin of ['https://auth.example', 'http://localhost:8080', 'http://[::1]:3000']) {
    for (const { input, expected } of table.cases) assert.equal(safeNext(input, origin), expected, `${origin} ${JSON.stringify(input)}`);
  }
});

test('finding 1: the login page goes to /account for a refused value and for /login (no loop)', () => {
  for (const { input, expected } of table.cases) {
    const want = expected === null || new URL(expected, ORIGIN).pathname === '/login' ? '/account' : expected;
    assert.equal(loginPageNext(input, ORIGIN), want, JSON.stringify(input));
  }
  for (const login of ['/login', '/login?next=/account', '/a/../login', '/%2e/login', '/login#x'])
    assert.equal(loginPageNext(login, ORIGIN), '/account', login);
  assert.equal(loginPageNext('/account?tab=sessions', ORIGIN), '/account?tab=sessions');
});

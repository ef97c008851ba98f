// The pure parts of pages/flows.js, shared by the email pages (SPEC 10).
// Run: node --test crates/latchkey-server/pages/test/
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MESSAGES, messageIn, tokenFromHash } from '../flows.js';

const TOKEN = 'q3J0aW1lLXRva2VuLWJhc2U2NHVybF9zaGFwZS0wMTIz'; // 43+ characters of base64url

test('tokenFromHash takes the token of #token=…, with or without the #', () => {
  assert.equal(tokenFromHash(`#token=${TOKEN}`), TOKEN);
  assert.equal(tokenFromHash(`token=${TOKEN}`), TOKEN);
  assert.equal(tokenFromHash(`#utm=x&token=${TOKEN}`), TOKEN);
  // Percent-encoding (a mail client may add it) is undone.
  assert.equal(tokenFromHash('#token=a%2Db_c'), 'a-b_c');
});

test('tokenFromHash: no token, an empty one, or one that cannot be a token is null', () => {
  for (const hash of ['', '#', '#token=', '#tok=abc', '#token', '#token=a%20b', '#token=a%0Ab', `#token=${'a'.repeat(513)}`, null, undefined]) {
    assert.equal(tokenFromHash(/** @type {any} */ (hash)), null, String(hash));
  }
});

test('messageIn shows known codes only, else the fallback', () => {
  assert.equal(messageIn(MESSAGES, 'invalid_email', 'x'), MESSAGES.invalid_email);
  assert.equal(messageIn(MESSAGES, 'toString', 'fallback'), 'fallback');
  assert.equal(messageIn(MESSAGES, '__proto__', 'fallback'), 'fallback');
  assert.equal(messageIn(MESSAGES, undefined, 'fallback'), 'fallback');
});

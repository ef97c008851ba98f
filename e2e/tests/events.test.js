// SPEC 12: "Recent security activity" on /account — the latest events, newest first, in text
// only, with no CSP violation, console error or script error.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, newEmail, signInThroughPage, startServer, watch } from '../lib/harness.js';

let server, browser;
before(async () => {
  server = await startServer('events');
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

test('the account page lists the latest security events, newest first', async () => {
  const email = newEmail('events');
  const context = await browser.newContext();
  const page = await context.newPage();
  const seen = watch(page);
  await signInThroughPage(page, server.url, { email, signup: true });
  const items = page.locator('#events li[data-testid="event"]');
  await items.first().waitFor();
  assert.deepEqual(await items.evaluateAll((els) => els.map((e) => e.dataset.type)), ['login_succeeded', 'signup']);
  assert.match(await items.first().innerText(), /^Signed in · .+ · 127\.0\.0\.1$/);

  // A wrong password for this account, from elsewhere: on the list after a reload, first.
  const res = await fetch(`${server.url}/api/v1/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', origin: server.url },
    body: JSON.stringify({ email, password: 'not the password at all' }),
  });
  assert.equal(res.status, 401);
  // (Recorded just after the answer: reload until it shows, a few times at most.)
  for (let i = 0; i < 5; i++) {
    await page.reload();
    await items.first().waitFor();
    if ((await items.first().getAttribute('data-type')) === 'login_failed') break;
  }
  assert.equal(await items.first().getAttribute('data-type'), 'login_failed');
  assert.match(await items.first().innerText(), /^Failed sign-in attempt/);
  assert.ok(await page.locator('#events-empty').isHidden());
  assert.equal(await page.locator('#events-error').innerText(), '');
  // (/login's passkey request answers 404 on 127.0.0.1, where passkeys are off: not ours.)
  assert.deepEqual(seen.consoleErrors.filter((e) => e.includes('/account')), []);
  assert.deepEqual(seen.pageErrors, []);
  await context.close();
});

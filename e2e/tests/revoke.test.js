// Test 4: a session revoked from another browser: the first page's next call alerts once and
// goes to /login?next=….
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, newEmail, signInThroughPage, sleep, startServer, watch } from '../lib/harness.js';

let server, browser;
before(async () => {
  server = await startServer('revoke');
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

test('revoking a session from another browser logs the first page out with one alert', async (t) => {
  const email = newEmail('revoke');
  // Browser A: signs up, reads its account.
  const contextA = await browser.newContext();
  const pageA = await contextA.newPage();
  const seenA = watch(pageA);
  await signInThroughPage(pageA, server.url, { email, signup: true });
  await pageA.locator('#me-email').filter({ hasText: email }).waitFor();
  const sidA = await pageA.locator('#sessions tbody tr[data-current="true"]').getAttribute('data-session-id');
  assert.ok(sidA);

  // Browser B: the same person signs in, and revokes A's session on /account.
  const contextB = await browser.newContext();
  const pageB = await contextB.newPage();
  const seenB = watch(pageB);
  await signInThroughPage(pageB, server.url, { email });
  const rowA = pageB.locator(`#sessions tbody tr[data-session-id="${sidA}"]`);
  await rowA.waitFor();
  assert.equal(await rowA.getAttribute('data-current'), 'false');
  await rowA.getByRole('button', { name: /Revoke/ }).click();
  await pageB.locator('#status').filter({ hasText: 'Session revoked' }).waitFor();
  await rowA.waitFor({ state: 'detached' });
  // A's access cookie may still be alive (TTL 2 s): the server must refuse it anyway.
  const cookiesA = await contextA.cookies();
  const accessStillThere = cookiesA.some((c) => c.name === 'access_token');

  // A's next calls (three at once, as a page loading several things would make):
  // one alert, then /login?next=%2Faccount.
  assert.deepEqual(seenA.dialogs, []);
  seenA.reset();
  const landed = pageA.waitForURL((url) => url.pathname === '/login', { timeout: 15_000 });
  await pageA.evaluate(() => {
    // Not awaited: the page navigates away while these settle.
    import('/client/latchkey.js').then(({ secureFetch }) => Promise.all([1, 2, 3].map(() => secureFetch('/api/v1/me'))));
  });
  await landed;
  await pageA.waitForLoadState('load');
  await sleep(500); // time for a second alert, if there were one
  assert.deepEqual(seenA.dialogs, ['alert: Session expired. Please log in again.'], 'exactly one alert');
  const url = new URL(pageA.url());
  assert.equal(url.pathname + url.search, '/login?next=%2Faccount');
  assert.ok(await pageA.locator('#login-form').isVisible());

  // What the server said, in order: the revoked access token (if still sent) → 401, the refresh → 401.
  const me = seenA.responses.filter((r) => r.path === '/api/v1/me').map((r) => r.status);
  const refresh = seenA.responses.filter((r) => r.path === '/api/v1/auth/refresh').map((r) => r.status);
  t.diagnostic(`A's access cookie was ${accessStillThere ? 'still' : 'no longer'} sent; /me answered ${me}, refresh ${refresh}`);
  // Each answered call was refused and none was retried. On a loaded machine a call can still
  // be in flight when the failed refresh navigates to /login; the browser then cancels it, so
  // fewer than three answers may be seen (never a 200, never a fourth).
  assert.ok(me.length >= 1 && me.length <= 3 && me.every((s) => s === 401), `the calls were refused, and not retried: ${me}`);
  assert.deepEqual(refresh, [401], 'one refresh, refused');
  assert.equal((await contextA.cookies()).filter((c) => c.name.endsWith('token')).length, 0, 'the failed refresh cleared both cookies');

  // The login page replaced /account in the history: Back does not bounce through it again.
  await pageA.goBack();
  await pageA.waitForLoadState('load');
  await sleep(500);
  assert.equal(new URL(pageA.url()).pathname, '/login', 'Back goes to the page before /account');
  assert.equal(seenA.dialogs.length, 1, 'no second alert after Back');

  // B is unaffected.
  const statusB = await pageB.evaluate(async () => (await (await import('/client/latchkey.js')).secureFetch('/api/v1/me')).status);
  assert.equal(statusB, 200);
  assert.deepEqual(seenB.dialogs, []);
  await contextA.close();
  await contextB.close();
});

// Tests 2 and 3: silent refresh after the access token expired — one refresh for 20 parallel
// calls of a page; two tabs of one browser expiring together keep working without reuse alarms.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  fireSecureFetch,
  launchBrowser,
  metric,
  newEmail,
  refreshesAll,
  refreshesOk,
  signInThroughPage,
  startServer,
  waitForAccessExpiry,
  watch,
} from '../lib/harness.js';

const WARNING = 'Access token expired or invalid – attempting refresh.';

let server, browser;
before(async () => {
  server = await startServer('refresh');
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

const reuseDetected = async () => metric(await server.metrics(), 'latchkey_refresh_reuse_detected_total') ?? 0;

test('20 parallel secureFetch calls after expiry: all succeed, exactly one refresh', async (t) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const seen = watch(page);
  const email = newEmail('parallel');
  await signInThroughPage(page, server.url, { email, signup: true });
  await page.locator('#me-email').filter({ hasText: email }).waitFor();

  await waitForAccessExpiry(context);
  seen.reset();
  const before = await server.metrics();

  const statuses = await fireSecureFetch(page, { n: 20 });

  const afterText = await server.metrics();
  const logged = seen.refreshRequests().length;
  const counted = refreshesOk(afterText) - refreshesOk(before);
  const all = refreshesAll(afterText) - refreshesAll(before);
  t.diagnostic(`refreshes: ${logged} in the request log, ${counted} answered 200 by the server (${all} in all)`);

  assert.deepEqual(statuses, Array(20).fill(200), 'every call succeeds');
  assert.equal(logged, 1, 'one POST /api/v1/auth/refresh in the request log');
  assert.equal(counted, 1, 'one refresh answered 200 by the server');
  assert.equal(all, 1, 'no other refresh request reached the server');
  // The calls really did find the access token expired: 20 answered 401, then 20 retries.
  const me = seen.responses.filter((r) => r.path === '/api/v1/me');
  assert.equal(me.filter((r) => r.status === 401).length, 20, 'the first 20 calls were answered 401');
  assert.equal(me.filter((r) => r.status === 200).length, 20, 'the 20 retries were answered 200');
  assert.equal(seen.warnings.filter((w) => w === WARNING).length, 20, 'one warning per failed call');
  assert.deepEqual(seen.dialogs, []);
  assert.match(page.url(), /\/account$/);
  await context.close();
});

test('two tabs expiring together both keep working: no refresh_reused, at most two refreshes, no logout', async (t) => {
  const context = await browser.newContext();
  const seen = watch(context);
  const tab1 = await context.newPage();
  const email = newEmail('tabs');
  await signInThroughPage(tab1, server.url, { email, signup: true });
  const tab2 = await context.newPage();
  await tab2.goto(server.url + '/account');
  for (const tab of [tab1, tab2]) await tab.locator('#me-email').filter({ hasText: email }).waitFor();
  const reuseBefore = await reuseDetected();

  // Three rounds: the refresh token that the cookie jar keeps after a race must keep working.
  const counts = [];
  for (let round = 1; round <= 3; round++) {
    await waitForAccessExpiry(context);
    seen.reset();
    const before = await server.metrics();
    // Both tabs fire at the same wall-clock moment (same machine, same clock).
    const at = Date.now() + 400;
    // Few calls first: Chromium opens at most 6 connections per host, and more calls queue the
    // refreshes behind them (then the second tab's refresh comes after the first's, not with it).
    const n = [1, 2, 5][round - 1];
    const [s1, s2] = await Promise.all([fireSecureFetch(tab1, { n, at }), fireSecureFetch(tab2, { n, at })]);
    const afterText = await server.metrics();
    const refreshes = seen.refreshRequests();
    const refreshStatuses = seen.responses.filter((r) => r.path === '/api/v1/auth/refresh').map((r) => r.status);
    const ok = refreshesOk(afterText) - refreshesOk(before);
    const grace = (metric(afterText, 'latchkey_refreshes_total', { kind: 'grace' }) ?? 0) - (metric(before, 'latchkey_refreshes_total', { kind: 'grace' }) ?? 0);
    counts.push(refreshes.length);
    t.diagnostic(
      `round ${round} (${n} call(s) per tab): ${refreshes.length} refresh request(s) (tab1 ${seen.refreshRequests(tab1).length}, tab2 ${seen.refreshRequests(tab2).length}), ` +
        `statuses ${JSON.stringify(refreshStatuses)}, server counted ${ok} × 200 (${grace} within the reuse grace)`,
    );

    assert.deepEqual(s1, Array(n).fill(200), `round ${round}: tab 1 keeps working`);
    assert.deepEqual(s2, Array(n).fill(200), `round ${round}: tab 2 keeps working`);
    assert.ok(refreshes.length >= 1 && refreshes.length <= 2, `round ${round}: 1 or 2 refreshes, saw ${refreshes.length}`);
    assert.ok(refreshStatuses.every((s) => s === 200), `round ${round}: every refresh answered 200: ${refreshStatuses}`);
    assert.equal(ok, refreshes.length, `round ${round}: the server answered each refresh with 200`);
  }

  const reuse = await reuseDetected();
  assert.equal(reuse - reuseBefore, 0, 'latchkey_refresh_reuse_detected_total did not grow');
  assert.doesNotMatch(server.log(), /refresh_reused|reuse detected/i);
  assert.deepEqual(seen.dialogs, [], 'no "Session expired" alert');
  for (const tab of [tab1, tab2]) assert.match(tab.url(), /\/account$/, 'no navigation to /login');
  // And the session is still alive for a page load after all that.
  await tab1.reload();
  await tab1.locator('#me-email').filter({ hasText: email }).waitFor();
  t.diagnostic(`refreshes per round: ${counts.join(', ')}`);
  await context.close();
});

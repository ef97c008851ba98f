// Tests 7 and 8: security headers of the pages, no CSP violation or console error on /login and
// /account, and screenshots of both (e2e/artifacts/) to look at.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, newEmail, screenshot, signInThroughPage, startServer, watch } from '../lib/harness.js';

let server, browser;
before(async () => {
  server = await startServer('pages');
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Collects CSP violations reported in the page (they also appear as console errors). */
async function cspWatch(context) {
  await context.addInitScript(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(`${e.violatedDirective}: ${e.blockedURI} (${e.sourceFile}:${e.lineNumber})`));
  });
}

test('pages carry the security headers of SPEC 8 and are never cached', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  for (const path of ['/', '/login', '/account', '/login?error=oauth_denied', '/forgot-password', '/reset-password', '/verify-email', '/confirm-email']) {
    // (Not a navigation: signed out, /account would go on to /login.)
    const res = await page.request.get(server.url + path);
    const h = res.headers();
    assert.equal(res.status(), 200, path);
    assert.match(h['content-type'], /^text\/html/, `${path} content-type`);
    assert.match(h['content-security-policy'] || '', /(^|;)\s*frame-ancestors 'none'\s*(;|$)/, `${path} CSP frame-ancestors`);
    assert.match(h['content-security-policy'] || '', /(^|;)\s*default-src 'self'/, `${path} CSP default-src`);
    assert.doesNotMatch(h['content-security-policy'] || '', /unsafe-inline|unsafe-eval/, `${path} CSP without unsafe-*`);
    assert.equal(h['x-content-type-options'], 'nosniff', `${path} nosniff`);
    assert.equal(h['referrer-policy'], 'same-origin', `${path} Referrer-Policy`);
    assert.match(h['cache-control'] || '', /no-store/, `${path} Cache-Control`);
  }
  for (const [path, type] of [
    ['/client/latchkey.js', /^text\/javascript/],
    ['/static/account.js', /^text\/javascript/],
    ['/static/flows.js', /^text\/javascript/],
    ['/static/reset-password.js', /^text\/javascript/],
    ['/static/style.css', /^text\/css/],
  ]) {
    const res = await page.request.get(server.url + path);
    assert.equal(res.status(), 200, path);
    assert.match(res.headers()['content-type'], type, `${path} content-type`);
    assert.equal(res.headers()['x-content-type-options'], 'nosniff', `${path} nosniff`);
  }
  await context.close();
});

test('no CSP violation, console error or script error on /login and /account; screenshots', async (t) => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await cspWatch(context);
  const page = await context.newPage();
  const seen = watch(page);
  const csp = [];
  const collect = async () => csp.push(...(await page.evaluate(() => window.__csp)));

  await page.goto(server.url + '/login');
  await page.locator('#login-form').waitFor();
  await page.evaluate(() => document.fonts.ready);
  await collect();
  await screenshot(page, 'login.png');

  const email = newEmail('looks');
  await signInThroughPage(page, server.url, { email, name: 'Grace Hopper', signup: true });
  // A second session (another browser) so that the table shows a Revoke button.
  const other = await browser.newContext();
  await signInThroughPage(await other.newPage(), server.url, { email });
  await page.reload();
  await page.locator('#sessions tbody tr').nth(1).waitFor();
  await page.locator('#me-email').filter({ hasText: email }).waitFor();
  await collect();
  await screenshot(page, 'account.png');

  // Narrow screen (phone) and an error message on the login page.
  await page.setViewportSize({ width: 390, height: 844 });
  await screenshot(page, 'account-narrow.png');
  await page.goto(server.url + '/login?error=oauth_state_mismatch');
  await page.locator('#error').filter({ hasText: 'Google' }).waitFor();
  await collect();
  await screenshot(page, 'login-narrow-error.png');
  await page.goto(server.url + '/');
  await page.locator('#status[data-state="signed-in"]').waitFor();
  await collect();
  await screenshot(page, 'home-narrow.png');

  // Dark mode (the pages follow the system's colour scheme).
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.goto(server.url + '/account');
  await page.locator('#sessions tbody tr').nth(1).waitFor();
  await collect();
  await screenshot(page, 'account-dark.png');
  await page.goto(server.url + '/login?error=oauth_denied');
  await page.locator('#error').filter({ hasText: 'Google' }).waitFor();
  await collect();
  await screenshot(page, 'login-dark-error.png');

  assert.deepEqual(csp, [], 'CSP violations');
  assert.deepEqual(seen.consoleErrors, [], 'console errors');
  // Chromium's own "401" log lines are allowed only as the start of a silent refresh that worked.
  if (seen.expired401s.length) {
    t.diagnostic(`the access token expired during the test: Chromium logged 401 for ${seen.expired401s}`);
    assert.ok(seen.responses.some((r) => r.path === '/api/v1/auth/refresh' && r.status === 200), 'a refresh followed the 401s');
  }
  assert.deepEqual(seen.pageErrors, [], 'uncaught script errors');
  assert.deepEqual(seen.dialogs, []);
  await other.close();
  await context.close();
});

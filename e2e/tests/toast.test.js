// Issue 12: the demo account page passes the toast (client/latchkey-toast.js) as onAuthFail.
// An expired session shows a role=alert toast instead of alert(): the focus stays in the field
// being typed in, Escape and the Dismiss button close it (and cancel the redirect), and
// otherwise the page goes to /login?next=%2Faccount by itself.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, newEmail, screenshot, signInThroughPage, sleep, startServer, waitForAccessExpiry, watch } from '../lib/harness.js';

let server, browser;
before(async () => {
  server = await startServer('toast');
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

const MESSAGE = 'Session expired. Please log in again.';

test('an expired session on /account shows a dismissible toast, keeps the focus, then goes to /login', async (t) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const seen = watch(page);
  const email = newEmail('toast');
  await signInThroughPage(page, server.url, { email, signup: true });
  await page.locator('#me-email').filter({ hasText: email }).waitFor();

  // The session ends under the page: the access cookie expires, the refresh cookie is gone
  // (as after REFRESH_TOKEN_TTL), so the refresh answers 401.
  await waitForAccessExpiry(context);
  await context.clearCookies({ name: 'refresh_token' });
  seen.reset();

  const toast = page.locator('.latchkey-toast');
  const alert = page.getByRole('alert').filter({ hasText: MESSAGE });
  const focused = () => page.evaluate(() => document.activeElement?.id);
  // The person is typing in the change-password form and submits with Enter: the focus is in
  // the new-password field, and must stay there.
  const submit = async () => {
    await page.locator('#new-password').press('Enter');
    await alert.waitFor({ timeout: 15_000 });
  };
  await page.locator('#current-password').fill('correct horse battery staple');
  await page.locator('#new-password').fill('a new long passphrase');
  await page.locator('#new-password').focus();

  // 1. The toast: role=alert, styled under the page's CSP (CSSOM), focus not taken, no alert().
  await submit();
  assert.equal(await toast.count(), 1);
  assert.equal(await focused(), 'new-password', 'the focus stayed in the field');
  assert.equal(await page.locator('#new-password').inputValue(), 'a new long passphrase', 'typed input kept');
  assert.equal(await alert.getAttribute('aria-atomic'), 'true');
  assert.equal(await page.locator('.latchkey-toast-region').evaluate((el) => getComputedStyle(el).position), 'fixed');
  assert.equal(await toast.getByRole('button', { name: 'Dismiss' }).count(), 1);
  assert.equal(await toast.getByRole('link', { name: 'Log in' }).getAttribute('href'), '/login?next=%2Faccount');
  await screenshot(page, 'toast-account.png');
  assert.deepEqual(seen.dialogs, [], 'no alert()');
  assert.deepEqual(
    seen.consoleErrors.filter((e) => /Content Security Policy/i.test(e)),
    [],
    'no CSP violation',
  );
  assert.deepEqual(seen.responses.filter((r) => r.path === '/api/v1/auth/refresh').map((r) => r.status), [401]);

  // 2. Escape closes it and cancels the redirect: the page stays past the 5 s delay.
  await page.keyboard.press('Escape');
  await toast.waitFor({ state: 'detached' });
  assert.equal(await focused(), 'new-password');
  await sleep(5500);
  assert.equal(new URL(page.url()).pathname, '/account', 'a dismissed toast does not navigate');

  // 3. The next failing call shows it again; the Dismiss button closes it too.
  await submit();
  await toast.getByRole('button', { name: 'Dismiss' }).click();
  await toast.waitFor({ state: 'detached' });
  assert.equal(new URL(page.url()).pathname, '/account');

  // 4. Left alone, it goes to /login?next=%2Faccount (replacing /account in the history).
  await page.locator('#new-password').focus();
  const shownAt = Date.now();
  await submit();
  await page.waitForURL((url) => url.pathname === '/login', { timeout: 20_000 });
  t.diagnostic(`went to /login ${Date.now() - shownAt} ms after the third submit`);
  const url = new URL(page.url());
  assert.equal(url.pathname + url.search, '/login?next=%2Faccount');
  await page.locator('#login-form').waitFor();
  assert.deepEqual(seen.dialogs, [], 'never an alert()');
  assert.deepEqual(seen.pageErrors, []);
  // Every refresh was refused, and no call was answered anything but 401.
  assert.deepEqual(seen.responses.filter((r) => r.path === '/api/v1/auth/refresh').map((r) => r.status), [401, 401, 401]);
  assert.ok(seen.responses.filter((r) => r.path === '/api/v1/auth/password/change').every((r) => r.status === 401));
  await context.close();
});

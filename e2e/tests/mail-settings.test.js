// The pages under the mail settings of SPEC 2 and 10: REQUIRE_EMAIL_VERIFICATION=true (signup
// signs nobody in, login waits for the verified address), and SMTP_URL=disabled (the mail
// flows answer 404 mail_not_configured; changing the password still works).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { linkFrom, launchBrowser, newEmail, PASSWORD, screenshot, signInThroughPage, startServer, startSmtpSink, watch } from '../lib/harness.js';

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

const authCookies = async (context) => (await context.cookies()).filter((c) => c.name.endsWith('token')).map((c) => c.name);

test('REQUIRE_EMAIL_VERIFICATION=true: signup asks to open the link, login refuses until then, and the link lets the person in', async (t) => {
  const sink = await startSmtpSink('mail-required');
  const server = await startServer('mail-required', { env: { SMTP_URL: sink.smtpUrl, REQUIRE_EMAIL_VERIFICATION: 'true' } });
  t.after(async () => {
    await server.stop();
    await sink.stop();
  });
  const context = await browser.newContext();
  const page = await context.newPage();
  const seen = watch(page);
  const email = newEmail('required');

  // Sign up: 201 without cookies; the page stays and says where the link went.
  await page.goto(server.url + '/login');
  await page.locator('#signup-email').fill(email);
  await page.locator('#signup-password').fill(PASSWORD);
  const signup = page.waitForResponse((r) => new URL(r.url()).pathname === '/api/v1/auth/signup');
  await page.locator('#signup-submit').click();
  assert.equal((await signup).status(), 201);
  await page.locator('#status').filter({ hasText: `We sent a verification link to ${email}. Open it, then sign in.` }).waitFor();
  assert.match(page.url(), /\/login$/);
  assert.deepEqual(await authCookies(context), [], 'nobody is signed in');
  assert.equal(await page.locator('#login-email').inputValue(), email, 'the sign-in form is ready');
  await screenshot(page, 'login-verification-sent.png');

  // Sign in before opening the link: 403 email_unverified, explained.
  await page.locator('#login-password').fill(PASSWORD);
  const refused = page.waitForResponse((r) => new URL(r.url()).pathname === '/api/v1/auth/login');
  await page.locator('#login-submit').click();
  assert.equal((await refused).status(), 403);
  await page.locator('#error').filter({ hasText: 'not verified yet' }).waitFor();
  assert.match(page.url(), /\/login$/);
  assert.deepEqual(await authCookies(context), []);

  // The link from the mail: verified; not signed in, so the way on is "Sign in".
  const link = linkFrom(await sink.waitForMail({ to: email, subject: 'Verify your email address' }), '/verify-email');
  await page.goto(link.href);
  await page.locator('#status').filter({ hasText: 'Your email address is verified' }).waitFor();
  const next = page.locator('[data-testid="next-link"]');
  // The page shows the link only once it knows whether someone is signed in (a /me call
  // after the status line): read it when it is shown, not before (a race seen in CI).
  await next.waitFor({ state: 'visible' });
  assert.equal(await next.innerText(), 'Sign in');
  assert.equal(await next.getAttribute('href'), '/login?next=%2Faccount');
  assert.deepEqual(seen.dialogs, [], 'no "session expired" alert for someone who is not signed in');

  await Promise.all([page.waitForURL(/\/login\?next=%2Faccount$/), next.click()]);
  await signInThroughPage(page, server.url, { email, path: '/login?next=%2Faccount' });
  await page.locator('#me-verified').filter({ hasText: 'Yes' }).waitFor();
  assert.equal(await page.locator('[data-testid="unverified-banner"]').isVisible(), false);
  assert.deepEqual(seen.pageErrors, []);
  await context.close();
});

test('SMTP_URL=disabled: the mail flows say that this server sends no mail; changing the password still works', async (t) => {
  const server = await startServer('mail-disabled', { env: { SMTP_URL: 'disabled' } });
  t.after(() => server.stop());
  const context = await browser.newContext();
  const page = await context.newPage();
  const seen = watch(page);
  const email = newEmail('nomail');

  await page.goto(server.url + '/forgot-password');
  await page.getByLabel('Email').fill(email);
  const forgot = page.waitForResponse((r) => new URL(r.url()).pathname === '/api/v1/auth/password/forgot');
  await page.getByRole('button', { name: 'Send reset link' }).click();
  assert.equal((await forgot).status(), 404);
  await page.locator('#error').filter({ hasText: 'does not send email' }).waitFor();

  await signInThroughPage(page, server.url, { email, signup: true });
  await page.locator('[data-testid="unverified-banner"]').waitFor();
  await page.getByRole('button', { name: 'Resend verification email' }).click();
  await page.locator('#verify-status').filter({ hasText: 'does not send email' }).waitFor();

  await page.getByLabel('New email address').fill(newEmail('nomail-new'));
  await page.locator('#email-password').fill(PASSWORD);
  await page.locator('#email-submit').click();
  await page.locator('[data-testid="email-change-error"]').filter({ hasText: 'does not send email' }).waitFor();

  await page.locator('#current-password').fill(PASSWORD);
  await page.locator('#new-password').fill('a brand new passphrase 42');
  await page.locator('#password-submit').click();
  await page.locator('[data-testid="password-change-status"]').filter({ hasText: 'Your password was changed' }).waitFor();

  for (const [path, token] of [
    ['/verify-email', 'A'.repeat(43)],
    ['/reset-password', 'A'.repeat(43)],
  ]) {
    await page.goto(`${server.url}${path}#token=${token}`);
    if (path === '/reset-password') {
      await page.getByLabel('New password').fill('another passphrase 42');
      await page.locator('#reset-submit').click();
    }
    await page.locator('#error').filter({ hasText: 'does not send email' }).waitFor();
  }
  assert.deepEqual(seen.dialogs, []);
  assert.deepEqual(seen.pageErrors, []);
  await context.close();
});

// Tests 1 and 6: sign up and sign in through the /login forms; ?error= and ?next= handling.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { bodyText, launchBrowser, newEmail, PASSWORD, signInThroughPage, startServer, watch } from '../lib/harness.js';

let server, browser;
before(async () => {
  server = await startServer('login');
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

test('sign up, then sign in through the /login forms, and the account page shows the profile', async () => {
  const email = newEmail('person');

  // Sign up as a new person: the signup form signs in and goes to /account.
  const first = await browser.newContext();
  const page1 = await first.newPage();
  const seen1 = watch(page1);
  await signInThroughPage(page1, server.url, { email, name: 'Ada Lovelace', signup: true });
  await page1.locator('#me-email').filter({ hasText: email }).waitFor();
  assert.equal(await page1.locator('#me-name').innerText(), 'Ada Lovelace');
  assert.equal(await page1.locator('#sessions tbody tr').count(), 1);
  await first.close();

  // A wrong password is answered on the page, and the person stays there.
  const second = await browser.newContext();
  const page = await second.newPage();
  const seen = watch(page);
  await page.goto(server.url + '/login');
  await page.locator('#login-email').fill(email);
  await page.locator('#login-password').fill('not the password');
  await page.locator('#login-submit').click();
  await page.locator('#error').filter({ hasText: 'Wrong email or password.' }).waitFor();
  assert.match(page.url(), /\/login$/);

  // Sign in in another browser (a fresh context): /account with the email in the profile.
  await page.locator('#login-password').fill(PASSWORD);
  await Promise.all([page.waitForURL(/\/account$/), page.locator('#login-submit').click()]);
  await page.locator('#me-email').filter({ hasText: email }).waitFor();
  assert.equal(await page.locator('#me-email').innerText(), email);
  assert.equal(await page.locator('#me-verified').innerText(), 'No');
  assert.equal(await page.locator('#me-providers').innerText(), 'Password');
  // Two sessions now: this one (marked) and the signup's.
  await page.locator('#sessions tbody tr').nth(1).waitFor();
  assert.equal(await page.locator('#sessions tbody tr').count(), 2);
  assert.equal(await page.locator('[data-testid="this-device"]').count(), 1);
  assert.deepEqual(seen.dialogs, []);
  assert.deepEqual([...seen1.pageErrors, ...seen.pageErrors], []);
  await second.close();
});

test('?error= codes are shown as readable text, and only known codes', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const cases = {
    oauth_denied: 'Google sign-in was cancelled.',
    oauth_state_mismatch: 'Google sign-in could not be completed',
    oauth_failed: 'Google sign-in failed. Please try again.',
    email_not_verified: 'Google has not verified the email address',
  };
  for (const [code, text] of Object.entries(cases)) {
    await page.goto(`${server.url}/login?error=${code}`);
    const error = page.locator('#error');
    await error.filter({ hasText: text }).waitFor();
    assert.ok(await error.isVisible(), `${code}: the message is visible`);
    assert.doesNotMatch(await error.innerText(), new RegExp(code), `${code}: no raw code`);
  }
  // Text from the URL is never echoed into the page.
  const evil = '<img src=x onerror=alert(1)>pwned';
  await page.goto(`${server.url}/login?error=${encodeURIComponent(evil)}`);
  await page.locator('#error').filter({ hasText: 'Sign-in failed. Please try again.' }).waitFor();
  assert.doesNotMatch(await bodyText(page), /pwned/);
  assert.equal(await page.locator('#error img').count(), 0);
  // No error, no alert box.
  await page.goto(`${server.url}/login`);
  assert.equal(await page.locator('#error').isVisible(), false, 'the empty error box is hidden');
  await context.close();
});

test('?next= is honoured for a same-origin path and ignored for //evil.example', async () => {
  const email = newEmail('next');
  const context = await browser.newContext();
  const page = await context.newPage();
  const seen = watch(page);
  await signInThroughPage(page, server.url, { email, signup: true, path: '/login?next=%2F%3Fsection%3D1', expectUrl: `${server.url}/?section=1` });

  for (const next of ['//evil.example', '//evil.example/account', '/\\evil.example', 'https://evil.example/', '%2F%2Fevil.example']) {
    await signInThroughPage(page, server.url, { email, path: `/login?next=${encodeURIComponent(next)}`, expectUrl: /\/account$/ });
    assert.equal(new URL(page.url()).origin, server.url, `next=${next}`);
  }
  assert.deepEqual(seen.requests.filter((r) => new URL(r.url).origin !== server.url).map((r) => r.url), []);
  await context.close();
});

// Passkeys (SPEC 11) in a real browser: Chromium's virtual authenticator (DevTools
// `WebAuthn` domain) stands in for a phone or a security key. Register a passkey on /account,
// sign out, sign in with it (no email, no password), remove it; a removed passkey no longer
// signs in. The relying party is `localhost` (a domain name; http://localhost is a secure
// context), so this server's PUBLIC_URL uses it.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { PASSWORD, launchBrowser, newEmail, screenshot, signInThroughPage, startServer, watch } from '../lib/harness.js';

let server, browser;
before(async () => {
  server = await startServer('passkeys', { host: 'localhost' });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

/**
 * A page with a virtual platform authenticator: resident keys, user verification that
 * always succeeds, presence simulated.
 * @param {import('playwright-core').BrowserContext} context
 */
async function pageWithAuthenticator(context) {
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable', { enableUI: false });
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  const credentials = async () => (await cdp.send('WebAuthn.getCredentials', { authenticatorId })).credentials;
  return { page, credentials };
}

test('register a passkey on /account, sign out, sign in with it alone, remove it', async () => {
  const email = newEmail('passkey');
  const context = await browser.newContext();
  const { page, credentials } = await pageWithAuthenticator(context);
  const seen = watch(page);

  await signInThroughPage(page, server.url, { email, signup: true });
  await page.locator('[data-testid="passkeys-section"]').waitFor();
  await page.locator('[data-testid="passkeys-empty"]').waitFor();

  // Add one, named.
  await page.locator('[data-testid="passkey-name-input"]').fill('Test laptop');
  await page.locator('[data-testid="passkey-add"]').click();
  await page.locator('[data-testid="passkey-name"]').filter({ hasText: 'Test laptop' }).waitFor();
  assert.match(await page.locator('[data-testid="passkeys-status"]').innerText(), /added/);
  const stored = await credentials();
  assert.equal(stored.length, 1);
  assert.equal(stored[0].isResidentCredential, true, 'a discoverable credential');
  assert.equal(stored[0].rpId, 'localhost');

  // Rename it.
  await page.locator('[data-testid="passkey-rename"]').click();
  await page.locator('[data-testid="passkey-rename-input"]').fill('Work laptop');
  await page.locator('[data-testid="passkey-rename-save"]').click();
  await page.locator('[data-testid="passkey-name"]').filter({ hasText: 'Work laptop' }).waitFor();

  // Sign out. On /login, conditional UI: the page asks for a passkey with
  // `mediation: 'conditional'` at load, and the virtual authenticator (like a person
  // picking the passkey in the email field's autofill) answers it — signed in with no email
  // and no password typed.
  await Promise.all([page.waitForURL(/\/login$/), page.locator('#logout').click()]);
  await page.waitForURL(/\/account$/, { timeout: 15_000 });
  await page.locator('#me-email').filter({ hasText: email }).waitFor();
  assert.ok(seen.requests.some((r) => r.path === '/api/v1/auth/passkeys/login/finish'));

  // A browser without conditional UI: the "Sign in with a passkey" button.
  await page.addInitScript(() => {
    PublicKeyCredential.isConditionalMediationAvailable = async () => false;
  });
  await Promise.all([page.waitForURL(/\/login$/), page.locator('#logout').click()]);
  const emailInput = page.locator('#login-email');
  assert.equal(await emailInput.getAttribute('autocomplete'), 'username webauthn');
  await page.locator('[data-testid="passkey-login"]').waitFor();
  assert.equal(await emailInput.inputValue(), '');
  assert.equal(await page.locator('#login-password').inputValue(), '');
  await Promise.all([page.waitForURL(/\/account$/), page.locator('[data-testid="passkey-login"]').click()]);
  await page.locator('#me-email').filter({ hasText: email }).waitFor();
  await page.locator('[data-testid="passkey-row"]').waitFor();
  assert.doesNotMatch(await page.locator('[data-testid="passkey-row"]').innerText(), /last used never/);
  await screenshot(page, 'passkeys-account.png');

  // Remove it (the sign-in is recent): the list is empty, and the authenticator's copy no
  // longer signs in.
  await page.locator('[data-testid="passkey-remove"]').click();
  await page.locator('[data-testid="passkeys-empty"]').waitFor({ state: 'visible' });
  assert.equal(await page.locator('[data-testid="passkey-row"]').count(), 0);
  await Promise.all([page.waitForURL(/\/login$/), page.locator('#logout').click()]);
  await page.locator('[data-testid="passkey-login"]').click();
  await page.locator('#error').filter({ hasText: 'not registered here' }).waitFor();
  assert.match(page.url(), /\/login$/);

  assert.deepEqual(seen.pageErrors, []);
  assert.deepEqual(seen.dialogs, []);
  await context.close();
});

test('a password sign-in of an account with a passkey takes the passkey as second step', async () => {
  const email = newEmail('passkey-2fa');
  const context = await browser.newContext();
  const { page } = await pageWithAuthenticator(context);
  const seen = watch(page);
  // No conditional UI here, so that the password form is what signs in first.
  await page.addInitScript(() => {
    PublicKeyCredential.isConditionalMediationAvailable = async () => false;
  });
  await signInThroughPage(page, server.url, { email, signup: true });
  await page.locator('[data-testid="passkeys-section"]').waitFor();
  await page.locator('[data-testid="passkey-add"]').click();
  await page.locator('[data-testid="passkey-row"]').waitFor();
  await Promise.all([page.waitForURL(/\/login$/), page.locator('#logout').click()]);

  // The password is right: the second step offers only the passkey (no TOTP, no codes).
  await page.locator('#login-email').fill(email);
  await page.locator('#login-password').fill(PASSWORD);
  await page.locator('#login-submit').click();
  await page.locator('[data-testid="mfa-step"]').waitFor();
  await page.locator('[data-testid="mfa-passkey"]').waitFor();
  assert.equal(await page.locator('[data-testid="mfa-form"]').isVisible(), false);
  assert.equal(await page.locator('[data-testid="passkey-login"]').isVisible(), false);
  await Promise.all([page.waitForURL(/\/account$/), page.locator('[data-testid="mfa-passkey"]').click()]);
  await page.locator('#me-email').filter({ hasText: email }).waitFor();
  assert.ok(seen.requests.some((r) => r.path === '/api/v1/auth/mfa/passkey/finish'));
  assert.deepEqual(seen.pageErrors, []);
  await context.close();
});

// Issue 9, finding 4 (targeted account lockout) in a real browser: failed logins for a
// victim's address from ten other IPs must not keep the victim's own browser — which signed
// in before and holds the device cookie — from signing in through the /login page, while an
// unknown browser still waits (429, shown as "Too many attempts").
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, test } from 'node:test';
import { launchBrowser, newEmail, PASSWORD, signInThroughPage, startServer } from '../lib/harness.js';

let server, browser;
before(async () => {
  server = await startServer('lockout');
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

/** POST /api/v1/auth/login from the loopback address `from` (not 127.0.0.1); the status. */
function loginFrom(from, email, password) {
  const body = JSON.stringify({ email, password });
  const { hostname, port } = new URL(server.url);
  return new Promise((resolve, reject) => {
    const req = request(
      { host: hostname, port, path: '/api/v1/auth/login', method: 'POST', localAddress: from, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

test('finding 4: a browser that signed in before signs in at once after an attack on its address', async () => {
  const email = newEmail('victim');
  // The victim signs up in their browser, then signs out (the device cookie stays).
  const victim = await browser.newContext();
  const page = await victim.newPage();
  await signInThroughPage(page, server.url, { email, signup: true });
  const device = (await victim.cookies()).find((c) => c.name === 'device');
  assert.ok(device, 'the device cookie is set');
  assert.equal(device.httpOnly, true);
  assert.equal(device.path, '/api/v1/auth');
  await page.evaluate(() => fetch('/api/v1/auth/logout', { method: 'POST', credentials: 'include' }));

  // Ten wrong passwords from ten other addresses, then the address is limited.
  for (let i = 0; i < 10; i++) assert.equal(await loginFrom(`127.0.0.${20 + i}`, email, 'not the password'), 401);
  assert.equal(await loginFrom('127.0.0.40', email, 'not the password'), 429);

  // An unknown browser with the right password is told to wait.
  const stranger = await browser.newContext();
  const other = await stranger.newPage();
  await other.goto(server.url + '/login');
  await other.locator('#login-email').fill(email);
  await other.locator('#login-password').fill(PASSWORD);
  await other.locator('#login-submit').click();
  await other.locator('#error').filter({ hasText: 'Too many attempts' }).waitFor();
  assert.match(other.url(), /\/login$/);
  await stranger.close();

  // The victim's browser signs in through the page at once.
  const started = Date.now();
  await signInThroughPage(page, server.url, { email });
  assert.ok(Date.now() - started < 10_000);
  await page.locator('#me-email').filter({ hasText: email }).waitFor();
  await victim.close();
});

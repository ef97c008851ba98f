// Test 5: after signing out, the Back button shows no private data (pages are no-store; the
// account page reloads when restored from the back/forward cache).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { bodyText, launchBrowser, newEmail, signInThroughPage, sleep, startServer, watch } from '../lib/harness.js';

let server;
const browsers = [];
before(async () => {
  server = await startServer('logout-back');
});
after(async () => {
  for (const b of browsers) await b.close();
  await server?.stop();
});

for (const bfcache of [true, false]) {
  test(`after sign-out, Back shows no private data (back/forward cache ${bfcache ? 'on, as for users' : 'off, as Playwright defaults'})`, async (t) => {
    const browser = await launchBrowser({ bfcache });
    browsers.push(browser);
    const context = await browser.newContext();
    const page = await context.newPage();
    const seen = watch(page);
    const email = newEmail('back');
    const name = `Private Person ${bfcache}`;

    // History: /login → /account → / → /account, all signed in, all showing the email.
    await signInThroughPage(page, server.url, { email, name, signup: true });
    await page.locator('#me-email').filter({ hasText: email }).waitFor();
    await Promise.all([page.waitForURL(server.url + '/'), page.locator('header.brand a').click()]);
    await page.locator('#status').filter({ hasText: email }).waitFor();
    await Promise.all([page.waitForURL(/\/account$/), page.locator('#link-account').click()]);
    await page.locator('#me-email').filter({ hasText: email }).waitFor();

    await Promise.all([page.waitForURL(/\/login$/), page.locator('#logout').click()]);
    assert.equal((await context.cookies()).filter((c) => c.name.endsWith('token')).length, 0, 'signed out: no auth cookies');
    assert.doesNotMatch(await bodyText(page), new RegExp(email));

    // Press Back until the start of the history; no page may show the email or the name.
    const visited = [];
    for (let i = 0; i < 6; i++) {
      const res = await page.goBack({ waitUntil: 'commit' }).catch((e) => e);
      if (res === null || page.url() === 'about:blank') break;
      visited.push(new URL(page.url()).pathname);
      for (const wait of [0, 150, 1000]) {
        await sleep(wait);
        const text = await bodyText(page).catch(() => '');
        assert.doesNotMatch(text, new RegExp(`${email}|${name}`), `Back #${i + 1} (${page.url()}) after ${wait} ms shows private data`);
      }
    }
    t.diagnostic(`Back visited ${visited.join(' → ')}; dialogs: ${JSON.stringify(seen.dialogs)}`);
    assert.ok(visited.length >= 3, `went back through the history: ${visited}`);
    // The signed-out /account sends the person to /login once; Back must get past it (no loop
    // of alerts and redirects).
    assert.ok(visited.filter((p) => p === '/account').length <= 1, `Back is not trapped: ${visited}`);
    assert.ok(seen.dialogs.length <= 1, `at most one alert: ${seen.dialogs}`);
    assert.equal(visited.at(-1), '/login', 'Back reaches the first page of the history');
    await context.close();
  });
}

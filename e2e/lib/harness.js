// Shared setup of the end-to-end tests: the real `latchkey` binary on a random port with a
// fresh SQLite database, and Debian's Chromium driven by playwright-core.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const E2E_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_DIR = resolve(E2E_DIR, '..');
export const ARTIFACTS = join(E2E_DIR, 'artifacts');
export const ACCESS_TTL_S = 2;
export const PASSWORD = 'correct horse battery staple';

const BIN = process.env.LATCHKEY_BIN || join(process.env.CARGO_TARGET_DIR || join(REPO_DIR, 'target'), 'debug', 'latchkey');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--no-first-run',
  '--disable-sync',
  '--disable-quic',
];

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A free TCP port on 127.0.0.1 (the kernel picks it; tiny race until the server binds it). */
async function freePort() {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = /** @type {import('node:net').AddressInfo} */ (srv.address());
  srv.close();
  await once(srv, 'close');
  return port;
}

/**
 * Starts the server with ACCESS_TOKEN_TTL=2 on a fresh database in a temp dir (also its
 * working directory, so no stray `.env` is read). Its output goes to artifacts/<name>.server.log.
 * @param {string} name
 * @param {{ env?: Record<string, string>, host?: string }} [options] env: more variables (they
 *   win), e.g. `{ SMTP_URL: sink.smtpUrl, REQUIRE_EMAIL_VERIFICATION: 'true' }`; host: the
 *   PUBLIC_URL host the browser uses (`localhost` for passkeys, whose relying party must be
 *   a domain name), still served on 127.0.0.1
 */
export async function startServer(name, { env: extraEnv = {}, host = '127.0.0.1' } = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'latchkey-e2e-'));
  const port = await freePort();
  const local = `http://127.0.0.1:${port}`;
  const url = `http://${host}:${port}`;
  const env = {
    PATH: process.env.PATH,
    HOME: process.env.HOME || dir,
    DATABASE_URL: `sqlite://${join(dir, 'db.sqlite')}`,
    LISTEN_ADDR: `127.0.0.1:${port}`,
    PUBLIC_URL: url,
    ACCESS_TOKEN_TTL: String(ACCESS_TTL_S),
    LOG_FORMAT: 'text',
    NO_COLOR: '1',
    RUST_LOG: process.env.RUST_LOG || 'info',
    ...extraEnv,
  };
  const child = spawn(BIN, ['serve'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (d) => (log += d));
  child.stderr.on('data', (d) => (log += d));
  let exited = null;
  child.on('exit', (code, signal) => (exited = { code, signal }));
  child.on('error', (error) => (exited = { error }));

  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited) throw new Error(`latchkey (${BIN}) exited before /healthz answered: ${JSON.stringify(exited)}\n${log}`);
    try {
      const res = await fetch(local + '/healthz');
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`latchkey did not answer /healthz within 30 s\n${log}`);
    }
    await sleep(100);
  }

  return {
    url,
    /** Prometheus text of /metrics. */
    async metrics() {
      return (await fetch(local + '/metrics')).text();
    },
    /** Server output so far (for assertion messages). */
    log: () => log,
    async stop() {
      if (!exited) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await once(child, 'exit').catch(() => {});
        clearTimeout(timer);
      }
      await mkdir(ARTIFACTS, { recursive: true });
      await writeFile(join(ARTIFACTS, `${basename(name)}.server.log`), log);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * @typedef {object} Mail  one message as scripts/smtp_sink.py decoded it
 * @property {string} file  its NNNNNN.json name
 * @property {string} envelope_from
 * @property {string[]} envelope_to
 * @property {string} from
 * @property {string} to
 * @property {string} subject
 * @property {string | null} text
 * @property {string | null} html
 * @property {[string, string][]} headers
 */

/**
 * Starts a real SMTP server (scripts/smtp_sink.py, aiosmtpd) that keeps every message in a
 * temp dir. Pass `smtpUrl` to startServer as SMTP_URL. Its output goes to
 * artifacts/<name>.smtp.log.
 * @param {string} name
 */
export async function startSmtpSink(name) {
  const dir = await mkdtemp(join(tmpdir(), 'latchkey-smtp-'));
  const child = spawn('python3', [join(REPO_DIR, 'scripts', 'smtp_sink.py'), '--dir', dir], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, PYTHONUNBUFFERED: '1' },
  });
  let log = '';
  let exited = null;
  child.on('exit', (code, signal) => (exited = { code, signal }));
  child.on('error', (error) => (exited = { error }));
  const port = await new Promise((resolvePort, reject) => {
    const timer = setTimeout(() => reject(new Error(`smtp_sink did not start within 15 s\n${log}`)), 15_000);
    const onData = (d) => {
      log += d;
      const m = /^listening 127\.0\.0\.1:(\d+)$/m.exec(log);
      if (m) {
        clearTimeout(timer);
        resolvePort(Number(m[1]));
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (d) => (log += d));
    child.on('exit', () => {
      clearTimeout(timer);
      reject(new Error(`smtp_sink exited before listening: ${JSON.stringify(exited)}\n${log}`));
    });
  });
  /** Messages already handed out by waitForMail (each is returned once). */
  const taken = new Set();

  /** Every message received so far, oldest first. @returns {Promise<Mail[]>} */
  async function messages() {
    const files = (await readdir(dir)).filter((f) => /^\d+\.json$/.test(f)).sort();
    const out = [];
    for (const file of files) out.push({ file, ...JSON.parse(await readFile(join(dir, file), 'utf8')) });
    return out;
  }

  /** @param {Mail} m @param {string} to */
  const isTo = (m, to) =>
    [...(m.envelope_to || []), m.to].some((a) => String(a).toLowerCase().includes(to.toLowerCase()));

  return {
    port,
    smtpUrl: `smtp://127.0.0.1:${port}`,
    dir,
    messages,
    /**
     * Waits (polling) for the oldest message to `to` with `subject` not returned before.
     * @param {{ to: string, subject: string | RegExp, timeout?: number }} what
     * @returns {Promise<Mail>}
     */
    async waitForMail({ to, subject, timeout = 15_000 }) {
      const deadline = Date.now() + timeout;
      const subjectOk = (s) => (typeof subject === 'string' ? s === subject : subject.test(s));
      for (;;) {
        const found = (await messages()).find((m) => !taken.has(m.file) && isTo(m, to) && subjectOk(m.subject));
        if (found) {
          taken.add(found.file);
          return found;
        }
        if (exited) throw new Error(`smtp_sink exited: ${JSON.stringify(exited)}\n${log}`);
        if (Date.now() > deadline) {
          const got = (await messages()).map((m) => `${m.file} to ${m.to}: ${m.subject}`);
          throw new Error(`no mail to ${to} with subject ${subject} within ${timeout} ms; received: ${JSON.stringify(got)}`);
        }
        await sleep(100);
      }
    },
    /** Messages to `to` (any subject), oldest first. @param {string} to */
    async messagesTo(to) {
      return (await messages()).filter((m) => isTo(m, to));
    },
    async stop() {
      if (!exited) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await once(child, 'exit').catch(() => {});
        clearTimeout(timer);
      }
      await mkdir(ARTIFACTS, { recursive: true });
      await writeFile(join(ARTIFACTS, `${basename(name)}.smtp.log`), log);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * The link of a mail's text part that opens `path` (e.g. '/reset-password'), as a URL.
 * @param {Mail} mail
 * @param {string} path
 */
export function linkFrom(mail, path) {
  const links = [];
  for (const [candidate] of String(mail.text || '').matchAll(/https?:\/\/[^\s<>"')\]]+/g)) {
    // Prose around a URL: "at http://host:port, ignore" — punctuation at its end is not part of it.
    const trimmed = candidate.replace(/[.,;:!?]+$/, '');
    if (URL.canParse(trimmed)) links.push(new URL(trimmed));
  }
  const link = links.find((u) => u.pathname === path);
  if (!link) throw new Error(`no ${path} link in the mail "${mail.subject}": ${mail.text}`);
  return link;
}

/**
 * The value of one Prometheus sample, or null when the series is absent.
 * @param {string} text
 * @param {string} name
 * @param {Record<string, string>} [labels] all must match (other labels are allowed)
 */
export function metric(text, name, labels = {}) {
  let total = null;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] || '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1], l[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) total = (total ?? 0) + Number(m[3]);
  }
  return total;
}

/** Successful refreshes as the server counted them (HTTP 200 on the refresh route). */
export const refreshesOk = (text) =>
  metric(text, 'latchkey_http_requests_total', { method: 'POST', route: '/api/v1/auth/refresh', status: '200' }) ?? 0;
/** Every refresh request the server answered, whatever the status. */
export const refreshesAll = (text) =>
  metric(text, 'latchkey_http_requests_total', { method: 'POST', route: '/api/v1/auth/refresh' }) ?? 0;

/** @param {{ bfcache?: boolean }} [options] bfcache: keep Chromium's back/forward cache on, as for real users */
export function launchBrowser({ bfcache = false } = {}) {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    // Playwright turns the back/forward cache off by default; a user's browser has it on.
    ignoreDefaultArgs: bfcache ? ['--disable-back-forward-cache'] : [],
    timeout: 60_000,
  });
}

const EXPIRED_401 = /^Failed to load resource: the server responded with a status of 401\b/;

let counter = 0;
/** A fresh email for this run (the rate limit is per email, and the database is shared per file). */
export const newEmail = (tag) => `${tag}-${process.pid}-${++counter}@example.test`;

/**
 * Records what a page (or a whole context) does that a test may want to fail on: console
 * errors, uncaught exceptions, CSP violations, dialogs (accepted), and its requests.
 * @param {import('playwright-core').Page | import('playwright-core').BrowserContext} target
 */
export function watch(target) {
  const seen = {
    /** @type {string[]} */ consoleErrors: [],
    /** @type {string[]} */ expired401s: [],
    /** @type {string[]} */ warnings: [],
    /** @type {string[]} */ pageErrors: [],
    /** @type {string[]} */ dialogs: [],
    /** @type {{ method: string, url: string, path: string, page: any }[]} */ requests: [],
    /** @type {{ method: string, path: string, status: number, page: any }[]} */ responses: [],
  };
  const onPage = (page) => {
    page.on('console', (msg) => {
      // Chromium logs every 4xx answer as a console error. The 401 of an API call whose access
      // token expired is the start of a silent refresh, not a fault of the page: kept apart.
      if (msg.type() === 'error' && EXPIRED_401.test(msg.text()) && new URL(msg.location().url || 'x:').pathname.startsWith('/api/v1/'))
        seen.expired401s.push(new URL(msg.location().url).pathname);
      else if (msg.type() === 'error') seen.consoleErrors.push(`${page.url()}: ${msg.text()} (${msg.location().url})`);
      if (msg.type() === 'warning') seen.warnings.push(msg.text());
    });
    page.on('pageerror', (error) => seen.pageErrors.push(`${page.url()}: ${error.message}`));
    page.on('dialog', (dialog) => {
      seen.dialogs.push(`${dialog.type()}: ${dialog.message()}`);
      dialog.accept().catch(() => {});
    });
    page.on('request', (req) => seen.requests.push({ method: req.method(), url: req.url(), path: new URL(req.url()).pathname, page }));
    page.on('response', (res) =>
      seen.responses.push({ method: res.request().method(), path: new URL(res.url()).pathname, status: res.status(), page }),
    );
  };
  if ('newPage' in target && 'pages' in target) {
    for (const p of target.pages()) onPage(p);
    target.on('page', onPage);
  } else onPage(target);
  return {
    ...seen,
    seen,
    /** Requests to the refresh endpoint (optionally of one page). */
    refreshRequests: (page) => seen.requests.filter((r) => r.method === 'POST' && r.path === '/api/v1/auth/refresh' && (!page || r.page === page)),
    reset() {
      for (const list of Object.values(seen)) list.length = 0;
    },
  };
}

/**
 * Signs up (form "I am new here") or signs in (form "I have an account") on /login, as a
 * person would: fill in, click, land on the next page.
 * @param {import('playwright-core').Page} page
 * @param {string} base server URL
 * @param {{ email: string, password?: string, name?: string, signup?: boolean, path?: string, expectUrl?: RegExp | string }} who
 */
export async function signInThroughPage(page, base, { email, password = PASSWORD, name, signup = false, path = '/login', expectUrl = /\/account$/ }) {
  await page.goto(base + path);
  const f = signup ? 'signup' : 'login';
  await page.locator(`#${f}-email`).fill(email);
  await page.locator(`#${f}-password`).fill(password);
  if (signup && name) await page.locator('#signup-name').fill(name);
  await Promise.all([page.waitForURL(expectUrl, { timeout: 15_000 }), page.locator(`#${f}-submit`).click()]);
}

/**
 * Waits until the browser context no longer holds the access cookie (Max-Age = ACCESS_TOKEN_TTL),
 * so the next API call is sent without it and answered 401.
 * @param {import('playwright-core').BrowserContext} context
 */
export async function waitForAccessExpiry(context) {
  const deadline = Date.now() + (ACCESS_TTL_S + 5) * 1000;
  while ((await context.cookies()).some((c) => c.name === 'access_token')) {
    if (Date.now() > deadline) throw new Error('the access cookie did not expire');
    await sleep(100);
  }
  // Margin: the JWT's own `exp` (whole seconds) has passed as well.
  await sleep(300);
}

/** Page function: N parallel secureFetch calls of one URL, their statuses. */
export async function fireSecureFetch(page, { n = 1, url = '/api/v1/me', at = 0 } = {}) {
  return page.evaluate(
    async ({ n, url, at }) => {
      const { secureFetch } = await import('/client/latchkey.js');
      if (at) await new Promise((r) => setTimeout(r, Math.max(0, at - Date.now())));
      const results = await Promise.allSettled(Array.from({ length: n }, () => secureFetch(url)));
      return results.map((r) => (r.status === 'fulfilled' ? r.value.status : `rejected: ${r.reason}`));
    },
    { n, url, at },
  );
}

/** The visible text of the page's body. */
export const bodyText = (page) => page.locator('body').innerText();

export async function screenshot(page, file) {
  await mkdir(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, file), fullPage: true, animations: 'disabled' });
}

// Shared fakes for the client tests (no tests here).

/** A promise with its resolve/reject exposed. */
export function deferred() {
  let resolve, reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

export const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

export const json = (status, body = {}) =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });

export const problem = (status, code) =>
  new Response(JSON.stringify({ type: 'about:blank', title: code, status, code }), {
    status,
    headers: { 'content-type': 'application/problem+json' },
  });

/**
 * A scripted fetch. `handler(call)` returns a Response (or a promise of one, or throws).
 * Every call is recorded with its url, path, method, init, credentials and the bytes of its body.
 * Honours AbortSignal like fetch does.
 */
export function fakeFetch(handler) {
  const calls = [];
  async function fetch(input, init = {}) {
    const isRequest = input instanceof Request;
    const signal = init.signal ?? (isRequest ? input.signal : undefined);
    signal?.throwIfAborted();
    const url = isRequest ? input.url : String(input);
    const call = {
      url,
      path: new URL(url, 'http://localhost/').pathname,
      method: init.method ?? (isRequest ? input.method : 'GET'),
      credentials: init.credentials ?? (isRequest ? input.credentials : 'same-origin'),
      init,
      input,
      rawBody: init.body,
    };
    calls.push(call);
    if (init.body instanceof FormData) call.form = [...init.body];
    else if (init.body != null && !(init.body instanceof ReadableStream))
      call.text = await new Response(init.body).text();
    else if (isRequest && input.body) call.text = await input.text();
    const settle = Promise.resolve().then(() => handler(call));
    const response = await (signal
      ? new Promise((resolve, reject) => {
          signal.addEventListener('abort', () => reject(signal.reason), { once: true });
          settle.then(resolve, reject);
        })
      : settle);
    call.response = response;
    return response;
  }
  const count = (path) => calls.filter((c) => c.path === path).length;
  return { fetch, calls, count };
}

export const REFRESH = '/api/v1/auth/refresh';

/**
 * A fake API with a session: data endpoints answer 401 until a refresh succeeded, then 200.
 * `refresh` decides the refresh answer (default 200, after `refreshDelay` ms).
 */
export function fakeApi({ refresh = () => json(200, { access_expires_at: 'x' }), refreshDelay = 5, expired = true } = {}) {
  const state = { valid: !expired };
  const fake = fakeFetch(async (call) => {
    if (call.path === REFRESH) {
      await new Promise((r) => setTimeout(r, refreshDelay));
      const res = await refresh(call);
      if (res.ok) state.valid = true;
      return res;
    }
    return state.valid ? json(200, { path: call.path, body: call.text ?? null }) : problem(401, 'token_expired');
  });
  return Object.assign(fake, { state });
}

/** Replaces console.warn/log/info/error/debug while `fn` runs; returns what was logged. */
export function captureConsole() {
  const logged = [];
  const saved = {};
  for (const level of ['warn', 'log', 'info', 'error', 'debug']) {
    saved[level] = console[level];
    console[level] = (...args) => logged.push([level, ...args]);
  }
  return {
    logged,
    restore() {
      Object.assign(console, saved);
    },
  };
}

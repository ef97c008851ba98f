// @ts-check
/**
 * latchkey browser client (SPEC section 9). Dependency-free ES module, no build step;
 * served as-is at `/client/latchkey.js`.
 *
 *   import { secureFetch } from '/client/latchkey.js'
 *   const res = await secureFetch('/api/v1/me')
 *
 * - Every request is sent with `credentials: 'include'`.
 * - A 401 (from anything but the auth endpoints that answer 401 by design) triggers one
 *   `POST /api/v1/auth/refresh` per page, however many calls failed at once, then each
 *   call is retried once. A refresh that another tab completed after the failing request
 *   was sent (announced on BroadcastChannel 'latchkey-auth') is reused instead of repeated.
 *   No cross-tab lock is ever taken.
 * - Refresh answered 401/403: `onAuthFail` runs once for every call waiting on it, and the
 *   calls resolve with their original 401. A 401 on the retry also runs `onAuthFail`
 *   (once per refresh). Network error, timeout or any other status during refresh: the
 *   waiting calls reject with "latchkey: session refresh failed" (cause attached) and the
 *   session is kept.
 * - Any other response is returned exactly as `fetch` returned it.
 */

const WARNING = 'Access token expired or invalid – attempting refresh.'
/** A refresh completed at most this long ago, after a request was sent, is reused. */
const RECENT_MS = 2000
/**
 * Endpoints whose 401 is an answer, not an expired access token: refresh, login, signup,
 * logout, the second step of a sign-in (`/api/v1/auth/mfa/verify`,
 * `/api/v1/auth/mfa/passkey/…`, whose pending login is the second-factor cookie) and passkey
 * sign-in (`/api/v1/auth/passkeys/login/…`). The other `/api/v1/auth/mfa…` endpoints (TOTP
 * enrolment and removal, recovery codes, the factor list) need a valid access token (SPEC
 * 11), as do `logout-all` and `reauthenticate` (whose wrong password or code is a 403, so
 * its 401 means an expired access token: SPEC 9 does not list it), so an expired one is
 * refreshed and the call retried.
 */
const NO_REFRESH = /^\/api\/v1\/auth\/(refresh|login|signup|logout|mfa\/verify\/?|(mfa\/passkey|passkeys\/login)\/.+)$/

/**
 * @typedef {object} Episode   one completed refresh (local, or announced by another tab)
 * @property {boolean} ok      true: new tokens were issued; false: answered 401/403
 * @property {number} at       completion time (Date.now())
 * @property {Set<() => void>} done  onAuthFail handlers already run for this refresh
 */

/**
 * @typedef {object} ClientOptions
 * @property {string} [refreshUrl]   default '/api/v1/auth/refresh'
 * @property {string} [loginUrl]     default '/login' (used by the default onAuthFail)
 * @property {() => void} [onAuthFail]  default: alert + go to `${loginUrl}?next=<current path>`
 * @property {number} [refreshTimeoutMs] default 10000
 * @property {typeof fetch} [fetch]  default: the global fetch, looked up at call time
 */

/** @param {string | URL} url */
const pathOf = (url) => new URL(url, globalThis.location?.href || 'http://localhost/').pathname

/** @param {any} body a body that fetch would consume (a stream) cannot be sent twice */
const isStream = (body) => !!body && (typeof body.getReader == 'function' || Symbol.asyncIterator in Object(body))

/**
 * @template T
 * @param {Promise<T>} promise
 * @param {AbortSignal | null | undefined} signal
 * @returns {Promise<T>} rejects with the signal's reason (an AbortError) when it aborts first
 */
const abortable = (promise, signal) =>
  signal
    ? new Promise((resolve, reject) => {
        const abort = () => reject(signal.reason)
        if (signal.aborted) abort()
        signal.addEventListener('abort', abort, { once: true })
        promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', abort))
      })
    : promise

/**
 * @param {ClientOptions} [options]
 */
export function createClient({
  refreshUrl = '/api/v1/auth/refresh',
  loginUrl = '/login',
  onAuthFail,
  refreshTimeoutMs = 10000,
  fetch: fetchImpl = (input, init) => globalThis.fetch(input, init),
} = {}) {
  const fallback =
    onAuthFail ||
    (() => {
      const { pathname, search } = location
      // Already on the login page: it asks the user to sign in anyway, so no alert, no reload.
      if (pathname == pathOf(loginUrl)) return
      alert('Session expired. Please log in again.')
      // replace, not assign: Back from the login page must not return to a page that only
      // sends the user to the login page again (one more alert each time).
      location.replace(loginUrl + '?next=' + encodeURIComponent(pathname + search))
    })
  const refreshPath = pathOf(refreshUrl)
  /** @type {Promise<Episode> | null} */
  let inflight = null
  /** @type {Episode | null} */
  let last = null

  const channel = typeof BroadcastChannel == 'function' ? new BroadcastChannel('latchkey-auth') : null
  if (channel) {
    channel.onmessage = ({ data }) => {
      const at = Math.min(+data?.at || 0, Date.now())
      if (data?.type == 'refreshed' && at > (last?.at || 0)) last = { ok: true, at, done: new Set() }
    }
    // Node only: an idle channel must not keep the process alive.
    /** @type {any} */ (channel).unref?.()
  }

  /** @returns {Promise<Episode>} the refresh in flight, or a new one */
  const refresh = () =>
    (inflight ||= fetchImpl(refreshUrl, {
      method: 'POST',
      credentials: 'include',
      signal: AbortSignal.timeout(refreshTimeoutMs),
    })
      .then((res) => {
        if (!res.ok && res.status != 401 && res.status != 403) throw new Error('HTTP ' + res.status)
        const episode = (last = { ok: res.ok, at: Date.now(), done: new Set() })
        if (res.ok) channel?.postMessage({ type: 'refreshed', at: episode.at })
        return episode
      })
      .catch((cause) => {
        throw new Error('latchkey: session refresh failed', { cause })
      })
      .finally(() => {
        inflight = null
      }))

  /**
   * @param {Episode} episode
   * @param {() => void} handler
   */
  const fail = (episode, handler) => {
    if (!episode.done.has(handler)) {
      episode.done.add(handler)
      handler()
    }
  }

  /**
   * `fetch` with credentials, silent refresh on 401 and one retry.
   * @param {RequestInfo | URL} url
   * @param {RequestInit} [options]
   * @param {() => void} [onAuthFail] overrides the client's handler for this call
   * @returns {Promise<Response>}
   */
  async function secureFetch(url, options = {}, onAuthFail = fallback) {
    const request = typeof Request == 'function' && url instanceof Request ? url : null
    const signal = options.signal || request?.signal
    signal?.throwIfAborted()
    const init = { ...options, credentials: /** @type {const} */ ('include') }
    // A Request's body is read once: send clones and keep the original for the retry.
    const send = () => fetchImpl(request ? request.clone() : url, init)
    const sent = Date.now()
    const res = await send()
    if (res.status != 401 || isStream(options.body)) return res
    const path = pathOf(request ? request.url : /** @type {string | URL} */ (url)).replace(/(.)\/+$/, '$1')
    if (path == refreshPath || NO_REFRESH.test(path)) return res

    console.warn(WARNING)
    const episode =
      last && last.at >= sent && Date.now() - last.at < RECENT_MS ? last : await abortable(refresh(), signal)
    if (!episode.ok) {
      fail(episode, onAuthFail)
      return res
    }
    const retried = await send()
    if (retried.status == 401) fail(episode, onAuthFail)
    return retried
  }

  return { secureFetch }
}

/** @type {ReturnType<typeof createClient> | undefined} */
let shared

/**
 * `fetch` with credentials, silent refresh on 401 and one retry, using the default settings
 * (one client per page, created on first use).
 * @param {RequestInfo | URL} url
 * @param {RequestInit} [options]
 * @param {() => void} [onAuthFail] default: alert, then go to `/login?next=<current path>`
 * @returns {Promise<Response>}
 */
export function secureFetch(url, options = {}, onAuthFail) {
  return (shared ||= createClient()).secureFetch(url, options, onAuthFail)
}

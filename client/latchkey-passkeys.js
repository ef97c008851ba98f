// @ts-check
/**
 * latchkey passkeys in the browser (SPEC 11). Dependency-free ES module, no build step;
 * served as-is at `/client/latchkey-passkeys.js`. Kept apart from `latchkey.js` so that
 * `secureFetch` stays small for pages that never touch a passkey.
 *
 *   import { signInWithPasskey, registerPasskey } from '/client/latchkey-passkeys.js'
 *   await signInWithPasskey()                           // a button: the browser's dialog
 *   await signInWithPasskey({ mediation: 'conditional', signal })  // autofill (conditional UI)
 *   await registerPasskey({ name: 'Laptop', fetch: secureFetch })  // signed in
 *
 * The server (webauthn-rs) sends options as JSON with binary members in base64url; this
 * module decodes them for `navigator.credentials.create()`/`.get()` and encodes the
 * resulting credential back the same way.
 */

const BASE = '/api/v1/auth/passkeys'
const SECOND_STEP = '/api/v1/auth/mfa/passkey'
const REAUTH = '/api/v1/auth/reauthenticate/passkey'

/** A failed passkey step: `code` is the server's problem `code`, or `cancelled` (the user
 * dismissed the dialog, or the request was aborted), `unsupported` (no WebAuthn here),
 * `network`. */
export class PasskeyError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {number} [status] the HTTP status, when the server answered
   */
  constructor (code, message, status) {
    super(message)
    this.name = 'PasskeyError'
    this.code = code
    this.status = status
  }
}

/** @param {string} s base64url, padded or not @returns {ArrayBuffer} */
export function fromBase64url (s) {
  const b64 = s.replace(/-/g, '+').replace(/_/g, '/')
  const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4))
  const out = new Uint8Array(bin.length)
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i)
  return out.buffer
}

/** @param {ArrayBuffer | ArrayBufferView} buf @returns {string} unpadded base64url */
export function toBase64url (buf) {
  const bytes = buf instanceof ArrayBuffer ? new Uint8Array(buf) : new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength)
  let bin = ''
  for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i])
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
}

/** True when this browser has WebAuthn at all. */
export function isSupported () {
  return typeof globalThis.PublicKeyCredential === 'function' && !!globalThis.navigator?.credentials
}

/** True when the browser can offer passkeys in the autofill of a `webauthn` input. */
export async function conditionalMediationAvailable () {
  const PKC = /** @type {any} */ (globalThis.PublicKeyCredential)
  if (!isSupported() || typeof PKC.isConditionalMediationAvailable !== 'function') return false
  try {
    return await PKC.isConditionalMediationAvailable()
  } catch {
    return false
  }
}

/** @param {{ id: string }[] | undefined} list */
const descriptors = (list) => list?.map((d) => ({ ...d, id: fromBase64url(d.id) }))

/**
 * webauthn-rs's registration options (`{publicKey: …}`) as `navigator.credentials.create()`
 * takes them.
 * @param {any} options
 * @returns {CredentialCreationOptions}
 */
export function creationOptionsFromJSON (options) {
  const pk = options.publicKey
  return {
    publicKey: {
      ...pk,
      challenge: fromBase64url(pk.challenge),
      user: { ...pk.user, id: fromBase64url(pk.user.id) },
      excludeCredentials: descriptors(pk.excludeCredentials) ?? []
    }
  }
}

/**
 * webauthn-rs's sign-in options as `navigator.credentials.get()` takes them.
 * @param {any} options
 * @returns {CredentialRequestOptions}
 */
export function requestOptionsFromJSON (options) {
  const pk = options.publicKey
  return {
    publicKey: {
      ...pk,
      challenge: fromBase64url(pk.challenge),
      allowCredentials: descriptors(pk.allowCredentials) ?? []
    }
  }
}

/**
 * A `PublicKeyCredential` as the JSON the server reads (binary members in base64url).
 * @param {PublicKeyCredential} cred
 */
export function credentialToJSON (cred) {
  const r = /** @type {any} */ (cred.response)
  /** @type {Record<string, unknown>} */
  const response = { clientDataJSON: toBase64url(r.clientDataJSON) }
  if (r.attestationObject) {
    response.attestationObject = toBase64url(r.attestationObject)
    if (typeof r.getTransports === 'function') response.transports = r.getTransports()
  }
  if (r.authenticatorData) {
    response.authenticatorData = toBase64url(r.authenticatorData)
    response.signature = toBase64url(r.signature)
    response.userHandle = r.userHandle ? toBase64url(r.userHandle) : null
  }
  return {
    id: cred.id,
    rawId: toBase64url(cred.rawId),
    type: cred.type,
    response,
    clientExtensionResults: typeof cred.getClientExtensionResults === 'function' ? cred.getClientExtensionResults() : {}
  }
}

/** @typedef {(input: RequestInfo | URL, init?: RequestInit) => Promise<Response>} FetchLike */

/**
 * POSTs JSON; a non-2xx answer becomes a PasskeyError with the problem's code.
 * @param {FetchLike} doFetch
 * @param {string} url
 * @param {unknown} [body]
 */
async function post (doFetch, url, body) {
  let res
  try {
    res = await doFetch(url, {
      method: 'POST',
      credentials: 'include',
      headers: { Accept: 'application/json, application/problem+json', ...(body === undefined ? {} : { 'Content-Type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) })
    })
  } catch (e) {
    throw new PasskeyError('network', 'Could not reach the server.', undefined)
  }
  /** @type {any} */
  let json = null
  try {
    json = await res.json()
  } catch {
    // no body
  }
  if (!res.ok) {
    throw new PasskeyError(json?.code || 'http_' + res.status, json?.title || `HTTP ${res.status}`, res.status)
  }
  return json
}

/**
 * A WebAuthn call: the browser's refusals become PasskeyErrors.
 * @template T
 * @param {() => Promise<T>} call
 * @returns {Promise<T>}
 */
async function ceremony (call) {
  if (!isSupported()) throw new PasskeyError('unsupported', 'This browser does not support passkeys.')
  try {
    const cred = await call()
    if (!cred) throw new PasskeyError('cancelled', 'No passkey was chosen.')
    return cred
  } catch (e) {
    if (e instanceof PasskeyError) throw e
    const name = /** @type {any} */ (e)?.name
    if (name === 'NotAllowedError' || name === 'AbortError') throw new PasskeyError('cancelled', 'The passkey request was cancelled or timed out.')
    if (name === 'InvalidStateError') throw new PasskeyError('passkey_exists', 'This authenticator already holds a passkey for this account.')
    throw new PasskeyError('webauthn_failed', String(/** @type {any} */ (e)?.message || e))
  }
}

/**
 * @typedef {object} SignInOptions
 * @property {'conditional' | 'optional' | 'required' | 'silent'} [mediation] `conditional`
 *   for autofill on an `autocomplete="username webauthn"` input; default: the browser's dialog
 * @property {AbortSignal} [signal] aborts the pending request (e.g. a conditional one when the
 *   user clicks the passkey button instead)
 * @property {FetchLike} [fetch] default: the global `fetch`
 */

/**
 * Signs in with a discoverable passkey: no email typed. Resolves with the server's answer
 * (`{user, access_expires_at}`); the auth cookies are set by the response.
 * @param {SignInOptions} [opts]
 */
export async function signInWithPasskey (opts = {}) {
  const doFetch = opts.fetch ?? ((/** @type {any} */ i, /** @type {any} */ o) => globalThis.fetch(i, o))
  const started = await post(doFetch, BASE + '/login/start')
  const request = requestOptionsFromJSON(started.options)
  if (opts.mediation) /** @type {any} */ (request).mediation = opts.mediation
  if (opts.signal) request.signal = opts.signal
  const cred = await ceremony(() => navigator.credentials.get(request))
  return post(doFetch, BASE + '/login/finish', {
    ceremony: started.ceremony,
    credential: credentialToJSON(/** @type {PublicKeyCredential} */ (cred))
  })
}

/**
 * Adds a passkey to the signed-in account. Pass `secureFetch` as `fetch` so that an expired
 * access token is refreshed. A 403 `reauthentication_required` means: sign in again first.
 * @param {{ name?: string, fetch?: FetchLike }} [opts]
 * @returns {Promise<{ id: string, name: string, created_at: string, last_used_at: string | null }>}
 */
export async function registerPasskey (opts = {}) {
  const doFetch = opts.fetch ?? ((/** @type {any} */ i, /** @type {any} */ o) => globalThis.fetch(i, o))
  const started = await post(doFetch, BASE + '/register/start')
  const cred = await ceremony(() => navigator.credentials.create(creationOptionsFromJSON(started.options)))
  const body = await post(doFetch, BASE + '/register/finish', {
    ceremony: started.ceremony,
    credential: credentialToJSON(/** @type {PublicKeyCredential} */ (cred)),
    ...(opts.name ? { name: opts.name } : {})
  })
  return body.passkey
}

/**
 * A ceremony for a user the server already knows: start, `navigator.credentials.get()`
 * with the user's passkeys, finish.
 * @param {FetchLike} doFetch
 * @param {string} base
 */
async function knownUserCeremony (doFetch, base) {
  const started = await post(doFetch, base + '/start')
  const cred = await ceremony(() => navigator.credentials.get(requestOptionsFromJSON(started.options)))
  return post(doFetch, base + '/finish', {
    ceremony: started.ceremony,
    credential: credentialToJSON(/** @type {PublicKeyCredential} */ (cred))
  })
}

/**
 * The second step of a password sign-in with a passkey (after `{mfa_required: true}` with
 * `passkey` among the methods; the second-factor cookie names the sign-in). Resolves with
 * `{user, access_expires_at}`; a PasskeyError `mfa_expired` means: enter the password again.
 * @param {{ fetch?: FetchLike }} [opts]
 */
export async function passkeySecondStep (opts = {}) {
  const doFetch = opts.fetch ?? ((/** @type {any} */ i, /** @type {any} */ o) => globalThis.fetch(i, o))
  return knownUserCeremony(doFetch, SECOND_STEP)
}

/**
 * Proves again who the signed-in user is with one of their passkeys, renewing the session's
 * recent authentication (after a 403 `reauthentication_required`). Pass `secureFetch`.
 * Resolves with `{access_expires_at, auth_time, amr}`.
 * @param {{ fetch?: FetchLike }} [opts]
 */
export async function reauthenticateWithPasskey (opts = {}) {
  const doFetch = opts.fetch ?? ((/** @type {any} */ i, /** @type {any} */ o) => globalThis.fetch(i, o))
  return knownUserCeremony(doFetch, REAUTH)
}

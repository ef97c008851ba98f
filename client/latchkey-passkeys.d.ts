/**
 * latchkey passkeys in the browser (SPEC 11), served at `/client/latchkey-passkeys.js`.
 */

type FetchLike = (input: RequestInfo | URL, init?: RequestInit) => Promise<Response>;

/**
 * A failed passkey step. `code` is the server's problem `code` (`passkey_invalid`,
 * `passkey_unknown`, `passkey_challenge_expired`, `reauthentication_required`, …), or
 * `cancelled` (dialog dismissed, timed out or aborted), `unsupported`, `passkey_exists`
 * (the authenticator already holds one for this account), `network`, `webauthn_failed`.
 */
export class PasskeyError extends Error {
  constructor(code: string, message: string, status?: number);
  readonly code: string;
  /** The HTTP status, when the server answered. */
  readonly status: number | undefined;
}

/** A passkey as the API lists it. */
export interface PasskeyView {
  id: string;
  name: string;
  /** RFC 3339. */
  created_at: string;
  /** RFC 3339; null until first used. */
  last_used_at: string | null;
}

export interface SignInOptions {
  /** `'conditional'` for autofill on an `autocomplete="username webauthn"` input; default: the browser's dialog. */
  mediation?: 'conditional' | 'optional' | 'required' | 'silent';
  /** Aborts the pending request (e.g. the conditional one, when the user clicks the passkey button instead). */
  signal?: AbortSignal;
  /** Default: the global `fetch`. */
  fetch?: FetchLike;
}

/** Signs in with a discoverable passkey (no email typed); resolves with `{user, access_expires_at}`. */
export function signInWithPasskey(opts?: SignInOptions): Promise<{ user: unknown; access_expires_at: string }>;

/** Adds a passkey to the signed-in account; pass `secureFetch` as `fetch` to refresh an expired session. */
export function registerPasskey(opts?: { name?: string; fetch?: FetchLike }): Promise<PasskeyView>;

/**
 * The second step of a password sign-in with a passkey (the second-factor cookie names the
 * sign-in); a PasskeyError `mfa_expired` means: enter the password again.
 */
export function passkeySecondStep(opts?: { fetch?: FetchLike }): Promise<{ user: unknown; access_expires_at: string }>;

/** Renews the session's recent authentication with a passkey; pass `secureFetch` as `fetch`. */
export function reauthenticateWithPasskey(opts?: { fetch?: FetchLike }): Promise<{ access_expires_at: string; auth_time: string; amr: string[] }>;

/** True when this browser has WebAuthn. */
export function isSupported(): boolean;
/** True when the browser can offer passkeys in an input's autofill (conditional UI). */
export function conditionalMediationAvailable(): Promise<boolean>;

/** webauthn-rs's registration options (base64url members) as `navigator.credentials.create()` takes them. */
export function creationOptionsFromJSON(options: unknown): CredentialCreationOptions;
/** webauthn-rs's sign-in options as `navigator.credentials.get()` takes them. */
export function requestOptionsFromJSON(options: unknown): CredentialRequestOptions;
/** A `PublicKeyCredential` as the JSON the server reads. */
export function credentialToJSON(cred: PublicKeyCredential): {
  id: string;
  rawId: string;
  type: string;
  response: Record<string, unknown>;
  clientExtensionResults: unknown;
};

export function fromBase64url(s: string): ArrayBuffer;
export function toBase64url(buf: ArrayBuffer | ArrayBufferView): string;

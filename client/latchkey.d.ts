/**
 * latchkey browser client (SPEC section 9).
 */

/** Called when the session cannot be renewed (the refresh answered 401/403, or the retry after a successful refresh answered 401 again). */
export type AuthFailHandler = () => void;

export interface ClientOptions {
  /** Refresh endpoint. Default `'/api/v1/auth/refresh'`. */
  refreshUrl?: string;
  /** Login page used by the default `onAuthFail`. Default `'/login'`. */
  loginUrl?: string;
  /**
   * Default handler for this client. When omitted: `alert("Session expired. Please log in again.")`
   * then `location.replace(loginUrl + '?next=' + encodeURIComponent(location.pathname + location.search))`;
   * does nothing at all when the page already is the login page.
   */
  onAuthFail?: AuthFailHandler;
  /** Timeout of the refresh call in milliseconds. Default `10000`. */
  refreshTimeoutMs?: number;
  /** The `fetch` to use. Default: the global `fetch`, looked up at call time (never replaced). */
  fetch?: (input: RequestInfo | URL, init?: RequestInit) => Promise<Response>;
}

/**
 * Like `fetch`, always with `credentials: 'include'`. On a 401 it refreshes the session once
 * (shared by every call of the page, reused across tabs) and retries the request once.
 *
 * Resolves with the `Response` for every status it does not handle. Rejects like `fetch`
 * (network error, `AbortError`), and with an `Error` ("latchkey: session refresh failed",
 * `cause` attached) when the refresh fails for another reason than 401/403.
 *
 * @param onAuthFail overrides the client's handler for this call
 */
export type SecureFetch = (
  url: RequestInfo | URL,
  options?: RequestInit,
  onAuthFail?: AuthFailHandler,
) => Promise<Response>;

export interface Client {
  secureFetch: SecureFetch;
}

/** `secureFetch` of the page's default client (default settings, created on first use). */
export declare const secureFetch: SecureFetch;

/** A client with its own settings; one per page is expected (single flight is per client). */
export declare function createClient(options?: ClientOptions): Client;

// The `next` rule of SPEC 6 and 8, for the pages: where a finished sign-in may send the
// browser. The same rule as the server's `crates/latchkey/src/oidc/next.rs`, checked against
// the same table of cases (`crates/latchkey/src/oidc/next_cases.json`) by both test suites.
// Pure and dependency-free (no DOM): served at /static/next.js and imported by node's tests.

/** Longer values are refused (in bytes of UTF-8, as the server counts them), as given and
 * once resolved (resolving percent-encodes, so a value can triple in length). */
export const MAX_NEXT_LEN = 1024;

const utf8 = new TextEncoder();
// Fatal: invalid UTF-8 after decoding is refused. ignoreBOM: a decoded U+FEFF stays in the
// string (the server keeps it too) instead of being dropped silently.
const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Percent-decodes like Rust's `percent_decode_str(..).decode_utf8()`: each `%XX` with two hex
 * digits becomes its byte, any other `%` stays as it is (`decodeURIComponent` would throw on
 * `/100%`), and the result must be valid UTF-8.
 * @param {string} s
 * @returns {string | null} null when the bytes are not UTF-8
 */
function percentDecode(s) {
  const bytes = utf8.encode(s);
  const out = new Uint8Array(bytes.length);
  let n = 0;
  for (let i = 0; i < bytes.length; i++) {
    const hex = bytes[i] === 0x25 && i + 2 < bytes.length ? String.fromCharCode(bytes[i + 1], bytes[i + 2]) : '';
    if (/^[0-9A-Fa-f]{2}$/.test(hex)) {
      out[n++] = parseInt(hex, 16);
      i += 2;
    } else out[n++] = bytes[i];
  }
  try {
    return strictUtf8.decode(out.subarray(0, n));
  } catch {
    return null;
  }
}

/**
 * One form of the value (as given, or a decoding of it): a single leading `/`, no backslash,
 * no control character (Unicode Cc, as Rust's `char::is_control`), and once the browser has
 * resolved it against `origin` (dot segments, `%2e`), still on `origin` and not `//host`.
 * @param {string} s
 * @param {string} origin
 */
function plainPathOk(s, origin) {
  if (s[0] !== '/' || s[1] === '/' || s[1] === '\\') return false;
  // eslint-disable-next-line no-control-regex
  if (/[\\\u0000-\u001f\u007f-\u009f]/.test(s)) return false;
  let url;
  try {
    url = new URL(s, origin);
  } catch {
    return false;
  }
  return url.origin === origin && !url.pathname.startsWith('//');
}

/**
 * Where a sign-in may go next: the resolved same-origin path (`path?query#fragment`, as the
 * browser would serialise it) when `raw` passes the rule on the value as given and on every
 * percent-decoding of it; `null` when it is refused (the caller picks its fallback).
 * @param {string | null | undefined} raw the `next` parameter, already taken out of the query
 * @param {string} origin the page's origin, e.g. `location.origin`
 * @returns {string | null}
 */
export function safeNext(raw, origin) {
  if (typeof raw !== 'string') return null;
  const base = new URL(origin);
  if (base.origin !== origin || !isSafePath(raw, origin)) return null;
  // The resolved form is one of the forms isSafePath checked; only its length is new
  // (resolving percent-encodes: `/` and 400 backticks become 1,201 bytes).
  const resolved = resolvedForm(raw, origin);
  return utf8.encode(resolved).length > MAX_NEXT_LEN ? null : resolved;
}

/**
 * `path?query#fragment` of `s` once resolved against `origin`, from the serialisation (not
 * pathname + search + hash: those drop an empty `?` or `#`).
 * @param {string} s
 * @param {string} origin
 */
function resolvedForm(s, origin) {
  return new URL(s, origin).href.slice(origin.length);
}

/** Decodings that may still change the value: a fourth that does is refused. */
const MAX_DECODINGS = 3;

/**
 * The rule on every form of `raw` whatever reads it next may produce: the value, its
 * percent-decodings and its resolved form, and so on, in any order (a decoding may be
 * resolved and decoded again): each passes {@link plainPathOk}. `/a%2Fb/../%2Fevil` resolves
 * to `/%2Fevil`, one decoding from `//evil`; `/a%252Fb/%252E%252E/%252Fevil` needs decode,
 * resolve, decode.
 * @param {string} raw
 * @param {string} origin
 */
function isSafePath(raw, origin) {
  if (utf8.encode(raw).length > MAX_NEXT_LEN) return false;
  /** @type {Array<[string, number]>} form, decodings that changed it so far */
  const todo = [[raw, 0]];
  const seen = new Set();
  while (todo.length > 0) {
    const [form, decodings] = /** @type {[string, number]} */ (todo.pop());
    if (seen.has(form)) continue;
    if (seen.size >= 64 || !plainPathOk(form, origin)) return false;
    const decoded = percentDecode(form);
    if (decoded === null) return false;
    if (decoded !== form) {
      // Still changing after several decodings: nobody legitimate sends that.
      if (decodings === MAX_DECODINGS) return false;
      todo.push([decoded, decodings + 1]);
    }
    const resolved = resolvedForm(form, origin);
    if (resolved !== form) todo.push([resolved, decodings]);
    seen.add(form);
  }
  return true;
}

/**
 * The login page's choice: what {@link safeNext} keeps, except /login itself (signing in
 * there again would loop); otherwise /account.
 * @param {string | null | undefined} raw
 * @param {string} origin
 * @returns {string}
 */
export function loginPageNext(raw, origin) {
  const kept = safeNext(raw, origin);
  if (kept === null || new URL(kept, origin).pathname === '/login') return '/account';
  return kept;
}

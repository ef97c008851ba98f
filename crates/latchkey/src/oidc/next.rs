//! The `next` rule of SPEC 6: where a finished sign-in may send the browser.
//!
//! Only a same-origin path is honoured: it starts with a single `/` (not `//`, not `/\`),
//! has no scheme, no backslash and no control character — checked on the value as given
//! and on every form decoding and resolving make of it, in any order (dot segments must not
//! turn it into `//host`, before or after a decoding). Anything else becomes `/`. The login
//! page applies the same rule (`latchkey-server/pages/next.js`); both are tested against one
//! table, `next_cases.json`.

use percent_encoding::percent_decode_str;

/// Longer `next` values are refused (the value travels in the OAuth state cookie): as given,
/// and once resolved (resolving percent-encodes, so a value can triple in length).
pub const MAX_NEXT_LEN: usize = 1024;

/// The browser's view of a path: resolved against a stand-in origin.
fn resolve(path: &str) -> Option<url::Url> {
    let base = url::Url::parse("http://origin.invalid/").ok()?;
    let u = base.join(path).ok()?;
    (u.origin() == base.origin()).then_some(u)
}

/// `raw` resolved (`path?query#fragment`, dot segments removed, non-ASCII percent-encoded)
/// when it is a safe same-origin path, else `/`.
pub fn safe_next(raw: Option<&str>) -> String {
    raw.and_then(checked_next).unwrap_or_else(|| "/".to_owned())
}

/// `raw` resolved as a browser would (what it was checked as), or `None` when it is refused.
/// Sending the resolved form means what was checked is exactly what the browser follows.
fn checked_next(raw: &str) -> Option<String> {
    if !is_safe_path(raw) {
        return None;
    }
    // The resolved form is one of the forms `is_safe_path` checked; only its length is new
    // (`/` and 400 backticks resolve to 1,201 bytes: fuzzing, issue 11).
    resolved(raw).filter(|r| r.len() <= MAX_NEXT_LEN)
}

/// `path?query#fragment` of `s` once a browser has resolved it against the origin.
fn resolved(s: &str) -> Option<String> {
    resolve(s).map(|u| u[url::Position::BeforePath..].to_owned())
}

/// Decodings that may still change the value: a fourth that does is refused.
const MAX_DECODINGS: usize = 3;

/// The rule on every form of `raw` whatever reads it next may produce: the value, its
/// percent-decodings and its resolved form, and so on, in any order (a decoding may be
/// resolved and decoded again). Fuzzing found a form that only a mix reaches:
/// `/a%2Fb/../%2Fevil` resolves to `/%2Fevil`, one decoding from `//evil`, while its
/// decoding `/a/b/..//evil` resolves to the harmless `/a//evil`; and encoded once more,
/// `/a%252Fb/%252E%252E/%252Fevil` needs decode, resolve, decode.
fn is_safe_path(raw: &str) -> bool {
    if raw.len() > MAX_NEXT_LEN {
        return false;
    }
    // (form, decodings that changed it so far). Resolving is idempotent, so the forms are
    // few: at most MAX_DECODINGS + 1 decodings, each form resolved once.
    let mut todo = vec![(raw.to_owned(), 0)];
    let mut seen: Vec<String> = Vec::new();
    while let Some((form, decodings)) = todo.pop() {
        if seen.contains(&form) {
            continue;
        }
        if seen.len() >= 64 || !plain_path_ok(&form) {
            return false;
        }
        let Ok(decoded) = percent_decode_str(&form).decode_utf8() else {
            return false;
        };
        if decoded != form {
            // Still changing after several decodings: nobody legitimate sends that.
            if decodings == MAX_DECODINGS {
                return false;
            }
            todo.push((decoded.into_owned(), decodings + 1));
        }
        match resolved(&form) {
            Some(r) if r != form => todo.push((r, decodings)),
            Some(_) => {}
            None => return false,
        }
        seen.push(form);
    }
    true
}

fn plain_path_ok(s: &str) -> bool {
    let b = s.as_bytes();
    if b.first() != Some(&b'/') || matches!(b.get(1), Some(b'/' | b'\\')) {
        return false;
    }
    if s.contains('\\') || s.chars().any(char::is_control) {
        return false;
    }
    // Resolved the way a browser would: it must stay on the origin, and dot segments must
    // not turn it into `//host` (e.g. `/..//evil.example`, finding 1 of issue 9).
    resolve(s).is_some_and(|u| !u.path().starts_with("//"))
}

#[cfg(test)]
mod tests {
    use super::{checked_next, safe_next};

    /// The one table of cases, shared with the login page's test (`pages/test/next.test.mjs`).
    const CASES: &str = include_str!("next_cases.json");

    /// Finding 1 (issue 9): every case of the shared table, refused ones as `null`.
    #[test]
    fn finding_1_next_rule_matches_the_shared_table() {
        let table: serde_json::Value =
            serde_json::from_str(CASES).expect("next_cases.json is JSON");
        let cases = table["cases"].as_array().expect("a `cases` array");
        let refused = cases.iter().filter(|c| c["expected"].is_null()).count();
        assert!(refused >= 50, "{refused} refused cases");
        let mut wrong = Vec::new();
        for case in cases {
            let input = case["input"].as_str();
            let expected = case["expected"].as_str();
            let got = input.and_then(checked_next);
            if got.as_deref() != expected {
                wrong.push(format!("{input:?}: expected {expected:?}, got {got:?}"));
            }
            // The redirect itself: refused values go to `/`.
            assert_eq!(safe_next(input), expected.unwrap_or("/"), "{input:?}");
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    /// Fuzzing (issue 11, `next_rule`): a value within the limit whose resolved form is not
    /// (resolving percent-encodes `` ` ``, `{`, `>`, non-ASCII…) was kept, and the kept value
    /// then failed the rule it had passed; `/a%2Fb/../%2Fevil` resolved to `/%2Fevil`, which
    /// decodes to `//evil`; and (review) `/a%252Fb/%252E%252E/%252Fevil` reaches `//evil` by
    /// decode, resolve, decode. The inputs are in `fuzz/regressions/next_rule/`.
    #[test]
    fn fuzz_resolved_values_that_fail_the_rule_are_refused() {
        let input = format!("/{}", "`".repeat(400));
        assert!(input.len() <= super::MAX_NEXT_LEN);
        assert_eq!(checked_next(&input), None);
        assert_eq!(safe_next(Some(&input)), "/");
        let regression = include_str!("../../../../fuzz/regressions/next_rule/resolved-over-limit");
        assert_eq!(safe_next(Some(regression)), "/");
        let decodes_off_site = include_str!(
            "../../../../fuzz/regressions/next_rule/resolved-decodes-to-scheme-relative"
        );
        assert_eq!(safe_next(Some(decodes_off_site)), "/");
        let after_decode_and_resolve = include_str!(
            "../../../../fuzz/regressions/next_rule/decoded-resolved-decodes-to-scheme-relative"
        );
        assert_eq!(safe_next(Some(after_decode_and_resolve)), "/");
        let fits = format!("/{}", "`".repeat(341));
        assert_eq!(checked_next(&fits).map(|s| s.len()), Some(1 + 341 * 3));
    }

    #[test]
    fn kept_values_are_header_safe_and_stay_put_when_followed() {
        let table: serde_json::Value =
            serde_json::from_str(CASES).expect("next_cases.json is JSON");
        for case in table["cases"].as_array().into_iter().flatten() {
            let Some(kept) = case["input"].as_str().and_then(checked_next) else {
                continue;
            };
            assert!(kept.bytes().all(|b| b.is_ascii_graphic()), "{kept:?}");
            // Already resolved: following it again changes nothing.
            assert_eq!(
                checked_next(&kept).as_deref(),
                Some(kept.as_str()),
                "{kept:?}"
            );
        }
    }
}

//! `oidc::next::safe_next`: the `next` rule of SPEC 6.
//!
//! Input: the `next` value, as text (the cases of `oidc/next_cases.json` are the seeds).
//! Properties, on whatever it answers (the kept path or `/`): a path that starts with a
//! single `/` (not `//`, not `/\`), with no backslash and no control character, also after
//! any mix of percent-decodings and browser resolutions (and every decoding is UTF-8); each
//! such form stays on the origin when a browser resolves it, and dot segments do not make it
//! `//host`; it is a valid `Location` header value of visible ASCII; and it is a fixed
//! point (following it again changes nothing).

use axum::http::HeaderValue;
use latchkey::oidc::next::safe_next;
use percent_encoding::percent_decode_str;

fn plain_ok(s: &str) -> bool {
    let b = s.as_bytes();
    b.first() == Some(&b'/')
        && !matches!(b.get(1), Some(b'/' | b'\\'))
        && !s.contains('\\')
        && !s.chars().any(char::is_control)
}

fn check(out: &str, input: &str) {
    assert!(
        out.bytes().all(|b| b.is_ascii_graphic()),
        "{input:?} -> {out:?}"
    );
    assert!(HeaderValue::from_str(out).is_ok(), "{input:?} -> {out:?}");
    let base = url::Url::parse("http://origin.invalid/").unwrap();
    // Every form a reader may make of the answer: percent-decodings and browser
    // resolutions, in any order (a decoding resolved and decoded again: found in review).
    let mut todo = vec![(out.to_owned(), 0)];
    let mut seen = std::collections::HashSet::new();
    while let Some((current, decodings)) = todo.pop() {
        if !seen.insert(current.clone()) {
            continue;
        }
        assert!(
            plain_ok(&current),
            "{input:?} -> {out:?} becomes {current:?}"
        );
        let u = base.join(&current).expect("resolves");
        assert_eq!(
            u.origin(),
            base.origin(),
            "{input:?} -> {out:?} becomes {current:?}"
        );
        assert!(
            !u.path().starts_with("//"),
            "{input:?} -> {out:?} becomes {current:?}"
        );
        let resolved = u[url::Position::BeforePath..].to_owned();
        if resolved != current {
            todo.push((resolved, decodings));
        }
        let decoded = percent_decode_str(&current)
            .decode_utf8()
            .unwrap_or_else(|_| panic!("{input:?} -> {out:?}: a decoding is not UTF-8"))
            .into_owned();
        if decoded != current && decodings < 8 {
            todo.push((decoded, decodings + 1));
        }
    }
}

pub fn run(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let out = safe_next(Some(input));
    check(&out, input);
    assert_eq!(safe_next(Some(&out)), out, "{input:?} is not a fixed point");
}

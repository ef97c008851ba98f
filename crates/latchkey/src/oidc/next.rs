//! The `next` rule of SPEC 6: where a finished sign-in may send the browser.
//!
//! Only a same-origin path is honoured: it starts with a single `/` (not `//`, not `/\`),
//! has no scheme, no backslash and no control character — checked on the value as given
//! and on every percent-decoding of it. Anything else becomes `/`.

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// Longer `next` values are refused (the value travels in the OAuth state cookie).
pub const MAX_NEXT_LEN: usize = 1024;

/// Characters re-encoded on the way out so the `Location` header is plain visible ASCII.
const UNSAFE_IN_LOCATION: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'<').add(b'>').add(b'`');

/// `raw` when it is a safe same-origin path (percent-encoding non-ASCII characters), else `/`.
pub fn safe_next(raw: Option<&str>) -> String {
    match raw {
        Some(r) if is_safe_path(r) => utf8_percent_encode(r, UNSAFE_IN_LOCATION).to_string(),
        _ => "/".to_owned(),
    }
}

fn is_safe_path(raw: &str) -> bool {
    if raw.len() > MAX_NEXT_LEN {
        return false;
    }
    // The value itself and each decoding of it (an encoded value may be decoded again by
    // whatever reads it next), until decoding changes nothing.
    let mut current = raw.to_owned();
    for _ in 0..4 {
        if !plain_path_ok(&current) {
            return false;
        }
        let Ok(decoded) = percent_decode_str(&current).decode_utf8() else {
            return false;
        };
        if decoded == current {
            return true;
        }
        current = decoded.into_owned();
    }
    // Still changing after several decodings: nobody legitimate sends that.
    false
}

fn plain_path_ok(s: &str) -> bool {
    let b = s.as_bytes();
    if b.first() != Some(&b'/') || matches!(b.get(1), Some(b'/' | b'\\')) {
        return false;
    }
    if s.contains('\\') || s.chars().any(char::is_control) {
        return false;
    }
    // Resolved against a base the way a browser would resolve it: it must stay on that
    // origin, and dot segments must not turn it into `//host` (e.g. `/..//evil.example`).
    let Ok(base) = url::Url::parse("http://origin.invalid/") else {
        return false;
    };
    match base.join(s) {
        Ok(u) => u.origin() == base.origin() && !u.path().starts_with("//"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn same_origin_paths_are_kept() {
        for ok in [
            "/",
            "/account",
            "/account?tab=sessions",
            "/a/b?x=1#frag",
            "/search?q=a%20b",
            "/caf%C3%A9",
        ] {
            assert_eq!(safe_next(Some(ok)), ok, "{ok:?}");
        }
    }

    #[test]
    fn non_ascii_is_percent_encoded_on_the_way_out() {
        assert_eq!(safe_next(Some("/café")), "/caf%C3%A9");
        assert_eq!(safe_next(Some("/a b")), "/a%20b");
    }

    #[test]
    fn everything_else_becomes_root() {
        for bad in [
            "",
            "account",
            "https://evil.example",
            "http:/evil.example",
            "//evil.example",
            "///evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/%2F/evil.example",
            "%2F%2Fevil.example",
            "/%5Cevil.example",
            "/%5cevil.example",
            "%2f%2fevil.example",
            "/%252F%252Fevil.example",
            "/%25252F%25252Fevil.example",
            "javascript:alert(1)",
            "/ok\\evil",
            "/a\nb",
            "/a\rSet-Cookie:x=1",
            "/a\tb",
            "/a%0d%0aSet-Cookie:x=1",
            "/a%00",
            "/%E0%A4%A",
            "/%FF",
            "/..//evil.example",
            "/.//evil.example",
            " /account",
            "\u{0085}/x",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/");
        assert_eq!(safe_next(Some(&format!("/{}", "a".repeat(2000)))), "/");
    }
}

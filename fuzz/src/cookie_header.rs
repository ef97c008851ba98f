//! `cookies::read_cookie`: the `Cookie` header reader.
//!
//! Input: request headers, one `Name: value` per line (usually `Cookie: a=1; b=2`).
//! Properties: every value found occurs in some `Cookie` header and holds no `;`; there are
//! never more values than `name=value` pairs; a cookie appended in its own header is found,
//! last, after exactly the values found before.

use axum::http::{HeaderValue, header};
use latchkey::cookies::read_cookie;

const NAMES: &[&str] = &[
    "access_token",
    "__Host-access_token",
    "refresh_token",
    "__Secure-refresh_token",
    "oauth_state",
    "__Secure-oauth_state",
    "device",
    "__Secure-device",
];

pub fn run(data: &[u8]) {
    let h = super::headers(data);
    let raw: Vec<&[u8]> = h
        .get_all(header::COOKIE)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let pairs: usize = raw
        .iter()
        .map(|r| r.iter().filter(|b| **b == b';').count() + 1)
        .sum();
    for name in NAMES {
        let values = read_cookie(&h, name);
        assert!(values.len() <= pairs);
        for v in &values {
            assert!(!v.contains(';'), "{v:?}");
            assert!(
                raw.iter().any(|r| super::contains(r, v.as_bytes())),
                "{v:?} is in no Cookie header"
            );
        }
        let before: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        let mut planted = h.clone();
        let line = format!("{name}=planted-VALUE_1");
        planted.append(header::COOKIE, HeaderValue::from_str(&line).unwrap());
        let after = read_cookie(&planted, name);
        assert_eq!(after.last(), Some(&"planted-VALUE_1"), "{name}");
        assert_eq!(after[..after.len() - 1], before[..], "{name}");
    }
}

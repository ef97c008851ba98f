//! `domain::Email::parse`: the canonical email address (SPEC 6).
//!
//! Input: the address, as text.
//! Properties: a canonical address parses again to itself (canonicalisation is idempotent:
//! signup, login and linking agree), is trimmed, NFC, lower-case, 1 to 254 characters, one
//! `@` with a local part of at most 64 characters and a dotted domain, no whitespace or
//! control character; and surrounding spaces do not change it.

use latchkey::domain::Email;
use unicode_normalization::UnicodeNormalization;

pub fn run(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(e) = Email::parse(raw) else {
        return;
    };
    let s = e.as_str();
    assert_eq!(
        Email::parse(s).as_ref(),
        Ok(&e),
        "{raw:?} -> {s:?} does not re-parse to itself"
    );
    assert_eq!(s.trim(), s);
    assert_eq!(s.nfc().collect::<String>(), s, "{s:?} is not NFC");
    assert_eq!(s.to_lowercase(), s, "{s:?} is not lower-case");
    let n = s.chars().count();
    assert!((1..=254).contains(&n));
    let (local, domain) = s.rsplit_once('@').expect("an @");
    assert!(!local.is_empty() && local.chars().count() <= 64 && !local.contains('@'));
    assert!(domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.'));
    assert!(!s.chars().any(|c| c.is_whitespace() || c.is_control()));
    assert_eq!(Email::parse(&format!("  {raw}\t")).as_ref(), Ok(&e));
}

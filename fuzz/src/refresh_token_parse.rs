//! `tokens::refresh::RefreshToken::parse`: the refresh cookie's value (also the mail
//! tokens', `mail::MailToken`).
//!
//! Input: the cookie value, as text.
//! Properties: an accepted value is kept exactly as given, is a valid cookie value that
//! needs no quoting (RFC 6265 `cookie-octet`s, so the cookie writer can send it back), and
//! parses again to itself.
//!
//! Only `parse` and `expose` are used, through `into_iter()`, so that this target keeps
//! compiling whether `parse` answers an `Option` or a `Result` (the token format is being
//! redesigned, issue 11 item 0).

use latchkey::tokens::refresh::RefreshToken;

fn cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

pub fn run(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Some(t) = RefreshToken::parse(raw).into_iter().next() else {
        return;
    };
    assert_eq!(t.expose(), raw);
    assert!(!raw.is_empty() && raw.bytes().all(cookie_octet), "{raw:?}");
    let again = RefreshToken::parse(t.expose()).into_iter().next();
    assert_eq!(again.as_ref().map(|t| t.expose()), Some(raw));
}

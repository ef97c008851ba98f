//! `tokens::refresh::Presented::parse`: the refresh cookie's value, in both shapes — the
//! session token (sid, generation and MAC under the server's refresh secret, 75 characters)
//! and the legacy opaque token (43 characters, also the mail tokens' `mail::MailToken`).
//!
//! Input: the cookie value, as text; or `~` followed by edits (see [`super::mutate`]) of
//! a valid session token.
//! Properties: an accepted value is kept exactly as given and is a cookie value that needs
//! no quoting (RFC 6265 `cookie-octet`s, so the cookie writer can send it back); a session
//! token is exactly the text the server issues for its sid and generation (one text per
//! generation) and means nothing under another secret; a legacy token parses again to
//! itself; an edited session token is accepted as a session token only if it is byte for
//! byte the original.

use std::sync::LazyLock;

use latchkey::domain::SessionId;
use latchkey::tokens::refresh::{Presented, RefreshSecret, RefreshToken, SessionToken};

static SECRET: LazyLock<RefreshSecret> =
    LazyLock::new(|| RefreshSecret::from_bytes(&[3; 32]).expect("a secret"));
static OTHER: LazyLock<RefreshSecret> =
    LazyLock::new(|| RefreshSecret::from_bytes(&[4; 32]).expect("a secret"));
static VALID: LazyLock<SessionToken> = LazyLock::new(|| {
    let sid = SessionId("0192f0c1-8d2a-7b33-a1c4-5e6f7a8b9c0d".parse().unwrap());
    SessionToken::issue(&SECRET, sid, 41)
});

fn cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

fn check(raw: &str) -> Option<Presented> {
    let p = Presented::parse(raw, &SECRET)?;
    assert!(!raw.is_empty() && raw.bytes().all(cookie_octet), "{raw:?}");
    match &p {
        Presented::Session(t) => {
            assert_eq!(t.expose(), raw);
            let again = SessionToken::issue(&SECRET, t.sid, t.generation);
            assert_eq!(again.expose(), raw, "not the issued text of its generation");
            assert!(SessionToken::parse(raw, &OTHER).is_none(), "another secret");
        }
        Presented::Legacy(t) => {
            assert_eq!(t.expose(), raw);
            let again = RefreshToken::parse(t.expose());
            assert_eq!(again.as_ref().map(|t| t.expose()), Some(raw));
        }
    }
    Some(p)
}

pub fn run(data: &[u8]) {
    if let Some(ops) = data.strip_prefix(b"~") {
        let valid = &*VALID;
        let edited = super::mutate(valid.expose().as_bytes(), ops);
        let Ok(raw) = std::str::from_utf8(&edited) else {
            return;
        };
        // (Any 43 base64url characters are a legacy token by design: the store decides.)
        if let Some(Presented::Session(t)) = check(raw) {
            assert_eq!(raw, valid.expose(), "an edited session token was accepted");
            assert!(t.sid == valid.sid && t.generation == 41);
        }
        return;
    }
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    check(raw);
    // The legacy parser alone, as the mail endpoints use it.
    if let Some(t) = RefreshToken::parse(raw) {
        assert_eq!(t.expose(), raw);
        assert!(raw.bytes().all(cookie_octet), "{raw:?}");
    }
}

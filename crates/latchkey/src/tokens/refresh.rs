//! Refresh tokens.
//!
//! **Session tokens** ([`SessionToken`], issued since issue 11): `base64url(sid ‖ generation
//! ‖ tag)` with `tag = HMAC-SHA256(server secret, "latchkey/refresh/v2" ‖ sid ‖ generation)`,
//! 75 characters. Only the server can make one; the store keeps the session's current
//! generation (and the SHA-256 of its current token), so a session's state stays O(1)
//! however often it rotates: any token of an older generation is recognised as one by its
//! number (SPEC 5's reuse detection) with nothing remembered per rotation. The token of a
//! given (session, generation) is always the same bytes, which is what lets racing refreshes
//! within the grace window all receive the session's current token.
//!
//! **Legacy tokens** ([`RefreshToken`], 256 random bits, 43 characters): issued before, still
//! accepted for sessions that have not rotated since; their successor was `HMAC(secret,
//! token)`. The same shape serves as the mail tokens' (`mail::MailToken`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::{Digest, Sha256};

use subtle::ConstantTimeEq as _;

use crate::domain::SessionId;
use crate::store::TokenHash;

const TOKEN_BYTES: usize = 32;
const ENCODED_LEN: usize = 43;
/// sid (16) + generation (8) + tag (32).
const SESSION_TOKEN_BYTES: usize = 56;
const SESSION_TOKEN_LEN: usize = 75;

/// A refresh token. Not `Debug`/`Display` in clear.
pub struct RefreshToken(SecretString);

impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshToken([redacted])")
    }
}

/// The server secret successors are derived under.
pub struct RefreshSecret(SecretBox<[u8; 32]>);

impl RefreshSecret {
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(Self(SecretBox::new(Box::new(arr))))
    }

    pub fn generate_bytes() -> [u8; 32] {
        let mut b = [0u8; 32];
        rand::fill(&mut b);
        b
    }
}

impl RefreshToken {
    /// A fresh random token (the first of a session).
    pub fn generate() -> Self {
        let mut b = [0u8; TOKEN_BYTES];
        rand::fill(&mut b);
        Self(SecretString::from(URL_SAFE_NO_PAD.encode(b)))
    }

    /// Accepts only the exact shape latchkey issues; anything else is not a token.
    pub fn parse(raw: &str) -> Option<Self> {
        if raw.len() != ENCODED_LEN {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
        (bytes.len() == TOKEN_BYTES).then(|| Self(SecretString::from(raw.to_owned())))
    }

    /// What the store keeps.
    pub fn hash(&self) -> TokenHash {
        Sha256::digest(self.0.expose_secret().as_bytes()).into()
    }

    /// The token that replaces this one at rotation.
    pub fn successor(&self, secret: &RefreshSecret) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.0.expose_secret())
            .expect("HMAC takes any key length");
        mac.update(b"latchkey/refresh-successor/v1\0");
        mac.update(self.0.expose_secret().as_bytes());
        Self(SecretString::from(
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()),
        ))
    }

    /// The token's text, for the cookie writer only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

/// A session's refresh token of one generation (see the module docs). Not `Debug` in clear.
pub struct SessionToken {
    pub sid: SessionId,
    pub generation: u64,
    text: SecretString,
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionToken")
            .field("sid", &self.sid)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

fn session_tag(secret: &RefreshSecret, sid: SessionId, generation: u64) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.0.expose_secret())
        .expect("HMAC takes any key length");
    mac.update(b"latchkey/refresh/v2\0");
    mac.update(sid.0.as_bytes());
    mac.update(&generation.to_be_bytes());
    mac.finalize().into_bytes().into()
}

impl SessionToken {
    /// The token of `sid` at `generation`: the same bytes every time.
    pub fn issue(secret: &RefreshSecret, sid: SessionId, generation: u64) -> Self {
        let mut bytes = Vec::with_capacity(SESSION_TOKEN_BYTES);
        bytes.extend_from_slice(sid.0.as_bytes());
        bytes.extend_from_slice(&generation.to_be_bytes());
        bytes.extend_from_slice(&session_tag(secret, sid, generation));
        Self {
            sid,
            generation,
            text: SecretString::from(URL_SAFE_NO_PAD.encode(bytes)),
        }
    }

    /// Accepts only a token this server made (its tag checked in constant time).
    pub fn parse(raw: &str, secret: &RefreshSecret) -> Option<Self> {
        if raw.len() != SESSION_TOKEN_LEN {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
        let (sid, rest) = bytes.split_first_chunk::<16>()?;
        let (generation, tag) = rest.split_first_chunk::<8>()?;
        let sid = SessionId(uuid::Uuid::from_bytes(*sid));
        let generation = u64::from_be_bytes(*generation);
        let expected = session_tag(secret, sid, generation);
        if tag.len() != 32 || !bool::from(expected.as_slice().ct_eq(tag)) {
            return None;
        }
        Some(Self {
            sid,
            generation,
            text: SecretString::from(raw.to_owned()),
        })
    }

    /// What the store keeps of the session's current token.
    pub fn hash(&self) -> TokenHash {
        Sha256::digest(self.text.expose_secret().as_bytes()).into()
    }

    /// The token's text, for the cookie writer only.
    pub fn expose(&self) -> &str {
        self.text.expose_secret()
    }
}

/// A refresh token as presented: a session token, or a legacy one.
#[derive(Debug)]
pub enum Presented {
    Session(SessionToken),
    Legacy(RefreshToken),
}

impl Presented {
    /// Either shape; `None` for anything else (including a session token whose tag does not
    /// verify: a forgery names a session but proves nothing about it).
    pub fn parse(raw: &str, secret: &RefreshSecret) -> Option<Self> {
        if raw.len() == SESSION_TOKEN_LEN {
            SessionToken::parse(raw, secret).map(Presented::Session)
        } else {
            RefreshToken::parse(raw).map(Presented::Legacy)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_bit_base64url_and_parse_back() {
        let t = RefreshToken::generate();
        assert_eq!(t.expose().len(), 43);
        assert!(
            t.expose()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(RefreshToken::parse(t.expose()).unwrap().hash(), t.hash());
        assert_ne!(RefreshToken::generate().expose(), t.expose());
    }

    #[test]
    fn malformed_tokens_do_not_parse() {
        for bad in ["", "abc", &"A".repeat(44), &"+".repeat(43), &"é".repeat(20)] {
            assert!(RefreshToken::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn successor_is_deterministic_under_one_secret_only() {
        let s1 = RefreshSecret::from_bytes(&[1; 32]).unwrap();
        let s2 = RefreshSecret::from_bytes(&[2; 32]).unwrap();
        let t = RefreshToken::generate();
        assert_eq!(t.successor(&s1).expose(), t.successor(&s1).expose());
        assert_ne!(t.successor(&s1).expose(), t.successor(&s2).expose());
        assert_ne!(t.successor(&s1).expose(), t.expose());
        assert!(RefreshToken::parse(t.successor(&s1).expose()).is_some());
        assert_eq!(format!("{t:?}"), "RefreshToken([redacted])");
    }

    #[test]
    fn session_tokens_are_deterministic_and_only_the_server_makes_them() {
        let s1 = RefreshSecret::from_bytes(&[1; 32]).unwrap();
        let s2 = RefreshSecret::from_bytes(&[2; 32]).unwrap();
        let sid = SessionId::new();
        let t = SessionToken::issue(&s1, sid, 7);
        assert_eq!(t.expose().len(), SESSION_TOKEN_LEN);
        assert_eq!(t.expose(), SessionToken::issue(&s1, sid, 7).expose());
        assert_ne!(t.expose(), SessionToken::issue(&s1, sid, 8).expose());
        let back = SessionToken::parse(t.expose(), &s1).unwrap();
        assert_eq!((back.sid, back.generation), (sid, 7));
        assert!(
            SessionToken::parse(t.expose(), &s2).is_none(),
            "another secret"
        );
        // Any change to the sid, the generation or the tag is refused.
        let mut bytes = URL_SAFE_NO_PAD.decode(t.expose()).unwrap();
        for i in [0, 16, 23, 24, 55] {
            bytes[i] ^= 1;
            assert!(SessionToken::parse(&URL_SAFE_NO_PAD.encode(&bytes), &s1).is_none());
            bytes[i] ^= 1;
        }
        assert!(matches!(
            Presented::parse(t.expose(), &s1),
            Some(Presented::Session(_))
        ));
        let legacy = RefreshToken::generate();
        assert!(matches!(
            Presented::parse(legacy.expose(), &s1),
            Some(Presented::Legacy(_))
        ));
        assert!(Presented::parse(&"A".repeat(SESSION_TOKEN_LEN), &s1).is_none());
        assert!(!format!("{t:?}").contains(t.expose()));
    }
}

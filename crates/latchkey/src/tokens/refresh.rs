//! Opaque refresh tokens: 256 random bits, base64url, stored only as SHA-256.
//!
//! A session's successor token is derived, not drawn: `HMAC-SHA256(server secret, token)`.
//! A caller that presents the session's immediately previous token within the grace window
//! can therefore be handed the session's *current* token again, though the store keeps only
//! hashes (SPEC 5).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::{Digest, Sha256};

use crate::store::TokenHash;

const TOKEN_BYTES: usize = 32;
const ENCODED_LEN: usize = 43;

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
}

//! Recovery codes (SPEC 11): ten single-use codes shown once at TOTP confirmation (or when
//! regenerated), the way back in when the authenticator is lost.
//!
//! A code is 16 characters of Crockford's base32 (80 random bits), shown as
//! `xxxx-xxxx-xxxx-xxxx`. The store keeps only its SHA-256: with 80 bits of entropy nobody
//! can search a stolen hash back to its code, so a slow password hash would add nothing.
//! Input is normalised the Crockford way: case, spaces and hyphens ignored, `i`/`l` read as
//! `1`, `o` as `0`.

use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::store::TokenHash;

/// How many codes a set has.
pub const COUNT: usize = 10;
/// Characters per code (5 bits each).
pub const LEN: usize = 16;
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// One code in clear (only ever shown once). No `Debug`.
pub struct RecoveryCode(SecretString);

impl RecoveryCode {
    pub fn generate() -> Self {
        let mut b = [0u8; LEN];
        rand::fill(&mut b);
        let s: String = b
            .iter()
            .map(|x| ALPHABET[usize::from(x & 31)] as char)
            .collect();
        Self(SecretString::from(s))
    }

    /// Normalises a typed code; 400 `invalid_code` when it cannot be one.
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let mut s = String::with_capacity(LEN);
        for c in raw.chars() {
            let c = match c.to_ascii_lowercase() {
                ' ' | '-' | '\t' => continue,
                'i' | 'l' => '1',
                'o' => '0',
                c if c.is_ascii() && ALPHABET.contains(&(c as u8)) => c,
                _ => return Err(ApiError::InvalidCode),
            };
            if s.len() == LEN {
                return Err(ApiError::InvalidCode);
            }
            s.push(c);
        }
        if s.len() != LEN {
            return Err(ApiError::InvalidCode);
        }
        Ok(Self(SecretString::from(s)))
    }

    /// As shown to the user: `xxxx-xxxx-xxxx-xxxx`.
    pub fn display(&self) -> String {
        let s = self.0.expose_secret();
        s.as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("-")
    }

    /// What the store keeps.
    pub fn hash(&self) -> TokenHash {
        Sha256::digest(self.0.expose_secret().as_bytes()).into()
    }
}

/// A new set: the codes to show once, and their hashes to store.
pub fn generate_set() -> (Vec<String>, Vec<TokenHash>) {
    (0..COUNT)
        .map(|_| {
            let c = RecoveryCode::generate();
            (c.display(), c.hash())
        })
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_codes_parse_back_to_their_hash_in_any_spelling() {
        let (shown, hashes) = generate_set();
        assert_eq!(shown.len(), COUNT);
        for (s, h) in shown.iter().zip(&hashes) {
            assert_eq!(s.len(), LEN + 3);
            assert_eq!(RecoveryCode::parse(s).unwrap().hash(), *h);
            assert_eq!(RecoveryCode::parse(&s.to_uppercase()).unwrap().hash(), *h);
            assert_eq!(
                RecoveryCode::parse(&s.replace('-', " ")).unwrap().hash(),
                *h
            );
        }
        assert_eq!(
            RecoveryCode::parse("IIII-LLLL-OOOO-0000").unwrap().hash(),
            RecoveryCode::parse("1111111100000000").unwrap().hash()
        );
        for bad in [
            "",
            "abc",
            "uuuu-uuuu-uuuu-uuuu",
            "0000-0000-0000-00000",
            "ü000000000000000",
        ] {
            assert!(RecoveryCode::parse(bad).is_err(), "{bad}");
        }
    }
}

//! A small cache of verified access tokens, so a hot client does not pay an Ed25519
//! verification (≈ 50 µs, most of a cheap request) on every call.
//!
//! Keyed by the whole token text — never by a claim inside it, which a forger controls —
//! so only a byte-identical copy of a token that passed full verification can hit. An entry
//! answers no later than the token's own `exp` (plus the verification leeway); revocation is
//! still checked on every request by the caller. Only successful verifications are stored,
//! so forged tokens cannot fill it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::access::{AccessClaims, LEEWAY_SECS, TokenError};

/// Most entries kept; beyond it, expired entries are dropped, then everything.
pub const CAPACITY: usize = 16_384;

#[derive(Default)]
pub struct VerifiedTokens {
    map: RwLock<HashMap<Box<str>, Arc<AccessClaims>>>,
}

impl VerifiedTokens {
    /// `None` when unknown; `Some(Err(Expired))` when known but past its lifetime.
    pub fn get(&self, token: &str, now_secs: i64) -> Option<Result<Arc<AccessClaims>, TokenError>> {
        let hit = self.map.read().ok()?.get(token).cloned()?;
        if now_secs > hit.exp + LEEWAY_SECS as i64 {
            if let Ok(mut m) = self.map.write() {
                m.remove(token);
            }
            return Some(Err(TokenError::Expired));
        }
        Some(Ok(hit))
    }

    /// Remembers a token that just passed full verification.
    pub fn insert(&self, token: &str, claims: Arc<AccessClaims>, now_secs: i64) {
        let Ok(mut m) = self.map.write() else { return };
        if m.len() >= CAPACITY {
            m.retain(|_, c| now_secs <= c.exp + LEEWAY_SECS as i64);
            if m.len() >= CAPACITY {
                m.clear();
            }
        }
        m.insert(token.into(), claims);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{SessionId, UserId};

    fn claims(exp: i64) -> Arc<AccessClaims> {
        Arc::new(AccessClaims {
            iss: "i".into(),
            aud: "a".into(),
            sub: UserId::new(),
            sid: SessionId::new(),
            iat: 0,
            exp,
            jti: "j".into(),
            auth_time: 0,
            amr: vec![],
        })
    }

    #[test]
    fn hits_only_the_exact_token_and_never_past_exp() {
        let c = VerifiedTokens::default();
        c.insert("tok", claims(100), 0);
        assert!(c.get("tok", 50).unwrap().is_ok());
        assert!(c.get("tok ", 50).is_none());
        assert!(c.get("to", 50).is_none());
        assert!(matches!(
            c.get("tok", 100 + LEEWAY_SECS as i64 + 1),
            Some(Err(TokenError::Expired))
        ));
        assert!(c.get("tok", 50).is_none(), "an expired entry is dropped");
    }

    #[test]
    fn stays_bounded() {
        let c = VerifiedTokens::default();
        for i in 0..CAPACITY + 10 {
            c.insert(&i.to_string(), claims(1_000), 0);
        }
        assert!(c.map.read().unwrap().len() <= CAPACITY);
    }
}

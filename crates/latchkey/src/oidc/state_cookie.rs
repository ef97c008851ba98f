//! The OAuth state cookie's content: what the callback needs to finish one sign-in attempt
//! (`state`, `nonce`, PKCE verifier, `next`), sealed with XChaCha20-Poly1305 under a server
//! key kept in the store, so it can be neither read (the PKCE verifier stays secret) nor
//! forged. Its 10-minute life is enforced inside the sealed payload as well as by the
//! cookie's `Max-Age`; single use is enforced by the store (see
//! [`crate::store::Store::consume_oauth_state`]).
//!
//! Each provider seals under its own associated data (its name), so a cookie made for one
//! provider never opens at another's callback, even when a client sends it there by hand.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Binds a sealed value to this purpose and format version (Google's, as before named
/// providers existed; a named provider's appends ` oidc/{name}`).
const AAD: &[u8] = b"latchkey oauth_state v1";
const NONCE_LEN: usize = 24;
/// Sealed values longer than this are not ours (a cookie is at most ~4 KiB anyway).
const MAX_SEALED_LEN: usize = 4096;

/// One pending sign-in attempt. `Debug` shows only where it leads.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLogin {
    /// The `state` sent to the provider.
    #[serde(rename = "s")]
    pub state: String,
    /// The `nonce` the ID token must carry.
    #[serde(rename = "n")]
    pub nonce: String,
    /// The PKCE code verifier.
    #[serde(rename = "v")]
    pub pkce_verifier: String,
    /// Where to go after success (already checked by [`super::next::safe_next`]).
    #[serde(rename = "r")]
    pub next: String,
    /// Unix milliseconds after which the attempt is void.
    #[serde(rename = "e")]
    pub expires_at: i64,
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLogin")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl PendingLogin {
    /// The key under which the store records that this attempt's callback has run.
    pub fn replay_id(&self) -> [u8; 32] {
        Sha256::digest(self.state.as_bytes()).into()
    }
}

/// Seals and opens [`PendingLogin`]s for one provider.
pub struct StateSealer {
    cipher: XChaCha20Poly1305,
    aad: Vec<u8>,
}

impl StateSealer {
    /// Key length in bytes.
    pub const KEY_LEN: usize = 32;

    /// A fresh random key, to offer the store on first start.
    pub fn generate_key() -> [u8; Self::KEY_LEN] {
        let mut k = [0u8; Self::KEY_LEN];
        rand::fill(&mut k);
        k
    }

    /// Google's sealer. `None` when `key` is not [`Self::KEY_LEN`] bytes.
    pub fn new(key: &[u8]) -> Option<Self> {
        XChaCha20Poly1305::new_from_slice(key)
            .ok()
            .map(|cipher| Self {
                cipher,
                aad: AAD.to_vec(),
            })
    }

    /// The sealer of the named provider `name` (SPEC 13): what it seals opens nowhere else.
    pub fn for_provider(key: &[u8], name: &str) -> Option<Self> {
        let mut s = Self::new(key)?;
        s.aad.extend_from_slice(format!(" oidc/{name}").as_bytes());
        Some(s)
    }

    /// The cookie value: base64url(nonce ‖ ciphertext).
    pub fn seal(&self, p: &PendingLogin) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let plain = serde_json::to_vec(p).unwrap_or_default();
        // Encryption of an in-memory buffer cannot fail for these sizes.
        let sealed = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &plain,
                    aad: &self.aad,
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// The attempt, if `value` was sealed by this key and has not expired at `now_ms`.
    pub fn open(&self, value: &str, now_ms: i64) -> Option<PendingLogin> {
        if value.len() > MAX_SEALED_LEN {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(value).ok()?;
        if raw.len() <= NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        let plain = self
            .cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: &self.aad,
                },
            )
            .ok()?;
        let p: PendingLogin = serde_json::from_slice(&plain).ok()?;
        (now_ms < p.expires_at).then_some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(expires_at: i64) -> PendingLogin {
        PendingLogin {
            state: "st".into(),
            nonce: "no".into(),
            pkce_verifier: "secret-verifier".into(),
            next: "/account".into(),
            expires_at,
        }
    }

    #[test]
    fn round_trips_and_hides_the_verifier() {
        let s = StateSealer::new(&StateSealer::generate_key()).unwrap();
        let v = s.seal(&sample(2_000));
        assert!(
            !v.contains("secret")
                && !String::from_utf8_lossy(&URL_SAFE_NO_PAD.decode(&v).unwrap())
                    .contains("secret")
        );
        assert_eq!(s.open(&v, 1_000), Some(sample(2_000)));
        // Two seals of the same attempt differ (random nonce).
        assert_ne!(v, s.seal(&sample(2_000)));
    }

    #[test]
    fn expired_tampered_or_foreign_values_do_not_open() {
        let s = StateSealer::new(&StateSealer::generate_key()).unwrap();
        let v = s.seal(&sample(2_000));
        assert_eq!(s.open(&v, 2_000), None, "expired");
        let mut raw = URL_SAFE_NO_PAD.decode(&v).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert_eq!(
            s.open(&URL_SAFE_NO_PAD.encode(&raw), 1_000),
            None,
            "tampered"
        );
        let other = StateSealer::new(&StateSealer::generate_key()).unwrap();
        assert_eq!(other.open(&v, 1_000), None, "other key");
        for junk in ["", "a", "!!!", &"A".repeat(5000)] {
            assert_eq!(s.open(junk, 1_000), None);
        }
        assert!(StateSealer::new(&[0u8; 16]).is_none());
    }

    #[test]
    fn a_providers_cookie_opens_only_at_that_provider() {
        let key = StateSealer::generate_key();
        let google = StateSealer::new(&key).unwrap();
        let corp = StateSealer::for_provider(&key, "corp").unwrap();
        let corp2 = StateSealer::for_provider(&key, "corp2").unwrap();
        let v = corp.seal(&sample(2_000));
        assert_eq!(corp.open(&v, 1_000), Some(sample(2_000)));
        assert_eq!(google.open(&v, 1_000), None, "not at Google");
        assert_eq!(corp2.open(&v, 1_000), None, "not at another provider");
        assert_eq!(corp.open(&google.seal(&sample(2_000)), 1_000), None);
    }
}

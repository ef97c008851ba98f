//! Ed25519 signing keys: generated on first start, kept in the store so restarts and other
//! instances share them, rotated on a schedule (`KEY_ROTATION_INTERVAL`, SPEC 13) and by
//! `latchkey keys rotate`, published as a JWK set.
//!
//! A key's life: *next* (published in the JWKS, not signing) from its creation until its
//! `activates_at`; *current* (signing) until its `retired_at`, which is the next key's
//! `activates_at`; *retired* (verifying only) for `ACCESS_TOKEN_TTL` plus
//! [`RETIRED_KEY_MARGIN`] — long enough for every token it signed to expire, including
//! tokens signed by an instance whose clock or key set lagged a little. A scheduled key is
//! created [`crate::Config::key_publish_lead`] before it signs, so a resource server
//! caching the JWKS for its `max-age` never meets an unknown `kid`. `keys rotate` (for a
//! suspected compromise) switches at once instead.

use crate::events::{Event, EventKind};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use jsonwebtoken::{DecodingKey, EncodingKey};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::{Digest, Sha256};

use crate::clock::{ms, now_ms};
use crate::secrets::{SecretsError, SecretsKey};
use crate::store::{KeyRecord, SecretTable, Store, StoreError};

/// Extra time a retired key keeps verifying, beyond the access-token lifetime.
pub const RETIRED_KEY_MARGIN: Duration = Duration::from_secs(120);
/// An unknown `kid` reloads the key set at most this often (a forged `kid` cannot make
/// every request hit the store).
const UNKNOWN_KID_RELOAD_EVERY: Duration = Duration::from_secs(5);

/// The server secret in which versions before issue 9 kept the first key's seed.
const LEGACY_SEED: &str = "initial_signing_key_seed";

/// The keys in force at one moment.
pub struct KeySet {
    /// The newest unretired key: `(kid, key)`.
    pub signing: (String, EncodingKey),
    pub verifying: HashMap<String, DecodingKey>,
    pub jwks: serde_json::Value,
}

/// The shared, reloadable key ring.
#[derive(Clone)]
pub struct KeyRing {
    store: Arc<dyn Store>,
    secrets: SecretsKey,
    access_ttl: Duration,
    current: Arc<RwLock<Arc<KeySet>>>,
    last_unknown_reload: Arc<Mutex<Option<Instant>>>,
}

/// A freshly generated Ed25519 key, in clear. It exists only in memory: the store gets it
/// sealed ([`GeneratedKey::sealed`]).
pub struct GeneratedKey {
    pub kid: String,
    pub public_key: Vec<u8>,
    /// PKCS#8 DER.
    pub private_der: SecretSlice<u8>,
}

impl GeneratedKey {
    /// The record the store keeps: the private key sealed under `secrets`.
    pub fn sealed(&self, secrets: &SecretsKey, now: i64) -> KeyRecord {
        KeyRecord {
            kid: self.kid.clone(),
            private: secrets.seal(
                SecretTable::SigningKeys,
                &self.kid,
                self.private_der.expose_secret(),
            ),
            public_key: self.public_key.clone(),
            created_at: now,
            activates_at: now,
            retired_at: None,
        }
    }
}

/// The `kid` of a public key.
fn kid_of(public_key: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(&Sha256::digest(public_key)[..12])
}

/// A fresh random key. Seeds are never kept (issue 9, finding 8): the seed lives only in
/// this function and in the sealed private key.
pub fn generate_key() -> Result<GeneratedKey, StoreError> {
    let mut seed = [0u8; 32];
    rand::fill(&mut seed);
    let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
    seed.fill(0);
    let der = sk
        .to_pkcs8_der()
        .map_err(|e| StoreError::Other(Box::new(e)))?;
    let public_key = sk.verifying_key().to_bytes().to_vec();
    Ok(GeneratedKey {
        kid: kid_of(&public_key),
        private_der: SecretSlice::from(der.as_bytes().to_vec()),
        public_key,
    })
}

/// Opens a stored key and checks that its public half is the one stored beside it: only
/// keys sealed under `SECRETS_KEY` are trusted, so write access to the database alone
/// cannot add a verifying key either.
fn open_key(secrets: &SecretsKey, k: &KeyRecord) -> Result<SecretSlice<u8>, SecretsError> {
    let der = secrets.open(SecretTable::SigningKeys, &k.kid, &k.private)?;
    let matches = ed25519_dalek::SigningKey::from_pkcs8_der(der.expose_secret())
        .is_ok_and(|sk| sk.verifying_key().as_bytes()[..] == k.public_key[..])
        && kid_of(&k.public_key) == k.kid;
    if !matches {
        return Err(SecretsError::Damaged {
            table: SecretTable::SigningKeys.as_str(),
            name: k.kid.clone(),
        });
    }
    Ok(der)
}

fn jwk(k: &KeyRecord) -> serde_json::Value {
    serde_json::json!({
        "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
        "kid": k.kid, "x": URL_SAFE_NO_PAD.encode(&k.public_key),
    })
}

impl KeyRing {
    /// Loads the keys, creating the first one if the store has none.
    pub async fn load(
        store: Arc<dyn Store>,
        secrets: SecretsKey,
        access_ttl: Duration,
    ) -> Result<Self, StoreError> {
        // Versions before issue 9 kept the first key's seed; the first key is now agreed on
        // without one (see `build`), so it is only a liability.
        if store.delete_server_secret(LEGACY_SEED).await? {
            tracing::info!("deleted the stored seed of the first signing key");
        }
        let set = Self::build(&*store, &secrets, access_ttl, true).await?;
        Ok(Self {
            store,
            secrets,
            access_ttl,
            current: Arc::new(RwLock::new(Arc::new(set))),
            last_unknown_reload: Arc::new(Mutex::new(None)),
        })
    }

    async fn build(
        store: &dyn Store,
        secrets: &SecretsKey,
        access_ttl: Duration,
        create: bool,
    ) -> Result<KeySet, StoreError> {
        let now = now_ms();
        let mut records = store.signing_keys().await?;
        if !records.iter().any(|k| k.retired_at.is_none()) {
            if !create {
                return Err(StoreError::Other("no signing key in the store".into()));
            }
            // Instances starting together on an empty database must agree on one first key
            // (or each would sign with a key the others do not know yet): each offers its
            // own, the store keeps at most one unretired key, and all read back the winner.
            match store
                .insert_signing_key(&generate_key()?.sealed(secrets, now), None, None, &[])
                .await
            {
                Ok(()) | Err(StoreError::Conflict) => {}
                Err(e) => return Err(e),
            }
            records = store.signing_keys().await?;
        }
        let keep_until = ms(access_ttl) + ms(RETIRED_KEY_MARGIN);
        // Each live key opened once: (record, its private key in PKCS#8 DER).
        let mut live: Vec<(&KeyRecord, SecretSlice<u8>)> = Vec::new();
        for k in records
            .iter()
            .filter(|k| k.retired_at.is_none_or(|r| r + keep_until > now))
        {
            match open_key(secrets, k) {
                Ok(der) => live.push((k, der)),
                // Not ours: never trusted. Fatal if it is one we would sign with.
                Err(e) if k.retired_at.is_some() => {
                    tracing::warn!(kid = %k.kid, error = %e, "ignoring a signing key that does not open")
                }
                Err(e) => return Err(StoreError::Other(Box::new(e))),
            }
        }
        // The signer: the newest key that has activated and not yet retired. Should clocks
        // disagree so that none qualifies, the newest activated key still signs (it
        // verifies everywhere for the access-token lifetime after its retirement).
        let order = |k: &KeyRecord| (k.activates_at, k.created_at, k.kid.clone());
        let activated = || live.iter().filter(|(k, _)| k.activates_at <= now);
        let (signer, signer_der) = activated()
            .filter(|(k, _)| k.retired_at.is_none_or(|r| r > now))
            .max_by_key(|(k, _)| order(k))
            .or_else(|| activated().max_by_key(|(k, _)| order(k)))
            .or_else(|| {
                live.iter()
                    .filter(|(k, _)| k.retired_at.is_none())
                    .min_by_key(|(k, _)| order(k))
            })
            .ok_or_else(|| StoreError::Other("no signing key".into()))?;
        let verifying = live
            .iter()
            .map(|(k, _)| (k.kid.clone(), DecodingKey::from_ed_der(&k.public_key)))
            .collect();
        let jwks =
            serde_json::json!({ "keys": live.iter().map(|(k, _)| jwk(k)).collect::<Vec<_>>() });
        Ok(KeySet {
            signing: (
                signer.kid.clone(),
                EncodingKey::from_ed_der(signer_der.expose_secret()),
            ),
            verifying,
            jwks,
        })
    }

    /// The keys in force now.
    pub fn current(&self) -> Arc<KeySet> {
        self.current
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Re-reads the store (periodically, and after a rotation).
    pub async fn reload(&self) -> Result<(), StoreError> {
        let set = Arc::new(Self::build(&*self.store, &self.secrets, self.access_ttl, false).await?);
        match self.current.write() {
            Ok(mut g) => *g = set,
            Err(p) => *p.into_inner() = set,
        }
        Ok(())
    }

    /// Called when a token names a `kid` we do not know: reload, but not more often than
    /// every few seconds. Returns whether a reload happened.
    pub async fn reload_for_unknown_kid(&self) -> bool {
        {
            let Ok(mut last) = self.last_unknown_reload.lock() else {
                return false;
            };
            if last.is_some_and(|t| t.elapsed() < UNKNOWN_KID_RELOAD_EVERY) {
                return false;
            }
            *last = Some(Instant::now());
        }
        self.reload().await.is_ok()
    }

    /// Generates a new signing key, retires the others (they keep verifying until their
    /// tokens expire) and prunes keys past that.
    pub async fn rotate(
        store: &dyn Store,
        secrets: &SecretsKey,
        access_ttl: Duration,
    ) -> Result<KeyRecord, StoreError> {
        let now = now_ms();
        let key = generate_key()?.sealed(secrets, now);
        let rotated = Event::new(EventKind::KeysRotated, now)
            .with("kid", key.kid.clone())
            .with("trigger", "command");
        store
            .insert_signing_key(&key, Some(now), None, &[rotated])
            .await?;
        store
            .prune_signing_keys(now - ms(access_ttl) - ms(RETIRED_KEY_MARGIN))
            .await?;
        Ok(key)
    }

    /// The scheduled rotation (SPEC 13), run by every instance every few seconds: when the
    /// current key has signed for `interval` less `lead`, publishes the next key to sign
    /// `lead` from now, and retires the current one at that moment. Several instances
    /// doing this at once make one rotation: the insert names the key it replaces and only
    /// the first succeeds. Returns the new key's `kid` when this call made the rotation.
    pub async fn rotate_if_due(
        &self,
        interval: Duration,
        lead: Duration,
    ) -> Result<Option<String>, StoreError> {
        let now = now_ms();
        let records = self.store.signing_keys().await?;
        let Some(current) = records.iter().find(|k| k.retired_at.is_none()) else {
            return Ok(None);
        };
        // A next key is already published, or the current one is not due yet.
        if current.activates_at > now || current.activates_at + ms(interval) - ms(lead) > now {
            return Ok(None);
        }
        let mut next = generate_key()?.sealed(&self.secrets, now);
        next.activates_at = now + ms(lead);
        let rotated = Event::new(EventKind::KeysRotated, now)
            .with("kid", next.kid.clone())
            .with("retires", current.kid.clone())
            .with("trigger", "schedule");
        match self
            .store
            .insert_signing_key(
                &next,
                Some(next.activates_at),
                Some(&current.kid),
                &[rotated],
            )
            .await
        {
            Ok(()) => {}
            Err(StoreError::Conflict) => return Ok(None),
            Err(e) => return Err(e),
        }
        self.store
            .prune_signing_keys(now - ms(self.access_ttl) - ms(RETIRED_KEY_MARGIN))
            .await?;
        self.reload().await?;
        Ok(Some(next.kid))
    }
}

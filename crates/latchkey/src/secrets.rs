//! Secrets at rest (SPEC 8): the one rule for what the store keeps of a secret.
//!
//! Every private signing key and every server secret (refresh HMAC key, OAuth state key, …)
//! is sealed with XChaCha20-Poly1305 under `SECRETS_KEY` before it reaches the store, and
//! opened after it is read. A sealed value is `nonce ‖ ciphertext`; its associated data is
//! its row (table and name or `kid`) and the id of the key that sealed it, which is stored
//! beside it. So a value copied into another row does not open, a database sealed under
//! another key is refused at start with a clear error, and a copy of the database alone
//! holds no usable secret.
//!
//! The key: `SECRETS_KEY` (or `SECRETS_KEY_FILE`), 32 random bytes in base64. In development
//! on a SQLite file it may be left out: it is then generated into `latchkey.key` (mode 0600)
//! beside the database. `sqlite::memory:` gets an ephemeral key (its database dies with the
//! process anyway).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::{DecodePaddingMode, Engine};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secrecy::{ExposeSecret, ExposeSecretMut as _, SecretBox, SecretSlice, SecretString};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::store::{SecretRow, SecretTable, Store, StoreError, StoredSecret};

/// The development key file's name, beside the SQLite database.
pub const KEY_FILE_NAME: &str = "latchkey.key";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
/// Versions the sealing format; part of every sealed value's associated data.
const AAD_PREFIX: &[u8] = b"latchkey sealed secret v1";

/// Why the secrets could not be sealed or opened. Every message names `SECRETS_KEY`.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error(
        "SECRETS_KEY does not match the key this database's secrets are sealed with \
         (sealed under key id {stored}, SECRETS_KEY has key id {given}); start with the key \
         they were sealed with"
    )]
    WrongKey { stored: String, given: String },
    #[error(
        "SECRETS_KEY: the sealed secret {table}/{name} does not open (damaged, or copied from \
         another row)"
    )]
    Damaged { table: &'static str, name: String },
    #[error(
        "SECRETS_KEY is not set and {path} does not exist, but this database's secrets are \
         sealed (key id {stored}); set SECRETS_KEY or SECRETS_KEY_FILE to the key they were \
         sealed with"
    )]
    KeyFileMissing { path: String, stored: String },
    #[error(
        "SECRETS_KEY: {table}/{name} is stored in clear in a database whose secrets are sealed \
         — written by someone with database access but not the key; refusing to trust it \
         (delete that row to start)"
    )]
    ClearRow { table: &'static str, name: String },
    #[error("SECRETS_KEY: key file {path}: {message}")]
    KeyFile { path: String, message: String },
    #[error("SECRETS_KEY must be set (32 random bytes, base64) with {0}")]
    Required(&'static str),
    #[error("database: {0}")]
    Store(StoreError),
}

impl From<StoreError> for SecretsError {
    /// A [`SecretsError`] raised inside [`Store::reseal_secrets`] comes back as itself.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Other(inner) => match inner.downcast::<SecretsError>() {
                Ok(s) => *s,
                Err(inner) => SecretsError::Store(StoreError::Other(inner)),
            },
            e => SecretsError::Store(e),
        }
    }
}

/// The key that seals secrets at rest. Cheap to clone; `Debug` shows only its id.
#[derive(Clone)]
pub struct SecretsKey(Arc<KeyInner>);

struct KeyInner {
    key: SecretBox<[u8; KEY_LEN]>,
    /// A short fingerprint of the key, stored beside each value it seals.
    id: String,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsKey")
            .field("id", &self.0.id)
            .finish_non_exhaustive()
    }
}

/// Base64 with either alphabet, padding optional (SPEC 2).
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let lenient =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    GeneralPurpose::new(&alphabet::STANDARD, lenient)
        .decode(text)
        .or_else(|_| GeneralPurpose::new(&alphabet::URL_SAFE, lenient).decode(text))
        .ok()
}

impl SecretsKey {
    fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        let digest = Sha256::new()
            .chain_update(b"latchkey secrets key id v1\0")
            .chain_update(bytes)
            .finalize();
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..8]);
        Self(Arc::new(KeyInner {
            key: SecretBox::new(Box::new(bytes)),
            id,
        }))
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut b = [0u8; KEY_LEN];
        rand::fill(&mut b);
        Self::from_bytes(b)
    }

    /// Parses 32 bytes in base64 (standard or URL-safe, padding optional, surrounding
    /// whitespace ignored). The error never repeats the input.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bytes =
            SecretSlice::from(decode_base64(text.trim()).ok_or_else(|| "not base64".to_owned())?);
        let arr: [u8; KEY_LEN] = bytes.expose_secret().try_into().map_err(|_| {
            format!(
                "must be {KEY_LEN} bytes, got {} (generate one with `openssl rand -base64 32`)",
                bytes.expose_secret().len()
            )
        })?;
        Ok(Self::from_bytes(arr))
    }

    /// Reads a key file (the key in base64, as [`SecretsKey::parse`] takes it).
    pub fn read_file(path: &Path) -> Result<Self, SecretsError> {
        let err = |message: String| SecretsError::KeyFile {
            path: path.display().to_string(),
            message,
        };
        let text =
            SecretString::from(std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?);
        let key = Self::parse(text.expose_secret()).map_err(err)?;
        warn_if_readable_by_others(path);
        Ok(key)
    }

    /// The key in standard base64, for writing a key file.
    pub fn to_base64(&self) -> SecretString {
        SecretString::from(STANDARD.encode(self.0.key.expose_secret()))
    }

    /// The key's id: a short fingerprint stored beside every value it seals.
    pub fn id(&self) -> &str {
        &self.0.id
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.0.key.expose_secret().into())
    }

    fn aad(&self, table: SecretTable, name: &str) -> Vec<u8> {
        let mut aad = AAD_PREFIX.to_vec();
        for part in [table.as_str(), name, self.id()] {
            aad.push(0);
            aad.extend_from_slice(part.as_bytes());
        }
        aad
    }

    /// Seals `plain` for the row (`table`, `name`).
    pub fn seal(&self, table: SecretTable, name: &str, plain: &[u8]) -> StoredSecret {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let aad = self.aad(table, name);
        let ct = self
            .cipher()
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            // Encryption fails only past ~256 GiB of plaintext.
            .expect("XChaCha20-Poly1305 seals short values");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&ct);
        StoredSecret {
            key_id: Some(self.0.id.clone()),
            bytes,
        }
    }

    /// Opens what [`SecretsKey::seal`] sealed for the row (`table`, `name`).
    pub fn open(
        &self,
        table: SecretTable,
        name: &str,
        stored: &StoredSecret,
    ) -> Result<SecretSlice<u8>, SecretsError> {
        match &stored.key_id {
            Some(id) if id == self.id() => {}
            Some(id) => {
                return Err(SecretsError::WrongKey {
                    stored: id.clone(),
                    given: self.0.id.clone(),
                });
            }
            // Sealed in place at start; one still in clear was written by an older version.
            None => {
                return Err(SecretsError::Damaged {
                    table: table.as_str(),
                    name: format!("{name} (not sealed)"),
                });
            }
        }
        let damaged = || SecretsError::Damaged {
            table: table.as_str(),
            name: name.to_owned(),
        };
        let Some((nonce, ct)) = stored.bytes.split_first_chunk::<NONCE_LEN>() else {
            return Err(damaged());
        };
        let aad = self.aad(table, name);
        self.cipher()
            .decrypt(&XNonce::from(*nonce), Payload { msg: ct, aad: &aad })
            .map(SecretSlice::from)
            .map_err(|_| damaged())
    }
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(m) = std::fs::metadata(path)
        && m.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "SECRETS_KEY file is readable by others; chmod 600 it");
    }
}

/// Writes `key` to `path` (mode 0600) unless the file exists; returns whether it wrote.
/// The file appears whole or not at all (written aside, then linked into place), so a
/// process starting at the same moment reads either nothing or the complete key.
pub fn write_new_key_file(path: &Path, key: &SecretsKey) -> Result<bool, SecretsError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |e: std::io::Error| SecretsError::KeyFile {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let tmp = PathBuf::from(tmp);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(key.to_base64().expose_secret().as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    written.map_err(err)
}

/// Where the development key lives: beside the SQLite database file.
pub fn dev_key_path(database_file: &Path) -> PathBuf {
    database_file
        .parent()
        .unwrap_or(Path::new("."))
        .join(KEY_FILE_NAME)
}

/// The key file in development: read, or created when absent (unless the database already
/// holds sealed secrets, which a new key could not open).
fn dev_key(path: &Path, sealed_under: Option<&str>) -> Result<SecretsKey, SecretsError> {
    if !path.exists() {
        if let Some(stored) = sealed_under {
            return Err(SecretsError::KeyFileMissing {
                path: path.display().to_string(),
                stored: stored.to_owned(),
            });
        }
        if write_new_key_file(path, &SecretsKey::generate())? {
            tracing::info!(path = %path.display(), "generated SECRETS_KEY for development");
        }
    } else {
        // Ours, beside the database: narrowed like the database files.
        crate::store::sqlite::narrow_to_owner(path).map_err(|e| SecretsError::KeyFile {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
    }
    SecretsKey::read_file(path)
}

/// Why `SECRETS_KEY` must be configured, if it must: in production, and with PostgreSQL
/// (every instance needs the same key, so none can be generated). The one place this rule
/// lives; `config.rs` applies it when parsing, [`key_source`] for configs built in code.
pub fn key_required(production: bool, database_url: &str) -> Option<&'static str> {
    if production {
        Some("ENV=production")
    } else if !database_url.starts_with("sqlite:") {
        Some("PostgreSQL")
    } else {
        None
    }
}

/// Where the key for `config` comes from when `SECRETS_KEY` is not set.
pub enum KeySource {
    /// `SECRETS_KEY` or `SECRETS_KEY_FILE`.
    Configured(SecretsKey),
    /// Development on a SQLite file: this file, beside it.
    DevFile(PathBuf),
    /// `sqlite::memory:`: a key that lives as long as the process (and the database).
    Ephemeral,
}

/// The key source `config` names.
pub fn key_source(config: &Config) -> Result<KeySource, SecretsError> {
    if let Some(k) = &config.secrets_key {
        return Ok(KeySource::Configured(k.clone()));
    }
    let url = config.database_url.expose_secret();
    if let Some(why) = key_required(config.production, url) {
        return Err(SecretsError::Required(why));
    }
    Ok(match crate::store::sqlite::database_file(url) {
        Some(db) => KeySource::DevFile(dev_key_path(&db)),
        None => KeySource::Ephemeral,
    })
}

/// The key for `config`, checked against what `store` holds; rows still in clear (written
/// by a version before sealing) are sealed in place. Call at start, after migrating and
/// before anything reads a secret. Idempotent, and safe with instances starting at once.
pub async fn prepare(config: &Config, store: &dyn Store) -> Result<SecretsKey, SecretsError> {
    let rows = store.secret_rows().await?;
    let sealed_under = rows.iter().find_map(|r| r.secret.key_id.as_deref());
    let key = match key_source(config)? {
        KeySource::Configured(k) => k,
        KeySource::DevFile(path) => dev_key(&path, sealed_under)?,
        KeySource::Ephemeral => SecretsKey::generate(),
    };
    if let Some(stored) = rows
        .iter()
        .filter_map(|r| r.secret.key_id.as_deref())
        .find(|id| *id != key.id())
    {
        return Err(SecretsError::WrongKey {
            stored: stored.to_owned(),
            given: key.id().to_owned(),
        });
    }
    // Rows in clear are trusted only in a database that was never sealed (written by a
    // version before sealing). Once anything is sealed, a clear row can only have been
    // planted by someone who can write to the database but lacks the key — sealing it would
    // launder, say, their own signing key into a trusted one.
    if let Some(planted) = rows
        .iter()
        .find(|r| r.secret.key_id.is_none() && sealed_under.is_some())
    {
        return Err(clear_row(planted));
    }
    if rows.iter().any(|r| r.secret.key_id.is_none()) {
        let sealed = store
            .reseal_secrets(&|row: &SecretRow| match &row.secret.key_id {
                None => Ok(Some(key.seal(row.table, &row.name, &row.secret.bytes))),
                Some(id) if id == key.id() => Ok(None),
                Some(id) => Err(in_store(SecretsError::WrongKey {
                    stored: id.clone(),
                    given: key.id().to_owned(),
                })),
            })
            .await?;
        if sealed > 0 {
            tracing::info!(
                rows = sealed,
                key_id = key.id(),
                "sealed secrets stored in clear by an older version"
            );
        }
    }
    Ok(key)
}

fn clear_row(row: &SecretRow) -> SecretsError {
    SecretsError::ClearRow {
        table: row.table.as_str(),
        name: row.name.clone(),
    }
}

fn in_store(e: SecretsError) -> StoreError {
    StoreError::Other(Box::new(e))
}

/// Re-seals every stored secret under `new`, in one transaction: rows under `old` are
/// opened and sealed again, rows already under `new` are left (so a repeated rotation is
/// harmless). A row in clear or under a third key refuses the whole rotation ([`prepare`]
/// has sealed a never-sealed database before this runs).
/// Returns how many rows changed.
pub async fn rotate(
    store: &dyn Store,
    old: &SecretsKey,
    new: &SecretsKey,
) -> Result<u64, SecretsError> {
    let n = store
        .reseal_secrets(&|row: &SecretRow| match row.secret.key_id.as_deref() {
            Some(id) if id == new.id() => Ok(None),
            None => Err(in_store(clear_row(row))),
            Some(_) => {
                let plain = old
                    .open(row.table, &row.name, &row.secret)
                    .map_err(in_store)?;
                Ok(Some(new.seal(row.table, &row.name, plain.expose_secret())))
            }
        })
        .await?;
    Ok(n)
}

/// The named server secret, opened: `len` random bytes generated and sealed on first use
/// (first writer wins, so instances starting together agree).
pub async fn server_secret(
    store: &dyn Store,
    key: &SecretsKey,
    name: &str,
    len: usize,
) -> Result<SecretSlice<u8>, SecretsError> {
    let mut candidate = SecretSlice::from(vec![0u8; len]);
    rand::fill(&mut candidate.expose_secret_mut()[..]);
    let sealed = key.seal(SecretTable::ServerSecrets, name, candidate.expose_secret());
    let stored = store.server_secret(name, &sealed).await?;
    key.open(SecretTable::ServerSecrets, name, &stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_in_either_alphabet_with_or_without_padding() {
        let bytes: Vec<u8> = (0..32u8)
            .map(|b| b.wrapping_mul(37).wrapping_add(251))
            .collect();
        let std = STANDARD.encode(&bytes);
        let url = base64::engine::general_purpose::URL_SAFE.encode(&bytes);
        assert!(std.contains('+') || std.contains('/'), "{std}");
        let id = SecretsKey::parse(&std).unwrap().id().to_owned();
        for text in [
            std.clone(),
            std.trim_end_matches('=').to_owned(),
            url.clone(),
            url.trim_end_matches('=').to_owned(),
            format!("  {std}\n"),
        ] {
            assert_eq!(SecretsKey::parse(&text).unwrap().id(), id, "{text}");
        }
        for bad in ["", "not base64!", &STANDARD.encode([0u8; 16])] {
            let e = SecretsKey::parse(bad).unwrap_err();
            assert!(bad.is_empty() || !e.contains(bad), "{e}");
        }
    }

    #[test]
    fn sealed_values_open_only_in_their_row_under_their_key() {
        let k = SecretsKey::generate();
        let s = k.seal(SecretTable::ServerSecrets, "refresh_hmac", b"secret bytes");
        assert_eq!(s.key_id.as_deref(), Some(k.id()));
        assert!(!s.bytes.windows(6).any(|w| w == b"secret"));
        let plain = k
            .open(SecretTable::ServerSecrets, "refresh_hmac", &s)
            .unwrap();
        assert_eq!(plain.expose_secret(), b"secret bytes");
        // Moved to another row or table: refused.
        assert!(matches!(
            k.open(SecretTable::ServerSecrets, "oauth_state_key", &s),
            Err(SecretsError::Damaged { .. })
        ));
        assert!(
            k.open(SecretTable::SigningKeys, "refresh_hmac", &s)
                .is_err()
        );
        // Another key: named as such.
        let other = SecretsKey::generate();
        assert!(matches!(
            other.open(SecretTable::ServerSecrets, "refresh_hmac", &s),
            Err(SecretsError::WrongKey { .. })
        ));
        // A key id swapped to the other key's does not help either.
        let relabelled = StoredSecret {
            key_id: Some(other.id().to_owned()),
            bytes: s.bytes.clone(),
        };
        assert!(
            other
                .open(SecretTable::ServerSecrets, "refresh_hmac", &relabelled)
                .is_err()
        );
        assert!(!format!("{k:?}").contains(&*k.to_base64().expose_secret().to_owned()));
    }
}

//! The passkey tables' SQL (SPEC 11), shared as written by both backends (`$n` parameters
//! work on SQLite too). Only the id columns differ: TEXT on SQLite, UUID on PostgreSQL, so
//! each backend binds and reads ids its own way and hands rows to the helpers here.

use super::{CeremonyKind, CeremonyRecord, PasskeyRecord, Result, StoreError, hash_from_vec};
use crate::domain::UserId;

pub(super) const PASSKEY_COLUMNS: &str =
    "id, user_id, credential_id, credential, name, created_at, last_used_at";

pub(super) const INSERT_PASSKEY: &str = "INSERT INTO passkeys (id, user_id, credential_id, credential, name, created_at, last_used_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

pub(super) const RENAME_PASSKEY: &str =
    "UPDATE passkeys SET name = $1 WHERE id = $2 AND user_id = $3";

/// `$1` now, `$2` the new credential or NULL to keep it, `$3` id.
pub(super) const TOUCH_PASSKEY: &str =
    "UPDATE passkeys SET last_used_at = $1, credential = COALESCE($2, credential) WHERE id = $3";

/// Deletes passkey `$1` of user `$2` unless the account would be left with no way in: it
/// needs a password, a linked identity or another passkey.
pub(super) const DELETE_PASSKEY: &str = "DELETE FROM passkeys WHERE id = $1 AND user_id = $2 AND ( \
       EXISTS (SELECT 1 FROM users WHERE id = $2 AND password_hash IS NOT NULL) \
       OR EXISTS (SELECT 1 FROM identities WHERE user_id = $2) \
       OR EXISTS (SELECT 1 FROM passkeys WHERE user_id = $2 AND id <> $1))";

pub(super) const PRUNE_CEREMONIES: &str = "DELETE FROM webauthn_ceremonies WHERE expires_at < $1";

pub(super) const INSERT_CEREMONY: &str = "INSERT INTO webauthn_ceremonies (id, kind, user_id, state, created_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6)";

/// Deleting is the taking: of two requests with one ceremony id, one gets the row.
pub(super) const TAKE_CEREMONY: &str = "DELETE FROM webauthn_ceremonies WHERE id = $1 \
     RETURNING id, kind, user_id, state, created_at, expires_at";

/// A passkey row with its ids already parsed by the backend.
pub(super) type PasskeyRow = (
    uuid::Uuid,
    UserId,
    Vec<u8>,
    String,
    String,
    i64,
    Option<i64>,
);

pub(super) fn passkey_from(
    (id, user_id, credential_id, credential, name, created_at, last_used_at): PasskeyRow,
) -> PasskeyRecord {
    PasskeyRecord {
        id,
        user_id,
        credential_id,
        credential,
        name,
        created_at,
        last_used_at,
    }
}

/// A taken ceremony, if it is of `kind` and still unexpired at `now`.
pub(super) fn ceremony_from(
    (id, kind, user_id, state, created_at, expires_at): (
        Vec<u8>,
        String,
        Option<UserId>,
        String,
        i64,
        i64,
    ),
    want: CeremonyKind,
    now: i64,
) -> Result<Option<CeremonyRecord>> {
    let kind = match kind.as_str() {
        "register" => CeremonyKind::Register,
        "login" => CeremonyKind::Login,
        "second_factor" => CeremonyKind::SecondFactor,
        "reauthenticate" => CeremonyKind::Reauthenticate,
        _ => return Err(StoreError::Other("unknown ceremony kind".into())),
    };
    if kind != want || expires_at <= now {
        return Ok(None);
    }
    Ok(Some(CeremonyRecord {
        id_hash: hash_from_vec(id)?,
        kind,
        user_id,
        state,
        created_at,
        expires_at,
    }))
}

//! Second factors (SPEC 11): what the store keeps of them, and the SQL both backends run as
//! written (`$N` placeholders work on SQLite and PostgreSQL alike; only the user id's type
//! differs, bound by each backend).

use super::{StoredSecret, TokenHash};
use crate::domain::UserId;
use crate::mfa::Amr;

/// A user's TOTP secret as stored: sealed (`SecretTable::MfaTotp`, by user id).
#[derive(Debug, Clone)]
pub struct TotpRecord {
    pub user_id: UserId,
    pub secret: StoredSecret,
    /// When it was set up; also the version a confirmation must match (a second setup in
    /// between replaces the secret the code was computed for).
    pub created_at: i64,
    /// `None` until confirmed with a code: it protects nothing before.
    pub confirmed_at: Option<i64>,
    /// The last time step a code was accepted for; only later ones are accepted.
    pub last_step: Option<i64>,
}

/// A sign-in waiting for its second factor. The store knows only the SHA-256 of the
/// second-factor cookie's token.
#[derive(Debug, Clone)]
pub struct PendingLogin {
    pub id_hash: TokenHash,
    pub user_id: UserId,
    /// What the first factor was (e.g. `pwd`); the second factor's values join it.
    pub amr: Amr,
    /// The methods offered (`totp`, `recovery_code`, `passkey`).
    pub methods: Vec<String>,
    pub created_at: i64,
    pub expires_at: i64,
    /// Codes tried so far (at most [`crate::mfa::pending::MAX_ATTEMPTS`]).
    pub attempts: i32,
    pub used_at: Option<i64>,
}

impl PendingLogin {
    /// Not used, not expired, attempts left.
    pub fn is_live(&self, now: i64, max_attempts: i32) -> bool {
        self.used_at.is_none() && now < self.expires_at && self.attempts < max_attempts
    }
}

/// Which second factors a user has. The passkeys module fills `passkeys`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserFactors {
    /// A confirmed TOTP secret.
    pub totp: bool,
    /// Unused recovery codes.
    pub recovery_codes: u32,
    /// Registered passkeys.
    pub passkeys: u32,
}

impl UserFactors {
    /// Whether sign-in needs a second factor: TOTP or a passkey (recovery codes are only the
    /// way back in when the factor is lost).
    pub fn any(&self) -> bool {
        self.totp || self.passkeys > 0
    }

    /// The methods the second step offers, in the order the login page shows them.
    pub fn methods(&self) -> Vec<String> {
        let mut m = Vec::new();
        if self.totp {
            m.push("totp".to_owned());
        }
        if self.passkeys > 0 {
            m.push("passkey".to_owned());
        }
        if self.any() && self.recovery_codes > 0 {
            m.push("recovery_code".to_owned());
        }
        m
    }
}

/// `$1` user: (confirmed TOTP, unused recovery codes).
pub(crate) const USER_FACTORS: &str = "SELECT \
     EXISTS (SELECT 1 FROM mfa_totp WHERE user_id = $1 AND confirmed_at IS NOT NULL), \
     (SELECT COUNT(*) FROM mfa_recovery_codes WHERE user_id = $1 AND used_at IS NULL), \
     (SELECT COUNT(*) FROM passkeys WHERE user_id = $1)";

pub(crate) const TOTP_SELECT: &str =
    "SELECT secret, key_id, created_at, confirmed_at, last_step FROM mfa_totp WHERE user_id = $1";

/// Inserts or replaces an unconfirmed secret; touches nothing when a confirmed one exists.
/// `$1` user, `$2` sealed secret, `$3` key id, `$4` now.
pub(crate) const TOTP_SETUP: &str = "INSERT INTO mfa_totp (user_id, secret, key_id, created_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret, \
     key_id = excluded.key_id, created_at = excluded.created_at, last_step = NULL \
     WHERE mfa_totp.confirmed_at IS NULL";

/// A code's step accepted at most once, and only after the last one. `$1` user, `$2` step.
pub(crate) const TOTP_USE_STEP: &str = "UPDATE mfa_totp SET last_step = $2 \
     WHERE user_id = $1 AND confirmed_at IS NOT NULL AND (last_step IS NULL OR last_step < $2)";

/// `$1` user, `$2` step, `$3` now, `$4` the setup's `created_at`.
pub(crate) const TOTP_CONFIRM: &str = "UPDATE mfa_totp SET confirmed_at = $3, last_step = $2 \
     WHERE user_id = $1 AND confirmed_at IS NULL AND created_at = $4 \
     AND (last_step IS NULL OR last_step < $2)";

pub(crate) const TOTP_DELETE: &str = "DELETE FROM mfa_totp WHERE user_id = $1";

pub(crate) const RECOVERY_DELETE: &str = "DELETE FROM mfa_recovery_codes WHERE user_id = $1";

/// `$1` user, `$2` hash, `$3` now.
pub(crate) const RECOVERY_INSERT: &str =
    "INSERT INTO mfa_recovery_codes (user_id, hash, created_at) VALUES ($1, $2, $3)";

/// `$1` user, `$2` hash, `$3` now.
pub(crate) const RECOVERY_USE: &str = "UPDATE mfa_recovery_codes SET used_at = $3 \
     WHERE user_id = $1 AND hash = $2 AND used_at IS NULL";

pub(crate) const PENDING_INSERT: &str = "INSERT INTO mfa_pending \
     (id_hash, user_id, amr, methods, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)";

pub(crate) const PENDING_SELECT: &str = "SELECT id_hash, user_id, amr, methods, created_at, \
     expires_at, attempts, used_at FROM mfa_pending WHERE id_hash = $1";

/// Takes one attempt: `$1` id hash, `$2` now, `$3` the most attempts allowed.
pub(crate) const PENDING_ATTEMPT: &str = "UPDATE mfa_pending SET attempts = attempts + 1 \
     WHERE id_hash = $1 AND used_at IS NULL AND expires_at > $2 AND attempts < $3";

/// Uses the pending sign-in up: `$1` id hash, `$2` now.
pub(crate) const PENDING_FINISH: &str = "UPDATE mfa_pending SET used_at = $2 \
     WHERE id_hash = $1 AND used_at IS NULL AND expires_at > $2";

pub(crate) const PENDING_PRUNE: &str = "DELETE FROM mfa_pending WHERE expires_at < $1";

/// `$1` session, `$2` user, `$3` auth_time, `$4` amr.
pub(crate) const REAUTHENTICATE_SESSION: &str = "UPDATE sessions SET auth_time = $3, amr = $4 \
     WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL";

/// A row of [`TOTP_SELECT`].
pub(crate) type TotpRow = (Vec<u8>, Option<String>, i64, Option<i64>, Option<i64>);

pub(crate) fn totp_from(
    user_id: UserId,
    (secret, key_id, created_at, confirmed_at, last_step): TotpRow,
) -> TotpRecord {
    TotpRecord {
        user_id,
        secret: StoredSecret {
            key_id,
            bytes: secret,
        },
        created_at,
        confirmed_at,
        last_step,
    }
}

/// The parts of a [`PENDING_SELECT`] row both backends read alike (the user id aside).
pub(crate) fn pending_from(
    id_hash: Vec<u8>,
    user_id: UserId,
    amr: &str,
    methods: &str,
    (created_at, expires_at, attempts, used_at): (i64, i64, i32, Option<i64>),
) -> super::Result<PendingLogin> {
    Ok(PendingLogin {
        id_hash: super::hash_from_vec(id_hash)?,
        user_id,
        amr: Amr::parse(amr),
        methods: methods
            .split_ascii_whitespace()
            .map(str::to_owned)
            .collect(),
        created_at,
        expires_at,
        attempts,
        used_at,
    })
}

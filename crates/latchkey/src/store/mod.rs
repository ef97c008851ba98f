//! The storage boundary. Handlers and session logic talk to [`Store`]; SQL lives only in
//! its implementations ([`sqlite::SqliteStore`], [`postgres::PostgresStore`]), selected by
//! `DATABASE_URL`.
//!
//! Timestamps are Unix milliseconds (`i64`) so the grace window and expiries are exact and
//! both backends store the same thing.

mod events_sql;
mod mail_sql;
mod mfa_sql;
mod passkey_sql;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use secrecy::ExposeSecret;

use crate::config::RateLimits;
use crate::domain::{Email, SessionId, UserId};
use crate::error::BoxError as Source;
use crate::events::{Event, EventQuery, EventRecord};
use crate::ratelimit::RateLimiter;

pub use mfa_sql::{PendingLogin, TotpRecord, UserFactors};

/// SHA-256 of a refresh token: all the store ever knows of one.
pub type TokenHash = [u8; 32];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness constraint refused the write (e.g. the email is taken).
    #[error("conflict")]
    Conflict,
    /// A precondition of [`Store::apply`] failed (a mail token no longer usable); nothing
    /// was written.
    #[error("refused")]
    Refused,
    /// The database cannot be reached right now; callers answer 503.
    #[error("database unavailable: {0}")]
    Unavailable(Source),
    #[error("database error: {0}")]
    Other(Source),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A user as stored. `Debug` omits the password hash.
#[derive(Clone)]
pub struct UserRecord {
    pub id: UserId,
    pub email: Email,
    pub name: Option<String>,
    /// PHC string; `None` for accounts that only sign in with Google.
    pub password_hash: Option<String>,
    pub email_verified: bool,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("email_verified", &self.email_verified)
            .field("has_password", &self.password_hash.is_some())
            .field("disabled_at", &self.disabled_at)
            .finish_non_exhaustive()
    }
}

impl From<NewUser> for UserRecord {
    /// The record a freshly inserted user has.
    fn from(u: NewUser) -> Self {
        UserRecord {
            id: u.id,
            email: u.email,
            name: u.name,
            password_hash: u.password_hash,
            email_verified: u.email_verified,
            created_at: u.created_at,
            disabled_at: None,
        }
    }
}

/// A new password account.
pub struct NewUser {
    pub id: UserId,
    pub email: Email,
    pub name: Option<String>,
    pub password_hash: Option<String>,
    pub email_verified: bool,
    pub created_at: i64,
}

/// A link from an identity provider's account, keyed on (issuer, subject), to a user.
#[derive(Debug, Clone)]
pub struct NewIdentity {
    pub issuer: String,
    pub subject: String,
    pub user_id: UserId,
    /// The provider's email at link time (informational; users are never keyed on it).
    pub email: Option<String>,
    pub created_at: i64,
}

/// A session (one family of refresh tokens) as stored.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: SessionId,
    pub user_id: UserId,
    pub current_hash: TokenHash,
    pub previous_hash: Option<TokenHash>,
    pub rotated_at: Option<i64>,
    pub created_at: i64,
    pub last_used_at: i64,
    pub idle_expires_at: i64,
    pub absolute_expires_at: i64,
    pub revoked_at: Option<i64>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    /// When the user last proved who they are in this session (sign-in, reset): the access
    /// token's `auth_time`, kept across refresh (SPEC 11).
    pub auth_time: i64,
    /// How the user authenticated at `auth_time` (RFC 8176), kept across refresh like it.
    pub amr: crate::mfa::Amr,
    /// How many times the session rotated: its current token is the session token of this
    /// generation (0 may also be a legacy token, from before session tokens).
    pub generation: i64,
}

impl SessionRecord {
    pub fn expires_at(&self) -> i64 {
        self.idle_expires_at.min(self.absolute_expires_at)
    }
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked_at.is_none() && now < self.expires_at()
    }
}

/// Which of a session's tokens a presented hash matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMatch {
    /// The session's current token.
    Current,
    /// The token the current one replaced.
    Previous,
    /// An older token of the session, retired before the previous one.
    Retired,
}

/// A secret as the store keeps it: bytes sealed by [`crate::secrets`] and the id of the key
/// that sealed them. `key_id` is `None` only for a row written in clear by a version before
/// sealing; such rows are sealed in place at start. `Debug` shows neither the bytes nor
/// their length.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSecret {
    pub key_id: Option<String>,
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSecret")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// The tables whose rows hold a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecretTable {
    /// `signing_keys.private_der`, by `kid`.
    SigningKeys,
    /// `server_secrets.value`, by `name`.
    ServerSecrets,
    /// `outbox.body` (a queued message, which carries a live link), by `id`.
    Outbox,
    /// `mfa_totp.secret` (a user's TOTP secret), by user id.
    MfaTotp,
}

impl SecretTable {
    /// The table's name (also part of what a sealed value is bound to).
    pub fn as_str(self) -> &'static str {
        match self {
            SecretTable::SigningKeys => "signing_keys",
            SecretTable::ServerSecrets => "server_secrets",
            SecretTable::Outbox => "outbox",
            SecretTable::MfaTotp => "mfa_totp",
        }
    }
}

/// One stored secret and the row that holds it.
#[derive(Debug, Clone)]
pub struct SecretRow {
    pub table: SecretTable,
    /// The row's key: `kid` or the secret's name.
    pub name: String,
    pub secret: StoredSecret,
}

impl SecretRow {
    /// The query both backends run to list every stored secret; its columns are what
    /// [`SecretRow::from_columns`] takes.
    pub(crate) const SELECT_ALL: &'static str = "SELECT 0, kid, private_der, key_id FROM signing_keys \
         UNION ALL SELECT 1, name, value, key_id FROM server_secrets \
         UNION ALL SELECT 2, id, body, key_id FROM outbox WHERE body IS NOT NULL \
         UNION ALL SELECT 3, CAST(user_id AS TEXT), secret, key_id FROM mfa_totp ORDER BY 1, 2";

    /// The statement that writes a resealed value back (`$1` bytes, `$2` key id, `$3` name).
    pub(crate) fn update_statement(table: SecretTable) -> &'static str {
        match table {
            SecretTable::SigningKeys => {
                "UPDATE signing_keys SET private_der = $1, key_id = $2 WHERE kid = $3"
            }
            SecretTable::ServerSecrets => {
                "UPDATE server_secrets SET value = $1, key_id = $2 WHERE name = $3"
            }
            SecretTable::Outbox => "UPDATE outbox SET body = $1, key_id = $2 WHERE id = $3",
            SecretTable::MfaTotp => {
                "UPDATE mfa_totp SET secret = $1, key_id = $2 WHERE CAST(user_id AS TEXT) = $3"
            }
        }
    }

    /// A row of [`SecretRow::SELECT_ALL`]: table (0 signing keys, 1 server secrets), name,
    /// stored bytes, key id.
    pub(crate) fn from_columns(
        (table, name, bytes, key_id): (i32, String, Vec<u8>, Option<String>),
    ) -> Self {
        SecretRow {
            table: match table {
                0 => SecretTable::SigningKeys,
                1 => SecretTable::ServerSecrets,
                3 => SecretTable::MfaTotp,
                _ => SecretTable::Outbox,
            },
            name,
            secret: StoredSecret { key_id, bytes },
        }
    }
}

/// How [`Store::reseal_secrets`] rewrites one row: its replacement, or `None` to leave it.
pub type Resealer<'a> = dyn Fn(&SecretRow) -> Result<Option<StoredSecret>> + Send + Sync + 'a;

/// A signing key as stored: the private key (PKCS#8 DER) sealed, the public key in clear.
#[derive(Clone)]
pub struct KeyRecord {
    pub kid: String,
    pub private: StoredSecret,
    pub public_key: Vec<u8>,
    pub created_at: i64,
    /// When it starts signing (SPEC 13: a scheduled key is published before it signs).
    pub activates_at: i64,
    /// When it stops signing; it keeps verifying for the access-token lifetime after.
    pub retired_at: Option<i64>,
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .field("activates_at", &self.activates_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// What a token sent by mail is for (SPEC 10). A token works only for its purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenPurpose {
    VerifyEmail,
    ResetPassword,
    ChangeEmail,
}

impl TokenPurpose {
    pub const ALL: [TokenPurpose; 3] = [
        TokenPurpose::VerifyEmail,
        TokenPurpose::ResetPassword,
        TokenPurpose::ChangeEmail,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TokenPurpose::VerifyEmail => "verify_email",
            TokenPurpose::ResetPassword => "reset_password",
            TokenPurpose::ChangeEmail => "change_email",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// How long a token of this purpose is good for (SPEC 10).
    pub fn lifetime(self) -> std::time::Duration {
        std::time::Duration::from_secs(match self {
            TokenPurpose::VerifyEmail => 24 * 3600,
            TokenPurpose::ResetPassword => 30 * 60,
            TokenPurpose::ChangeEmail => 3600,
        })
    }
}

/// A mail token as stored: its SHA-256, never the token.
#[derive(Debug, Clone)]
pub struct EmailToken {
    pub hash: TokenHash,
    pub purpose: TokenPurpose,
    pub user_id: UserId,
    /// The address the token was sent to.
    pub email: Email,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

/// A message in the outbox. `body` (the sealed message) is `None` once it was delivered or
/// given up.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub id: String,
    /// What the message is (`verify_email`, `password_changed`, …), for logs and metrics.
    pub kind: String,
    pub body: Option<StoredSecret>,
    pub created_at: i64,
    pub next_attempt_at: i64,
    pub attempts: i32,
    pub sent_at: Option<i64>,
    pub failed_at: Option<i64>,
}

/// How a delivery attempt ended, for [`Store::finish_mail`].
#[derive(Debug, Clone, Copy)]
pub enum MailOutcome<'a> {
    /// Delivered: the body is erased.
    Sent { at: i64 },
    /// Not now: try again at `at`.
    Retry { at: i64, error: &'a str },
    /// Given up (a permanent refusal, or 24 hours of trying): the body is erased.
    Failed { at: i64, error: &'a str },
}

/// Outbox figures for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailStats {
    pub queued: u64,
    pub sent: u64,
    pub failed: u64,
    /// `created_at` of the oldest message not yet delivered nor given up.
    pub oldest_unsent_at: Option<i64>,
}

/// A registered passkey (SPEC 11). `credential` is webauthn-rs's serialized `Passkey`: the
/// credential id, public key, signature counter and flags — public material, kept in clear.
#[derive(Debug, Clone)]
pub struct PasskeyRecord {
    /// The API's id for it.
    pub id: uuid::Uuid,
    pub user_id: UserId,
    /// The WebAuthn credential id (raw bytes), unique across all users.
    pub credential_id: Vec<u8>,
    /// webauthn-rs's `Passkey` as JSON.
    pub credential: String,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// What a WebAuthn ceremony in progress is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CeremonyKind {
    /// Adding a passkey to a signed-in account.
    Register,
    /// Signing in with a discoverable passkey.
    Login,
    /// The second step of a password sign-in, with one of the user's passkeys.
    SecondFactor,
    /// Proving who a signed-in user is again, with one of their passkeys.
    Reauthenticate,
}

impl CeremonyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CeremonyKind::Register => "register",
            CeremonyKind::Login => "login",
            CeremonyKind::SecondFactor => "second_factor",
            CeremonyKind::Reauthenticate => "reauthenticate",
        }
    }
}

/// A WebAuthn ceremony in progress: webauthn-rs's state for it (JSON), keyed by the SHA-256
/// of the ceremony id the browser holds. Single use, short-lived.
#[derive(Debug, Clone)]
pub struct CeremonyRecord {
    pub id_hash: TokenHash,
    pub kind: CeremonyKind,
    /// The account it is for; none for a discoverable sign-in.
    pub user_id: Option<UserId>,
    pub state: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// One write of an account change. [`Store::apply`] makes a list of them in one
/// transaction: all or nothing. That is how mail goes out with the change that causes it
/// (SPEC 10: the outbox row is written in the same transaction).
pub enum Change<'a> {
    /// Creates a password account ([`StoreError::Conflict`] when the email is taken).
    CreateUser(&'a NewUser),
    /// Marks the mail token used. Refused ([`StoreError::Refused`]) unless it is unused,
    /// unexpired, of `purpose`, of `user`, the user is not disabled and — except for an
    /// address change, whose token names the new address — the user's address is still
    /// the one it was sent to.
    UseToken {
        hash: &'a TokenHash,
        purpose: TokenPurpose,
        user: UserId,
        now: i64,
    },
    InsertToken(&'a EmailToken),
    /// Voids the user's unused tokens of these purposes.
    VoidTokens {
        user: UserId,
        purposes: &'a [TokenPurpose],
        now: i64,
    },
    SetPassword {
        user: UserId,
        hash: &'a str,
    },
    /// Marks the user's address verified, if it still is `email`.
    MarkVerified {
        user: UserId,
        email: &'a Email,
    },
    /// Switches the user's address to `email`, verified ([`StoreError::Conflict`] when
    /// another account has it).
    SetEmail {
        user: UserId,
        email: &'a Email,
    },
    /// Revokes the user's live sessions, except `except`; the ids are returned by `apply`.
    RevokeSessions {
        user: UserId,
        except: Option<SessionId>,
        now: i64,
        reason: &'a str,
    },
    /// Queues a message (its body already sealed).
    Enqueue(&'a OutboxEntry),
    /// Deletes one of `user`'s passkeys. Refused ([`StoreError::Refused`]) when there is no
    /// such passkey or when it is the account's last way in: no password, no linked
    /// identity and no other passkey (SPEC 11). Checked and deleted under the user's row
    /// lock, so two deletions can never each leave the other as the last one.
    DeletePasskey {
        user: UserId,
        id: uuid::Uuid,
    },
    /// Turns the user's TOTP secret set up at `created_at` on, with the code of `step`.
    /// Refused unless that very setup is still unconfirmed.
    ConfirmTotp {
        user: UserId,
        step: i64,
        created_at: i64,
        now: i64,
    },
    /// Removes the user's TOTP secret (confirmed or not).
    DeleteTotp {
        user: UserId,
    },
    /// Replaces every recovery code of the user with these (SHA-256 hashes); none removes
    /// them all.
    ReplaceRecoveryCodes {
        user: UserId,
        hashes: &'a [TokenHash],
        now: i64,
    },
    /// Records a security event (SPEC 12) with the rest of the change: it exists if and
    /// only if the change committed. Logged after the commit. A `session_revoked` is left
    /// out when the change's [`Change::RevokeSessions`] (before it) revoked none.
    Record(&'a Event),
}

/// What latchkey needs from a database.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<()>;
    /// Cheap round trip, for `/readyz`.
    async fn ping(&self) -> Result<()>;
    /// Closes the store's connections once the server has stopped serving. On SQLite the
    /// last connection to close copies the WAL back and removes it, so the next start does
    /// not read up to 256 MiB of WAL to rebuild its index (and a `cp` of a stopped instance's
    /// database file is complete). Any later call fails.
    async fn close(&self) {}

    async fn create_user(&self, user: NewUser) -> Result<UserRecord>;
    async fn user_by_email(&self, email: &Email) -> Result<Option<UserRecord>>;
    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>>;
    async fn list_users(&self) -> Result<Vec<UserRecord>>;
    /// Sets or clears `disabled_at`; false when no such user.
    /// `events` are written with it, when it changed a row.
    async fn set_user_disabled(
        &self,
        id: UserId,
        disabled_at: Option<i64>,
        events: &[Event],
    ) -> Result<bool>;
    /// Sign-in methods of a user: `password` and/or the issuers of the user's identities
    /// (`http::auth` names them after the configured providers).
    async fn user_providers(&self, id: UserId) -> Result<Vec<String>>;
    /// A user and their sign-in methods (`GET /api/v1/me`). Backends answer it in one query.
    async fn user_profile(&self, id: UserId) -> Result<Option<(UserRecord, Vec<String>)>> {
        let Some(u) = self.user_by_id(id).await? else {
            return Ok(None);
        };
        let providers = self.user_providers(id).await?;
        Ok(Some((u, providers)))
    }
    /// The user an identity (issuer, subject) is linked to.
    async fn user_by_identity(&self, issuer: &str, subject: &str) -> Result<Option<UserRecord>>;
    /// Links an identity to an existing user, in one transaction with marking the user's
    /// email verified when `email_verified`. If the user's email was not verified before,
    /// nobody had proven owning the address — whoever set the password may be a squatter —
    /// so in the same transaction the password is removed and every session of the user is
    /// revoked (reason `email_claimed`). [`StoreError::Conflict`] when the identity is
    /// already linked. Returns the sessions it revoked, so the caller can put them in the
    /// revoked set at once ([`crate::session::mark_revoked`]).
    async fn link_identity(
        &self,
        identity: &NewIdentity,
        email_verified: bool,
        events: &[Event],
    ) -> Result<Vec<SessionId>>;
    /// Creates a user (no password) and its first identity in one transaction.
    /// [`StoreError::Conflict`] when the email or the identity is taken.
    async fn create_user_with_identity(
        &self,
        user: NewUser,
        identity: &NewIdentity,
        events: &[Event],
    ) -> Result<UserRecord>;
    /// Records that the OAuth attempt `id` (a hash of its `state`) reached its callback;
    /// false when it already had (a replay). Records past `expires_at` may be forgotten.
    async fn consume_oauth_state(&self, id: &[u8; 32], expires_at: i64, now: i64) -> Result<bool>;

    /// Inserts a new session unless its user is missing or disabled (checked in the same
    /// statement, so a concurrent `users disable` cannot be outrun); false when refused.
    /// `events` (`login_succeeded`) are written in the same transaction, when it is.
    async fn insert_session(&self, session: &SessionRecord, events: &[Event]) -> Result<bool>;
    /// The session one of whose tokens (current, previous or older retired) has this hash.
    async fn session_by_token_hash(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<(SessionRecord, TokenMatch)>>;
    /// The session with this id, whatever its state.
    async fn session_by_id(&self, id: SessionId) -> Result<Option<SessionRecord>>;
    /// Rotates the session (compare-and-swap): if it is not revoked, still at `generation`
    /// and its current token still hashes to `expected`, the current token becomes the
    /// previous one, `new` the current, and the generation goes up by one. Hashes displaced
    /// by the first two rotations are remembered as retired (legacy tokens are recognised
    /// only by hash); later rotations remember nothing — the state stays O(1). False when
    /// another request rotated or revoked first.
    async fn advance_session(
        &self,
        id: SessionId,
        generation: i64,
        expected: &TokenHash,
        new: &TokenHash,
        now: i64,
        idle_expires_at: i64,
    ) -> Result<bool>;
    /// The common rotation in one statement, without reading the session first: if the
    /// session is not revoked, not expired at `now`, at `generation` (≥ 2: nothing to
    /// remember for legacy tokens) and its current token hashes to `expected`, moves it on
    /// exactly as [`Store::advance_session`] does, with `idle_expires_at` capped at its
    /// absolute expiry, and returns the session as it now is. `None` when any condition does
    /// not hold — the caller then reads the session and applies the full refresh rule.
    async fn advance_current_session(
        &self,
        id: SessionId,
        generation: i64,
        expected: &TokenHash,
        new: &TokenHash,
        now: i64,
        idle_expires_at: i64,
    ) -> Result<Option<SessionRecord>>;
    /// Revokes one session (of `user` when given); false when not found or already revoked.
    async fn revoke_session(
        &self,
        id: SessionId,
        user: Option<UserId>,
        now: i64,
        reason: &str,
        events: &[Event],
    ) -> Result<bool>;
    /// Revokes every live session of a user; returns the ones it revoked.
    async fn revoke_user_sessions(
        &self,
        user: UserId,
        now: i64,
        reason: &str,
        events: &[Event],
    ) -> Result<Vec<SessionId>>;
    /// Sessions not revoked and not expired, newest first; all users when `user` is None.
    async fn live_sessions(&self, user: Option<UserId>, now: i64) -> Result<Vec<SessionRecord>>;
    /// Deletes sessions (and their retired tokens) that expired or were revoked before
    /// `before`; returns how many. Called periodically with a cut-off past the point where
    /// any token of theirs could still verify. At most [`PRUNE_MAX`] per call (the rest the
    /// next time), deleted in write transactions of [`PRUNE_BATCH`] rows.
    async fn prune_sessions(&self, before: i64) -> Result<u64>;
    /// Sessions revoked at or after `since`, with when.
    async fn revoked_since(&self, since: i64) -> Result<Vec<(SessionId, i64)>>;

    // --- passkeys (SPEC 11) ---
    /// Registers a passkey. [`StoreError::Conflict`] when its credential id is registered
    /// already (to anyone).
    async fn insert_passkey(&self, passkey: &PasskeyRecord, events: &[Event]) -> Result<()>;
    /// The user's passkeys, oldest first.
    async fn passkeys(&self, user: UserId) -> Result<Vec<PasskeyRecord>>;
    /// The passkey with this WebAuthn credential id, whoever's it is.
    async fn passkey_by_credential_id(&self, credential_id: &[u8])
    -> Result<Option<PasskeyRecord>>;
    /// Renames one of `user`'s passkeys; false when there is no such passkey.
    async fn rename_passkey(&self, user: UserId, id: uuid::Uuid, name: &str) -> Result<bool>;
    /// Records a sign-in with the passkey: `last_used_at`, and its updated credential (the
    /// signature counter, backup state) when webauthn-rs changed it.
    async fn touch_passkey(&self, id: uuid::Uuid, credential: Option<&str>, now: i64)
    -> Result<()>;
    /// Stores a ceremony's state; ceremonies that expired before `now` are deleted first.
    async fn insert_ceremony(&self, ceremony: &CeremonyRecord, now: i64) -> Result<()>;
    /// Takes (deletes and returns) the ceremony with this id hash if it is of `kind` and
    /// unexpired at `now`: a ceremony is used at most once, whatever its outcome.
    async fn take_ceremony(
        &self,
        id_hash: &TokenHash,
        kind: CeremonyKind,
        now: i64,
    ) -> Result<Option<CeremonyRecord>>;

    async fn signing_keys(&self) -> Result<Vec<KeyRecord>>;
    /// Inserts a key; when `retire_others_at` is set, marks every other unretired key retired
    /// in the same transaction. At most one key is unretired at a time (a unique index):
    /// without `retire_others_at`, [`StoreError::Conflict`] when another key is in force —
    /// so instances starting together on an empty database agree on one first key. With
    /// `only_replacing` as well, the key is inserted only if that key is still the unretired
    /// one, else [`StoreError::Conflict`] — so instances scheduling the next key together
    /// make one rotation, not one each.
    async fn insert_signing_key(
        &self,
        key: &KeyRecord,
        retire_others_at: Option<i64>,
        only_replacing: Option<&str>,
        events: &[Event],
    ) -> Result<()>;
    /// Deletes keys retired before `before`.
    async fn prune_signing_keys(&self, before: i64) -> Result<u64>;
    /// The named server secret; `candidate` is stored first if none exists (first writer
    /// wins, so concurrent first starts agree).
    async fn server_secret(&self, name: &str, candidate: &StoredSecret) -> Result<StoredSecret>;
    /// Deletes the named server secret; false when there was none.
    async fn delete_server_secret(&self, name: &str) -> Result<bool>;
    /// Every stored secret: the private part of each signing key and every server secret.
    async fn secret_rows(&self) -> Result<Vec<SecretRow>>;
    /// Rewrites stored secrets in one transaction that holds them locked (instances starting
    /// at once take turns): `reseal` sees every row, in (table, name) order, and returns its
    /// replacement or `None`. An error from it rolls everything back. Returns how many rows
    /// changed.
    async fn reseal_secrets(&self, reseal: &Resealer<'_>) -> Result<u64>;

    /// The mail token with this hash, whatever its state.
    async fn email_token(&self, hash: &TokenHash) -> Result<Option<EmailToken>>;
    /// Makes `changes` in one transaction, in order; returns the sessions revoked by
    /// [`Change::RevokeSessions`]. Any refusal or error rolls everything back.
    async fn apply(&self, changes: &[Change<'_>]) -> Result<Vec<SessionId>>;
    /// Claims up to `limit` messages due at `now` that nobody holds (several instances never
    /// claim the same row: `FOR UPDATE SKIP LOCKED` on PostgreSQL, the single writer on
    /// SQLite) until `lease_until`, counting an attempt; returns them with their bodies.
    async fn claim_mail(&self, now: i64, lease_until: i64, limit: i64) -> Result<Vec<OutboxEntry>>;
    /// Records how a claimed message's delivery attempt ended.
    async fn finish_mail(&self, id: &str, outcome: MailOutcome<'_>) -> Result<()>;
    async fn mail_stats(&self) -> Result<MailStats>;
    /// The latest messages, newest first (the development outbox page).
    async fn recent_mail(&self, limit: i64) -> Result<Vec<OutboxEntry>>;
    /// Deletes mail tokens that expired before `before`, and outbox rows delivered or given
    /// up before it; returns how many rows went.
    async fn prune_mail(&self, before: i64) -> Result<u64>;

    // --- Second factors (SPEC 11) ---

    /// Which second factors the user has. The passkeys module adds its count.
    async fn user_factors(&self, user: UserId) -> Result<UserFactors>;
    /// The user's TOTP secret, confirmed or not.
    async fn totp(&self, user: UserId) -> Result<Option<TotpRecord>>;
    /// Stores a new unconfirmed TOTP secret, replacing an unconfirmed one; false (nothing
    /// written) when a confirmed one exists.
    async fn put_totp_setup(&self, record: &TotpRecord) -> Result<bool>;
    /// Accepts a confirmed TOTP secret's code of `step` — once, and only after the last
    /// accepted step (compare-and-swap); false otherwise.
    async fn use_totp_step(&self, user: UserId, step: i64) -> Result<bool>;
    /// Uses one of the user's unused recovery codes by its hash; false when none matches.
    async fn use_recovery_code(&self, user: UserId, hash: &TokenHash, now: i64) -> Result<bool>;
    async fn insert_pending_login(&self, pending: &PendingLogin) -> Result<()>;
    /// The pending sign-in with this id hash, whatever its state.
    async fn pending_login(&self, id_hash: &TokenHash) -> Result<Option<PendingLogin>>;
    /// Counts one attempt on a live pending sign-in with fewer than `max` attempts; false
    /// when it is used, expired or out of attempts.
    async fn take_pending_attempt(&self, id_hash: &TokenHash, now: i64, max: i32) -> Result<bool>;
    /// Uses the pending sign-in up (once); false when it was already, or has expired.
    async fn finish_pending_login(&self, id_hash: &TokenHash, now: i64) -> Result<bool>;
    /// Sets a live session's `auth_time` and `amr` (reauthentication); false when the session
    /// is not `user`'s or is revoked.
    async fn reauthenticate_session(
        &self,
        id: SessionId,
        user: UserId,
        auth_time: i64,
        amr: crate::mfa::Amr,
    ) -> Result<bool>;
    /// Deletes pending sign-ins that expired before `before`; returns how many.
    async fn prune_pending_logins(&self, before: i64) -> Result<u64>;

    // --- Security events (SPEC 12) ---
    /// Records events that go with no other write (`login_failed`, `mfa_failed`).
    async fn insert_events(&self, events: &[Event]) -> Result<()>;
    /// Events newest first (by id), as `query` says.
    async fn events(&self, query: EventQuery) -> Result<Vec<EventRecord>>;
    /// Deletes events older than `before`; returns how many.
    async fn prune_events(&self, before: i64) -> Result<u64>;

    /// A rate limiter shared by every instance on this store, if the backend offers one;
    /// `None` (the default) means each instance limits in memory.
    fn rate_limiter(&self, _limits: RateLimits) -> Option<Arc<dyn RateLimiter>> {
        None
    }
}

/// Opens the store that `database_url` names.
pub async fn connect(database_url: &secrecy::SecretString) -> Result<Arc<dyn Store>> {
    let url = database_url.expose_secret();
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::connect(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PostgresStore::connect(url).await?))
    } else {
        Err(StoreError::Other(
            "unsupported DATABASE_URL (expected sqlite:… or postgres://…)".into(),
        ))
    }
}

/// Sessions one [`Store::prune_sessions`] call deletes at most (their ids are held in
/// memory meanwhile: 100k × 16 bytes).
pub const PRUNE_MAX: usize = 100_000;
/// Sessions deleted per write transaction by [`Store::prune_sessions`].
pub const PRUNE_BATCH: usize = 500;

/// The events a list of changes records.
pub(crate) fn recorded(changes: &[Change<'_>], revoked: usize) -> Vec<Event> {
    let events: Vec<Event> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Record(e) => Some((*e).clone()),
            _ => None,
        })
        .collect();
    unless_none_revoked(&events, revoked)
}

/// `events` with `user` where they name none (a revocation by session id knows its user
/// only from the row).
pub(crate) fn with_user(events: &[Event], user: UserId) -> Vec<Event> {
    events
        .iter()
        .map(|e| Event {
            user: e.user.or(Some(user)),
            ..e.clone()
        })
        .collect()
}

/// `events` without their `session_revoked` ones when no session was revoked (a user with
/// no live session disabled; `logout_all` is kept: the user asked).
pub(crate) fn unless_none_revoked(events: &[Event], revoked: usize) -> Vec<Event> {
    events
        .iter()
        .filter(|e| revoked > 0 || e.kind != crate::events::EventKind::SessionRevoked)
        .cloned()
        .collect()
}

pub(crate) fn hash_from_vec(v: Vec<u8>) -> Result<TokenHash> {
    v.try_into()
        .map_err(|_| StoreError::Other("stored token hash has the wrong length".into()))
}

/// SQLITE_BUSY / SQLITE_LOCKED (and their extended codes) after the busy timeout: the
/// database is overloaded right now, a 503, not a bug.
fn sqlite_busy(db: &dyn sqlx::error::DatabaseError) -> bool {
    db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
        && db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|c| matches!(c & 0xff, 5 | 6))
}

pub(crate) fn classify(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
        sqlx::Error::Database(db)
            if postgres::is_unavailable(db.as_ref()) || sqlite_busy(db.as_ref()) =>
        {
            StoreError::Unavailable(Box::new(e))
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => StoreError::Unavailable(Box::new(e)),
        _ => StoreError::Other(Box::new(e)),
    }
}

//! SQL of the mail tables (tokens and outbox) that both backends run as written: `$N`
//! placeholders work on SQLite and PostgreSQL alike, and only the id columns' types differ
//! (bound by each backend). Row conversions shared by both live here too.

use super::{
    EmailToken, MailOutcome, MailStats, OutboxEntry, Result, StoreError, StoredSecret,
    TokenPurpose, hash_from_vec,
};
use crate::domain::{Email, UserId};

/// `$1` now, `$2` hash, `$3` purpose, `$4` user: see [`super::Change::UseToken`].
pub(crate) const USE_TOKEN: &str = "UPDATE email_tokens SET used_at = $1 \
     WHERE hash = $2 AND purpose = $3 AND user_id = $4 AND used_at IS NULL AND expires_at > $1 \
     AND EXISTS (SELECT 1 FROM users u WHERE u.id = $4 AND u.disabled_at IS NULL \
                 AND (email_tokens.purpose = 'change_email' OR u.email = email_tokens.email))";

pub(crate) const INSERT_TOKEN: &str = "INSERT INTO email_tokens \
     (hash, purpose, user_id, email, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)";

/// `$1` now, `$2` user, `$3` purpose.
pub(crate) const VOID_TOKENS: &str = "UPDATE email_tokens SET used_at = $1 \
     WHERE user_id = $2 AND purpose = $3 AND used_at IS NULL";

pub(crate) const EMAIL_TOKEN_SELECT: &str = "SELECT hash, purpose, user_id, email, created_at, \
     expires_at, used_at FROM email_tokens WHERE hash = $1";

/// `$1` now, `$2` reason, `$3` user, `$4` the session to keep (or NULL).
pub(crate) const REVOKE_SESSIONS_EXCEPT: &str = "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 \
     WHERE user_id = $3 AND revoked_at IS NULL AND ($4 IS NULL OR id <> $4) RETURNING id";

pub(crate) const ENQUEUE: &str = "INSERT INTO outbox \
     (id, kind, body, key_id, created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6)";

pub(crate) const OUTBOX_COLUMNS: &str =
    "id, kind, body, key_id, created_at, next_attempt_at, attempts, sent_at, failed_at";

/// The ids of messages due at `$2` that nobody holds, oldest due first, at most `$3`.
pub(crate) const OUTBOX_DUE: &str = "SELECT id FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL \
     AND next_attempt_at <= $2 AND (claimed_until IS NULL OR claimed_until <= $2) \
     ORDER BY next_attempt_at LIMIT $3";

pub(crate) const MAIL_STATS: &str = "SELECT \
     COALESCE(SUM(CASE WHEN sent_at IS NULL AND failed_at IS NULL THEN 1 ELSE 0 END), 0), \
     COALESCE(SUM(CASE WHEN sent_at IS NOT NULL THEN 1 ELSE 0 END), 0), \
     COALESCE(SUM(CASE WHEN failed_at IS NOT NULL THEN 1 ELSE 0 END), 0), \
     MIN(CASE WHEN sent_at IS NULL AND failed_at IS NULL THEN created_at END) FROM outbox";

/// Each takes `$1`, the cut-off.
pub(crate) const PRUNE_MAIL: [&str; 2] = [
    "DELETE FROM email_tokens WHERE expires_at < $1",
    "DELETE FROM outbox WHERE (sent_at IS NOT NULL AND sent_at < $1) \
     OR (failed_at IS NOT NULL AND failed_at < $1)",
];

/// The statement recording `outcome` and its `$1` (time) and `$2` (error); `$3` is the id.
pub(crate) fn finish_statement(outcome: MailOutcome<'_>) -> (&'static str, i64, Option<&str>) {
    match outcome {
        MailOutcome::Sent { at } => (
            "UPDATE outbox SET sent_at = $1, last_error = $2, body = NULL, key_id = NULL, \
             claimed_until = NULL WHERE id = $3",
            at,
            None,
        ),
        MailOutcome::Retry { at, error } => (
            "UPDATE outbox SET next_attempt_at = $1, last_error = $2, claimed_until = NULL \
             WHERE id = $3",
            at,
            Some(error),
        ),
        MailOutcome::Failed { at, error } => (
            "UPDATE outbox SET failed_at = $1, last_error = $2, body = NULL, key_id = NULL, \
             claimed_until = NULL WHERE id = $3",
            at,
            Some(error),
        ),
    }
}

/// A row of `SELECT {OUTBOX_COLUMNS}`.
pub(crate) type OutboxRow = (
    String,
    String,
    Option<Vec<u8>>,
    Option<String>,
    i64,
    i64,
    i32,
    Option<i64>,
    Option<i64>,
);

pub(crate) fn outbox_entry(r: OutboxRow) -> OutboxEntry {
    let (id, kind, body, key_id, created_at, next_attempt_at, attempts, sent_at, failed_at) = r;
    OutboxEntry {
        id,
        kind,
        body: body.map(|bytes| StoredSecret { key_id, bytes }),
        created_at,
        next_attempt_at,
        attempts,
        sent_at,
        failed_at,
    }
}

pub(crate) fn mail_stats_from(
    (queued, sent, failed, oldest): (i64, i64, i64, Option<i64>),
) -> MailStats {
    MailStats {
        queued: queued.max(0) as u64,
        sent: sent.max(0) as u64,
        failed: failed.max(0) as u64,
        oldest_unsent_at: oldest,
    }
}

/// A row of [`EMAIL_TOKEN_SELECT`], its user id already parsed; times are
/// (created, expires, used).
pub(crate) fn email_token_from(
    hash: Vec<u8>,
    purpose: &str,
    user_id: UserId,
    email: String,
    (created_at, expires_at, used_at): (i64, i64, Option<i64>),
) -> Result<EmailToken> {
    Ok(EmailToken {
        hash: hash_from_vec(hash)?,
        purpose: TokenPurpose::parse(purpose)
            .ok_or_else(|| StoreError::Other("unknown mail token purpose".into()))?,
        user_id,
        email: Email::from_store(email),
        created_at,
        expires_at,
        used_at,
    })
}

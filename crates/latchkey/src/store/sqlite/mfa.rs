//! Second factors (SPEC 11) on SQLite: the SQL is [`crate::store::mfa_sql`]'s; user ids are
//! TEXT here.

use sqlx::SqlitePool;

use super::super::mfa_sql::*;
use super::super::{Change, PendingLogin, Result, TokenHash, TotpRecord, UserFactors, classify};
use crate::domain::{SessionId, UserId};
use crate::mfa::Amr;

type Tx<'t> = sqlx::Transaction<'t, sqlx::Sqlite>;

fn uid(user: UserId) -> String {
    user.0.to_string()
}

pub(super) async fn user_factors(pool: &SqlitePool, user: UserId) -> Result<UserFactors> {
    let (totp, codes, passkeys): (bool, i64, i64) = sqlx::query_as(USER_FACTORS)
        .bind(uid(user))
        .fetch_one(pool)
        .await
        .map_err(classify)?;
    Ok(UserFactors {
        totp,
        recovery_codes: u32::try_from(codes).unwrap_or(u32::MAX),
        passkeys: u32::try_from(passkeys).unwrap_or(u32::MAX),
    })
}

pub(super) async fn totp(pool: &SqlitePool, user: UserId) -> Result<Option<TotpRecord>> {
    let row: Option<TotpRow> = sqlx::query_as(TOTP_SELECT)
        .bind(uid(user))
        .fetch_optional(pool)
        .await
        .map_err(classify)?;
    Ok(row.map(|r| totp_from(user, r)))
}

pub(super) async fn put_totp_setup(pool: &SqlitePool, r: &TotpRecord) -> Result<bool> {
    let done = sqlx::query(TOTP_SETUP)
        .bind(uid(r.user_id))
        .bind(&r.secret.bytes)
        .bind(&r.secret.key_id)
        .bind(r.created_at)
        .execute(pool)
        .await
        .map_err(classify)?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn use_totp_step(pool: &SqlitePool, user: UserId, step: i64) -> Result<bool> {
    let done = sqlx::query(TOTP_USE_STEP)
        .bind(uid(user))
        .bind(step)
        .execute(pool)
        .await
        .map_err(classify)?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn use_recovery_code(
    pool: &SqlitePool,
    user: UserId,
    hash: &TokenHash,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(RECOVERY_USE)
        .bind(uid(user))
        .bind(&hash[..])
        .bind(now)
        .execute(pool)
        .await
        .map_err(classify)?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn insert_pending_login(pool: &SqlitePool, p: &PendingLogin) -> Result<()> {
    sqlx::query(PENDING_INSERT)
        .bind(&p.id_hash[..])
        .bind(uid(p.user_id))
        .bind(p.amr.to_text())
        .bind(p.methods.join(" "))
        .bind(p.created_at)
        .bind(p.expires_at)
        .execute(pool)
        .await
        .map_err(classify)?;
    Ok(())
}

type PendingRow = (Vec<u8>, String, String, String, i64, i64, i32, Option<i64>);

pub(super) async fn pending_login(
    pool: &SqlitePool,
    id_hash: &TokenHash,
) -> Result<Option<PendingLogin>> {
    let row: Option<PendingRow> = sqlx::query_as(PENDING_SELECT)
        .bind(&id_hash[..])
        .fetch_optional(pool)
        .await
        .map_err(classify)?;
    row.map(
        |(id, user, amr, methods, created, expires, attempts, used)| {
            pending_from(
                id,
                super::parse_id(&user)?,
                &amr,
                &methods,
                (created, expires, attempts, used),
            )
        },
    )
    .transpose()
}

pub(super) async fn take_pending_attempt(
    pool: &SqlitePool,
    id_hash: &TokenHash,
    now: i64,
    max: i32,
) -> Result<bool> {
    let done = sqlx::query(PENDING_ATTEMPT)
        .bind(&id_hash[..])
        .bind(now)
        .bind(max)
        .execute(pool)
        .await
        .map_err(classify)?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn finish_pending_login(
    pool: &SqlitePool,
    id_hash: &TokenHash,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(PENDING_FINISH)
        .bind(&id_hash[..])
        .bind(now)
        .execute(pool)
        .await
        .map_err(classify)?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn reauthenticate_session(
    pool: &SqlitePool,
    id: SessionId,
    user: UserId,
    auth_time: i64,
    amr: Amr,
) -> Result<bool> {
    let done = sqlx::query(REAUTHENTICATE_SESSION)
        .bind(id.0.to_string())
        .bind(uid(user))
        .bind(auth_time)
        .bind(amr.to_text())
        .execute(pool)
        .await
        .map_err(classify)?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn prune_pending_logins(pool: &SqlitePool, before: i64) -> Result<u64> {
    let done = sqlx::query(PENDING_PRUNE)
        .bind(before)
        .execute(pool)
        .await
        .map_err(classify)?;
    Ok(done.rows_affected())
}

/// The second-factor [`Change`]s inside [`crate::store::Store::apply`]'s transaction;
/// `false` when `change` is not one of them.
pub(super) async fn apply_one(tx: &mut Tx<'_>, change: &Change<'_>) -> Result<bool> {
    match *change {
        Change::ConfirmTotp {
            user,
            step,
            created_at,
            now,
        } => {
            let done = sqlx::query(TOTP_CONFIRM)
                .bind(uid(user))
                .bind(step)
                .bind(now)
                .bind(created_at)
                .execute(&mut **tx)
                .await
                .map_err(classify)?;
            if done.rows_affected() != 1 {
                return Err(super::StoreError::Refused);
            }
        }
        Change::DeleteTotp { user } => {
            sqlx::query(TOTP_DELETE)
                .bind(uid(user))
                .execute(&mut **tx)
                .await
                .map_err(classify)?;
        }
        Change::ReplaceRecoveryCodes { user, hashes, now } => {
            sqlx::query(RECOVERY_DELETE)
                .bind(uid(user))
                .execute(&mut **tx)
                .await
                .map_err(classify)?;
            for h in hashes {
                sqlx::query(RECOVERY_INSERT)
                    .bind(uid(user))
                    .bind(&h[..])
                    .bind(now)
                    .execute(&mut **tx)
                    .await
                    .map_err(classify)?;
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

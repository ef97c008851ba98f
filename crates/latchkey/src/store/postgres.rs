//! PostgreSQL implementation of [`Store`], for several stateless instances on one database.
//!
//! Same semantics as [`super::sqlite::SqliteStore`]; ids are native `UUID` columns (16 bytes,
//! validated by the database, no parsing on read), timestamps `BIGINT` Unix ms, token hashes
//! `BYTEA`. The hot-path writes are single statements: rotation is one compare-and-swap
//! statement that locks the session row, so instances racing on one token serialise on
//! that row and exactly one wins; the rate limit is one upsert.
//!
//! Connection faults (the database restarting, connections terminated, connections refused)
//! map to [`StoreError::Unavailable`] — a clean 503 — and the pool reconnects by itself:
//! every connection is tested before use and a dead one is replaced.
//!
//! [`PgRateLimiter`] shares the rate limits between instances through the same database.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use sqlx::error::DatabaseError;
use sqlx::postgres::{PgConnectOptions, PgDatabaseError, PgPool, PgPoolOptions};
use uuid::Uuid;

use super::events_sql::{INSERT_EVENT, PRUNE_EVENTS, SELECT_EVENTS_POSTGRES, detail_from};
use super::mail_sql::{
    EMAIL_TOKEN_SELECT, ENQUEUE, INSERT_TOKEN, MAIL_STATS, OUTBOX_COLUMNS, OUTBOX_DUE, OutboxRow,
    PRUNE_MAIL, REVOKE_SESSIONS_EXCEPT, USE_TOKEN, VOID_TOKENS, email_token_from, finish_statement,
    mail_stats_from, outbox_entry,
};
use super::passkey_sql::{
    DELETE_PASSKEY, INSERT_CEREMONY, INSERT_PASSKEY, PASSKEY_COLUMNS, PRUNE_CEREMONIES,
    RENAME_PASSKEY, TAKE_CEREMONY, TOUCH_PASSKEY, ceremony_from, passkey_from,
};
use super::{
    CeremonyKind, CeremonyRecord, Change, EmailToken, KeyRecord, MailOutcome, MailStats,
    NewIdentity, NewUser, OutboxEntry, PasskeyRecord, Resealer, Result, SecretRow, SessionRecord,
    Store, StoreError, StoredSecret, TokenHash, TokenMatch, UserRecord, classify, hash_from_vec,
};
use crate::config::{Quota, RateLimits};
use crate::domain::{Email, SessionId, UserId};
use crate::events::{Event, EventKind, EventQuery, EventRecord};
use crate::ratelimit::{Bucket, MemoryLimiter, RateLimiter};

/// Connections per instance. Requests hold a connection for one or two short statements, so
/// a handful serve an instance's CPU-bound request rate; several instances times this must
/// stay well under the server's `max_connections` (100 by default).
const MAX_CONNECTIONS: u32 = 10;
/// How long a request waits for a connection before answering 503. Below `/readyz`'s 2 s
/// ping timeout, so a down database reads as "unavailable", not as a hung request.
const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(1_500);
/// Server-side cap on one statement (request path only; migrations run without it).
const STATEMENT_TIMEOUT_MS: &str = "5000";

mod mfa;
pub struct PostgresStore {
    pool: PgPool,
    /// Connect options without the statement timeout, for migrations (which may wait on the
    /// advisory lock while another instance migrates).
    migrate_opts: PgConnectOptions,
}

/// True for PostgreSQL errors that mean "the database cannot serve right now" rather than
/// "this statement is wrong": SQLSTATE classes 08 (connection exception), 53 (insufficient
/// resources, e.g. too many connections), 55 (object not in prerequisite state, e.g.
/// "database is not currently accepting connections", lock timeouts), 57 (operator
/// intervention: admin/crash shutdown, cannot connect now, statement timeout), and
/// serialization failures/deadlocks (40001, 40P01), which a retry resolves.
pub(crate) fn is_unavailable(db: &dyn DatabaseError) -> bool {
    let Some(pg) = db.try_downcast_ref::<PgDatabaseError>() else {
        return false;
    };
    let code = pg.code();
    matches!(code.get(..2), Some("08" | "53" | "55" | "57")) || matches!(code, "40001" | "40P01")
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: Uuid,
    email: String,
    name: Option<String>,
    password_hash: Option<String>,
    email_verified: bool,
    created_at: i64,
    disabled_at: Option<i64>,
}

impl From<UserRow> for UserRecord {
    fn from(r: UserRow) -> Self {
        UserRecord {
            id: UserId(r.id),
            email: Email::from_store(r.email),
            name: r.name,
            password_hash: r.password_hash,
            email_verified: r.email_verified,
            created_at: r.created_at,
            disabled_at: r.disabled_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: Uuid,
    user_id: Uuid,
    current_hash: Vec<u8>,
    previous_hash: Option<Vec<u8>>,
    rotated_at: Option<i64>,
    created_at: i64,
    last_used_at: i64,
    idle_expires_at: i64,
    absolute_expires_at: i64,
    revoked_at: Option<i64>,
    user_agent: Option<String>,
    ip: Option<String>,
    auth_time: i64,
    amr: String,
    generation: i64,
}

impl TryFrom<SessionRow> for SessionRecord {
    type Error = StoreError;
    fn try_from(r: SessionRow) -> Result<Self> {
        Ok(SessionRecord {
            id: SessionId(r.id),
            user_id: UserId(r.user_id),
            current_hash: hash_from_vec(r.current_hash)?,
            previous_hash: r.previous_hash.map(hash_from_vec).transpose()?,
            rotated_at: r.rotated_at,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            idle_expires_at: r.idle_expires_at,
            absolute_expires_at: r.absolute_expires_at,
            revoked_at: r.revoked_at,
            user_agent: r.user_agent,
            ip: r.ip,
            auth_time: r.auth_time,
            amr: crate::mfa::Amr::parse(&r.amr),
            generation: r.generation,
        })
    }
}

#[derive(sqlx::FromRow)]
struct MatchedSessionRow {
    #[sqlx(flatten)]
    session: SessionRow,
    /// 0 current, 1 previous, 2 retired.
    which: i32,
}

const USER_COLUMNS: &str =
    "id, email, name, password_hash, email_verified, created_at, disabled_at";
const SESSION_COLUMNS: &str = "s.id, s.user_id, s.current_hash, s.previous_hash, s.rotated_at, s.created_at, s.last_used_at, s.idle_expires_at, s.absolute_expires_at, s.revoked_at, s.user_agent, s.ip, s.auth_time, s.amr, s.generation";

impl PostgresStore {
    /// Connects to `url` (`postgres://…` or `postgresql://…`). Fails if the database does
    /// not answer now; later outages are survived.
    pub async fn connect(url: &str) -> Result<Self> {
        let base = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Other(Box::new(e)))?
            .application_name("latchkey");
        let pool_opts = base
            .clone()
            .options([("statement_timeout", STATEMENT_TIMEOUT_MS)]);
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .min_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(Duration::from_secs(300))
            .max_lifetime(Duration::from_secs(1_800))
            // A connection the server has closed (restart, pg_terminate_backend) fails this
            // ping and is replaced, instead of failing the request that would get it.
            .test_before_acquire(true)
            .connect_with(pool_opts)
            .await
            .map_err(classify)?;
        Ok(Self {
            pool,
            migrate_opts: base,
        })
    }
}

async fn pg_insert_user<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Postgres>,
    u: &NewUser,
) -> Result<()> {
    sqlx::query("INSERT INTO users (id, email, name, password_hash, email_verified, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(u.id.0)
        .bind(u.email.as_str())
        .bind(&u.name)
        .bind(&u.password_hash)
        .bind(u.email_verified)
        .bind(u.created_at)
        .execute(db)
        .await
        .map_err(classify)?;
    Ok(())
}

/// Writes events inside a transaction.
async fn pg_insert_events(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    events: &[Event],
) -> Result<()> {
    for e in events {
        sqlx::query(INSERT_EVENT)
            .bind(e.at)
            .bind(e.kind.as_str())
            .bind(e.user.map(|u| u.0))
            .bind(e.session.map(|s| s.0))
            .bind(&e.ip)
            .bind(&e.user_agent)
            .bind(e.detail_json())
            .execute(&mut **tx)
            .await
            .map_err(classify)?;
    }
    Ok(())
}

/// Commits, then logs the events the transaction wrote.
async fn pg_commit(tx: sqlx::Transaction<'_, sqlx::Postgres>, events: &[Event]) -> Result<()> {
    tx.commit().await.map_err(classify)?;
    crate::events::logged(events);
    Ok(())
}

type PgEventRow = (
    i64,
    i64,
    String,
    Option<Uuid>,
    Option<Uuid>,
    Option<String>,
    Option<String>,
    String,
);

async fn pg_insert_identity(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    i: &NewIdentity,
) -> Result<()> {
    sqlx::query("INSERT INTO identities (issuer, subject, user_id, email, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&i.issuer)
        .bind(&i.subject)
        .bind(i.user_id.0)
        .bind(&i.email)
        .bind(i.created_at)
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    async fn migrate(&self) -> Result<()> {
        // sqlx takes a PostgreSQL advisory lock around the migration, so instances starting
        // at once apply it exactly once; the others wait for the lock, then find it applied.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(self.migrate_opts.clone())
            .await
            .map_err(classify)?;
        let res = sqlx::migrate!("./migrations/postgres").run(&pool).await;
        pool.close().await;
        res.map_err(|e| StoreError::Other(Box::new(e)))
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn create_user(&self, u: NewUser) -> Result<UserRecord> {
        pg_insert_user(&self.pool, &u).await?;
        Ok(u.into())
    }

    async fn user_by_email(&self, email: &Email) -> Result<Option<UserRecord>> {
        let q = sqlx::AssertSqlSafe(format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1"));
        let row = sqlx::query_as::<_, UserRow>(q)
            .bind(email.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        Ok(row.map(UserRecord::from))
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>> {
        let q = sqlx::AssertSqlSafe(format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"));
        let row = sqlx::query_as::<_, UserRow>(q)
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        Ok(row.map(UserRecord::from))
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        // COLLATE "C": byte order, as SQLite's BINARY collation sorts.
        let q = sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY created_at, email COLLATE \"C\""
        ));
        let rows = sqlx::query_as::<_, UserRow>(q)
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        Ok(rows.into_iter().map(UserRecord::from).collect())
    }

    async fn set_user_disabled(
        &self,
        id: UserId,
        disabled_at: Option<i64>,
        events: &[Event],
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let r = sqlx::query("UPDATE users SET disabled_at = $1 WHERE id = $2")
            .bind(disabled_at)
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        let done = r.rows_affected() == 1;
        if done {
            pg_insert_events(&mut tx, events).await?;
        }
        pg_commit(tx, if done { events } else { &[] }).await?;
        Ok(done)
    }

    async fn user_providers(&self, id: UserId) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT 'password'::text FROM users WHERE id = $1 AND password_hash IS NOT NULL \
             UNION ALL SELECT DISTINCT issuer FROM identities WHERE user_id = $1",
        )
        .bind(id.0)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        Ok(rows.into_iter().map(|(p,)| p).collect())
    }

    async fn user_by_identity(&self, issuer: &str, subject: &str) -> Result<Option<UserRecord>> {
        let q = sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM identities i JOIN users u ON u.id = i.user_id WHERE i.issuer = $1 AND i.subject = $2",
            USER_COLUMNS
                .split(", ")
                .map(|c| format!("u.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let row = sqlx::query_as::<_, UserRow>(q)
            .bind(issuer)
            .bind(subject)
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        Ok(row.map(UserRecord::from))
    }

    async fn link_identity(
        &self,
        identity: &NewIdentity,
        email_verified: bool,
        events: &[Event],
    ) -> Result<Vec<SessionId>> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        pg_insert_identity(&mut tx, identity).await?;
        let mut revoked = Vec::new();
        if email_verified {
            let ids: Vec<(uuid::Uuid,)> = sqlx::query_as(
                "UPDATE sessions SET revoked_at = $1, revoked_reason = 'email_claimed' WHERE user_id = $2 AND revoked_at IS NULL \
                 AND EXISTS (SELECT 1 FROM users WHERE id = $2 AND NOT email_verified) RETURNING id",
            )
            .bind(identity.created_at)
            .bind(identity.user_id.0)
            .fetch_all(&mut *tx)
            .await
            .map_err(classify)?;
            revoked = ids.into_iter().map(|(id,)| SessionId(id)).collect();
            sqlx::query("UPDATE users SET password_hash = CASE WHEN email_verified THEN password_hash ELSE NULL END, email_verified = TRUE WHERE id = $1")
                .bind(identity.user_id.0)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
        }
        pg_insert_events(&mut tx, events).await?;
        pg_commit(tx, events).await?;
        Ok(revoked)
    }

    async fn create_user_with_identity(
        &self,
        u: NewUser,
        identity: &NewIdentity,
        events: &[Event],
    ) -> Result<UserRecord> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        pg_insert_user(&mut *tx, &u).await?;
        pg_insert_identity(&mut tx, identity).await?;
        pg_insert_events(&mut tx, events).await?;
        pg_commit(tx, events).await?;
        Ok(u.into())
    }

    async fn consume_oauth_state(&self, id: &[u8; 32], expires_at: i64, now: i64) -> Result<bool> {
        // Two statements, no transaction needed: the INSERT alone decides (the primary key
        // makes exactly one of racing instances succeed); the DELETE only prunes.
        sqlx::query("DELETE FROM oauth_states_used WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        let r = sqlx::query("INSERT INTO oauth_states_used (id, expires_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
            .bind(&id[..])
            .bind(expires_at)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(r.rows_affected() == 1)
    }

    async fn insert_session(&self, s: &SessionRecord, events: &[Event]) -> Result<bool> {
        // The usual case, one event (`login_succeeded`): still one statement — the session's
        // INSERT feeds the event's, atomic without a transaction's extra round trips.
        if let [e] = events {
            let r = sqlx::query(
                "WITH s AS (INSERT INTO sessions (id, user_id, current_hash, created_at, last_used_at, idle_expires_at, absolute_expires_at, user_agent, ip, auth_time, amr) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 WHERE EXISTS (SELECT 1 FROM users WHERE id = $2 AND disabled_at IS NULL) RETURNING id) \
                 INSERT INTO events (at, kind, user_id, session_id, ip, user_agent, detail) \
                 SELECT $12, $13, $14, $15, $16, $17, $18 FROM s",
            )
            .bind(s.id.0)
            .bind(s.user_id.0)
            .bind(&s.current_hash[..])
            .bind(s.created_at)
            .bind(s.last_used_at)
            .bind(s.idle_expires_at)
            .bind(s.absolute_expires_at)
            .bind(&s.user_agent)
            .bind(&s.ip)
            .bind(s.auth_time)
            .bind(s.amr.to_text())
            .bind(e.at)
            .bind(e.kind.as_str())
            .bind(e.user.map(|u| u.0))
            .bind(e.session.map(|s| s.0))
            .bind(&e.ip)
            .bind(&e.user_agent)
            .bind(e.detail_json())
            .execute(&self.pool)
            .await
            .map_err(classify)?;
            let done = r.rows_affected() == 1;
            if done {
                crate::events::logged(events);
            }
            return Ok(done);
        }
        // No event (tests, tools): the single INSERT; several: a transaction.
        let single = events.is_empty();
        let mut tx = if single {
            None
        } else {
            Some(self.pool.begin().await.map_err(classify)?)
        };
        let q = sqlx::query(
            "INSERT INTO sessions (id, user_id, current_hash, created_at, last_used_at, idle_expires_at, absolute_expires_at, user_agent, ip, auth_time, amr) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 WHERE EXISTS (SELECT 1 FROM users WHERE id = $2 AND disabled_at IS NULL)",
        )
        .bind(s.id.0)
        .bind(s.user_id.0)
        .bind(&s.current_hash[..])
        .bind(s.created_at)
        .bind(s.last_used_at)
        .bind(s.idle_expires_at)
        .bind(s.absolute_expires_at)
        .bind(&s.user_agent)
        .bind(&s.ip)
        .bind(s.auth_time)
        .bind(s.amr.to_text());
        let r = match tx.as_mut() {
            Some(tx) => q.execute(&mut **tx).await,
            None => q.execute(&self.pool).await,
        }
        .map_err(classify)?;
        let done = r.rows_affected() == 1;
        if let Some(mut tx) = tx {
            if done {
                pg_insert_events(&mut tx, events).await?;
            }
            pg_commit(tx, if done { events } else { &[] }).await?;
        }
        Ok(done)
    }

    async fn session_by_token_hash(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<(SessionRecord, TokenMatch)>> {
        // One statement, one snapshot: a rotation moves a hash from current to previous to
        // retired atomically, so the hash is found in exactly one place. A legacy hash is a
        // previous hash only up to generation 1, which is all the partial index holds
        // (migration 0010).
        let q = sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS}, CASE WHEN s.current_hash = $1 THEN 0 ELSE 1 END AS which \
               FROM sessions s WHERE s.current_hash = $1 OR (s.previous_hash = $1 AND s.generation <= 1) \
             UNION ALL \
             SELECT {SESSION_COLUMNS}, 2 AS which FROM retired_tokens r JOIN sessions s ON s.id = r.session_id WHERE r.hash = $1 \
             ORDER BY which LIMIT 1"
        ));
        let row = sqlx::query_as::<_, MatchedSessionRow>(q)
            .bind(&hash[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        row.map(|r| {
            let which = match r.which {
                0 => TokenMatch::Current,
                1 => TokenMatch::Previous,
                _ => TokenMatch::Retired,
            };
            Ok((SessionRecord::try_from(r.session)?, which))
        })
        .transpose()
    }

    async fn session_by_id(&self, id: SessionId) -> Result<Option<SessionRecord>> {
        let q = sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.id = $1"
        ));
        sqlx::query_as::<_, SessionRow>(q)
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?
            .map(SessionRecord::try_from)
            .transpose()
    }

    async fn advance_session(
        &self,
        id: SessionId,
        generation: i64,
        expected: &TokenHash,
        new: &TokenHash,
        now: i64,
        idle_expires_at: i64,
    ) -> Result<bool> {
        // One statement, so no read-then-write race and no lock held across round trips:
        // `old` locks the session row (FOR UPDATE) if it is still at `generation` with
        // `expected` current — a racer blocks here, then re-checks against the committed
        // winner's row (READ COMMITTED re-evaluation) and finds nothing; `upd` rotates;
        // `ins` remembers a displaced hash only for the first two rotations (legacy tokens).
        let r: (i64,) = sqlx::query_as(
            "WITH old AS ( \
                 SELECT id, previous_hash, generation FROM sessions \
                 WHERE id = $1 AND generation = $6 AND current_hash = $2 AND revoked_at IS NULL \
                 FOR UPDATE \
             ), upd AS ( \
                 UPDATE sessions s \
                 SET previous_hash = s.current_hash, current_hash = $3, generation = s.generation + 1, \
                     rotated_at = $4, last_used_at = $4, idle_expires_at = $5 \
                 FROM old \
                 WHERE s.id = old.id AND s.generation = $6 AND s.current_hash = $2 AND s.revoked_at IS NULL \
                 RETURNING old.previous_hash AS displaced, old.generation AS was \
             ), ins AS ( \
                 INSERT INTO retired_tokens (hash, session_id, retired_at) \
                 SELECT displaced, $1, $4 FROM upd WHERE displaced IS NOT NULL AND was <= 1 \
                 ON CONFLICT (hash) DO NOTHING \
             ) \
             SELECT count(*) FROM upd",
        )
        .bind(id.0)
        .bind(&expected[..])
        .bind(&new[..])
        .bind(now)
        .bind(idle_expires_at)
        .bind(generation)
        .fetch_one(&self.pool)
        .await
        .map_err(classify)?;
        Ok(r.0 == 1)
    }

    async fn advance_current_session(
        &self,
        id: SessionId,
        generation: i64,
        expected: &TokenHash,
        new: &TokenHash,
        now: i64,
        idle_expires_at: i64,
    ) -> Result<Option<SessionRecord>> {
        if generation < 2 {
            return Ok(None);
        }
        // One UPDATE: a racer blocks on the row lock, then READ COMMITTED re-evaluates the
        // WHERE against the winner's row, finds another generation and returns nothing.
        let q = sqlx::AssertSqlSafe(format!(
            "UPDATE sessions s SET previous_hash = s.current_hash, current_hash = $3, generation = s.generation + 1, \
             rotated_at = $4, last_used_at = $4, idle_expires_at = LEAST($5, s.absolute_expires_at) \
             WHERE s.id = $1 AND s.generation = $6 AND s.current_hash = $2 AND s.revoked_at IS NULL \
               AND s.idle_expires_at > $4 AND s.absolute_expires_at > $4 \
             RETURNING {SESSION_COLUMNS}"
        ));
        sqlx::query_as::<_, SessionRow>(q)
            .bind(id.0)
            .bind(&expected[..])
            .bind(&new[..])
            .bind(now)
            .bind(idle_expires_at)
            .bind(generation)
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?
            .map(SessionRecord::try_from)
            .transpose()
    }

    async fn revoke_session(
        &self,
        id: SessionId,
        user: Option<UserId>,
        now: i64,
        reason: &str,
        events: &[Event],
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let owner: Option<(Uuid,)> = sqlx::query_as(
            "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 \
             WHERE id = $3 AND ($4::uuid IS NULL OR user_id = $4) AND revoked_at IS NULL RETURNING user_id",
        )
        .bind(now)
        .bind(reason)
        .bind(id.0)
        .bind(user.map(|u| u.0))
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
        let Some((owner,)) = owner else {
            return Ok(false);
        };
        let events = super::with_user(events, UserId(owner));
        pg_insert_events(&mut tx, &events).await?;
        pg_commit(tx, &events).await?;
        Ok(true)
    }

    async fn revoke_user_sessions(
        &self,
        user: UserId,
        now: i64,
        reason: &str,
        events: &[Event],
    ) -> Result<Vec<SessionId>> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let ids: Vec<(uuid::Uuid,)> = sqlx::query_as("UPDATE sessions SET revoked_at = $1, revoked_reason = $2 WHERE user_id = $3 AND revoked_at IS NULL RETURNING id")
            .bind(now)
            .bind(reason)
            .bind(user.0)
            .fetch_all(&mut *tx)
            .await
            .map_err(classify)?;
        let events = super::unless_none_revoked(events, ids.len());
        pg_insert_events(&mut tx, &events).await?;
        pg_commit(tx, &events).await?;
        Ok(ids.into_iter().map(|(id,)| SessionId(id)).collect())
    }

    async fn live_sessions(&self, user: Option<UserId>, now: i64) -> Result<Vec<SessionRecord>> {
        // One statement per case (issue 14): a generic plan of `($2 IS NULL OR user_id = $2)`
        // cannot use the user index.
        let only = if user.is_some() {
            "s.user_id = $2 AND"
        } else {
            "$2::uuid IS NULL AND"
        };
        let q = sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions s \
             WHERE {only} s.revoked_at IS NULL AND s.idle_expires_at > $1 AND s.absolute_expires_at > $1 \
             ORDER BY s.last_used_at DESC"
        ));
        sqlx::query_as::<_, SessionRow>(q)
            .bind(now)
            .bind(user.map(|u| u.0))
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?
            .into_iter()
            .map(SessionRecord::try_from)
            .collect()
    }

    async fn prune_sessions(&self, before: i64) -> Result<u64> {
        // As on SQLite: one read, then short deletes of PRUNE_BATCH rows (row locks held
        // briefly; a refresh never waits behind a prune of the whole table).
        const EXPIRED: &str = "absolute_expires_at < $1 OR idle_expires_at < $1 OR revoked_at < $1";
        let ids: Vec<(Uuid,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM sessions WHERE {EXPIRED} LIMIT $2"
        )))
        .bind(before)
        .bind(super::PRUNE_MAX as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        let mut pruned = 0;
        for chunk in ids.chunks(super::PRUNE_BATCH) {
            let chunk: Vec<Uuid> = chunk.iter().map(|r| r.0).collect();
            let r = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM sessions WHERE id = ANY($2) AND ({EXPIRED})"
            )))
            .bind(before)
            .bind(chunk)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
            pruned += r.rows_affected();
            tokio::task::yield_now().await;
        }
        Ok(pruned)
    }

    async fn revoked_since(&self, since: i64) -> Result<Vec<(SessionId, i64)>> {
        let rows: Vec<(Uuid, i64)> =
            sqlx::query_as("SELECT id, revoked_at FROM sessions WHERE revoked_at >= $1")
                .bind(since)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)?;
        Ok(rows
            .into_iter()
            .map(|(id, at)| (SessionId(id), at))
            .collect())
    }

    // --- passkeys (SPEC 11) ---
    async fn insert_passkey(&self, p: &PasskeyRecord, events: &[Event]) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        sqlx::query(INSERT_PASSKEY)
            .bind(p.id)
            .bind(p.user_id.0)
            .bind(&p.credential_id)
            .bind(&p.credential)
            .bind(&p.name)
            .bind(p.created_at)
            .bind(p.last_used_at)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        pg_insert_events(&mut tx, events).await?;
        pg_commit(tx, events).await
    }

    async fn passkeys(&self, user: UserId) -> Result<Vec<PasskeyRecord>> {
        let rows: Vec<PgPasskeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE user_id = $1 ORDER BY created_at, id"
        )))
        .bind(user.0)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        Ok(rows.into_iter().map(pg_passkey).collect())
    }

    async fn passkey_by_credential_id(
        &self,
        credential_id: &[u8],
    ) -> Result<Option<PasskeyRecord>> {
        let row: Option<PgPasskeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE credential_id = $1"
        )))
        .bind(credential_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        Ok(row.map(pg_passkey))
    }

    async fn rename_passkey(&self, user: UserId, id: Uuid, name: &str) -> Result<bool> {
        let r = sqlx::query(RENAME_PASSKEY)
            .bind(name)
            .bind(id)
            .bind(user.0)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(r.rows_affected() == 1)
    }

    async fn touch_passkey(&self, id: Uuid, credential: Option<&str>, now: i64) -> Result<()> {
        sqlx::query(TOUCH_PASSKEY)
            .bind(now)
            .bind(credential)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn insert_ceremony(&self, c: &CeremonyRecord, now: i64) -> Result<()> {
        sqlx::query(PRUNE_CEREMONIES)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        sqlx::query(INSERT_CEREMONY)
            .bind(&c.id_hash[..])
            .bind(c.kind.as_str())
            .bind(c.user_id.map(|u| u.0))
            .bind(&c.state)
            .bind(c.created_at)
            .bind(c.expires_at)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn take_ceremony(
        &self,
        id_hash: &TokenHash,
        kind: CeremonyKind,
        now: i64,
    ) -> Result<Option<CeremonyRecord>> {
        type Row = (Vec<u8>, String, Option<Uuid>, String, i64, i64);
        let row: Option<Row> = sqlx::query_as(TAKE_CEREMONY)
            .bind(&id_hash[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        let Some((id, k, user, state, created, expires)) = row else {
            return Ok(None);
        };
        ceremony_from(
            (id, k, user.map(UserId), state, created, expires),
            kind,
            now,
        )
    }

    async fn signing_keys(&self) -> Result<Vec<KeyRecord>> {
        type Row = (
            String,
            Vec<u8>,
            Option<String>,
            Vec<u8>,
            i64,
            i64,
            Option<i64>,
        );
        let rows: Vec<Row> = sqlx::query_as("SELECT kid, private_der, key_id, public_key, created_at, COALESCE(activates_at, created_at), retired_at FROM signing_keys ORDER BY created_at, kid COLLATE \"C\"")
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        Ok(rows
            .into_iter()
            .map(
                |(kid, bytes, key_id, public_key, created_at, activates_at, retired_at)| {
                    KeyRecord {
                        kid,
                        private: StoredSecret { key_id, bytes },
                        public_key,
                        created_at,
                        activates_at,
                        retired_at,
                    }
                },
            )
            .collect())
    }

    async fn insert_signing_key(
        &self,
        k: &KeyRecord,
        retire_others_at: Option<i64>,
        only_replacing: Option<&str>,
        events: &[Event],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        if let Some(at) = retire_others_at {
            // Concurrent schedulers: the second waits on the first's row lock, then finds
            // the key it meant to replace already retired (0 rows) and gives up.
            let r = sqlx::query(
                "UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL AND ($2::TEXT IS NULL OR kid = $2::TEXT)",
            )
            .bind(at)
            .bind(only_replacing)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
            if only_replacing.is_some() && r.rows_affected() == 0 {
                return Err(StoreError::Conflict);
            }
        }
        // A concurrent first key makes this wait for its commit, then fail on the
        // one-active-key index (Conflict): the caller reads back the winner.
        sqlx::query("INSERT INTO signing_keys (kid, private_der, key_id, public_key, created_at, activates_at, retired_at) VALUES ($1, $2, $3, $4, $5, $6, NULL)")
            .bind(&k.kid)
            .bind(&k.private.bytes)
            .bind(&k.private.key_id)
            .bind(&k.public_key)
            .bind(k.created_at)
            .bind(k.activates_at)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        pg_insert_events(&mut tx, events).await?;
        pg_commit(tx, events).await
    }

    async fn prune_signing_keys(&self, before: i64) -> Result<u64> {
        let r = sqlx::query(
            "DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < $1",
        )
        .bind(before)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(r.rows_affected())
    }

    async fn server_secret(&self, name: &str, candidate: &StoredSecret) -> Result<StoredSecret> {
        // A concurrent first writer makes this INSERT wait for its commit, then do nothing;
        // the SELECT (a new snapshot) then reads the winner's value.
        sqlx::query("INSERT INTO server_secrets (name, value, key_id, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(&candidate.bytes)
            .bind(&candidate.key_id)
            .bind(crate::clock::now_ms())
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        let (bytes, key_id): (Vec<u8>, Option<String>) =
            sqlx::query_as("SELECT value, key_id FROM server_secrets WHERE name = $1")
                .bind(name)
                .fetch_one(&self.pool)
                .await
                .map_err(classify)?;
        Ok(StoredSecret { key_id, bytes })
    }

    async fn delete_server_secret(&self, name: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM server_secrets WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(r.rows_affected() > 0)
    }

    async fn email_token(&self, hash: &TokenHash) -> Result<Option<EmailToken>> {
        let row: Option<(Vec<u8>, String, Uuid, String, i64, i64, Option<i64>)> =
            sqlx::query_as(EMAIL_TOKEN_SELECT)
                .bind(&hash[..])
                .fetch_optional(&self.pool)
                .await
                .map_err(classify)?;
        row.map(
            |(hash, purpose, user, email, created_at, expires_at, used_at)| {
                email_token_from(
                    hash,
                    &purpose,
                    UserId(user),
                    email,
                    (created_at, expires_at, used_at),
                )
            },
        )
        .transpose()
    }

    async fn apply(&self, changes: &[Change<'_>]) -> Result<Vec<SessionId>> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let mut revoked = Vec::new();
        for change in changes {
            pg_apply_one(&mut tx, change, &mut revoked).await?;
        }
        tx.commit().await.map_err(classify)?;
        crate::events::logged(&super::recorded(changes, revoked.len()));
        Ok(revoked)
    }

    async fn claim_mail(&self, now: i64, lease_until: i64, limit: i64) -> Result<Vec<OutboxEntry>> {
        // SKIP LOCKED: instances claiming at once each take different rows, none waits.
        let rows: Vec<OutboxRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE outbox SET claimed_until = $1, attempts = attempts + 1 \
             WHERE id IN ({OUTBOX_DUE} FOR UPDATE SKIP LOCKED) RETURNING {OUTBOX_COLUMNS}"
        )))
        .bind(lease_until)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        Ok(rows.into_iter().map(outbox_entry).collect())
    }

    async fn finish_mail(&self, id: &str, outcome: MailOutcome<'_>) -> Result<()> {
        let (q, at, error) = finish_statement(outcome);
        sqlx::query(q)
            .bind(at)
            .bind(error)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn mail_stats(&self) -> Result<MailStats> {
        let row: (i64, i64, i64, Option<i64>) = sqlx::query_as(MAIL_STATS)
            .fetch_one(&self.pool)
            .await
            .map_err(classify)?;
        Ok(mail_stats_from(row))
    }

    async fn recent_mail(&self, limit: i64) -> Result<Vec<OutboxEntry>> {
        let rows: Vec<OutboxRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox ORDER BY created_at DESC, id DESC LIMIT $1"
        )))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        Ok(rows.into_iter().map(outbox_entry).collect())
    }

    async fn prune_mail(&self, before: i64) -> Result<u64> {
        let mut n = 0;
        for q in PRUNE_MAIL {
            n += sqlx::query(q)
                .bind(before)
                .execute(&self.pool)
                .await
                .map_err(classify)?
                .rows_affected();
        }
        Ok(n)
    }

    // --- Second factors (SPEC 11): store/<backend>/mfa.rs ---

    async fn user_factors(&self, user: UserId) -> Result<super::UserFactors> {
        mfa::user_factors(&self.pool, user).await
    }

    async fn totp(&self, user: UserId) -> Result<Option<super::TotpRecord>> {
        mfa::totp(&self.pool, user).await
    }

    async fn put_totp_setup(&self, record: &super::TotpRecord) -> Result<bool> {
        mfa::put_totp_setup(&self.pool, record).await
    }

    async fn use_totp_step(&self, user: UserId, step: i64) -> Result<bool> {
        mfa::use_totp_step(&self.pool, user, step).await
    }

    async fn use_recovery_code(&self, user: UserId, hash: &TokenHash, now: i64) -> Result<bool> {
        mfa::use_recovery_code(&self.pool, user, hash, now).await
    }

    async fn insert_pending_login(&self, pending: &super::PendingLogin) -> Result<()> {
        mfa::insert_pending_login(&self.pool, pending).await
    }

    async fn pending_login(&self, id_hash: &TokenHash) -> Result<Option<super::PendingLogin>> {
        mfa::pending_login(&self.pool, id_hash).await
    }

    async fn take_pending_attempt(&self, id_hash: &TokenHash, now: i64, max: i32) -> Result<bool> {
        mfa::take_pending_attempt(&self.pool, id_hash, now, max).await
    }

    async fn finish_pending_login(&self, id_hash: &TokenHash, now: i64) -> Result<bool> {
        mfa::finish_pending_login(&self.pool, id_hash, now).await
    }

    async fn reauthenticate_session(
        &self,
        id: SessionId,
        user: UserId,
        auth_time: i64,
        amr: crate::mfa::Amr,
    ) -> Result<bool> {
        mfa::reauthenticate_session(&self.pool, id, user, auth_time, amr).await
    }

    async fn prune_pending_logins(&self, before: i64) -> Result<u64> {
        mfa::prune_pending_logins(&self.pool, before).await
    }

    async fn insert_events(&self, events: &[Event]) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        pg_insert_events(&mut tx, events).await?;
        pg_commit(tx, events).await
    }

    async fn events(&self, q: EventQuery) -> Result<Vec<EventRecord>> {
        let rows: Vec<PgEventRow> = sqlx::query_as(SELECT_EVENTS_POSTGRES)
            .bind(q.user.map(|u| u.0))
            .bind(q.before_id)
            .bind(q.since)
            .bind(q.limit)
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        Ok(rows
            .into_iter()
            .map(
                |(id, at, kind, user, session, ip, user_agent, detail)| EventRecord {
                    id,
                    at,
                    kind,
                    user: user.map(UserId),
                    session: session.map(SessionId),
                    ip,
                    user_agent,
                    detail: detail_from(&detail),
                },
            )
            .collect())
    }

    async fn prune_events(&self, before: i64) -> Result<u64> {
        let r = sqlx::query(PRUNE_EVENTS)
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(r.rows_affected())
    }

    async fn secret_rows(&self) -> Result<Vec<SecretRow>> {
        pg_secret_rows(&self.pool).await
    }

    async fn reseal_secrets(&self, reseal: &Resealer<'_>) -> Result<u64> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        // Self-exclusive, readers unaffected: a concurrent reseal (another instance starting,
        // `secrets rotate`) or a new secret waits for this commit, and then sees its rows.
        sqlx::query("LOCK TABLE signing_keys, server_secrets, outbox IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        let mut changed = 0;
        for row in pg_secret_rows(&mut *tx).await? {
            let Some(new) = reseal(&row)? else { continue };
            sqlx::query(SecretRow::update_statement(row.table))
                .bind(&new.bytes)
                .bind(&new.key_id)
                .bind(&row.name)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            changed += 1;
        }
        tx.commit().await.map_err(classify)?;
        Ok(changed)
    }

    fn rate_limiter(&self, limits: RateLimits) -> Option<Arc<dyn RateLimiter>> {
        Some(Arc::new(PgRateLimiter::new(self.pool.clone(), limits)))
    }
}

/// One [`Change`] inside [`Store::apply`]'s transaction.
async fn pg_apply_one(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    change: &Change<'_>,
    revoked: &mut Vec<SessionId>,
) -> Result<()> {
    match *change {
        Change::CreateUser(u) => pg_insert_user(&mut **tx, u).await,
        Change::UseToken {
            hash,
            purpose,
            user,
            now,
        } => {
            let r = sqlx::query(USE_TOKEN)
                .bind(now)
                .bind(&hash[..])
                .bind(purpose.as_str())
                .bind(user.0)
                .execute(&mut **tx)
                .await
                .map_err(classify)?;
            if r.rows_affected() == 1 {
                Ok(())
            } else {
                Err(StoreError::Refused)
            }
        }
        Change::InsertToken(t) => {
            sqlx::query(INSERT_TOKEN)
                .bind(&t.hash[..])
                .bind(t.purpose.as_str())
                .bind(t.user_id.0)
                .bind(t.email.as_str())
                .bind(t.created_at)
                .bind(t.expires_at)
                .execute(&mut **tx)
                .await
                .map_err(classify)?;
            Ok(())
        }
        Change::VoidTokens {
            user,
            purposes,
            now,
        } => {
            for p in purposes {
                sqlx::query(VOID_TOKENS)
                    .bind(now)
                    .bind(user.0)
                    .bind(p.as_str())
                    .execute(&mut **tx)
                    .await
                    .map_err(classify)?;
            }
            Ok(())
        }
        Change::SetPassword { user, hash } => {
            sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
                .bind(hash)
                .bind(user.0)
                .execute(&mut **tx)
                .await
                .map_err(classify)?;
            Ok(())
        }
        Change::MarkVerified { user, email } => {
            sqlx::query("UPDATE users SET email_verified = TRUE WHERE id = $1 AND email = $2")
                .bind(user.0)
                .bind(email.as_str())
                .execute(&mut **tx)
                .await
                .map_err(classify)?;
            Ok(())
        }
        Change::SetEmail { user, email } => {
            sqlx::query("UPDATE users SET email = $1, email_verified = TRUE WHERE id = $2")
                .bind(email.as_str())
                .bind(user.0)
                .execute(&mut **tx)
                .await
                .map_err(classify)?;
            Ok(())
        }
        Change::RevokeSessions {
            user,
            except,
            now,
            reason,
        } => {
            let ids: Vec<(Uuid,)> = sqlx::query_as(REVOKE_SESSIONS_EXCEPT)
                .bind(now)
                .bind(reason)
                .bind(user.0)
                .bind(except.map(|s| s.0))
                .fetch_all(&mut **tx)
                .await
                .map_err(classify)?;
            revoked.extend(ids.into_iter().map(|(id,)| SessionId(id)));
            Ok(())
        }
        Change::Enqueue(m) => {
            let body = m.body.as_ref();
            sqlx::query(ENQUEUE)
                .bind(&m.id)
                .bind(&m.kind)
                .bind(body.map(|b| &b.bytes[..]))
                .bind(body.and_then(|b| b.key_id.as_deref()))
                .bind(m.created_at)
                .bind(m.next_attempt_at)
                .execute(&mut **tx)
                .await
                .map_err(classify)?;
            Ok(())
        }
        Change::DeletePasskey { user, id } => {
            // The user's row lock serialises deletions of one account's passkeys: two
            // concurrent deletions cannot each see the other's passkey as the one left.
            sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
                .bind(user.0)
                .fetch_optional(&mut **tx)
                .await
                .map_err(classify)?;
            let r = sqlx::query(DELETE_PASSKEY)
                .bind(id)
                .bind(user.0)
                .execute(&mut **tx)
                .await
                .map_err(classify)?;
            if r.rows_affected() == 1 {
                Ok(())
            } else {
                Err(StoreError::Refused)
            }
        }
        Change::ConfirmTotp { .. }
        | Change::DeleteTotp { .. }
        | Change::ReplaceRecoveryCodes { .. } => mfa::apply_one(tx, change).await.map(|_| ()),
        // A `session_revoked` of a change that revoked no session is left out.
        Change::Record(e) if e.kind == EventKind::SessionRevoked && revoked.is_empty() => Ok(()),
        Change::Record(e) => pg_insert_events(tx, std::slice::from_ref(e)).await,
    }
}

/// A passkey row as PostgreSQL returns it.
type PgPasskeyRow = (Uuid, Uuid, Vec<u8>, String, String, i64, Option<i64>);

fn pg_passkey((id, user, cid, cred, name, created, used): PgPasskeyRow) -> PasskeyRecord {
    passkey_from((id, UserId(user), cid, cred, name, created, used))
}

async fn pg_secret_rows<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Postgres>,
) -> Result<Vec<SecretRow>> {
    let rows: Vec<(i32, String, Vec<u8>, Option<String>)> = sqlx::query_as(SecretRow::SELECT_ALL)
        .fetch_all(db)
        .await
        .map_err(classify)?;
    Ok(rows.into_iter().map(SecretRow::from_columns).collect())
}

/// [`crate::ratelimit::gcra_schedule`] in the table's unit, milliseconds.
fn schedule_ms(quota: Quota) -> (i64, i64) {
    let (t, tau) = crate::ratelimit::gcra_schedule(quota);
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4);
    (ms(t), ms(tau))
}

/// Rate limits shared by every instance on the database: GCRA, one row per (bucket, key)
/// holding the theoretical arrival time, updated by one atomic upsert, in the database's
/// clock (so instances' clock skew does not matter). Same quotas and the same algorithm as
/// [`MemoryLimiter`] (governor's GCRA), so N instances allow what one would.
///
/// If the database cannot be asked, the instance falls back to its own in-memory limiter:
/// limits then hold per instance, and the request fails at its next store call anyway.
pub struct PgRateLimiter {
    pool: PgPool,
    limits: RateLimits,
    fallback: MemoryLimiter,
}

impl PgRateLimiter {
    pub fn new(pool: PgPool, limits: RateLimits) -> Self {
        Self {
            pool,
            limits,
            fallback: MemoryLimiter::new(limits),
        }
    }

    fn quota(&self, bucket: Bucket) -> (&'static str, Quota) {
        match bucket {
            Bucket::AuthPerIp => ("auth_ip", self.limits.auth_per_ip),
            Bucket::AuthPerEmail => ("auth_email", self.limits.auth_per_email),
            Bucket::AuthPerDevice => ("auth_device", self.limits.auth_per_device),
            Bucket::SignupPerEmail => ("signup_email", self.limits.auth_per_email),
            Bucket::RefreshPerSession => ("refresh_session", self.limits.refresh_per_session),
            Bucket::MailPerIp => ("mail_ip", self.limits.mail_per_ip),
            Bucket::MailPerAddress => ("mail_address", self.limits.mail_per_address),
            Bucket::MfaPerUser => ("mfa_user", self.limits.mfa_per_user),
        }
    }

    /// `Ok(None)` when allowed, `Ok(Some(wait_ms))` when over the limit.
    async fn check_db(&self, bucket: &str, key: &[u8], quota: Quota) -> Result<Option<i64>> {
        // A request at `now` is allowed when tat - tau <= now (a missing row is tat = now),
        // and then tat = max(tat, now) + T. So `burst` requests pass at once, then one per T.
        let (t, tau) = schedule_ms(quota);
        // The upsert only writes (and returns a row) when the request is allowed; the
        // wait is read from the latest committed row otherwise (an estimate for Retry-After).
        let (allowed, wait): (bool, Option<i64>) = sqlx::query_as(
            "WITH n AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now), \
             hit AS ( \
                 INSERT INTO rate_limits AS r (bucket, key, tat) \
                 SELECT $1, $2, n.now + $3 FROM n \
                 ON CONFLICT (bucket, key) DO UPDATE SET tat = GREATEST(r.tat, EXCLUDED.tat - $3) + $3 \
                 WHERE r.tat - $4 <= EXCLUDED.tat - $3 \
                 RETURNING 1 \
             ) \
             SELECT EXISTS (SELECT 1 FROM hit), \
                    (SELECT r.tat - $4 - n.now FROM rate_limits r, n WHERE r.bucket = $1 AND r.key = $2)",
        )
        .bind(bucket)
        .bind(key)
        .bind(t)
        .bind(tau)
        .fetch_one(&self.pool)
        .await
        .map_err(classify)?;
        Ok(if allowed {
            None
        } else {
            Some(wait.unwrap_or(t).max(1))
        })
    }

    /// Gives one unit back: `tat` moves back by T, never before now (full capacity).
    async fn refund_db(&self, bucket: &str, key: &[u8], quota: Quota) -> Result<()> {
        let (t, _) = schedule_ms(quota);
        sqlx::query(
            "UPDATE rate_limits SET tat = GREATEST(tat - $3, (extract(epoch FROM clock_timestamp()) * 1000)::bigint) \
             WHERE bucket = $1 AND key = $2",
        )
        .bind(bucket)
        .bind(key)
        .bind(t)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }

    /// Forgets keys that are back to full capacity.
    async fn prune_db(&self) -> Result<u64> {
        let r = sqlx::query("DELETE FROM rate_limits WHERE tat < (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(r.rows_affected())
    }
}

#[async_trait]
impl RateLimiter for PgRateLimiter {
    async fn check(&self, bucket: Bucket, key: &str) -> std::result::Result<(), Duration> {
        let (name, quota) = self.quota(bucket);
        // Keys (IPs, emails, session ids) are stored only as SHA-256: fixed size, and no
        // clear-text emails of failed attempts in the table.
        let digest = Sha256::digest(key.as_bytes());
        match self.check_db(name, &digest, quota).await {
            Ok(None) => Ok(()),
            Ok(Some(wait_ms)) => Err(Duration::from_millis(u64::try_from(wait_ms).unwrap_or(1))),
            Err(e) => {
                tracing::warn!(error = %e, "shared rate limit unavailable; limiting this instance alone");
                self.fallback.check(bucket, key).await
            }
        }
    }

    async fn refund(&self, bucket: Bucket, key: &str) {
        if !bucket.counts_failures_only() {
            return;
        }
        let (name, quota) = self.quota(bucket);
        let digest = Sha256::digest(key.as_bytes());
        if let Err(e) = self.refund_db(name, &digest, quota).await {
            tracing::warn!(error = %e, "shared rate limit unavailable; refunding on this instance alone");
            self.fallback.refund(bucket, key).await;
        }
    }

    async fn maintain(&self) {
        self.fallback.prune();
        if let Err(e) = self.prune_db().await {
            tracing::debug!(error = %e, "rate limit pruning failed; retrying later");
        }
    }
}

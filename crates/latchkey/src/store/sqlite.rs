//! SQLite implementation of [`Store`]: WAL journal, one writer at a time, every write a
//! single statement (rotation is a compare-and-swap `UPDATE`), so no transaction ever has
//! to upgrade a read lock.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::events_sql::{INSERT_EVENT, PRUNE_EVENTS, SELECT_EVENTS_SQLITE, detail_from};
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
use crate::domain::{Email, SessionId, UserId};
use crate::events::{Event, EventKind, EventQuery, EventRecord};

mod mfa;
pub struct SqliteStore {
    /// Reads: several connections (WAL readers never wait for the writer).
    pool: SqlitePool,
    /// Writes: one connection. SQLite has one writer at a time anyway; with writes on any of
    /// several connections, the losers of a race slept in SQLite's busy handler (1, 2, 5,
    /// 10 … 100 ms steps), which made the refresh latency's tail (issue 14). Here they wait
    /// in the pool's queue and go as soon as the writer is free.
    writer: SqlitePool,
    /// For `sqlite::memory:`: a connection held open and never used. The in-memory database
    /// (shared cache) lives as long as one connection to it does; sqlx closes a pooled
    /// connection whose query future was dropped mid-way (a client that hung up), and
    /// without this anchor the whole database would vanish with it.
    _memory_anchor: Option<std::sync::Mutex<sqlx::SqliteConnection>>,
    /// For a file: the task that checkpoints the WAL, ended with the store.
    _checkpoints: Option<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often a file database's WAL is copied back into the database, off the request path.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// WAL length, in frames (pages), from which the checkpoint task restarts the WAL. A
/// restart holds the writer for two fsyncs (about 15 ms measured here; 0.1–67 ms), so it
/// should be rare under load: 65,536 frames are 256 MiB at SQLite's 4 KiB pages, about 7 s
/// of refreshes at 1,500/s (which write 5–8 pages each). Restarting at 4,096 frames (once
/// a second at that rate) put the open-loop refresh p99 at 81–125 ms instead of 28 ms.
const RESTART_WAL_FRAMES: i64 = 65_536;
/// On a quieter instance the WAL is restarted once it has this many frames (4 MiB) and the
/// last restart is [`RESTART_AFTER`] ago, so it stays small when nothing is in a hurry.
const RESTART_SOON_FRAMES: i64 = 1_024;
const RESTART_AFTER: Duration = Duration::from_secs(60);
/// `journal_size_limit`: a restarted WAL file larger than this is cut back to it. Above
/// what [`RESTART_WAL_FRAMES`] lets the WAL reach, so a restart under load reuses the file
/// in place: cutting 270 MB back to 16 MiB at every restart made the next commits allocate
/// the file again (open loop 1,500/s: p99 106 ms against 28 ms). It still bounds the file
/// after a WAL that grew past it (a long reader held a restart off).
const WAL_SIZE_LIMIT: i64 = 320 << 20;
/// After a restart found a reader still on the old WAL, the next try waits this long.
const RESTART_RETRY: Duration = Duration::from_secs(10);
/// How long the writer's WAL restart waits for readers still on the old WAL before it gives
/// up (for [`RESTART_RETRY`]); every write waits behind it meanwhile, so it is kept short.
const RESTART_WAIT_MS: u64 = 50;
// The statements that set them are literals (sqlx takes only static SQL).
const _: () = assert!(RESTART_WAIT_MS == 50 && BUSY_TIMEOUT.as_millis() == 5000);

/// Checkpoints the WAL without a request paying for it. The writer has SQLite's automatic
/// checkpoint off (`wal_autocheckpoint = 0`): it ran inside the commit that crossed 1,000
/// WAL pages, so one write in a few hundred copied 4 MB and waited for an fsync while every
/// other write queued behind it — the refresh latency's tail (issue 14: p50 2 ms, p90 22 ms
/// at 1,000 rotations/s). Instead, every [`CHECKPOINT_EVERY`]:
///
/// 1. a reader connection runs a passive checkpoint: it copies the WAL back and fsyncs the
///    database while the writer goes on writing (it takes no lock a writer needs);
/// 2. once the WAL holds [`RESTART_WAL_FRAMES`] (or [`RESTART_SOON_FRAMES`] a minute after
///    the last restart), the writer connection itself runs `wal_checkpoint(RESTART)`,
///    queued like any write: it copies what came in during step 1, fsyncs, and waits (at most [`RESTART_WAIT_MS`]) for readers
///    to leave the WAL, so that the next write starts the WAL from its beginning again.
///    Step 1 alone never gets there under steady writes — the writer is always ahead of
///    it — and the WAL grew without bound (787 MB in four minutes of the soak). A reader
///    that stays (a backup) puts the next try off by [`RESTART_RETRY`].
///
/// If the task is late or the process stops, nothing is lost: the WAL is the database's
/// journal, and SQLite checkpoints it when the last connection closes or at the next open.
fn spawn_checkpoints(readers: SqlitePool, writer: SqlitePool, restart_frames: i64) -> AbortOnDrop {
    AbortOnDrop(
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut restarted = tokio::time::Instant::now();
            let mut retry_at = restarted;
            loop {
                tick.tick().await;
                let restart_at = if tokio::time::Instant::now() < retry_at {
                    i64::MAX
                } else if restarted.elapsed() >= RESTART_AFTER {
                    RESTART_SOON_FRAMES.min(restart_frames)
                } else {
                    restart_frames
                };
                match checkpoint(&readers, &writer, restart_at).await {
                    Ok(Restart::Done) => restarted = tokio::time::Instant::now(),
                    Ok(Restart::NotDue) => {}
                    // A long reader (a backup's `VACUUM INTO`) is on the WAL: the writer
                    // waited RESTART_WAIT_MS for nothing; not again for a while.
                    Ok(Restart::Busy) => retry_at = tokio::time::Instant::now() + RESTART_RETRY,
                    Err(e) => {
                        if readers.is_closed() || writer.is_closed() {
                            break;
                        }
                        tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
                    }
                }
            }
        })
        .abort_handle(),
    )
}

/// What a round of [`spawn_checkpoints`] did about restarting the WAL.
enum Restart {
    NotDue,
    Done,
    /// A reader stayed on the old WAL for [`RESTART_WAIT_MS`].
    Busy,
}

/// One round of [`spawn_checkpoints`], restarting the WAL if it has `restart_at` frames.
async fn checkpoint(readers: &SqlitePool, writer: &SqlitePool, restart_at: i64) -> Result<Restart> {
    let started = std::time::Instant::now();
    // The WAL's length in frames when the round started (it copies up to there).
    // (busy, frames in the WAL, frames copied back)
    let (_, frames, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(readers)
        .await
        .map_err(classify)?;
    if frames < restart_at {
        tracing::debug!(frames, passive = ?started.elapsed(), "WAL checkpoint");
        return Ok(Restart::NotDue);
    }
    let passive = started.elapsed();
    let mut conn = writer.acquire().await.map_err(classify)?;
    let held = std::time::Instant::now();
    sqlx::query("PRAGMA busy_timeout = 50") // RESTART_WAIT_MS
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
    let restarted: std::result::Result<(i64, i64, i64), _> =
        sqlx::query_as("PRAGMA wal_checkpoint(RESTART)")
            .fetch_one(&mut *conn)
            .await;
    // Back to the writer's own timeout before the connection serves a write again; if
    // that fails, the connection is not returned to the pool.
    if let Err(e) = sqlx::query("PRAGMA busy_timeout = 5000") // BUSY_TIMEOUT
        .execute(&mut *conn)
        .await
    {
        conn.detach();
        return Err(classify(e));
    }
    let (busy, _, _) = restarted.map_err(classify)?;
    tracing::debug!(frames, ?passive, restart = ?held.elapsed(), busy, "WAL checkpoint and restart");
    Ok(if busy == 0 {
        Restart::Done
    } else {
        Restart::Busy
    })
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: String,
    email: String,
    name: Option<String>,
    password_hash: Option<String>,
    email_verified: bool,
    created_at: i64,
    disabled_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct ProfileRow {
    #[sqlx(flatten)]
    user: UserRow,
    /// The issuers of the user's identities, separated by U+001F (never in a URL).
    issuers: Option<String>,
}

impl TryFrom<UserRow> for UserRecord {
    type Error = StoreError;
    fn try_from(r: UserRow) -> Result<Self> {
        Ok(UserRecord {
            id: parse_id(&r.id)?,
            email: Email::from_store(r.email),
            name: r.name,
            password_hash: r.password_hash,
            email_verified: r.email_verified,
            created_at: r.created_at,
            disabled_at: r.disabled_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: String,
    user_id: String,
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
            id: SessionId(parse_uuid(&r.id)?),
            user_id: UserId(parse_uuid(&r.user_id)?),
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

fn parse_uuid(s: &str) -> Result<uuid::Uuid> {
    uuid::Uuid::parse_str(s).map_err(|e| StoreError::Other(Box::new(e)))
}

fn parse_id(s: &str) -> Result<UserId> {
    parse_uuid(s).map(UserId)
}

async fn insert_user<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Sqlite>,
    u: &NewUser,
) -> Result<()> {
    sqlx::query("INSERT INTO users (id, email, name, password_hash, email_verified, created_at) VALUES (?, ?, ?, ?, ?, ?)")
        .bind(u.id.0.to_string())
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

/// How long a statement waits for a lock another connection holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Reader connections on a file database (one more connection does every write).
const READERS: u32 = 8;
/// SQLite's page cache per connection, in KiB (`PRAGMA cache_size = -N`). Each connection
/// has its own, filled as it touches pages, so the bound is per connection: readers get
/// 512 KiB (a lookup needs a handful of pages, and the kernel's page cache holds the file
/// anyway: a 100,000-user `/me` run answered the same with 512 KiB, 2 MiB or a 256 MiB
/// `mmap`), the writer SQLite's default 2 MiB. In all 8 × 0.5 + 2 = 6 MiB, instead of the
/// 18 MiB nine default caches fill up to as the database grows (issue 11, the soak).
const READER_CACHE_KIB: u32 = 512;
const WRITER_CACHE_KIB: u32 = 2_000;

const SESSION_COLUMNS: &str = "id, user_id, current_hash, previous_hash, rotated_at, created_at, last_used_at, idle_expires_at, absolute_expires_at, revoked_at, user_agent, ip, auth_time, amr, generation";

/// Whether `url` names an in-memory database (`sqlite::memory:`, `…?mode=memory`).
pub fn is_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// The database file `url` names; `None` for an in-memory database.
pub fn database_file(url: &str) -> Option<PathBuf> {
    let opts = SqliteConnectOptions::from_str(url).ok()?;
    (!is_memory(url)).then(|| opts.get_filename().to_path_buf())
}

/// The database and its `-wal`/`-shm` files are for this user only (SPEC 8): the file is
/// created 0600 before SQLite opens it (SQLite gives `-wal` and `-shm` the database file's
/// mode), and files left more open by older versions are narrowed.
fn restrict_file_modes(db: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |e: std::io::Error| StoreError::Other(format!("{}: {e}", db.display()).into());
    if !db.exists() {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(db)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        narrow_to_owner(Path::new(&name)).map_err(io)?;
    }
    Ok(())
}

/// Takes group and other permissions away from `path` (mode 0600) if it has any; a missing
/// file is fine. For the database files and the development key file beside them.
pub(crate) fn narrow_to_owner(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    match std::fs::metadata(path) {
        Ok(m) if m.permissions().mode() & 0o077 != 0 => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl SqliteStore {
    /// Opens (creating if missing, mode 0600) the database at `url` (`sqlite://PATH` or
    /// `sqlite::memory:`).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_restarting_wal_at(url, RESTART_WAL_FRAMES).await
    }

    /// [`SqliteStore::connect`] with the WAL restarted from `frames` frames on instead of
    /// [`RESTART_WAL_FRAMES`]: for the test that the WAL stays bounded, which could not
    /// write 256 MiB several times over in its time.
    #[doc(hidden)]
    pub async fn connect_restarting_wal_at(url: &str, frames: i64) -> Result<Self> {
        let memory = is_memory(url);
        if let Some(file) = database_file(url) {
            restrict_file_modes(&file)?;
        }
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Other(Box::new(e)))?
            .create_if_missing(true)
            .journal_mode(if memory {
                SqliteJournalMode::Memory
            } else {
                SqliteJournalMode::Wal
            })
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .pragma("journal_size_limit", WAL_SIZE_LIMIT.to_string())
            .foreign_keys(true);
        // An in-memory database: one pooled connection (plus the anchor), kept forever.
        let pool_opts = if memory {
            SqlitePoolOptions::new()
                .min_connections(1)
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(READERS)
        }
        // sqlx pings a pooled connection before handing it out (a network database's
        // connection can die while idle). A SQLite connection is a file handle and its
        // thread: the ping was one more round trip to that thread before every query.
        .test_before_acquire(false);
        let memory_anchor = if memory {
            use sqlx::ConnectOptions as _;
            Some(std::sync::Mutex::new(
                opts.connect().await.map_err(classify)?,
            ))
        } else {
            None
        };
        let pool = pool_opts
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(
                opts.clone()
                    .pragma("cache_size", format!("-{READER_CACHE_KIB}")),
            )
            .await
            .map_err(classify)?;
        // In memory there is one connection for both; on a file, one more for writes.
        let writer = if memory {
            pool.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(1)
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(
                    opts.pragma("cache_size", format!("-{WRITER_CACHE_KIB}"))
                        .pragma("wal_autocheckpoint", "0"),
                )
                .await
                .map_err(classify)?
        };
        let checkpoints =
            (!memory).then(|| spawn_checkpoints(pool.clone(), writer.clone(), frames));
        Ok(Self {
            pool,
            writer,
            _memory_anchor: memory_anchor,
            _checkpoints: checkpoints,
        })
    }
}

async fn insert_identity(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    i: &NewIdentity,
) -> Result<()> {
    sqlx::query("INSERT INTO identities (issuer, subject, user_id, email, created_at) VALUES (?, ?, ?, ?, ?)")
        .bind(&i.issuer)
        .bind(&i.subject)
        .bind(i.user_id.0.to_string())
        .bind(&i.email)
        .bind(i.created_at)
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
    Ok(())
}

impl SqliteStore {
    /// A write transaction (`BEGIN IMMEDIATE`: the single writer, taken at once).
    async fn write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(classify)
    }

    /// Commits, then logs the events the transaction wrote.
    async fn commit(
        &self,
        tx: sqlx::Transaction<'static, sqlx::Sqlite>,
        events: &[Event],
    ) -> Result<()> {
        tx.commit().await.map_err(classify)?;
        crate::events::logged(events);
        Ok(())
    }
}

/// Writes events inside a transaction.
async fn insert_events_tx(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    events: &[Event],
) -> Result<()> {
    for e in events {
        sqlx::query(INSERT_EVENT)
            .bind(e.at)
            .bind(e.kind.as_str())
            .bind(e.user.map(|u| u.0.to_string()))
            .bind(e.session.map(|s| s.0.to_string()))
            .bind(&e.ip)
            .bind(&e.user_agent)
            .bind(e.detail_json())
            .execute(&mut **tx)
            .await
            .map_err(classify)?;
    }
    Ok(())
}

type EventRow = (
    i64,
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.writer)
            .await
            .map_err(|e| StoreError::Other(Box::new(e)))
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn close(&self) {
        // The checkpoint task stops at its next round (its pools are closed).
        self.pool.close().await;
        self.writer.close().await;
    }

    async fn create_user(&self, u: NewUser) -> Result<UserRecord> {
        insert_user(&self.writer, &u).await?;
        Ok(u.into())
    }

    async fn user_by_email(&self, email: &Email) -> Result<Option<UserRecord>> {
        sqlx::query_as::<_, UserRow>("SELECT id, email, name, password_hash, email_verified, created_at, disabled_at FROM users WHERE email = ?")
            .bind(email.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?
            .map(UserRecord::try_from)
            .transpose()
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>> {
        sqlx::query_as::<_, UserRow>("SELECT id, email, name, password_hash, email_verified, created_at, disabled_at FROM users WHERE id = ?")
            .bind(id.0.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?
            .map(UserRecord::try_from)
            .transpose()
    }

    async fn user_profile(&self, id: UserId) -> Result<Option<(UserRecord, Vec<String>)>> {
        let row = sqlx::query_as::<_, ProfileRow>(
            "SELECT id, email, name, password_hash, email_verified, created_at, disabled_at, \
             (SELECT group_concat(issuer, char(31)) FROM (SELECT DISTINCT issuer FROM identities WHERE user_id = users.id)) AS issuers \
             FROM users WHERE id = ?",
        )
        .bind(id.0.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        let Some(ProfileRow { user, issuers }) = row else {
            return Ok(None);
        };
        let user = UserRecord::try_from(user)?;
        let mut providers = Vec::new();
        if user.password_hash.is_some() {
            providers.push("password".to_owned());
        }
        providers.extend(
            issuers
                .iter()
                .flat_map(|i| i.split('\u{1f}'))
                .map(str::to_owned),
        );
        Ok(Some((user, providers)))
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        sqlx::query_as::<_, UserRow>("SELECT id, email, name, password_hash, email_verified, created_at, disabled_at FROM users ORDER BY created_at, email")
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?
            .into_iter()
            .map(UserRecord::try_from)
            .collect()
    }

    async fn set_user_disabled(
        &self,
        id: UserId,
        disabled_at: Option<i64>,
        events: &[Event],
    ) -> Result<bool> {
        let mut tx = self.write().await?;
        let r = sqlx::query("UPDATE users SET disabled_at = ? WHERE id = ?")
            .bind(disabled_at)
            .bind(id.0.to_string())
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        let done = r.rows_affected() == 1;
        if done {
            insert_events_tx(&mut tx, events).await?;
        }
        self.commit(tx, if done { events } else { &[] }).await?;
        Ok(done)
    }

    async fn user_providers(&self, id: UserId) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT 'password' FROM users WHERE id = ?1 AND password_hash IS NOT NULL \
             UNION ALL SELECT DISTINCT issuer FROM identities WHERE user_id = ?1",
        )
        .bind(id.0.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        Ok(rows.into_iter().map(|(p,)| p).collect())
    }

    async fn user_by_identity(&self, issuer: &str, subject: &str) -> Result<Option<UserRecord>> {
        sqlx::query_as::<_, UserRow>(
            "SELECT u.id, u.email, u.name, u.password_hash, u.email_verified, u.created_at, u.disabled_at \
             FROM identities i JOIN users u ON u.id = i.user_id WHERE i.issuer = ? AND i.subject = ?",
        )
        .bind(issuer)
        .bind(subject)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?
        .map(UserRecord::try_from)
        .transpose()
    }

    async fn link_identity(
        &self,
        identity: &NewIdentity,
        email_verified: bool,
        events: &[Event],
    ) -> Result<Vec<SessionId>> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(classify)?;
        insert_identity(&mut tx, identity).await?;
        let mut revoked = Vec::new();
        if email_verified {
            let uid = identity.user_id.0.to_string();
            let ids: Vec<(String,)> = sqlx::query_as(
                "UPDATE sessions SET revoked_at = ?, revoked_reason = 'email_claimed' WHERE user_id = ? AND revoked_at IS NULL \
                 AND EXISTS (SELECT 1 FROM users WHERE id = ? AND email_verified = 0) RETURNING id",
            )
            .bind(identity.created_at)
            .bind(&uid)
            .bind(&uid)
            .fetch_all(&mut *tx)
            .await
            .map_err(classify)?;
            revoked = parse_session_ids(ids)?;
            sqlx::query("UPDATE users SET password_hash = CASE WHEN email_verified = 0 THEN NULL ELSE password_hash END, email_verified = 1 WHERE id = ?")
                .bind(&uid)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
        }
        insert_events_tx(&mut tx, events).await?;
        self.commit(tx, events).await?;
        Ok(revoked)
    }

    async fn create_user_with_identity(
        &self,
        u: NewUser,
        identity: &NewIdentity,
        events: &[Event],
    ) -> Result<UserRecord> {
        let mut tx = self.write().await?;
        insert_user(&mut *tx, &u).await?;
        insert_identity(&mut tx, identity).await?;
        insert_events_tx(&mut tx, events).await?;
        self.commit(tx, events).await?;
        Ok(u.into())
    }

    async fn consume_oauth_state(&self, id: &[u8; 32], expires_at: i64, now: i64) -> Result<bool> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(classify)?;
        sqlx::query("DELETE FROM oauth_states_used WHERE expires_at < ?")
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        let r = sqlx::query("INSERT INTO oauth_states_used (id, expires_at) VALUES (?, ?) ON CONFLICT(id) DO NOTHING")
            .bind(&id[..])
            .bind(expires_at)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(r.rows_affected() == 1)
    }

    async fn insert_session(&self, s: &SessionRecord, events: &[Event]) -> Result<bool> {
        macro_rules! insert {
            ($db:expr) => {
                sqlx::query(
                    "INSERT INTO sessions (id, user_id, current_hash, created_at, last_used_at, idle_expires_at, absolute_expires_at, user_agent, ip, auth_time, amr) \
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11 WHERE EXISTS (SELECT 1 FROM users WHERE id = ?2 AND disabled_at IS NULL)",
                )
                .bind(s.id.0.to_string())
                .bind(s.user_id.0.to_string())
                .bind(&s.current_hash[..])
                .bind(s.created_at)
                .bind(s.last_used_at)
                .bind(s.idle_expires_at)
                .bind(s.absolute_expires_at)
                .bind(&s.user_agent)
                .bind(&s.ip)
                .bind(s.auth_time)
                .bind(s.amr.to_text())
                .execute($db)
                .await
                .map_err(classify)?
            };
        }
        if events.is_empty() {
            return Ok(insert!(&self.writer).rows_affected() == 1);
        }
        let mut tx = self.write().await?;
        let done = insert!(&mut *tx).rows_affected() == 1;
        if done {
            insert_events_tx(&mut tx, events).await?;
        }
        self.commit(tx, if done { events } else { &[] }).await?;
        Ok(done)
    }

    async fn session_by_token_hash(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<(SessionRecord, TokenMatch)>> {
        // Two indexed lookups, whatever the planner's statistics say (issue 14: after an
        // ANALYZE of sessions whose previous hashes were mostly NULL, `current_hash = ?1 OR
        // previous_hash = ?1` became a scan of the whole table). A legacy hash is a previous
        // hash only up to generation 1, which is all the partial index holds (migration 0010).
        let q = sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE current_hash = ?1 \
             UNION ALL SELECT {SESSION_COLUMNS} FROM sessions WHERE previous_hash = ?1 AND generation <= 1 LIMIT 1"
        ));
        let row = sqlx::query_as::<_, SessionRow>(q)
            .bind(&hash[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        if let Some(row) = row {
            let rec = SessionRecord::try_from(row)?;
            let m = if &rec.current_hash == hash {
                TokenMatch::Current
            } else {
                TokenMatch::Previous
            };
            return Ok(Some((rec, m)));
        }
        let q = sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM retired_tokens r JOIN sessions s ON s.id = r.session_id WHERE r.hash = ?1",
            SESSION_COLUMNS
                .split(", ")
                .map(|c| format!("s.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let row = sqlx::query_as::<_, SessionRow>(q)
            .bind(&hash[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        row.map(|r| Ok((SessionRecord::try_from(r)?, TokenMatch::Retired)))
            .transpose()
    }

    async fn session_by_id(&self, id: SessionId) -> Result<Option<SessionRecord>> {
        let q = sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"
        ));
        sqlx::query_as::<_, SessionRow>(q)
            .bind(id.0.to_string())
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
        const ADVANCE: &str = "UPDATE sessions SET previous_hash = current_hash, current_hash = $1, generation = generation + 1, \
             rotated_at = $2, last_used_at = $2, idle_expires_at = $3 \
             WHERE id = $4 AND generation = $5 AND current_hash = $6 AND revoked_at IS NULL";
        // The common rotation is `advance_current_session` (one statement); this is the full
        // rule's path, where the first two rotations of a session may displace a legacy
        // token that only its hash in `retired_tokens` recognises later. IMMEDIATE takes the
        // write lock up front: no read-to-write upgrade, no deadlock.
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(classify)?;
        sqlx::query(
            "INSERT INTO retired_tokens (hash, session_id, retired_at) \
             SELECT previous_hash, id, $1 FROM sessions \
             WHERE id = $2 AND generation = $3 AND current_hash = $4 AND revoked_at IS NULL \
               AND previous_hash IS NOT NULL AND generation <= 1 \
             ON CONFLICT(hash) DO NOTHING",
        )
        .bind(now)
        .bind(id.0.to_string())
        .bind(generation)
        .bind(&expected[..])
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        let r = sqlx::query(ADVANCE)
            .bind(&new[..])
            .bind(now)
            .bind(idle_expires_at)
            .bind(id.0.to_string())
            .bind(generation)
            .bind(&expected[..])
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(r.rows_affected() == 1)
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
        let q = sqlx::AssertSqlSafe(format!(
            "UPDATE sessions SET previous_hash = current_hash, current_hash = ?1, generation = generation + 1, \
             rotated_at = ?2, last_used_at = ?2, idle_expires_at = MIN(?3, absolute_expires_at) \
             WHERE id = ?4 AND generation = ?5 AND current_hash = ?6 AND revoked_at IS NULL \
               AND idle_expires_at > ?2 AND absolute_expires_at > ?2 \
             RETURNING {SESSION_COLUMNS}"
        ));
        sqlx::query_as::<_, SessionRow>(q)
            .bind(&new[..])
            .bind(now)
            .bind(idle_expires_at)
            .bind(id.0.to_string())
            .bind(generation)
            .bind(&expected[..])
            .fetch_optional(&self.writer)
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
        let mut tx = self.write().await?;
        let owner: Option<(String,)> = sqlx::query_as("UPDATE sessions SET revoked_at = ?, revoked_reason = ? WHERE id = ? AND (? IS NULL OR user_id = ?) AND revoked_at IS NULL RETURNING user_id")
            .bind(now)
            .bind(reason)
            .bind(id.0.to_string())
            .bind(user.map(|u| u.0.to_string()))
            .bind(user.map(|u| u.0.to_string()))
            .fetch_optional(&mut *tx)
            .await
            .map_err(classify)?;
        let Some((owner,)) = owner else {
            return Ok(false);
        };
        let events = super::with_user(events, parse_id(&owner)?);
        insert_events_tx(&mut tx, &events).await?;
        self.commit(tx, &events).await?;
        Ok(true)
    }

    async fn revoke_user_sessions(
        &self,
        user: UserId,
        now: i64,
        reason: &str,
        events: &[Event],
    ) -> Result<Vec<SessionId>> {
        let mut tx = self.write().await?;
        let ids: Vec<(String,)> = sqlx::query_as("UPDATE sessions SET revoked_at = ?, revoked_reason = ? WHERE user_id = ? AND revoked_at IS NULL RETURNING id")
            .bind(now)
            .bind(reason)
            .bind(user.0.to_string())
            .fetch_all(&mut *tx)
            .await
            .map_err(classify)?;
        let events = super::unless_none_revoked(events, ids.len());
        insert_events_tx(&mut tx, &events).await?;
        self.commit(tx, &events).await?;
        parse_session_ids(ids)
    }

    async fn live_sessions(&self, user: Option<UserId>, now: i64) -> Result<Vec<SessionRecord>> {
        // One statement per case (issue 14): `(?2 IS NULL OR user_id = ?2)` let the planner
        // walk every live session of every user through the revoked_at index.
        let only = if user.is_some() {
            "user_id = ?2 AND"
        } else {
            "?2 IS NULL AND"
        };
        let q = sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE {only} revoked_at IS NULL AND idle_expires_at > ?1 \
             AND absolute_expires_at > ?1 ORDER BY last_used_at DESC"
        ));
        sqlx::query_as::<_, SessionRow>(q)
            .bind(now)
            .bind(user.map(|u| u.0.to_string()))
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?
            .into_iter()
            .map(SessionRecord::try_from)
            .collect()
    }

    async fn prune_sessions(&self, before: i64) -> Result<u64> {
        // One read finds them (a WAL reader never blocks the writer), then short write
        // transactions of PRUNE_BATCH rows each, so a large prune never holds the single
        // writer for long (issue 14: one DELETE of 200k rows stalled every refresh).
        const EXPIRED: &str = "absolute_expires_at < ?1 OR idle_expires_at < ?1 OR revoked_at < ?1";
        let rowids: Vec<(i64,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT rowid FROM sessions WHERE {EXPIRED} LIMIT ?2"
        )))
        .bind(before)
        .bind(super::PRUNE_MAX as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        let mut pruned = 0;
        for chunk in rowids.chunks(super::PRUNE_BATCH) {
            let ids = serde_json::to_string(&chunk.iter().map(|r| r.0).collect::<Vec<_>>())
                .map_err(|e| StoreError::Other(e.into()))?;
            // The condition again: a session refreshed since the read stays.
            let r = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM sessions WHERE rowid IN (SELECT value FROM json_each(?2)) AND ({EXPIRED})"
            )))
            .bind(before)
            .bind(ids)
            .execute(&self.writer)
            .await
            .map_err(classify)?;
            pruned += r.rows_affected();
            tokio::task::yield_now().await;
        }
        Ok(pruned)
    }

    async fn revoked_since(&self, since: i64) -> Result<Vec<(SessionId, i64)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT id, revoked_at FROM sessions WHERE revoked_at >= ?")
                .bind(since)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)?;
        rows.into_iter()
            .map(|(id, at)| Ok((SessionId(parse_uuid(&id)?), at)))
            .collect()
    }

    // --- passkeys (SPEC 11) ---
    async fn insert_passkey(&self, p: &PasskeyRecord, events: &[Event]) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(INSERT_PASSKEY)
            .bind(p.id.to_string())
            .bind(p.user_id.0.to_string())
            .bind(&p.credential_id)
            .bind(&p.credential)
            .bind(&p.name)
            .bind(p.created_at)
            .bind(p.last_used_at)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        insert_events_tx(&mut tx, events).await?;
        self.commit(tx, events).await
    }

    async fn passkeys(&self, user: UserId) -> Result<Vec<PasskeyRecord>> {
        let rows: Vec<SqlitePasskeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE user_id = $1 ORDER BY created_at, id"
        )))
        .bind(user.0.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.into_iter().map(sqlite_passkey).collect()
    }

    async fn passkey_by_credential_id(
        &self,
        credential_id: &[u8],
    ) -> Result<Option<PasskeyRecord>> {
        let row: Option<SqlitePasskeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE credential_id = $1"
        )))
        .bind(credential_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        row.map(sqlite_passkey).transpose()
    }

    async fn rename_passkey(&self, user: UserId, id: uuid::Uuid, name: &str) -> Result<bool> {
        let r = sqlx::query(RENAME_PASSKEY)
            .bind(name)
            .bind(id.to_string())
            .bind(user.0.to_string())
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        Ok(r.rows_affected() == 1)
    }

    async fn touch_passkey(
        &self,
        id: uuid::Uuid,
        credential: Option<&str>,
        now: i64,
    ) -> Result<()> {
        sqlx::query(TOUCH_PASSKEY)
            .bind(now)
            .bind(credential)
            .bind(id.to_string())
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn insert_ceremony(&self, c: &CeremonyRecord, now: i64) -> Result<()> {
        sqlx::query(PRUNE_CEREMONIES)
            .bind(now)
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        sqlx::query(INSERT_CEREMONY)
            .bind(&c.id_hash[..])
            .bind(c.kind.as_str())
            .bind(c.user_id.map(|u| u.0.to_string()))
            .bind(&c.state)
            .bind(c.created_at)
            .bind(c.expires_at)
            .execute(&self.writer)
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
        type Row = (Vec<u8>, String, Option<String>, String, i64, i64);
        let row: Option<Row> = sqlx::query_as(TAKE_CEREMONY)
            .bind(&id_hash[..])
            .fetch_optional(&self.writer)
            .await
            .map_err(classify)?;
        let Some((id, k, user, state, created, expires)) = row else {
            return Ok(None);
        };
        let user = user.as_deref().map(parse_id).transpose()?;
        ceremony_from((id, k, user, state, created, expires), kind, now)
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
        let rows: Vec<Row> = sqlx::query_as("SELECT kid, private_der, key_id, public_key, created_at, COALESCE(activates_at, created_at), retired_at FROM signing_keys ORDER BY created_at, kid")
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
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(classify)?;
        if let Some(at) = retire_others_at {
            let r = sqlx::query(
                "UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL AND (? IS NULL OR kid = ?)",
            )
            .bind(at)
            .bind(only_replacing)
            .bind(only_replacing)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
            if only_replacing.is_some() && r.rows_affected() == 0 {
                return Err(StoreError::Conflict);
            }
        }
        sqlx::query("INSERT INTO signing_keys (kid, private_der, key_id, public_key, created_at, activates_at, retired_at) VALUES (?, ?, ?, ?, ?, ?, NULL)")
            .bind(&k.kid)
            .bind(&k.private.bytes)
            .bind(&k.private.key_id)
            .bind(&k.public_key)
            .bind(k.created_at)
            .bind(k.activates_at)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        insert_events_tx(&mut tx, events).await?;
        self.commit(tx, events).await
    }

    async fn prune_signing_keys(&self, before: i64) -> Result<u64> {
        let r =
            sqlx::query("DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < ?")
                .bind(before)
                .execute(&self.writer)
                .await
                .map_err(classify)?;
        Ok(r.rows_affected())
    }

    async fn server_secret(&self, name: &str, candidate: &StoredSecret) -> Result<StoredSecret> {
        sqlx::query("INSERT INTO server_secrets (name, value, key_id, created_at) VALUES (?, ?, ?, ?) ON CONFLICT(name) DO NOTHING")
            .bind(name)
            .bind(&candidate.bytes)
            .bind(&candidate.key_id)
            .bind(crate::clock::now_ms())
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        let (bytes, key_id): (Vec<u8>, Option<String>) =
            sqlx::query_as("SELECT value, key_id FROM server_secrets WHERE name = ?")
                .bind(name)
                .fetch_one(&self.pool)
                .await
                .map_err(classify)?;
        Ok(StoredSecret { key_id, bytes })
    }

    async fn delete_server_secret(&self, name: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM server_secrets WHERE name = ?")
            .bind(name)
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        Ok(r.rows_affected() > 0)
    }

    async fn email_token(&self, hash: &TokenHash) -> Result<Option<EmailToken>> {
        let row: Option<EmailTokenRow> = sqlx::query_as(EMAIL_TOKEN_SELECT)
            .bind(&hash[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        row.map(
            |(hash, purpose, user, email, created_at, expires_at, used_at)| {
                email_token_from(
                    hash,
                    &purpose,
                    UserId(parse_uuid(&user)?),
                    email,
                    (created_at, expires_at, used_at),
                )
            },
        )
        .transpose()
    }

    async fn apply(&self, changes: &[Change<'_>]) -> Result<Vec<SessionId>> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(classify)?;
        let mut revoked = Vec::new();
        for change in changes {
            apply_one(&mut tx, change, &mut revoked).await?;
        }
        tx.commit().await.map_err(classify)?;
        crate::events::logged(&super::recorded(changes, revoked.len()));
        Ok(revoked)
    }

    async fn claim_mail(&self, now: i64, lease_until: i64, limit: i64) -> Result<Vec<OutboxEntry>> {
        // One writer at a time: the UPDATE's subquery and its write are one atomic step.
        let rows: Vec<OutboxRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE outbox SET claimed_until = $1, attempts = attempts + 1 WHERE id IN ({}) RETURNING {OUTBOX_COLUMNS}",
            OUTBOX_DUE
        )))
        .bind(lease_until)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.writer)
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
            .execute(&self.writer)
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
                .execute(&self.writer)
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
        mfa::put_totp_setup(&self.writer, record).await
    }

    async fn use_totp_step(&self, user: UserId, step: i64) -> Result<bool> {
        mfa::use_totp_step(&self.writer, user, step).await
    }

    async fn use_recovery_code(&self, user: UserId, hash: &TokenHash, now: i64) -> Result<bool> {
        mfa::use_recovery_code(&self.writer, user, hash, now).await
    }

    async fn insert_pending_login(&self, pending: &super::PendingLogin) -> Result<()> {
        mfa::insert_pending_login(&self.writer, pending).await
    }

    async fn pending_login(&self, id_hash: &TokenHash) -> Result<Option<super::PendingLogin>> {
        mfa::pending_login(&self.pool, id_hash).await
    }

    async fn take_pending_attempt(&self, id_hash: &TokenHash, now: i64, max: i32) -> Result<bool> {
        mfa::take_pending_attempt(&self.writer, id_hash, now, max).await
    }

    async fn finish_pending_login(&self, id_hash: &TokenHash, now: i64) -> Result<bool> {
        mfa::finish_pending_login(&self.writer, id_hash, now).await
    }

    async fn reauthenticate_session(
        &self,
        id: SessionId,
        user: UserId,
        auth_time: i64,
        amr: crate::mfa::Amr,
    ) -> Result<bool> {
        mfa::reauthenticate_session(&self.writer, id, user, auth_time, amr).await
    }

    async fn prune_pending_logins(&self, before: i64) -> Result<u64> {
        mfa::prune_pending_logins(&self.writer, before).await
    }

    async fn insert_events(&self, events: &[Event]) -> Result<()> {
        let mut tx = self.write().await?;
        insert_events_tx(&mut tx, events).await?;
        self.commit(tx, events).await
    }

    async fn events(&self, q: EventQuery) -> Result<Vec<EventRecord>> {
        let rows: Vec<EventRow> = sqlx::query_as(SELECT_EVENTS_SQLITE)
            .bind(q.user.map(|u| u.0.to_string()))
            .bind(q.before_id)
            .bind(q.since)
            .bind(q.limit)
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        rows.into_iter()
            .map(|(id, at, kind, user, session, ip, user_agent, detail)| {
                Ok(EventRecord {
                    id,
                    at,
                    kind,
                    user: user.as_deref().map(parse_id).transpose()?,
                    session: session
                        .as_deref()
                        .map(|s| parse_uuid(s).map(SessionId))
                        .transpose()?,
                    ip,
                    user_agent,
                    detail: detail_from(&detail),
                })
            })
            .collect()
    }

    async fn prune_events(&self, before: i64) -> Result<u64> {
        let r = sqlx::query(PRUNE_EVENTS)
            .bind(before)
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        Ok(r.rows_affected())
    }

    async fn secret_rows(&self) -> Result<Vec<SecretRow>> {
        secret_rows(&self.pool).await
    }

    async fn reseal_secrets(&self, reseal: &Resealer<'_>) -> Result<u64> {
        // IMMEDIATE: the write lock from the start, so a concurrent start waits for ours.
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(classify)?;
        let mut changed = 0;
        for row in secret_rows(&mut *tx).await? {
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
}

/// A row of the mail-token query: hash, purpose, user id (TEXT), email, created, expires,
/// used.
type EmailTokenRow = (Vec<u8>, String, String, String, i64, i64, Option<i64>);

/// One [`Change`] inside [`Store::apply`]'s transaction.
async fn apply_one(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    change: &Change<'_>,
    revoked: &mut Vec<SessionId>,
) -> Result<()> {
    match *change {
        Change::CreateUser(u) => insert_user(&mut **tx, u).await,
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
                .bind(user.0.to_string())
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
                .bind(t.user_id.0.to_string())
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
                    .bind(user.0.to_string())
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
                .bind(user.0.to_string())
                .execute(&mut **tx)
                .await
                .map_err(classify)?;
            Ok(())
        }
        Change::MarkVerified { user, email } => {
            sqlx::query("UPDATE users SET email_verified = TRUE WHERE id = $1 AND email = $2")
                .bind(user.0.to_string())
                .bind(email.as_str())
                .execute(&mut **tx)
                .await
                .map_err(classify)?;
            Ok(())
        }
        Change::SetEmail { user, email } => {
            sqlx::query("UPDATE users SET email = $1, email_verified = TRUE WHERE id = $2")
                .bind(email.as_str())
                .bind(user.0.to_string())
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
            let ids: Vec<(String,)> = sqlx::query_as(REVOKE_SESSIONS_EXCEPT)
                .bind(now)
                .bind(reason)
                .bind(user.0.to_string())
                .bind(except.map(|s| s.0.to_string()))
                .fetch_all(&mut **tx)
                .await
                .map_err(classify)?;
            revoked.extend(parse_session_ids(ids)?);
            Ok(())
        }
        Change::DeletePasskey { user, id } => {
            // One writer at a time (BEGIN IMMEDIATE): the check and the delete are atomic.
            let r = sqlx::query(DELETE_PASSKEY)
                .bind(id.to_string())
                .bind(user.0.to_string())
                .execute(&mut **tx)
                .await
                .map_err(classify)?;
            if r.rows_affected() == 1 {
                Ok(())
            } else {
                Err(StoreError::Refused)
            }
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
        Change::ConfirmTotp { .. }
        | Change::DeleteTotp { .. }
        | Change::ReplaceRecoveryCodes { .. } => mfa::apply_one(tx, change).await.map(|_| ()),
        // A `session_revoked` of a change that revoked no session is left out.
        Change::Record(e) if e.kind == EventKind::SessionRevoked && revoked.is_empty() => Ok(()),
        Change::Record(e) => insert_events_tx(tx, std::slice::from_ref(e)).await,
    }
}

/// A passkey row as SQLite returns it (ids as TEXT).
type SqlitePasskeyRow = (String, String, Vec<u8>, String, String, i64, Option<i64>);

fn sqlite_passkey(
    (id, user, cid, cred, name, created, used): SqlitePasskeyRow,
) -> Result<PasskeyRecord> {
    Ok(passkey_from((
        parse_uuid(&id)?,
        parse_id(&user)?,
        cid,
        cred,
        name,
        created,
        used,
    )))
}

/// Session ids as SQLite returns them (TEXT).
fn parse_session_ids(rows: Vec<(String,)>) -> Result<Vec<SessionId>> {
    rows.into_iter()
        .map(|(id,)| {
            id.parse()
                .map_err(|_| StoreError::Other("stored session id is not a UUID".into()))
        })
        .collect()
}

async fn secret_rows<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Sqlite>,
) -> Result<Vec<SecretRow>> {
    let rows: Vec<(i32, String, Vec<u8>, Option<String>)> = sqlx::query_as(SecretRow::SELECT_ALL)
        .fetch_all(db)
        .await
        .map_err(classify)?;
    Ok(rows.into_iter().map(SecretRow::from_columns).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client hanging up mid-request drops its query future; on `sqlite::memory:` that
    /// used to take the whole database with the dropped connection.
    #[tokio::test]
    async fn an_in_memory_database_survives_dropped_queries() {
        let store = std::sync::Arc::new(SqliteStore::connect("sqlite::memory:").await.unwrap());
        store.migrate().await.unwrap();
        for i in 0..200u32 {
            let s = store.clone();
            let task = tokio::spawn(async move { s.list_users().await });
            // Let it start, then abandon it at varying points.
            for _ in 0..(i % 7) {
                tokio::task::yield_now().await;
            }
            task.abort();
            let _ = task.await;
        }
        store.list_users().await.expect("the database still exists");
    }
}

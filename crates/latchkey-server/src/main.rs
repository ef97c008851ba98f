//! The `latchkey` binary: `serve` (default), `migrate`, and admin commands.

mod pages;

use latchkey::events::{Event, EventKind, RevokedBy};
use std::io::BufRead as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use latchkey::clock::{now_ms, rfc3339};
use latchkey::config::LogFormat;
use latchkey::domain::{Email, Password, SessionId, UserId};
use latchkey::store::{self, NewUser, Store};
use latchkey::{AppState, Config};

#[derive(Parser)]
#[command(
    name = "latchkey",
    version,
    about = "Self-hosted authentication service"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage users.
    Users {
        #[command(subcommand)]
        cmd: UsersCmd,
    },
    /// Inspect and revoke sessions.
    Sessions {
        #[command(subcommand)]
        cmd: SessionsCmd,
    },
    /// Show security events (SPEC 12) of every user, newest first.
    Events {
        /// Only this user's (email or id).
        #[arg(long)]
        user: Option<String>,
        /// Only those of the last DURATION (e.g. 1h, 7d).
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// At most this many (default 100).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// One JSON object per line instead of tab-separated text.
        #[arg(long)]
        json: bool,
    },
    /// Inspect and rotate signing keys.
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// Write a consistent copy of the SQLite database to PATH (`VACUUM INTO`), also while the
    /// server runs. PATH must not exist; the copy is created with mode 0600. It holds the
    /// sealed secrets but not SECRETS_KEY (nor the development latchkey.key): keep the key
    /// apart. For PostgreSQL use pg_dump.
    Backup {
        /// Where the copy goes (a new file).
        #[arg(value_name = "PATH")]
        path: std::path::PathBuf,
    },
    /// Manage SECRETS_KEY, which seals the signing keys and server secrets in the database.
    Secrets {
        #[command(subcommand)]
        cmd: SecretsCmd,
    },
}

#[derive(Subcommand)]
enum SecretsCmd {
    /// Re-seal every stored secret under a new key, in one transaction. The current key is
    /// read as `serve` reads it (SECRETS_KEY, SECRETS_KEY_FILE, or latchkey.key beside a
    /// development SQLite file). Then restart every instance with the new key.
    Rotate {
        /// File holding the new key (base64 of 32 bytes). Created with a fresh random key
        /// (mode 0600) when it does not exist. Optional only with the development key
        /// file, which is then replaced by the new key.
        #[arg(long, value_name = "PATH")]
        new_key_file: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
enum UsersCmd {
    /// Create a password account; the password is read from standard input (one line).
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: Option<String>,
        /// Mark the address verified (you vouch for it): no verification mail is needed,
        /// also with REQUIRE_EMAIL_VERIFICATION=true.
        #[arg(long)]
        verified: bool,
    },
    /// List users.
    List,
    /// Disable a user (by email or id) and revoke all of their sessions.
    Disable { user: String },
}

#[derive(Subcommand)]
enum SessionsCmd {
    /// List live sessions, optionally of one user (email or id).
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke one session by id.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// List signing keys.
    List,
    /// Generate a new signing key; older keys keep verifying until their tokens expire.
    Rotate,
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    // Colours only on a terminal (and never with NO_COLOR), not in files or journald.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        // A closed or full stderr must not take requests down: tracing-subscriber would
        // otherwise report the failed write with `eprintln!`, which panics in the handler.
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    allocator::tune();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(cli_main()),
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// glibc's allocator, for a long-running server (issue 11, the soak): memory freed by one
/// thread and reused by another stays in per-thread arenas (up to 8 per core) that glibc
/// rarely gives back. Two arenas, and free pages returned to the kernel once a minute, keep
/// less of it resident (a 30-minute soak ended at 87 MiB instead of 97; it still grew 0.64
/// MiB/min, see README "Soak"). Other C libraries (musl) and platforms: nothing to do.
mod allocator {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    pub fn tune() {
        // An explicit MALLOC_ARENA_MAX from the operator wins.
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            // SAFETY: mallopt only sets an allocator parameter; called before any other
            // thread exists.
            unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
        }
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    pub fn spawn_trim() {
        tokio::spawn(async {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                // SAFETY: malloc_trim only releases free memory; it takes the arenas' locks.
                let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
                report();
            }
        });
    }

    /// One `latchkey::memory` debug line a minute: what the allocator holds for live
    /// objects, what it keeps free, and SQLite's share of the live part. `scripts/soak.sh`
    /// reads it to tell a growing structure from a fragmenting heap.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn report() {
        if !tracing::enabled!(target: "latchkey::memory", tracing::Level::DEBUG) {
            return;
        }
        let Some(heap) = heap() else { return };
        let (mut sqlite, mut sqlite_peak) = (0i64, 0i64);
        // SAFETY: sqlite3_status64 reads a process-wide counter into the two locals.
        unsafe {
            libsqlite3_sys::sqlite3_status64(
                libsqlite3_sys::SQLITE_STATUS_MEMORY_USED,
                &mut sqlite,
                &mut sqlite_peak,
                0,
            )
        };
        tracing::debug!(
            target: "latchkey::memory",
            heap_in_use = heap.in_use,
            heap_free = heap.free,
            sqlite_in_use = sqlite,
            sqlite_peak,
            "memory"
        );
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    struct Heap {
        in_use: u64,
        free: u64,
    }

    /// Every arena's totals, from `malloc_info` (`mallinfo2` counts the main arena only).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn heap() -> Option<Heap> {
        let mut buf: *mut libc::c_char = std::ptr::null_mut();
        let mut len: libc::size_t = 0;
        // SAFETY: open_memstream allocates the buffer it writes to; malloc_info writes its
        // XML report into the stream; after fclose, `buf` holds `len` bytes, which are
        // copied and the buffer freed.
        let xml = unsafe {
            let f = libc::open_memstream(&mut buf, &mut len);
            if f.is_null() {
                return None;
            }
            let ok = libc::malloc_info(0, f) == 0;
            libc::fclose(f);
            if buf.is_null() {
                return None;
            }
            let text = String::from_utf8_lossy(std::slice::from_raw_parts(buf.cast::<u8>(), len))
                .into_owned();
            libc::free(buf.cast());
            ok.then_some(text)?
        };
        // The process-wide totals follow the last per-arena section.
        let totals = &xml[xml.rfind("</heap>")?..];
        let attr = |tag: &str, name: &str| -> Option<u64> {
            let at = totals.find(tag)? + tag.len();
            let rest = &totals[at..];
            let v = &rest[rest.find(&format!("{name}=\""))? + name.len() + 2..];
            v[..v.find('"')?].parse().ok()
        };
        let free = attr("<total type=\"fast\"", "size")? + attr("<total type=\"rest\"", "size")?;
        let mapped = attr("<total type=\"mmap\"", "size")?;
        let arenas = attr("<system type=\"current\"", "size")?;
        Some(Heap {
            in_use: arenas.saturating_sub(free) + mapped,
            free,
        })
    }

    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    pub fn tune() {}

    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    pub fn spawn_trim() {}
}

async fn cli_main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    match run(cli.command.unwrap_or(Command::Serve), config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn open_store(config: &Config) -> Result<std::sync::Arc<dyn Store>, BoxError> {
    let store = store::connect(&config.database_url).await?;
    store.migrate().await?;
    Ok(store)
}

async fn find_user(store: &dyn Store, who: &str) -> Result<latchkey::store::UserRecord, BoxError> {
    let found = match who.parse::<UserId>() {
        Ok(id) => store.user_by_id(id).await?,
        Err(_) => {
            store
                .user_by_email(
                    &Email::parse(who).map_err(|_| format!("not an email or user id: {who}"))?,
                )
                .await?
        }
    };
    found.ok_or_else(|| format!("no such user: {who}").into())
}

/// `latchkey secrets rotate`: see [`SecretsCmd::Rotate`].
async fn rotate_secrets(
    config: &Config,
    new_key_file: Option<std::path::PathBuf>,
) -> Result<(), BoxError> {
    use latchkey::secrets::{self, KeySource, SecretsKey};
    let store = open_store(config).await?;
    // The old key exactly as a start would find it (and any rows still in clear sealed).
    let old = secrets::prepare(config, &*store).await?;
    let dev_file = match secrets::key_source(config)? {
        KeySource::DevFile(path) => Some(path),
        KeySource::Configured(_) => None,
        KeySource::Ephemeral => return Err("an in-memory database has nothing to rotate".into()),
    };
    // The new key is on disk before anything is sealed under it.
    let (new_path, replace_dev_file) = match (new_key_file, &dev_file) {
        (Some(p), _) => (p, None),
        (None, Some(dev)) => {
            let mut p = dev.as_os_str().to_owned();
            p.push(".new");
            (std::path::PathBuf::from(p), Some(dev.clone()))
        }
        (None, None) => {
            return Err(
                "--new-key-file is required when the key comes from SECRETS_KEY or \
                        SECRETS_KEY_FILE"
                    .into(),
            );
        }
    };
    secrets::write_new_key_file(&new_path, &SecretsKey::generate())?;
    let new = SecretsKey::read_file(&new_path)?;
    if new.id() == old.id() {
        return Err(format!("{} holds the current key", new_path.display()).into());
    }
    let n = secrets::rotate(&*store, &old, &new).await?;
    println!(
        "re-sealed {n} secret(s) under key id {} (was {})",
        new.id(),
        old.id()
    );
    match replace_dev_file {
        Some(dev) => {
            std::fs::rename(&new_path, &dev).map_err(|e| {
                format!(
                    "the secrets are sealed under the key in {}, but it could not replace {}: {e}",
                    new_path.display(),
                    dev.display()
                )
            })?;
            println!("{} now holds the new key; restart latchkey", dev.display());
        }
        None => println!(
            "the new key is in {}; restart every instance with SECRETS_KEY_FILE={} (or \
             SECRETS_KEY set to its content) — the old key no longer opens the database",
            new_path.display(),
            new_path.display()
        ),
    }
    Ok(())
}

/// `latchkey backup PATH`: see [`Command::Backup`].
async fn backup(config: &Config, path: &std::path::Path) -> Result<(), BoxError> {
    use secrecy::ExposeSecret as _;
    use sqlx::ConnectOptions as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    use std::str::FromStr as _;
    let url = config.database_url.expose_secret();
    if !url.starts_with("sqlite:") {
        return Err("latchkey backup copies a SQLite database; DATABASE_URL is PostgreSQL: \
                    use pg_dump (e.g. pg_dump --format=custom --file=latchkey.dump \"$DATABASE_URL\")"
            .into());
    }
    let db = store::sqlite::database_file(url)
        .ok_or("DATABASE_URL is an in-memory database: there is nothing to back up")?;
    if !db.is_file() {
        return Err(format!("no database at {}", db.display()).into());
    }
    // The copy is created here, empty, for this user only and never over an existing file;
    // VACUUM INTO accepts an empty target and keeps its mode.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                format!("{} exists; not overwriting it", path.display())
            }
            _ => format!("{}: {e}", path.display()),
        })?;
    let target = path
        .to_str()
        .ok_or_else(|| format!("{}: not a UTF-8 path", path.display()))?;
    // One read transaction: a consistent snapshot while the server goes on writing (WAL).
    let copied = async {
        let mut conn = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
            .busy_timeout(std::time::Duration::from_secs(30))
            .connect()
            .await?;
        sqlx::query("VACUUM INTO ?1")
            .bind(target)
            .execute(&mut conn)
            .await?;
        sqlx::Connection::close(conn).await
    }
    .await;
    if let Err(e) = copied {
        let _ = std::fs::remove_file(path);
        return Err(format!("backup of {} failed: {e}", db.display()).into());
    }
    std::fs::File::open(path)?.sync_all()?;
    let bytes = std::fs::metadata(path)?.len();
    println!(
        "backed up {} to {} ({bytes} bytes); SECRETS_KEY is not in it: keep the key apart",
        db.display(),
        path.display()
    );
    Ok(())
}

async fn run(command: Command, config: Config) -> Result<(), BoxError> {
    match command {
        Command::Backup { path } => backup(&config, &path).await,
        Command::Secrets {
            cmd: SecretsCmd::Rotate { new_key_file },
        } => rotate_secrets(&config, new_key_file).await,
        Command::Serve => serve(config).await,
        Command::Migrate => {
            let store = open_store(&config).await?;
            // Secrets stored in clear by an older version are sealed here too.
            latchkey::secrets::prepare(&config, &*store).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Users { cmd } => {
            let store = open_store(&config).await?;
            match cmd {
                UsersCmd::Create {
                    email,
                    name,
                    verified,
                } => {
                    let email = Email::parse(&email).map_err(|e| format!("--email: {e}"))?;
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line)?;
                    let password = Password::parse(line.trim_end_matches(['\r', '\n']).to_owned())
                        .map_err(|e| format!("password: {e}"))?;
                    let cores = std::thread::available_parallelism()
                        .map(|n| n.get())
                        .unwrap_or(1);
                    let hash = latchkey::password::PasswordHasher::new(config.password, cores)?
                        .hash(password)
                        .await?;
                    let user = NewUser {
                        id: UserId::new(),
                        email,
                        name,
                        password_hash: Some(hash),
                        email_verified: verified,
                        created_at: now_ms(),
                    };
                    // SPEC 12: the account and its `signup` event, in one transaction.
                    let signup = Event::new(EventKind::Signup, user.created_at)
                        .user(user.id)
                        .with("method", "admin");
                    store
                        .apply(&[
                            latchkey::store::Change::CreateUser(&user),
                            latchkey::store::Change::Record(&signup),
                        ])
                        .await
                        .map_err(|e| match e {
                            latchkey::store::StoreError::Conflict => {
                                "an account with this email already exists".into()
                            }
                            e => BoxError::from(e),
                        })?;
                    println!("{}\t{}", user.id, user.email);
                }
                UsersCmd::List => {
                    for u in store.list_users().await? {
                        let state = if u.disabled_at.is_some() {
                            "disabled"
                        } else {
                            "active"
                        };
                        println!(
                            "{}\t{}\t{}\t{}",
                            u.id,
                            u.email,
                            state,
                            rfc3339(u.created_at)
                        );
                    }
                }
                UsersCmd::Disable { user } => {
                    let u = find_user(&*store, &user).await?;
                    let now = now_ms();
                    let disabled = Event::new(EventKind::UserDisabled, now)
                        .user(u.id)
                        .with("by", RevokedBy::Admin.as_str());
                    store
                        .set_user_disabled(u.id, Some(now), &[disabled])
                        .await?;
                    let revoked = Event::new(EventKind::SessionRevoked, now)
                        .user(u.id)
                        .with("by", RevokedBy::Admin.as_str())
                        .with("scope", "all");
                    let n = store
                        .revoke_user_sessions(u.id, now, "user_disabled", &[revoked])
                        .await?
                        .len();
                    println!("disabled {} and revoked {n} session(s)", u.email);
                }
            }
            Ok(())
        }
        Command::Sessions { cmd } => {
            let store = open_store(&config).await?;
            match cmd {
                SessionsCmd::List { user } => {
                    let uid = match user {
                        Some(u) => Some(find_user(&*store, &u).await?.id),
                        None => None,
                    };
                    for s in store.live_sessions(uid, now_ms()).await? {
                        println!(
                            "{}\t{}\tcreated {}\tlast used {}\t{}\t{}",
                            s.id,
                            s.user_id,
                            rfc3339(s.created_at),
                            rfc3339(s.last_used_at),
                            s.ip.as_deref().unwrap_or("-"),
                            s.user_agent.as_deref().unwrap_or("-")
                        );
                    }
                }
                SessionsCmd::Revoke { id } => {
                    let sid: SessionId =
                        id.parse().map_err(|_| format!("not a session id: {id}"))?;
                    if store
                        .revoke_session(
                            sid,
                            None,
                            now_ms(),
                            "revoked_by_admin",
                            &[Event::new(EventKind::SessionRevoked, now_ms())
                                .session(sid)
                                .with("by", RevokedBy::Admin.as_str())],
                        )
                        .await?
                    {
                        println!("revoked {sid}");
                    } else {
                        return Err(format!("no live session {sid}").into());
                    }
                }
            }
            Ok(())
        }
        Command::Events {
            user,
            since,
            limit,
            json,
        } => {
            let store = open_store(&config).await?;
            let user = match user {
                Some(u) => Some(find_user(&*store, &u).await?.id),
                None => None,
            };
            let since = match since {
                Some(raw) => {
                    let d = latchkey::config::parse_duration(&raw)
                        .map_err(|m| format!("--since: {m}: {raw:?}"))?;
                    Some(now_ms().saturating_sub(latchkey::clock::ms(d)))
                }
                None => None,
            };
            let events = store
                .events(latchkey::events::EventQuery {
                    user,
                    before_id: None,
                    since,
                    limit: i64::from(limit.max(1)),
                })
                .await?;
            let dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
            for e in events {
                if json {
                    let line = serde_json::json!({
                        "type": e.kind,
                        "time": rfc3339(e.at),
                        "user_id": e.user.map(|u| u.0),
                        "session_id": e.session.map(|s| s.0),
                        "ip": e.ip,
                        "user_agent": e.user_agent,
                        "detail": e.detail,
                    });
                    println!("{line}");
                } else {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        rfc3339(e.at),
                        e.kind,
                        dash(e.user.map(|u| u.to_string())),
                        dash(e.session.map(|s| s.to_string())),
                        dash(e.ip),
                        e.detail
                    );
                }
            }
            Ok(())
        }
        Command::Keys { cmd } => {
            let store = open_store(&config).await?;
            let secrets_key = latchkey::secrets::prepare(&config, &*store).await?;
            match cmd {
                KeysCmd::List => {
                    let now = latchkey::clock::now_ms();
                    for k in store.signing_keys().await? {
                        let state = match k.retired_at {
                            _ if k.activates_at > now => {
                                format!("next, signs from {}", rfc3339(k.activates_at))
                            }
                            None => "active".to_owned(),
                            Some(at) if at > now => format!("active until {}", rfc3339(at)),
                            Some(at) => format!("retired {}", rfc3339(at)),
                        };
                        println!("{}\tcreated {}\t{state}", k.kid, rfc3339(k.created_at));
                    }
                }
                KeysCmd::Rotate => {
                    let k = latchkey::tokens::keys::KeyRing::rotate(
                        &*store,
                        &secrets_key,
                        config.access_ttl,
                    )
                    .await?;
                    println!(
                        "new signing key {}, signing now (no JWKS lead: for a suspected \
                         compromise; the schedule, KEY_ROTATION_INTERVAL, publishes keys \
                         ahead); running instances pick it up within seconds",
                        k.kid
                    );
                }
            }
            Ok(())
        }
    }
}

async fn serve(mut config: Config) -> Result<(), BoxError> {
    let cap = latchkey::server::fit_to_fd_limit(config.max_connections);
    config.max_connections = cap.effective;
    tracing::info!("{}, {cap}", config.startup_summary());
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .map_err(|e| format!("LISTEN_ADDR {}: {e}", config.listen_addr))?;
    let state = AppState::start(config).await?;
    allocator::spawn_trim();
    let app = latchkey::http::app(state.clone(), pages::routes());
    tracing::info!(addr = %listener.local_addr()?, "listening");
    latchkey::serve(listener, app, state.serve_options(), shutdown_signal()).await?;
    state.store().close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

//! Crash consistency on SQLite (issue 11, item 4): the real binary on a SQLite file, a mixed
//! storm of signups, logins, refreshes and logouts from several client threads, and the
//! server SIGKILLed at random moments (at least 20 times), restarted on the same file each
//! time. Afterwards: every acknowledged logout stays revoked (refresh and access token 401),
//! every acknowledged refresh's newest token still refreshes (unless that session was later
//! logged out), every acknowledged signup can log in, and `PRAGMA integrity_check` is ok.
//!
//! Refresh tokens are opaque strings here. A request that got no answer (the process died)
//! is retried at once with the same input, as a browser would, so no session is left
//! holding a token whose rotation may have committed unseen past the grace window (that
//! case is the refresh model's, `models/refresh.pml`).
//!
//! `LATCHKEY_KILL_SEED` replays a run's kill moments and operation mix.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};

use super::{cookie, start_with};

const KILLS: usize = 24;
const THREADS: usize = 4;
const PASSWORD: &str = "correct horse battery";

/// xorshift64*: enough randomness for moments and choices, replayable from a seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug)]
struct Session {
    /// The newest refresh token an acknowledged answer gave.
    refresh: String,
    /// The newest access token.
    access: String,
    /// An acknowledged logout (204).
    logged_out: bool,
}

#[derive(Default)]
struct Counts {
    signups: AtomicU64,
    logins: AtomicU64,
    refreshes: AtomicU64,
    logouts: AtomicU64,
    unanswered: AtomicU64,
    unavailable: AtomicU64,
    limited: AtomicU64,
}

/// What one attempt came to.
enum Answer {
    Got(Response),
    /// No answer (connection refused or reset, the process is gone) or a 503: nothing is
    /// known about whether it committed. Try again.
    Unknown,
}

struct Ctx {
    http: Client,
    base: Arc<RwLock<String>>,
    counts: Arc<Counts>,
    /// Distinct client addresses (TRUSTED_PROXIES=127.0.0.1) keep the per-IP limit away.
    ip: AtomicU64,
}

impl Ctx {
    fn xff(&self) -> String {
        let n = self.ip.fetch_add(1, Ordering::Relaxed);
        format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
    }

    fn send(
        &self,
        path: &str,
        build: impl Fn(reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder,
    ) -> Answer {
        let base = self.base.read().unwrap().clone();
        let req = build(
            self.http
                .post(format!("{base}{path}"))
                .header("x-forwarded-for", self.xff()),
        );
        match req.send() {
            Ok(r) if r.status() == 503 => {
                self.counts.unavailable.fetch_add(1, Ordering::Relaxed);
                Answer::Unknown
            }
            Ok(r) if r.status() == 429 => {
                // Nothing happened; wait a little (the limiters are per process).
                self.counts.limited.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
                Answer::Unknown
            }
            Ok(r) => {
                assert!(
                    !r.status().is_server_error(),
                    "{path}: {} {}",
                    r.status(),
                    r.text().unwrap_or_default()
                );
                Answer::Got(r)
            }
            Err(_) => {
                self.counts.unanswered.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
                Answer::Unknown
            }
        }
    }

    /// Repeats one request until it gets an answer other than "unknown".
    fn until_answered(
        &self,
        path: &str,
        build: impl Fn(reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder,
    ) -> Response {
        let started = Instant::now();
        loop {
            if let Answer::Got(r) = self.send(path, &build) {
                return r;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{path}: no answer for 20 s"
            );
        }
    }
}

fn code(r: Response) -> String {
    let status = r.status();
    let body: serde_json::Value = r.json().unwrap_or_default();
    format!("{status} {}", body["code"].as_str().unwrap_or("?"))
}

fn session_of(r: &Response) -> Session {
    Session {
        refresh: cookie(r, "refresh_token").expect("refresh cookie"),
        access: cookie(r, "access_token").expect("access cookie"),
        logged_out: false,
    }
}

/// One client thread's storm; returns its accounts and sessions (its ground truth).
fn client(ctx: &Ctx, id: usize, seed: u64, stop: &AtomicBool) -> (Vec<String>, Vec<Session>) {
    let mut rng = Rng(seed ^ (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut accounts: Vec<String> = Vec::new();
    let mut sessions: Vec<Session> = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let live: Vec<usize> = (0..sessions.len())
            .filter(|&i| !sessions[i].logged_out)
            .collect();
        let roll = rng.below(100);
        if accounts.is_empty() || roll < 12 {
            // Signup. Unanswered: the same request again; 409 means the first committed.
            let email = format!("storm{id}-{n}-{seed:x}@example.com");
            let body = serde_json::json!({"email": email, "password": PASSWORD});
            let r = ctx.until_answered("/api/v1/auth/signup", |b| b.json(&body));
            match r.status().as_u16() {
                201 => {
                    sessions.push(session_of(&r));
                    ctx.counts.signups.fetch_add(1, Ordering::Relaxed);
                }
                409 => {} // committed by an attempt whose answer was lost
                _ => panic!("signup {email}: {}", code(r)),
            }
            accounts.push(email);
        } else if live.is_empty() || roll < 24 {
            let email = &accounts[rng.below(accounts.len() as u64) as usize];
            let body = serde_json::json!({"email": email, "password": PASSWORD});
            let r = ctx.until_answered("/api/v1/auth/login", |b| b.json(&body));
            assert_eq!(r.status(), 200, "login {email}: {}", code(r));
            sessions.push(session_of(&r));
            ctx.counts.logins.fetch_add(1, Ordering::Relaxed);
        } else if roll < 88 {
            let s = &mut sessions[live[rng.below(live.len() as u64) as usize]];
            let token = s.refresh.clone();
            let r = ctx.until_answered("/api/v1/auth/refresh", |b| {
                b.header("cookie", format!("refresh_token={token}"))
            });
            assert_eq!(r.status(), 200, "refresh of a live session: {}", code(r));
            *s = session_of(&r);
            ctx.counts.refreshes.fetch_add(1, Ordering::Relaxed);
        } else {
            let s = &mut sessions[live[rng.below(live.len() as u64) as usize]];
            let (token, access) = (s.refresh.clone(), s.access.clone());
            let r = ctx.until_answered("/api/v1/auth/logout", |b| {
                b.header(
                    "cookie",
                    format!("refresh_token={token}; access_token={access}"),
                )
            });
            assert_eq!(r.status(), 204, "logout: {}", code(r));
            s.logged_out = true;
            ctx.counts.logouts.fetch_add(1, Ordering::Relaxed);
        }
    }
    (accounts, sessions)
}

#[test]
fn sigkill_storm_on_sqlite_keeps_every_acknowledged_write() {
    let started = Instant::now();
    let seed: u64 = std::env::var("LATCHKEY_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("storm seed {seed} (LATCHKEY_KILL_SEED={seed} replays it)");
    let tmp = std::env::temp_dir().join(format!("latchkey-storm-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&tmp).unwrap();
    let file = tmp.join("latchkey.db");
    let db_url = format!("sqlite://{}", file.display());
    let env = [("TRUSTED_PROXIES", "127.0.0.1")];

    let mut instance = start_with(&db_url, &env);
    let ctx = Arc::new(Ctx {
        http: Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        base: Arc::new(RwLock::new(instance.base.clone())),
        counts: Arc::new(Counts::default()),
        ip: AtomicU64::new(1),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..THREADS)
        .map(|id| {
            let (ctx, stop) = (ctx.clone(), stop.clone());
            std::thread::spawn(move || client(&ctx, id, seed, &stop))
        })
        .collect();

    let mut rng = Rng(seed);
    let mut restarts = Duration::ZERO;
    for _ in 0..KILLS {
        std::thread::sleep(Duration::from_millis(150 + rng.below(650)));
        instance.child.kill().unwrap(); // SIGKILL
        instance.child.wait().unwrap();
        let t = Instant::now();
        instance = start_with(&db_url, &env);
        restarts += t.elapsed();
        *ctx.base.write().unwrap() = instance.base.clone();
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let results: Vec<(Vec<String>, Vec<Session>)> = workers
        .into_iter()
        .map(|w| w.join().expect("no client saw a wrong answer"))
        .collect();
    let storm = started.elapsed();

    // The checks, against the process started after the last kill.
    let (mut revoked, mut live, mut accounts) = (0, 0, 0);
    let me = |access: &str| {
        let base = ctx.base.read().unwrap().clone();
        ctx.http
            .get(format!("{base}/api/v1/me"))
            .header("cookie", format!("access_token={access}"))
            .send()
            .unwrap()
            .status()
    };
    for (emails, sessions) in &results {
        for s in sessions {
            let token = s.refresh.clone();
            let r = ctx.until_answered("/api/v1/auth/refresh", |b| {
                b.header("cookie", format!("refresh_token={token}"))
            });
            if s.logged_out {
                assert_eq!(r.status(), 401, "refresh after an acknowledged logout");
                assert_eq!(
                    me(&s.access),
                    401,
                    "access token after an acknowledged logout"
                );
                revoked += 1;
            } else {
                assert_eq!(r.status(), 200, "newest acknowledged token: {}", code(r));
                let access = cookie(&r, "access_token").unwrap();
                assert_eq!(me(&access), 200, "the refreshed access token works");
                live += 1;
            }
        }
        for email in emails {
            let body = serde_json::json!({"email": email, "password": PASSWORD});
            let r = ctx.until_answered("/api/v1/auth/login", |b| b.json(&body));
            assert_eq!(r.status(), 200, "login {email}: {}", code(r));
            accounts += 1;
        }
    }
    instance.child.kill().unwrap();
    instance.child.wait().unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let check: String = rt.block_on(async {
        use sqlx::Connection as _;
        let mut conn = sqlx::SqliteConnection::connect(&db_url).await.unwrap();
        sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    });
    assert_eq!(check, "ok", "PRAGMA integrity_check");

    let c = &ctx.counts;
    eprintln!(
        "storm: {KILLS} SIGKILLs in {:.1} s (restarts {:.1} s in all); acknowledged: {} signups, \
         {} logins, {} refreshes, {} logouts; {} unanswered, {} 503, {} 429; checked {live} live \
         and {revoked} logged-out sessions, {accounts} accounts; total {:.1} s",
        storm.as_secs_f64(),
        restarts.as_secs_f64(),
        c.signups.load(Ordering::Relaxed),
        c.logins.load(Ordering::Relaxed),
        c.refreshes.load(Ordering::Relaxed),
        c.logouts.load(Ordering::Relaxed),
        c.unanswered.load(Ordering::Relaxed),
        c.unavailable.load(Ordering::Relaxed),
        c.limited.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

//! SPEC 5 across processes: three `latchkey` processes on one PostgreSQL database; one is
//! killed with SIGKILL in the middle of a refresh storm. The others keep serving and no
//! session is corrupted: every client's last cookie still refreshes and authenticates.
//!
//! Needs PostgreSQL (`LATCHKEY_TEST_POSTGRES`, default postgres://postgres@127.0.0.1:5432/postgres).
//!
//! [`outbox`]: SPEC 10 across a SIGKILL: mail committed but not yet sent goes out after a
//! restart (SQLite, or PostgreSQL when `LATCHKEY_TEST_POSTGRES` is set).
//!
//! [`storm`]: crash consistency on a SQLite file: ≥ 20 SIGKILLs during a storm of signups,
//! logins, refreshes and logouts; every acknowledged write survives, the file is intact.

#[path = "kill/outbox.rs"]
mod outbox;
#[path = "kill/storm.rs"]
mod storm;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_latchkey");

fn admin_url() -> String {
    std::env::var("LATCHKEY_TEST_POSTGRES")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn psql(sql: &str) {
    let out = Command::new("psql")
        .arg(admin_url())
        .args(["-qtAc", sql])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "PostgreSQL is required for this test: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Instance {
    child: Child,
    base: String,
}

/// Killed (SIGKILL) when dropped, so a failing test leaves no process behind.
impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(db_url: &str) -> Instance {
    start_with(db_url, &[])
}

/// [`start`] with more environment variables.
fn start_with(db_url: &str, env: &[(&str, &str)]) -> Instance {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(BIN)
        .env("DATABASE_URL", db_url)
        // Every instance on the database the same key (required with PostgreSQL).
        .env(
            "SECRETS_KEY",
            "zpMxY6ELREkcE3Drna0VwrpJxQsHuMm8p8IYx3MDrs8=",
        )
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "error")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::blocking::Client::new();
    let started = Instant::now();
    while client
        .get(format!("{base}/healthz"))
        .send()
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "instance did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Instance { child, base }
}

fn cookie(res: &reqwest::blocking::Response, name: &str) -> Option<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(|c| {
            c.split(';')
                .next()
                .unwrap()
                .split_once('=')
                .unwrap()
                .1
                .to_owned()
        })
        .filter(|v| !v.is_empty())
}

#[test]
fn sigkill_during_a_refresh_storm_loses_no_session() {
    let name = format!("latchkey_t_{}", uuid::Uuid::new_v4().simple());
    psql(&format!("CREATE DATABASE {name}"));
    let db_url = format!("{}/{name}", admin_url().rsplit_once('/').unwrap().0);
    let mut instances: Vec<Instance> = (0..3).map(|_| start(&db_url)).collect();
    let bases: Vec<String> = instances.iter().map(|i| i.base.clone()).collect();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // 12 clients, each with its own session, created through different instances.
    let clients: Vec<Arc<Mutex<String>>> = (0..12)
        .map(|i| {
            let res = http
                .post(format!("{}/api/v1/auth/signup", bases[i % 3]))
                .header("x-forwarded-for", format!("10.0.0.{i}"))
                .json(&serde_json::json!({"email": format!("kill{i}@example.com"), "password": "correct horse battery"}))
                .send()
                .unwrap();
            assert_eq!(res.status(), 201);
            Arc::new(Mutex::new(cookie(&res, "refresh_token").unwrap()))
        })
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, server_errors, conn_errors) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let workers: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, token)| {
            let (token, bases, stop, http) =
                (token.clone(), bases.clone(), stop.clone(), http.clone());
            let (ok, server_errors, conn_errors) =
                (ok.clone(), server_errors.clone(), conn_errors.clone());
            std::thread::spawn(move || {
                let mut n = i;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let current = token.lock().unwrap().clone();
                    let res = http
                        .post(format!("{}/api/v1/auth/refresh", bases[n % 3]))
                        .header("cookie", format!("refresh_token={current}"))
                        .send();
                    match res {
                        Ok(r) if r.status() == 200 => {
                            *token.lock().unwrap() = cookie(&r, "refresh_token").unwrap();
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        // The per-session limit (a fair answer to a storm): wait and go on.
                        Ok(r) if r.status() == 429 => {
                            std::thread::sleep(Duration::from_millis(200))
                        }
                        Ok(r) if r.status().is_server_error() => {
                            server_errors.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => panic!(
                            "client {i}: unexpected {} from {}",
                            r.status(),
                            bases[n % 3]
                        ),
                        // The killed instance: the client keeps its cookie and moves on,
                        // as a browser behind a load balancer would.
                        Err(_) => {
                            conn_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(1500));
    let before_kill = ok.load(Ordering::Relaxed);
    instances[1].child.kill().unwrap(); // SIGKILL
    instances[1].child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("no client saw an unexpected answer");
    }
    let after = ok.load(Ordering::Relaxed);
    assert!(
        before_kill > 0 && after > before_kill,
        "service continued after the kill: {before_kill} → {after}"
    );
    assert_eq!(
        server_errors.load(Ordering::Relaxed),
        0,
        "no 5xx from the survivors"
    );

    // Every client's last cookie still works on both survivors (a rotation the dead
    // instance committed but never answered is covered by the grace rule).
    for (i, token) in clients.iter().enumerate() {
        let mut t = token.lock().unwrap().clone();
        for base in [&bases[0], &bases[2]] {
            // The storm may have used up the session's refresh quota: honour Retry-After.
            let r = loop {
                let r = http
                    .post(format!("{base}/api/v1/auth/refresh"))
                    .header("cookie", format!("refresh_token={t}"))
                    .send()
                    .unwrap();
                if r.status() != 429 {
                    break r;
                }
                let wait: u64 = r.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                std::thread::sleep(Duration::from_secs(wait));
            };
            assert_eq!(r.status(), 200, "client {i} refresh on {base}");
            let access = cookie(&r, "access_token").unwrap();
            t = cookie(&r, "refresh_token").unwrap();
            let me = http
                .get(format!("{base}/api/v1/me"))
                .header("cookie", format!("access_token={access}"))
                .send()
                .unwrap();
            assert_eq!(me.status(), 200, "client {i} /me on {base}");
        }
    }
    eprintln!(
        "refreshes: {after} ok, {} connection errors (killed instance)",
        conn_errors.load(Ordering::Relaxed)
    );
    for mut i in instances {
        let _ = i.child.kill();
        let _ = i.child.wait();
    }
}

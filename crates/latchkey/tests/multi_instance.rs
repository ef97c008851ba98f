//! Several latchkey instances on one PostgreSQL database (issue 5).
//!
//! PostgreSQL is required: the admin URL is `LATCHKEY_TEST_POSTGRES`, or
//! `postgres://postgres@127.0.0.1:5432/postgres` when unset, and these tests fail loudly
//! when it does not answer. Each test creates its own database and drops it at the end.
//!
//! Run with `--nocapture` to see the measured figures (refresh storm, revocation delay,
//! outage recovery).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{PASSWORD, TestApp, assert_problem, unique_email};
use latchkey::config::{Quota, RateLimits};
use latchkey::ratelimit::Bucket;
use latchkey::{AppState, Config};
use serde_json::{Value, json};
use sqlx::Connection as _;

const DEFAULT_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn admin_url() -> String {
    std::env::var("LATCHKEY_TEST_POSTGRES")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_ADMIN.to_owned())
}

async fn admin() -> sqlx::PgConnection {
    let url = admin_url();
    match sqlx::PgConnection::connect(&url).await {
        Ok(c) => c,
        Err(e) => panic!(
            "\n\nPostgreSQL is REQUIRED for the multi-instance tests and is not reachable at {url}: {e}\n\
             Start it, or point LATCHKEY_TEST_POSTGRES at a server (postgres://USER@HOST:PORT/postgres).\n"
        ),
    }
}

/// A fresh database for one test.
struct Db {
    name: String,
    url: String,
}

impl Db {
    async fn create() -> Self {
        let name = format!("latchkey_mi_{}", uuid::Uuid::new_v4().simple());
        let mut conn = admin().await;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let admin = admin_url();
        let (base, _) = admin
            .rsplit_once('/')
            .expect("postgres URL with a database path");
        Db {
            url: format!("{base}/{name}"),
            name,
        }
    }

    /// Best-effort: drops the database, disconnecting the instances still attached.
    ///
    /// DROP DATABASE waits for a checkpoint, which takes tens of seconds on a busy shared
    /// server; the server completes the drop even when we stop waiting, so wait briefly.
    async fn drop_now(self) {
        let mut conn = admin().await;
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&mut conn),
        )
        .await;
    }
}

fn config(url: &str) -> Config {
    // Every instance the same SECRETS_KEY (required with PostgreSQL).
    let mut c = Config::from_pairs([
        ("DATABASE_URL", url),
        ("SECRETS_KEY", common::TEST_SECRETS_KEY),
    ])
    .expect("valid test config");
    c.password = latchkey::config::PasswordParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };
    c.poll_interval = Duration::from_millis(100);
    c
}

fn unlimited() -> RateLimits {
    let q = Quota {
        burst: 1_000_000,
        period: Duration::from_millis(1),
    };
    RateLimits {
        auth_per_ip: q,
        auth_per_email: q,
        auth_per_device: q,
        refresh_per_session: q,
        mail_per_ip: q,
        mail_per_address: q,
        mfa_per_user: q,
    }
}

/// `n` instances on one fresh database, started at the same moment (they migrate
/// concurrently), each serving on its own port.
async fn cluster(n: usize, tweak: impl Fn(&mut Config)) -> (Db, Vec<TestApp>) {
    let db = Db::create().await;
    let starts = (0..n).map(|_| {
        let mut c = config(&db.url);
        tweak(&mut c);
        AppState::start(c)
    });
    let states = futures::future::join_all(starts).await;
    let mut apps = Vec::new();
    for s in states {
        apps.push(common::spawn_state(s.expect("instance starts")).await);
    }
    (db, apps)
}

fn kid_of(jwt: &str) -> String {
    let header = jwt.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    v["kid"].as_str().unwrap().to_owned()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_migrate_once_and_share_secrets() {
    let (db, apps) = cluster(3, |_| {}).await;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "sql")
        })
        .count() as i64;
    let (applied, ok): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(*) FILTER (WHERE success) FROM _sqlx_migrations")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        (applied, ok),
        (files, files),
        "every migration applied exactly once"
    );
    let (secrets,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM server_secrets WHERE name = 'refresh_hmac'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(secrets, 1, "one refresh secret shared by all instances");
    let (keys,): (i64,) = sqlx::query_as("SELECT count(*) FROM signing_keys")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        keys, 1,
        "instances starting together agree on one first signing key"
    );
    let kids: Vec<String> = apps
        .iter()
        .map(|a| a.state.keys().current().signing.0.clone())
        .collect();
    assert!(kids.iter().all(|k| k == &kids[0]), "{kids:?}");
    // Whatever key each instance signs with, every other one verifies it.
    let email = unique_email("starts");
    apps[0].signup(&email).await;
    for signer in &apps {
        let jar = signer.login(&email).await;
        for verifier in &apps {
            assert_eq!(verifier.me_status(&jar).await, 200);
        }
    }
    conn.close().await.unwrap();
    drop(apps);
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_storm_across_three_instances() {
    let (db, apps) = cluster(3, |c| c.rate_limits = unlimited()).await;
    let apps = Arc::new(apps);
    let email = unique_email("storm");
    let start_jar = apps[0].signup(&email).await;

    // 200 refreshes of one session with the same refresh token, at once, spread over the
    // three instances: one rotates, the others are racers inside the grace window.
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let apps = apps.clone();
            let jar = start_jar.clone();
            tokio::spawn(async move {
                let app = &apps[i % 3];
                let started = Instant::now();
                let res = app.post("/api/v1/auth/refresh", &jar).await;
                let latency = started.elapsed();
                let mut got = jar.clone();
                got.update(res.headers());
                let status = res.status().as_u16();
                let body: Value = res.json().await.unwrap_or(Value::Null);
                (status, body, latency, got)
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let wall = t0.elapsed();
    let mut lat: Vec<Duration> = results.iter().map(|r| r.2).collect();
    lat.sort();
    let errors = results.iter().filter(|r| r.0 != 200).count();
    println!(
        "refresh burst: 200 concurrent refreshes of one session over 3 instances in {:.0} ms = {:.0} req/s; p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; non-200: {errors}",
        ms(wall),
        200.0 / wall.as_secs_f64(),
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.99)),
        ms(lat[lat.len() - 1]),
    );
    for (status, body, _, _) in &results {
        assert!(*status < 500, "5xx during the storm: {status} {body}");
        assert_ne!(
            body["code"], "refresh_reused",
            "racers within grace must not be treated as theft"
        );
        assert_eq!(*status, 200, "{body}");
    }
    // Every racer holds the same (current) refresh token, whichever response a jar keeps.
    let tokens: std::collections::HashSet<_> = results
        .iter()
        .map(|r| r.3.refresh.clone().unwrap())
        .collect();
    assert_eq!(
        tokens.len(),
        1,
        "all racers got the session's one current token"
    );
    let mut jar = results.last().unwrap().3.clone();
    for app in apps.iter() {
        assert_eq!(app.me_status(&jar).await, 200);
    }
    // The final cookie keeps working on every instance (each refresh rotates once more).
    for app in apps.iter() {
        let (status, body) = app.refresh(&mut jar).await;
        assert_eq!(status, 200, "{body}");
        for other in apps.iter() {
            assert_eq!(other.me_status(&jar).await, 200);
        }
    }

    // Sustained: 24 sessions, each refreshing in a loop for 3 s, every refresh on the next
    // instance (so consecutive rotations of one session cross instances).
    let mut jars = Vec::new();
    for i in 0..24 {
        jars.push(apps[i % 3].signup(&unique_email("sustained")).await);
    }
    let stop_at = Instant::now() + Duration::from_secs(3);
    let t0 = Instant::now();
    let loops: Vec<_> = jars
        .into_iter()
        .enumerate()
        .map(|(s, mut jar)| {
            let apps = apps.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut bad = Vec::new();
                let mut n = s;
                while Instant::now() < stop_at {
                    let started = Instant::now();
                    let (status, body) = apps[n % 3].refresh(&mut jar).await;
                    lat.push(started.elapsed());
                    if status != 200 {
                        bad.push((status, body));
                        break;
                    }
                    n += 1;
                }
                (lat, bad, jar)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut bad = Vec::new();
    let mut final_jars = Vec::new();
    for l in loops {
        let (l, b, j) = l.await.unwrap();
        lat.extend(l);
        bad.extend(b);
        final_jars.push(j);
    }
    let wall = t0.elapsed();
    lat.sort();
    println!(
        "refresh sustained: 24 sessions x sequential refreshes hopping over 3 instances: {} refreshes in {:.2} s = {:.0} req/s; p50 {:.1} ms, p99 {:.1} ms; errors: {}",
        lat.len(),
        wall.as_secs_f64(),
        lat.len() as f64 / wall.as_secs_f64(),
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.99)),
        bad.len()
    );
    assert!(bad.is_empty(), "failed refreshes: {bad:?}");
    // No session corrupted: each still refreshes and authenticates everywhere.
    for (i, mut jar) in final_jars.into_iter().enumerate() {
        let (status, body) = apps[i % 3].refresh(&mut jar).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(apps[(i + 1) % 3].me_status(&jar).await, 200);
    }
    drop(apps);
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_on_one_instance_revokes_on_the_others_within_2s() {
    // The default poll interval (500 ms), not the fast test one.
    let default_poll = Config::from_pairs([]).unwrap().poll_interval;
    let (db, apps) = cluster(3, |c| c.poll_interval = default_poll).await;
    let email = unique_email("logout");
    let jar = apps[0].signup(&email).await;
    for app in &apps {
        assert_eq!(app.me_status(&jar).await, 200);
    }
    let res = apps[0].post("/api/v1/auth/logout", &jar).await;
    assert_eq!(res.status(), 204);
    let t0 = Instant::now();
    let mut revoked_after = [None, None];
    while revoked_after.iter().any(Option::is_none) && t0.elapsed() < Duration::from_secs(5) {
        for (i, app) in apps[1..].iter().enumerate() {
            if revoked_after[i].is_none() {
                let res = app.get("/api/v1/me", &jar).await;
                if res.status() == 401 {
                    revoked_after[i] = Some(t0.elapsed());
                    assert_problem(res, 401, "session_revoked").await;
                } else {
                    assert_eq!(res.status(), 200);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "logout via A rejected on B after {:?}, on C after {:?} (poll interval {default_poll:?})",
        revoked_after[0], revoked_after[1]
    );
    for (i, after) in revoked_after.iter().enumerate() {
        let after = after.unwrap_or_else(|| {
            panic!(
                "instance {} still accepts the access token after 5 s",
                i + 1
            )
        });
        assert!(
            after < Duration::from_secs(2),
            "instance {} took {after:?}",
            i + 1
        );
    }
    // Logging out of every session through B reaches A and C as well.
    let jar2 = apps[2].login(&email).await;
    let res = apps[1]
        .with_jar(reqwest::Method::POST, "/api/v1/auth/logout-all", &jar2)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let t0 = Instant::now();
    while (apps[0].me_status(&jar2).await != 401 || apps[2].me_status(&jar2).await != 401)
        && t0.elapsed() < Duration::from_secs(2)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "logout-all reached the others in {:?}",
        t0.elapsed()
    );
    drop(apps);
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotated_through_one_instance_verifies_and_signs_on_all() {
    let (db, apps) = cluster(3, |_| {}).await;
    let email = unique_email("keys");
    apps[0].signup(&email).await;
    let old_jar = apps[1].login(&email).await;
    let old_kid = kid_of(old_jar.access.as_deref().unwrap());

    let cfg = apps[0].state.config().clone();
    let key = latchkey::tokens::keys::KeyRing::rotate(
        apps[0].state.store(),
        apps[0].state.secrets_key(),
        cfg.access_ttl,
    )
    .await
    .unwrap();
    apps[0].state.keys().reload().await.unwrap();
    assert_ne!(key.kid, old_kid);

    // A signs with the new key at once; B and C verify it (unknown kid → reload).
    let new_jar = apps[0].login(&email).await;
    assert_eq!(kid_of(new_jar.access.as_deref().unwrap()), key.kid);
    for app in &apps {
        assert_eq!(
            app.me_status(&new_jar).await,
            200,
            "new-key token on {}",
            app.base
        );
        // The retired key keeps verifying the tokens it signed.
        assert_eq!(
            app.me_status(&old_jar).await,
            200,
            "old-key token on {}",
            app.base
        );
    }
    // Within a few polls every instance signs with the new key and publishes it.
    let t0 = Instant::now();
    for app in &apps[1..] {
        loop {
            let jwks: Value = app.get_json("/.well-known/jwks.json").await;
            let published = jwks["keys"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kid"] == key.kid.as_str());
            let jar = app.login(&email).await;
            if published && kid_of(jar.access.as_deref().unwrap()) == key.kid {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "{} did not adopt the rotated key",
                app.base
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!(
        "rotated key adopted for signing by B and C within {:?}",
        t0.elapsed()
    );
    drop(apps);
    db.drop_now().await;
}

/// 100 failed logins for one account, sequentially, round-robin over `apps`: how many got
/// past the limiter (401) and how many were limited (429).
async fn failed_logins(apps: &[TestApp], email: &str) -> (usize, usize) {
    let (mut denied, mut limited) = (0, 0);
    for i in 0..100 {
        let res = apps[i % apps.len()]
            .post_json(
                "/api/v1/auth/login",
                &json!({"email": email, "password": "wrong password!"}),
            )
            .await;
        match res.status().as_u16() {
            401 => denied += 1,
            429 => {
                assert!(
                    res.headers().get("retry-after").is_some(),
                    "429 carries Retry-After"
                );
                assert_problem(res, 429, "rate_limited").await;
                limited += 1;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    (denied, limited)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_over_three_instances_are_limited_as_on_one() {
    let (db1, one) = cluster(1, |_| {}).await;
    let email1 = unique_email("bruteforce");
    one[0].signup(&email1).await;
    let (db3, three) = cluster(3, |_| {}).await;
    let email3 = unique_email("bruteforce");
    three[0].signup(&email3).await;

    let single = failed_logins(&one, &email1).await;
    let spread = failed_logins(&three, &email3).await;
    println!("100 failed logins: one instance {single:?} (401, 429); spread over three {spread:?}");
    assert!(single.1 > 0, "the limit is reached on one instance");
    assert_eq!(spread, single, "three instances allow what one allows");
    // Per-instance limits would have let three times as many through.
    assert!(spread.0 * 2 < 3 * single.0);

    // Atomic under concurrency: 300 simultaneous checks of one key from three instances
    // against a quota of 10 per 30 s let exactly 10 through.
    let quota = three[0].state.config().rate_limits.auth_per_email;
    let key = unique_email("atomic");
    let checks = (0..300).map(|i| {
        let limiter = three[i % 3].state.limiter().0.clone();
        let key = key.clone();
        async move { limiter.check(Bucket::AuthPerEmail, &key).await }
    });
    let results = futures::future::join_all(checks).await;
    let allowed = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(allowed, quota.burst as usize);
    assert!(
        results
            .iter()
            .filter_map(|r| r.err())
            .all(|wait| wait > Duration::ZERO && wait <= quota.period * quota.burst)
    );
    drop(one);
    drop(three);
    db1.drop_now().await;
    db3.drop_now().await;
}

/// What the load saw during the outage.
#[derive(Default, Debug)]
struct Seen {
    ok: usize,
    unavailable: usize,
    other: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_gives_clean_503s_and_recovers_without_restart() {
    let (db, apps) = cluster(3, |c| c.rate_limits = unlimited()).await;
    let apps = Arc::new(apps);
    let mut jars = Vec::new();
    for i in 0..3 {
        jars.push(apps[i].signup(&unique_email("outage")).await);
    }
    let email = unique_email("outage-login");
    apps[0].signup(&email).await;

    // Load on every instance: refresh (a write), the session list (a read), /me (no
    // database), /readyz, login (limiter + read + write).
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
    let loads: Vec<_> = jars
        .into_iter()
        .enumerate()
        .map(|(i, mut jar)| {
            let (apps, stop, seen, email) =
                (apps.clone(), stop.clone(), seen.clone(), email.clone());
            tokio::spawn(async move {
                let mut n = i;
                while !stop.load(Ordering::Relaxed) {
                    let app = &apps[n % 3];
                    let res = match n % 5 {
                        0 => app.post("/api/v1/auth/refresh", &jar).await,
                        1 => app.get("/api/v1/auth/sessions", &jar).await,
                        2 => app.get("/api/v1/me", &jar).await,
                        3 => app.http.get(app.url("/readyz")).send().await.unwrap(),
                        _ => {
                            app.post_json(
                                "/api/v1/auth/login",
                                &json!({"email": email, "password": PASSWORD}),
                            )
                            .await
                        }
                    };
                    let status = res.status().as_u16();
                    if n % 5 == 0 && status == 200 {
                        jar.update(res.headers());
                    }
                    let ct = res
                        .headers()
                        .get("content-type")
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default();
                    let body: Value = res.json().await.unwrap_or(Value::Null);
                    {
                        let mut s = seen.lock().unwrap();
                        match status {
                            200 | 201 | 204 => s.ok += 1,
                            503 if ct == "application/problem+json"
                                && body["code"] == "unavailable" =>
                            {
                                s.unavailable += 1
                            }
                            _ => s
                                .other
                                .push(format!("{status} {ct} {body} (request kind {})", n % 5)),
                        }
                    }
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                jar
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The database goes away: no new connections, existing ones terminated.
    let mut admin = admin().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS false",
        db.name
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let q = format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
        db.name
    );
    let (killed,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(q))
        .fetch_one(&mut admin)
        .await
        .unwrap();
    let down_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for app in apps.iter() {
        let res = app.http.get(app.url("/readyz")).send().await.unwrap();
        assert_problem(res, 503, "unavailable").await;
    }
    let during = std::mem::take(&mut *seen.lock().unwrap());
    tokio::time::sleep(Duration::from_millis(2_700)).await;

    // It comes back; latchkey is not restarted.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS true",
        db.name
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let up_at = Instant::now();
    let mut ready_after = Duration::ZERO;
    for app in apps.iter() {
        loop {
            let res = app.http.get(app.url("/readyz")).send().await.unwrap();
            if res.status() == 200 {
                break;
            }
            assert_problem(res, 503, "unavailable").await;
            assert!(
                up_at.elapsed() < Duration::from_secs(10),
                "{} not ready 10 s after the database returned",
                app.base
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ready_after = ready_after.max(up_at.elapsed());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut jars = Vec::new();
    for l in loads {
        jars.push(l.await.unwrap());
    }
    let after = std::mem::take(&mut *seen.lock().unwrap());
    let total_ok = during.ok + after.ok;
    let total_503 = during.unavailable + after.unavailable;
    println!(
        "outage: {killed} connections terminated, new ones refused for {:.1} s; load saw {total_ok} successes, {total_503} clean 503s, {} other; all instances ready {:.0} ms after the database returned",
        (up_at - down_at).as_secs_f64(),
        during.other.len() + after.other.len(),
        ms(ready_after)
    );
    assert!(
        during.other.is_empty() && after.other.is_empty(),
        "unexpected answers: {:?} {:?}",
        during.other,
        after.other
    );
    assert!(total_503 > 0, "the outage was visible as 503s");

    // Service resumed: every flow works on every instance again, sessions intact.
    for (i, mut jar) in jars.into_iter().enumerate() {
        for app in apps.iter() {
            let (status, body) = app.refresh(&mut jar).await;
            assert_eq!(status, 200, "session {i} after the outage: {body}");
            assert_eq!(app.get("/api/v1/auth/sessions", &jar).await.status(), 200);
        }
    }
    let jar = apps[1].login(&email).await;
    // The revocation poll survived the outage: a logout on C reaches A within 2 s.
    assert_eq!(
        apps[2].post("/api/v1/auth/logout", &jar).await.status(),
        204
    );
    let t0 = Instant::now();
    while apps[0].me_status(&jar).await != 401 {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "revocation did not reach A after the outage"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    admin.close().await.unwrap();
    drop(apps);
    db.drop_now().await;
}

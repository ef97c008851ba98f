//! `latchkey backup PATH` (issue 13, docs/deploy.md): a consistent copy of the SQLite database
//! taken while the server serves and writes, that a second server can run on.

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use super::{free_port, run, serve, tempdir};

const KEY: &str = "zpMxY6ELREkcE3Drna0VwrpJxQsHuMm8p8IYx3MDrs8=";
const PASSWORD: &str = "correct horse battery";

fn post(
    client: &reqwest::blocking::Client,
    url: &str,
    cookie: Option<&str>,
    body: Option<serde_json::Value>,
) -> reqwest::blocking::Response {
    let mut req = client.post(url);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().unwrap()
}

/// `name=value` of the Set-Cookie named `name`.
fn cookie(res: &reqwest::blocking::Response, name: &str) -> String {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie"))
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn a_backup_taken_while_serving_and_writing_runs_a_second_server() {
    let dir = tempdir();
    let db = dir.join("live.db");
    let db_url = format!("sqlite://{}", db.display());
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let base = format!("http://{addr}");
    let vars = [
        ("LISTEN_ADDR", addr.as_str()),
        ("PUBLIC_URL", base.as_str()),
        ("DATABASE_URL", db_url.as_str()),
        ("SECRETS_KEY", KEY),
    ];
    let (mut server, _) = serve(&dir, &vars);
    let client = reqwest::blocking::Client::new();

    // Ada signs up: her refresh token is what the copy must honour.
    let signup = |email: &str| {
        let res = post(
            &client,
            &format!("{base}/api/v1/auth/signup"),
            None,
            Some(serde_json::json!({"email": email, "password": PASSWORD})),
        );
        assert_eq!(res.status(), 201, "signup {email}");
        cookie(&res, "refresh_token")
    };
    let ada_refresh = signup("ada@example.com");
    let bob_refresh = signup("bob@example.com");

    // Bob's session keeps rotating (a write per request) while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU32::new(0));
    let writer = {
        let (stop, writes, base) = (stop.clone(), writes.clone(), base.clone());
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let mut refresh = bob_refresh;
            while !stop.load(Ordering::Relaxed) || writes.load(Ordering::Relaxed) == 0 {
                let res = post(
                    &client,
                    &format!("{base}/api/v1/auth/refresh"),
                    Some(&refresh),
                    None,
                );
                assert_eq!(res.status(), 200, "Bob's refresh while the backup runs");
                refresh = cookie(&res, "refresh_token");
                writes.fetch_add(1, Ordering::Relaxed);
                // Within the per-session refresh limit (a burst of 120) however long this takes.
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        })
    };
    while writes.load(Ordering::Relaxed) < 3 && !writer.is_finished() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let copy = dir.join("copy.db");
    let copy_str = copy.to_str().unwrap();
    let db_vars = [("DATABASE_URL", db_url.as_str()), ("SECRETS_KEY", KEY)];
    let (code, out, err) = run(&dir, &["backup", copy_str], &db_vars);
    let during = writes.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("the writer saw only 200s");
    assert_eq!(code, 0, "backup: {out}{err}");
    assert!(out.contains("backed up"), "{out}");
    assert!(
        during >= 3,
        "Bob's session was written to around the backup"
    );
    let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the copy is for its owner only");

    // An existing file is never overwritten.
    let before = std::fs::read(&copy).unwrap();
    let (code, _, err) = run(&dir, &["backup", copy_str], &db_vars);
    assert_ne!(code, 0);
    assert!(err.contains("exists"), "{err}");
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        before,
        "the existing file is untouched"
    );

    let _ = server.kill();
    let _ = server.wait();

    // A second server on the copy (same SECRETS_KEY; another port, nothing shared).
    let port2 = free_port();
    let addr2 = format!("127.0.0.1:{port2}");
    let base2 = format!("http://{addr2}");
    let copy_url = format!("sqlite://{copy_str}");
    let (mut second, lines) = serve(
        &dir,
        &[
            ("LISTEN_ADDR", addr2.as_str()),
            ("PUBLIC_URL", base2.as_str()),
            ("DATABASE_URL", copy_url.as_str()),
            ("SECRETS_KEY", KEY),
        ],
    );
    let refreshed = post(
        &client,
        &format!("{base2}/api/v1/auth/refresh"),
        Some(&ada_refresh),
        None,
    );
    let login = post(
        &client,
        &format!("{base2}/api/v1/auth/login"),
        None,
        Some(serde_json::json!({"email": "ada@example.com", "password": PASSWORD})),
    );
    let me = login.status().is_success().then(|| {
        let access = cookie(&login, "access_token");
        client
            .get(format!("{base2}/api/v1/me"))
            .header("cookie", access)
            .send()
            .unwrap()
    });
    let _ = second.kill();
    let _ = second.wait();
    assert_eq!(
        refreshed.status(),
        200,
        "Ada's refresh token works on the copy: {}",
        lines.join("\n")
    );
    assert_eq!(login.status(), 200, "Ada signs in on the copy");
    let me: serde_json::Value = me.unwrap().json().unwrap();
    assert_eq!(me["email"], "ada@example.com");
}

#[test]
fn backup_refuses_postgresql_and_in_memory_databases_with_a_clear_message() {
    let dir = tempdir();
    let target = dir.join("never.db");
    let target = target.to_str().unwrap();
    let (code, _, err) = run(
        &dir,
        &["backup", target],
        &[
            ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none"),
            ("SECRETS_KEY", KEY),
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("pg_dump"), "{err}");
    let (code, _, err) = run(
        &dir,
        &["backup", target],
        &[("DATABASE_URL", "sqlite::memory:")],
    );
    assert_ne!(code, 0);
    assert!(err.contains("in-memory"), "{err}");
    let (code, _, err) = run(
        &dir,
        &["backup", target],
        &[(
            "DATABASE_URL",
            &format!("sqlite://{}/missing.db", dir.display()),
        )],
    );
    assert_ne!(code, 0);
    assert!(err.contains("no database"), "{err}");
    assert!(
        !std::path::Path::new(target).exists(),
        "no file was left behind"
    );
}

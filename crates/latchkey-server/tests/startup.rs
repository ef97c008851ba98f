//! SPEC 1 and 2: the binary — start-up refusals naming the variable, the start-up line,
//! `.env` handling, and the admin subcommands.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

/// Finding 2 of issue 9 (connection limits), against the real binary: a module here rather
/// than a test binary of its own, which would link everything again.
#[path = "startup/connections.rs"]
mod connections;

/// `latchkey backup` while the server writes, and a second server on the copy (issue 13).
#[path = "startup/backup.rs"]
mod backup;

const BIN: &str = env!("CARGO_BIN_EXE_latchkey");

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "latchkey-startup-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs the binary in an empty directory with only `vars` set; returns (exit code, stderr).
fn run(dir: &std::path::Path, args: &[&str], vars: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn invalid_values_stop_start_up_with_one_line_naming_the_variable() {
    let dir = tempdir();
    for (var, value) in [
        ("REFRESH_TOKEN_TTL", "fortnight"),
        ("ACCESS_TOKEN_TTL", "15x"),
        ("LISTEN_ADDR", "not-an-address"),
        ("DATABASE_URL", "mysql://x"),
        ("TRUSTED_PROXIES", "10.0.0.0/99"),
        ("LOG_FORMAT", "xml"),
    ] {
        let (code, _, err) = run(&dir, &[], &[(var, value)]);
        assert_ne!(code, 0, "{var}={value} must stop start-up");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {err}");
        assert!(lines[0].contains(var), "{var} named: {err}");
    }
    assert!(!dir.join("latchkey.db").exists(), "nothing was created");
}

/// SPEC 2: production needs `SMTP_URL` (or `disabled`), said in one line naming it, and a
/// plain-text SMTP URL to a remote host is refused without repeating its password.
#[test]
fn production_without_smtp_url_refuses_to_start_naming_it() {
    let dir = tempdir();
    let base = [
        ("ENV", "production"),
        ("PUBLIC_URL", "https://auth.example"),
        (
            "SECRETS_KEY",
            "zpMxY6ELREkcE3Drna0VwrpJxQsHuMm8p8IYx3MDrs8=",
        ),
    ];
    for smtp in [None, Some("smtp://mailer:hunter2@mail.example:25")] {
        let mut vars = base.to_vec();
        vars.extend(smtp.map(|v| ("SMTP_URL", v)));
        let (code, _, err) = run(&dir, &[], &vars);
        assert_ne!(code, 0, "{smtp:?}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {err}");
        assert!(lines[0].contains("SMTP_URL"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
    assert!(!dir.join("latchkey.db").exists(), "nothing was created");
}

#[test]
fn production_refuses_an_http_public_url() {
    let dir = tempdir();
    let (code, _, err) = run(
        &dir,
        &[],
        &[("ENV", "production"), ("PUBLIC_URL", "http://auth.example")],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("PUBLIC_URL") && err.contains("https://"),
        "{err}"
    );
    // The same from .env: the mode switch is read there too.
    std::fs::write(
        dir.join(".env"),
        "ENV=production\nPUBLIC_URL=http://auth.example\n",
    )
    .unwrap();
    let (code, _, err) = run(&dir, &[], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("PUBLIC_URL"), "{err}");
    // The environment wins over .env.
    let (code, _, err) = run(
        &dir,
        &["migrate"],
        &[
            ("PUBLIC_URL", "https://auth.example"),
            ("SMTP_URL", "disabled"),
            ("DATABASE_URL", "sqlite::memory:"),
            (
                "SECRETS_KEY",
                "zpMxY6ELREkcE3Drna0VwrpJxQsHuMm8p8IYx3MDrs8=",
            ),
        ],
    );
    assert_eq!(code, 0, "{err}");
}

/// Starts `serve` and returns the child and the first log lines up to "listening".
fn serve(dir: &std::path::Path, vars: &[(&str, &str)]) -> (std::process::Child, Vec<String>) {
    let mut child = Command::new(BIN)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("LOG_FORMAT", "text")
        .env("NO_COLOR", "1")
        .envs(vars.iter().copied())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    let reader = BufReader::new(child.stderr.take().unwrap());
    for line in reader.lines() {
        let line = line.unwrap();
        let done = line.contains("listening");
        lines.push(line);
        if done {
            break;
        }
    }
    (child, lines)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn start_up_line_states_mode_and_why_address_database_and_google_but_no_secret() {
    let dir = tempdir();
    std::fs::write(
        dir.join(".env"),
        "ENV=staging\nGOOGLE_CLIENT_SECRET=very-secret-value\nGOOGLE_CLIENT_ID=cid\n",
    )
    .unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let (mut child, lines) = serve(&dir, &[("LISTEN_ADDR", &addr)]);
    let all = lines.join("\n");
    let _ = child.kill();
    let _ = child.wait();
    let start = lines
        .iter()
        .find(|l| l.contains("latchkey starting"))
        .unwrap_or_else(|| panic!("no start-up line: {all}"));
    assert!(start.contains("mode=development"), "{start}");
    assert!(start.contains("ENV=\"staging\" from .env"), "{start}");
    assert!(start.contains(&format!("listen={addr}")), "{start}");
    assert!(start.contains("database=sqlite"), "{start}");
    assert!(start.contains("google=on"), "{start}");
    assert!(
        !all.contains("very-secret-value"),
        "no secret in logs: {all}"
    );
    assert!(
        dir.join("latchkey.db").exists(),
        "default SQLite file created in the working directory"
    );
}

#[test]
fn serves_on_a_fresh_sqlite_file_and_keeps_sessions_across_restarts() {
    let dir = tempdir();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let vars = [("LISTEN_ADDR", addr.as_str())];
    let (mut child, _) = serve(&dir, &vars);
    let base = format!("http://{addr}");
    let client = reqwest::blocking::Client::new();
    let res = client
        .post(format!("{base}/api/v1/auth/signup"))
        .json(&serde_json::json!({"email": "ada@example.com", "password": "correct horse"}))
        .send()
        .unwrap();
    assert_eq!(res.status(), 201);
    let access = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("access_token="))
        .unwrap();
    let cookie = access.split(';').next().unwrap().to_owned();
    for page in ["/", "/login", "/account", "/client/latchkey.js"] {
        let res = client.get(format!("{base}{page}")).send().unwrap();
        assert_eq!(res.status(), 200, "{page}");
    }
    // The optional toast module (issue 12), served like the client: as-is, a JS module the
    // account page imports, with its types.
    for (path, file, content_type) in [
        (
            "/client/latchkey-toast.js",
            include_str!("../../../client/latchkey-toast.js"),
            "text/javascript; charset=utf-8",
        ),
        (
            "/client/latchkey-toast.d.ts",
            include_str!("../../../client/latchkey-toast.d.ts"),
            "application/typescript; charset=utf-8",
        ),
    ] {
        let res = client.get(format!("{base}{path}")).send().unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["content-type"], content_type, "{path}");
        assert_eq!(res.headers()["cache-control"], "no-cache", "{path}");
        assert_eq!(res.text().unwrap(), file, "{path} is the file itself");
    }
    let account_js = client
        .get(format!("{base}/static/account.js"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        account_js.contains("from '/client/latchkey-toast.js'"),
        "the demo account page uses the toast"
    );
    let _ = child.kill();
    let _ = child.wait();
    // Restart on the same file: the signing key was kept, so the access token still works.
    let (mut child, _) = serve(&dir, &vars);
    let res = client
        .get(format!("{base}/api/v1/me"))
        .header("cookie", &cookie)
        .send()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(res.status(), 200);
}

#[test]
fn admin_subcommands_manage_users_sessions_and_keys() {
    let dir = tempdir();
    let db = format!("sqlite://{}", dir.join("admin.db").display());
    let vars = [("DATABASE_URL", db.as_str())];
    let mut child = Command::new(BIN)
        .args(["users", "create", "--email", "Root@Example.com"])
        .current_dir(&dir)
        .envs(vars)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a long enough password\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, out, _) = run(&dir, &["users", "list"], &vars);
    assert_eq!(code, 0);
    assert!(
        out.contains("root@example.com") && out.contains("active"),
        "{out}"
    );
    let (code, out, _) = run(&dir, &["keys", "list"], &vars);
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().count(),
        0,
        "keys are made by the first serve or rotate: {out}"
    );
    for _ in 0..2 {
        let (code, _, _) = run(&dir, &["keys", "rotate"], &vars);
        assert_eq!(code, 0);
    }
    let (_, out, _) = run(&dir, &["keys", "list"], &vars);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert_eq!(
        out.lines().filter(|l| l.contains("retired")).count(),
        1,
        "{out}"
    );
    let (code, _, _) = run(&dir, &["users", "disable", "root@example.com"], &vars);
    assert_eq!(code, 0);
    let (_, out, _) = run(&dir, &["users", "list"], &vars);
    assert!(out.contains("disabled"), "{out}");
    let (code, out, _) = run(&dir, &["sessions", "list"], &vars);
    assert_eq!(code, 0, "{out}");
    let (code, _, err) = run(&dir, &["sessions", "revoke", "not-a-uuid"], &vars);
    assert_ne!(code, 0);
    assert!(err.contains("not a session id"), "{err}");
    for sub in [
        &["--help"][..],
        &["serve", "--help"],
        &["users", "--help"],
        &["sessions", "--help"],
        &["keys", "--help"],
        &["secrets", "rotate", "--help"],
        &["migrate", "--help"],
    ] {
        let (code, out, _) = run(&dir, sub, &[]);
        assert_eq!(code, 0, "{sub:?}");
        assert!(out.contains("Usage"), "{sub:?}");
    }
}

/// SPEC 12: `latchkey events` shows every user's events (and those of no user), filters by
/// user and age, and prints JSON lines with `--json`.
#[test]
fn events_command_shows_all_users_events_with_filters_and_json() {
    let dir = tempdir();
    let db = format!("sqlite://{}", dir.join("events.db").display());
    let vars = [("DATABASE_URL", db.as_str())];
    for email in ["ann@example.com", "bob@example.com"] {
        let mut child = Command::new(BIN)
            .args(["users", "create", "--email", email])
            .current_dir(&dir)
            .envs(vars)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"a long enough password\n")
            .unwrap();
        assert!(child.wait_with_output().unwrap().status.success());
    }
    let (code, _, _) = run(&dir, &["keys", "rotate"], &vars);
    assert_eq!(code, 0);
    for who in ["ann@example.com", "bob@example.com"] {
        let (code, _, err) = run(&dir, &["users", "disable", who], &vars);
        assert_eq!(code, 0, "{err}");
    }

    // Everyone's, newest first: each user's `user_disabled` (no session to revoke, so no
    // `session_revoked`), the key's rotation (of no user), the accounts' `signup`.
    let (code, out, err) = run(&dir, &["events"], &vars);
    assert_eq!(code, 0, "{err}");
    let kinds: Vec<&str> = out.lines().map(|l| l.split('\t').nth(1).unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "user_disabled",
            "user_disabled",
            "keys_rotated",
            "signup",
            "signup"
        ],
        "{out}"
    );
    assert!(out.lines().all(|l| l.split('\t').count() == 6), "{out}");

    // One user's, as JSON lines.
    let (code, out, _) = run(
        &dir,
        &["events", "--user", "bob@example.com", "--json"],
        &vars,
    );
    assert_eq!(code, 0);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0]["type"], "user_disabled");
    assert_eq!(lines[0]["detail"]["by"], "admin");
    assert!(lines[0]["user_id"].is_string() && lines[0]["session_id"].is_null());
    assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(lines[1]["type"], "signup");
    assert_eq!(lines[1]["detail"]["method"], "admin");
    assert_eq!(lines[1]["user_id"], lines[0]["user_id"]);

    // By age and count; a bad age or an unknown user is refused, naming it.
    let (_, out, _) = run(&dir, &["events", "--since", "1h", "--limit", "2"], &vars);
    assert_eq!(out.lines().count(), 2, "{out}");
    let (code, _, err) = run(&dir, &["events", "--since", "soon"], &vars);
    assert_ne!(code, 0);
    assert!(err.contains("--since"), "{err}");
    let (code, _, err) = run(&dir, &["events", "--user", "nobody@example.com"], &vars);
    assert_ne!(code, 0);
    assert!(err.contains("no such user"), "{err}");
    let (code, out, _) = run(&dir, &["events", "--help"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("--json") && out.contains("--since"), "{out}");
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn stop(mut child: std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Finding 5 (issue 9): the database, its `-wal` and `-shm`, and the development key file
/// are for the service's user only — on a fresh start, and after a start on files an older
/// version left readable by all.
#[test]
fn finding_5_database_wal_shm_and_key_files_are_0600() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempdir();
    let addr = format!("127.0.0.1:{}", free_port());
    let files = [
        "latchkey.db",
        "latchkey.db-wal",
        "latchkey.db-shm",
        "latchkey.key",
    ];
    for round in ["fresh", "older files readable by all"] {
        let (child, lines) = serve(&dir, &[("LISTEN_ADDR", &addr)]);
        assert!(
            lines.iter().any(|l| l.contains("listening")),
            "{round}: {lines:?}"
        );
        for f in files {
            assert_eq!(mode(&dir.join(f)), 0o600, "{round}: {f}");
        }
        stop(child);
        for f in files {
            let _ = std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644));
        }
    }
}

/// Finding 5 (issue 9): production, and PostgreSQL in either mode, refuse to start without
/// `SECRETS_KEY`, in one line naming it; nothing is created.
#[test]
fn finding_5_production_or_postgres_without_secrets_key_refuses_to_start_naming_it() {
    let dir = tempdir();
    for vars in [
        &[
            ("ENV", "production"),
            ("PUBLIC_URL", "https://auth.example"),
        ][..],
        &[("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")],
        &[
            ("ENV", "production"),
            ("PUBLIC_URL", "https://auth.example"),
            ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none"),
        ],
    ] {
        let (code, _, err) = run(&dir, &[], vars);
        assert_ne!(code, 0, "{vars:?}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {err}");
        assert!(lines[0].contains("SECRETS_KEY"), "{err}");
    }
    // A key that is not 32 bytes of base64 is refused without being repeated.
    let (code, _, err) = run(
        &dir,
        &[],
        &[
            ("ENV", "production"),
            ("PUBLIC_URL", "https://auth.example"),
            ("SECRETS_KEY", "hunter2-not-a-key"),
        ],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("SECRETS_KEY") && !err.contains("hunter2"),
        "{err}"
    );
    assert!(!dir.join("latchkey.db").exists(), "nothing was created");
    assert!(!dir.join("latchkey.key").exists(), "nothing was created");
}

/// Finding 5 (issue 9): `latchkey secrets rotate` re-seals everything under a new key; the
/// server then starts with the new key (tokens issued before still verify) and refuses the
/// old one with a clear line, no panic. Without `--new-key-file`, the development key file
/// is replaced.
#[test]
fn finding_5_secrets_rotate_reseals_and_only_the_new_key_starts() {
    let dir = tempdir();
    let addr = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{addr}");
    let k1 = dir.join("k1");
    std::fs::write(&k1, "zpMxY6ELREkcE3Drna0VwrpJxQsHuMm8p8IYx3MDrs8\n").unwrap();
    let k1s = k1.to_str().unwrap().to_owned();
    let k2 = dir.join("k2");
    let k2s = k2.to_str().unwrap().to_owned();
    let vars1 = [
        ("LISTEN_ADDR", addr.as_str()),
        ("SECRETS_KEY_FILE", k1s.as_str()),
    ];
    let (child, _) = serve(&dir, &vars1);
    let client = reqwest::blocking::Client::new();
    let res = client
        .post(format!("{base}/api/v1/auth/signup"))
        .json(&serde_json::json!({"email": "rot@example.com", "password": "correct horse"}))
        .send()
        .unwrap();
    assert_eq!(res.status(), 201);
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("access_token="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    stop(child);

    let (code, out, err) = run(&dir, &["secrets", "rotate", "--new-key-file", &k2s], &vars1);
    assert_eq!(code, 0, "{out}{err}");
    // The signing key, the refresh HMAC and device-cookie keys, and the signup's queued
    // verification mail (development without SMTP_URL keeps it in the outbox).
    assert!(out.contains("re-sealed 4 secret(s)"), "{out}");
    assert_eq!(mode(&k2), 0o600, "the new key file is private");

    let vars2 = [
        ("LISTEN_ADDR", addr.as_str()),
        ("SECRETS_KEY_FILE", k2s.as_str()),
    ];
    let (child, lines) = serve(&dir, &vars2);
    assert!(lines.iter().any(|l| l.contains("listening")), "{lines:?}");
    let res = client
        .get(format!("{base}/api/v1/me"))
        .header("cookie", &cookie)
        .send()
        .unwrap();
    stop(child);
    assert_eq!(
        res.status(),
        200,
        "a token issued before the rotation verifies"
    );

    let (code, _, err) = run(&dir, &[], &vars1);
    assert_ne!(code, 0, "the old key no longer starts the server");
    assert!(
        err.contains("SECRETS_KEY does not match") && !err.contains("panicked"),
        "{err}"
    );

    // Development: no key given, the key file beside the database is replaced.
    let dev = tempdir();
    let dev_vars = [("LISTEN_ADDR", addr.as_str())];
    let (child, _) = serve(&dev, &dev_vars);
    stop(child);
    let old_key = std::fs::read_to_string(dev.join("latchkey.key")).unwrap();
    let (code, out, err) = run(&dev, &["secrets", "rotate"], &dev_vars);
    assert_eq!(code, 0, "{out}{err}");
    let new_key = std::fs::read_to_string(dev.join("latchkey.key")).unwrap();
    assert_ne!(old_key, new_key);
    assert_eq!(mode(&dev.join("latchkey.key")), 0o600);
    let (child, lines) = serve(&dev, &dev_vars);
    stop(child);
    assert!(lines.iter().any(|l| l.contains("listening")), "{lines:?}");
}

/// Issue 14: a server stopped with SIGTERM closes its database. SQLite's last connection
/// copies the WAL back and removes it (latchkey keeps up to 256 MiB of WAL while running),
/// so the next start reads no WAL and the database file alone holds every write.
#[test]
fn sigterm_closes_the_sqlite_database_and_leaves_no_wal() {
    let dir = tempdir();
    let addr = format!("127.0.0.1:{}", free_port());
    let (mut child, _) = serve(&dir, &[("LISTEN_ADDR", &addr)]);
    let res = reqwest::blocking::Client::new()
        .post(format!("http://{addr}/api/v1/auth/signup"))
        .json(&serde_json::json!({"email": "wal@example.com", "password": "correct horse"}))
        .send()
        .unwrap();
    assert_eq!(res.status(), 201);
    let wal = dir.join("latchkey.db-wal");
    assert!(wal.exists(), "a running server has its WAL");
    // SAFETY: kill(2) on the child this test started and has not waited for yet.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
    assert!(!wal.exists(), "the WAL was copied back and removed");
    // The write is in the database file itself.
    let (code, out, err) = run(&dir, &["users", "list"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("wal@example.com"), "{out}");
}

//! A verification mail committed to the outbox while SMTP is down; the process is SIGKILLed
//! before it could send it; the binary started again on the same database (SMTP back)
//! delivers it, once.
//!
//! SQLite file in a temporary directory by default; a fresh PostgreSQL database when
//! `LATCHKEY_TEST_POSTGRES` is set.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use latchkey::store::{OutboxEntry, Store};

use super::{admin_url, psql, start_with};

const SINK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/smtp_sink.py");

/// `scripts/smtp_sink.py` on `port`; killed when dropped.
struct Sink {
    child: Child,
    dir: PathBuf,
}

impl Sink {
    fn start(port: u16, dir: PathBuf) -> Self {
        let mut child = Command::new("python3")
            .arg(SINK)
            .arg("--dir")
            .arg(&dir)
            .arg("--port")
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 scripts/smtp_sink.py (pip install aiosmtpd==1.4.6)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), format!("listening 127.0.0.1:{port}"));
        Sink { child, dir }
    }

    /// (recipients, subject) of every message received.
    fn messages(&self) -> Vec<(Vec<String>, String)> {
        std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.ends_with(".json") && !n.starts_with('.')
            })
            .map(|e| {
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
                let to = v["envelope_to"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap().to_owned())
                    .collect();
                (to, v["subject"].as_str().unwrap_or_default().to_owned())
            })
            .collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 50 ms until it returns `Some`, for at most 30 s.
fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn mail_committed_but_unsent_when_killed_is_delivered_once_after_restart() {
    let tmp = std::env::temp_dir().join(format!("latchkey-kill-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&tmp).unwrap();
    let db_url = match std::env::var("LATCHKEY_TEST_POSTGRES") {
        Ok(v) if !v.is_empty() => {
            let name = format!("latchkey_t_{}", uuid::Uuid::new_v4().simple());
            psql(&format!("CREATE DATABASE {name}"));
            format!("{}/{name}", admin_url().rsplit_once('/').unwrap().0)
        }
        _ => format!("sqlite://{}", tmp.join("latchkey.db").display()),
    };
    // Nothing listens there (yet).
    let smtp_port = free_port();
    let smtp_url = format!("smtp://127.0.0.1:{smtp_port}");
    let env = [("SMTP_URL", smtp_url.as_str())];

    let mut first = start_with(&db_url, &env);
    let email = format!("killed-{}@example.com", uuid::Uuid::new_v4().simple());
    let res = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/auth/signup", first.base))
        .json(&serde_json::json!({"email": email, "password": "correct horse battery"}))
        .send()
        .unwrap();
    assert_eq!(res.status(), 201);

    // Read the outbox beside the running process.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let config = latchkey::Config::from_pairs([
        ("DATABASE_URL", db_url.as_str()),
        (
            "SECRETS_KEY",
            "zpMxY6ELREkcE3Drna0VwrpJxQsHuMm8p8IYx3MDrs8=",
        ),
    ])
    .unwrap();
    let store = rt
        .block_on(latchkey::store::connect(&config.database_url))
        .unwrap();
    let row = |store: &dyn Store| -> OutboxEntry {
        let mut rows = rt.block_on(store.recent_mail(10)).unwrap();
        assert_eq!(rows.len(), 1, "one message in the outbox: {rows:?}");
        rows.remove(0)
    };

    // Kill it while the message is committed, unsent, and not held by a delivery attempt:
    // an attempt failed and the retry is more than a second away (backoff ≥ 5 s). (Killed
    // during an attempt, the row would wait out its 2-minute lease: not tested here.)
    let queued = poll("a failed delivery attempt recorded", || {
        let r = row(&*store);
        let now = latchkey::clock::now_ms();
        (r.attempts >= 1 && r.sent_at.is_none() && r.next_attempt_at > now + 1000).then_some(r)
    });
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();
    let after_kill = row(&*store);
    assert!(
        after_kill.sent_at.is_none()
            && after_kill.failed_at.is_none()
            && after_kill.body.is_some()
            && after_kill.attempts == queued.attempts,
        "still queued after the kill: {after_kill:?}"
    );

    let sink = Sink::start(smtp_port, tmp.join("smtp"));
    let _second = start_with(&db_url, &env);
    let sent = poll("the message delivered after the restart", || {
        let r = row(&*store);
        r.sent_at.is_some().then_some(r)
    });
    assert!(sent.body.is_none(), "a delivered body is erased");
    assert_eq!(sent.id, queued.id);
    // The row is sent, so it is never claimed again: what arrived is all that ever will.
    let messages = sink.messages();
    assert_eq!(
        messages,
        vec![(vec![email.clone()], "Verify your email address".to_owned())],
        "delivered exactly once"
    );

    drop(sink);
    drop(_second);
    let _ = std::fs::remove_dir_all(&tmp);
}

//! SPEC 12: security events — written by each action in the same transaction as its change,
//! `GET /api/v1/auth/events` (pagination, the user's own only), retention, and the secrets
//! tour (`events/secrets.rs`): no event row and no log line ever holds a secret. Over real
//! HTTP on SQLite, and on PostgreSQL when `LATCHKEY_TEST_POSTGRES` is set.
//!
//! Every log line of this binary is captured (`capture_logs`): the secrets tour greps them.

mod common;

#[path = "passkeys/authenticator.rs"]
mod authenticator;
#[path = "events/cost.rs"]
mod cost;
#[path = "events/flows.rs"]
mod flows;
#[path = "events/listing.rs"]
mod listing;
#[path = "events/secrets.rs"]
mod secrets;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{PASSWORD, TestApp, spawn_with, unique_email};
use latchkey::clock::Clock;
use latchkey::config::Quota;
use latchkey::events::EventQuery;
use serde_json::{Value, json};

/// The User-Agent every request of these tests sends.
pub const UA: &str = "events-test/1.0";

/// Everything every `tracing` subscriber of this binary wrote (all levels down to debug,
/// every target, no timestamps so digits of a time never look like a code).
pub fn capture_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Capture(buf.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_ansi(false)
            .without_time()
            .with_writer(move || writer.clone())
            .try_init();
        buf
    })
    .clone()
}

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub use common::browser::Browser;

/// An app with a manual clock (on a TOTP step's middle) and the per-IP limit out of the way.
pub async fn app_with(tweak: impl FnOnce(&mut latchkey::Config)) -> TestApp {
    capture_logs();
    spawn_with(|c| {
        let now = latchkey::clock::now_ms();
        c.clock = Clock::manual(now - now.rem_euclid(30_000) + 15_000);
        let lots = Quota {
            burst: 10_000,
            period: Duration::from_millis(1),
        };
        c.rate_limits.auth_per_ip = lots;
        c.rate_limits.mail_per_ip = lots;
        c.rate_limits.mail_per_address = lots;
        tweak(c);
    })
    .await
}

pub async fn app() -> TestApp {
    app_with(|_| {}).await
}

/// `method path` with `body` and the browser's cookies (and [`UA`]); the answer's cookies go
/// back into the browser. Returns status and body.
pub async fn call(
    app: &TestApp,
    b: &mut Browser,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app
        .http
        .request(method, app.url(path))
        .header("cookie", b.header_for(path))
        .header("user-agent", UA);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    b.update(res.headers());
    (status, res.json().await.unwrap_or(Value::Null))
}

pub async fn post(app: &TestApp, b: &mut Browser, path: &str, body: Value) -> (u16, Value) {
    call(app, b, reqwest::Method::POST, path, Some(body)).await
}

/// A new account, signed in.
pub async fn signed_up(app: &TestApp) -> (String, Browser) {
    let email = unique_email("ev");
    let mut b = Browser::default();
    let (s, body) = post(
        app,
        &mut b,
        "/api/v1/auth/signup",
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    (email, b)
}

/// A fresh browser signed in with the password.
pub async fn logged_in(app: &TestApp, email: &str) -> Browser {
    let mut b = Browser::default();
    let (s, body) = post(
        app,
        &mut b,
        "/api/v1/auth/login",
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    b
}

/// The signed-in user's events, newest first (one page of up to 100).
pub async fn events_of(app: &TestApp, b: &mut Browser) -> Vec<Value> {
    let (s, body) = call(
        app,
        b,
        reqwest::Method::GET,
        "/api/v1/auth/events?limit=100",
        None,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert!(body["next_cursor"].is_null(), "one page: {body}");
    body["events"].as_array().unwrap().clone()
}

/// The types of `events`, newest first.
pub fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

/// The newest event of type `kind`.
pub fn find<'a>(events: &'a [Value], kind: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {:?}", types(events)))
}

/// Every stored event, of every user, through the store (as `latchkey events` reads them).
pub async fn all_stored(app: &TestApp) -> Vec<latchkey::events::EventRecord> {
    app.state
        .store()
        .events(EventQuery {
            limit: 100_000,
            ..Default::default()
        })
        .await
        .unwrap()
}

/// The `sid` of the browser's access token.
pub fn sid_of(b: &Browser) -> String {
    use base64::Engine as _;
    let token = b.value("access_token").expect("an access token");
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["sid"].as_str().unwrap().to_owned()
}

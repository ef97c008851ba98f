//! SPEC 11: second factors (TOTP, recovery codes), the two-step sign-in, and recent
//! authentication, over real HTTP on SQLite, and on PostgreSQL when
//! `LATCHKEY_TEST_POSTGRES` is set.
//!
//! Codes are computed here with `totp-rs` directly from the base32 secret the setup
//! endpoint returns, for time steps the test chooses; the server reads the manual clock of
//! `Config::clock`, so the steps around "now" are exact.

mod common;

#[path = "mfa/login.rs"]
mod login;
#[path = "mfa/recent.rs"]
mod recent;
#[path = "mfa/totp.rs"]
mod totp;

use base64::Engine as _;
use common::{PASSWORD, TestApp, spawn_with, unique_email};
use latchkey::clock::Clock;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

pub use common::browser::Browser;

/// An app with a manual clock starting now (on a step boundary's middle, so ±1 step is
/// never ambiguous) and the per-IP auth limit out of the way.
pub async fn app_with(tweak: impl FnOnce(&mut latchkey::Config)) -> TestApp {
    spawn_with(|c| {
        let now = latchkey::clock::now_ms();
        c.clock = Clock::manual(now - now.rem_euclid(30_000) + 15_000);
        c.rate_limits.auth_per_ip = latchkey::config::Quota {
            burst: 10_000,
            period: std::time::Duration::from_millis(1),
        };
        tweak(c);
    })
    .await
}

pub async fn app() -> TestApp {
    app_with(|_| {}).await
}

/// `method path` with `body` (JSON, if any) and the browser's cookies; the answer's cookies
/// go back into the browser. Returns status and body.
pub async fn call(
    app: &TestApp,
    b: &mut Browser,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value, HeaderMap) {
    let mut req = app
        .http
        .request(method, app.url(path))
        .header("cookie", b.header_for(path));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    b.update(&headers);
    let body = res.json().await.unwrap_or(Value::Null);
    (status, body, headers)
}

pub async fn post(app: &TestApp, b: &mut Browser, path: &str, body: Value) -> (u16, Value) {
    let (s, v, _) = call(app, b, reqwest::Method::POST, path, Some(body)).await;
    (s, v)
}

/// A new account, signed in.
pub async fn signed_up(app: &TestApp) -> (String, Browser) {
    let email = unique_email("mfa");
    let mut b = Browser::default();
    let (s, _) = post(
        app,
        &mut b,
        "/api/v1/auth/signup",
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(s, 201);
    (email, b)
}

/// The server's current time step (its manual clock).
pub fn step_now(app: &TestApp) -> i64 {
    app.state
        .config()
        .clock
        .now_ms()
        .div_euclid(1000)
        .div_euclid(30)
}

/// A TOTP secret as an authenticator app holds it.
pub struct Authenticator(totp_rs::Totp);

impl Authenticator {
    pub fn from_base32(secret: &str) -> Self {
        let bytes = totp_rs::Secret::try_from_base32(secret).expect("base32 secret");
        Self(
            totp_rs::Builder::new()
                .with_secret(bytes)
                .build()
                .expect("RFC 6238 parameters"),
        )
    }

    /// The code of time step `step`.
    pub fn code(&self, step: i64) -> String {
        self.0.generate(step as u64 * 30).to_string()
    }
}

/// Sets up and confirms TOTP for the signed-in browser (with the code of the current step);
/// returns the authenticator and the recovery codes.
pub async fn enable_totp(app: &TestApp, b: &mut Browser) -> (Authenticator, Vec<String>) {
    let (s, setup) = post(app, b, "/api/v1/auth/mfa/totp/setup", json!({})).await;
    assert_eq!(s, 200, "{setup}");
    let auth = Authenticator::from_base32(setup["secret"].as_str().unwrap());
    let (s, done) = post(
        app,
        b,
        "/api/v1/auth/mfa/totp/confirm",
        json!({"code": auth.code(step_now(app))}),
    )
    .await;
    assert_eq!(s, 200, "{done}");
    let codes = done["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    (auth, codes)
}

/// Moves the server's clock on by `secs`.
pub fn advance(app: &TestApp, secs: i64) {
    app.state.config().clock.advance(secs * 1000);
}

/// A fresh browser through the first step: a right password for an account with a second
/// factor. Asserts the answer: `mfa_required`, the second-factor cookie and nothing else.
pub async fn password_step(app: &TestApp, email: &str) -> Browser {
    let mut b = Browser::default();
    let (s, body) = post(
        app,
        &mut b,
        "/api/v1/auth/login",
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["mfa_required"], true, "{body}");
    assert!(b.has("mfa_pending"), "second-factor cookie set");
    assert!(!b.has("access_token") && !b.has("refresh_token") && !b.has("device"));
    b
}

pub async fn verify(app: &TestApp, b: &mut Browser, method: &str, code: &str) -> (u16, Value) {
    post(
        app,
        b,
        "/api/v1/auth/mfa/verify",
        json!({"method": method, "code": code}),
    )
    .await
}

/// The claims of the browser's access token (not verified here: the server did).
pub fn access_claims(b: &Browser) -> Value {
    let token = b
        .value("access_token")
        .or(b.value("__Host-access_token"))
        .expect("an access token");
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

//! The secrets tour (issue 13): one walk through every flow that writes an event — sign-up,
//! verification, good and bad passwords, refresh and reuse, TOTP (setup, wrong and right
//! codes, a recovery code, reauthentication), a passkey, password change and reset, an
//! address change, session revocation, logout, logout everywhere, key rotation — keeping
//! every secret it used or was given. Then no stored event and no captured log line (every
//! log line of this test binary, at debug level) may contain any of them, nor their SHA-256.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::authenticator::{Claims, Credential};
use crate::common::smtp::{Sink, use_sink};
use crate::common::{PASSWORD, unique_email};
use crate::*;

/// What must never be written: secrets as the client holds them.
#[derive(Default)]
struct Secrets {
    /// Matched anywhere.
    text: Vec<String>,
    /// Six-digit codes: matched only where no digit touches them (a number elsewhere in a
    /// line may well contain any six digits).
    codes: Vec<String>,
}

impl Secrets {
    fn add(&mut self, s: impl Into<String>) {
        let s = s.into();
        assert!(s.len() >= 8, "too short to grep for: {s:?}");
        // The forms a store or log could hold it in: as is, and its SHA-256 (hex, base64url).
        let digest = Sha256::digest(s.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
        self.text.extend([s, hex, b64]);
    }

    fn browser(&mut self, b: &Browser) {
        for v in b.values() {
            self.add(v);
        }
    }

    fn code(&mut self, c: &str) {
        assert_eq!(c.len(), 6);
        self.codes.push(c.to_owned());
    }

    /// The secrets found in `text`.
    fn found_in(&self, text: &str) -> Vec<String> {
        let mut found: Vec<String> = self
            .text
            .iter()
            .filter(|s| text.contains(s.as_str()))
            .cloned()
            .collect();
        for c in &self.codes {
            let bytes = text.as_bytes();
            let mut from = 0;
            while let Some(i) = text[from..].find(c.as_str()) {
                let at = from + i;
                let before = at.checked_sub(1).map(|j| bytes[j].is_ascii_digit());
                let after = bytes.get(at + 6).map(|b| b.is_ascii_digit());
                if before != Some(true) && after != Some(true) {
                    found.push(c.clone());
                    break;
                }
                from = at + 1;
            }
        }
        found
    }
}

#[tokio::test]
async fn no_event_and_no_log_line_ever_holds_a_secret() {
    use totp_rs::{Builder, Secret};
    let logs = capture_logs();
    let sink = Sink::start();
    let app = app_with(|c| use_sink(c, &sink)).await;
    let mut secrets = Secrets::default();
    let clock = || app.state.config().clock.clone();
    secrets.add(PASSWORD);

    // Sign up, verify the address.
    let (email, mut b) = signed_up(&app).await;
    secrets.browser(&b);
    let verify = sink.wait_for(&email, "Verify your email address").await;
    secrets.add(verify.token());
    let (s, _) = post(
        &app,
        &mut Browser::default(),
        "/api/v1/auth/email/verify",
        json!({"token": verify.token()}),
    )
    .await;
    assert_eq!(s, 200);

    // A wrong password, then refreshes, then a reuse.
    let wrong_password = "Tr0ub4dor&3-not-it";
    secrets.add(wrong_password);
    let (s, _) = post(
        &app,
        &mut Browser::default(),
        "/api/v1/auth/login",
        json!({"email": email, "password": wrong_password}),
    )
    .await;
    assert_eq!(s, 401);
    let mut r = logged_in(&app, &email).await;
    secrets.browser(&r);
    let stolen = r.clone();
    for _ in 0..2 {
        let (s, _) = post(&app, &mut r, "/api/v1/auth/refresh", json!({})).await;
        assert_eq!(s, 200);
        secrets.browser(&r);
    }
    clock().advance(60_000);
    let (s, _) = post(&app, &mut stolen.clone(), "/api/v1/auth/refresh", json!({})).await;
    assert_eq!(s, 401);

    // TOTP: setup, confirm, a wrong and a right second step, a recovery code,
    // reauthentication with a wrong and a right code.
    let (s, setup) = post(&app, &mut b, "/api/v1/auth/mfa/totp/setup", json!({})).await;
    assert_eq!(s, 200);
    let secret = setup["secret"].as_str().unwrap().to_owned();
    secrets.add(secret.clone());
    secrets.add(setup["otpauth_uri"].as_str().unwrap());
    let totp = Builder::new()
        .with_secret(Secret::try_from_base32(&secret).unwrap())
        .build()
        .unwrap();
    let code_now = || {
        let step = app.state.config().clock.now_ms() / 30_000;
        totp.generate(step as u64 * 30).to_string()
    };
    let code = code_now();
    secrets.code(&code);
    let (s, done) = post(
        &app,
        &mut b,
        "/api/v1/auth/mfa/totp/confirm",
        json!({"code": code}),
    )
    .await;
    assert_eq!(s, 200);
    let recovery: Vec<String> = done["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    for c in &recovery {
        secrets.add(c.clone());
        secrets.add(c.replace('-', ""));
    }

    let mut two = Browser::default();
    let (s, _) = post(
        &app,
        &mut two,
        "/api/v1/auth/login",
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(s, 200);
    secrets.browser(&two);
    clock().advance(30_000);
    let right = code_now();
    let wrong = format!("{:06}", (right.parse::<u32>().unwrap() + 7) % 1_000_000);
    secrets.code(&right);
    secrets.code(&wrong);
    let (s, _) = post(
        &app,
        &mut two,
        "/api/v1/auth/mfa/verify",
        json!({"method": "totp", "code": wrong}),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = post(
        &app,
        &mut two,
        "/api/v1/auth/mfa/verify",
        json!({"method": "totp", "code": right}),
    )
    .await;
    assert_eq!(s, 200);
    secrets.browser(&two);

    let mut three = Browser::default();
    let (s, _) = post(
        &app,
        &mut three,
        "/api/v1/auth/login",
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(s, 200);
    secrets.browser(&three);
    let (s, _) = post(
        &app,
        &mut three,
        "/api/v1/auth/mfa/verify",
        json!({"method": "recovery_code", "code": recovery[0]}),
    )
    .await;
    assert_eq!(s, 200);
    secrets.browser(&three);

    clock().advance(30_000);
    let reauth = code_now();
    let reauth_wrong = format!("{:06}", (reauth.parse::<u32>().unwrap() + 3) % 1_000_000);
    secrets.code(&reauth);
    secrets.code(&reauth_wrong);
    let (s, _) = post(
        &app,
        &mut three,
        "/api/v1/auth/reauthenticate",
        json!({"method": "totp", "code": reauth_wrong}),
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = post(
        &app,
        &mut three,
        "/api/v1/auth/reauthenticate",
        json!({"method": "totp", "code": reauth}),
    )
    .await;
    assert_eq!(s, 200);
    secrets.browser(&three);

    // A passkey: added, used to sign in, removed.
    let (s, started) = post(
        &app,
        &mut three,
        "/api/v1/auth/passkeys/register/start",
        json!({}),
    )
    .await;
    assert_eq!(s, 200);
    secrets.add(started["ceremony"].as_str().unwrap());
    let mut cred = Credential::new();
    let credential = cred.register(&started["options"], &Claims::default());
    let (s, added) = post(
        &app,
        &mut three,
        "/api/v1/auth/passkeys/register/finish",
        json!({"ceremony": started["ceremony"], "credential": credential, "name": "Tour key"}),
    )
    .await;
    assert_eq!(s, 201);
    let (s, started) = post(
        &app,
        &mut Browser::default(),
        "/api/v1/auth/passkeys/login/start",
        json!({}),
    )
    .await;
    assert_eq!(s, 200);
    secrets.add(started["ceremony"].as_str().unwrap());
    let assertion = cred.assert(&started["options"], &Claims::default());
    let mut pk = Browser::default();
    let (s, _) = post(
        &app,
        &mut pk,
        "/api/v1/auth/passkeys/login/finish",
        json!({"ceremony": started["ceremony"], "credential": assertion}),
    )
    .await;
    assert_eq!(s, 200);
    secrets.browser(&pk);
    let (s, _) = call(
        &app,
        &mut three,
        reqwest::Method::DELETE,
        &format!(
            "/api/v1/auth/passkeys/{}",
            added["passkey"]["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(s, 204);

    // Sessions: revoke one, log out of another.
    let (s, _) = call(
        &app,
        &mut three,
        reqwest::Method::DELETE,
        &format!("/api/v1/auth/sessions/{}", sid_of(&pk)),
        None,
    )
    .await;
    assert_eq!(s, 204);
    let (s, _) = post(&app, &mut two, "/api/v1/auth/logout", json!({})).await;
    assert_eq!(s, 204);

    // Password change, then forgot and reset (the second step again), then an address change.
    let new_password = "a different passphrase 2";
    secrets.add(new_password);
    let (s, _) = post(
        &app,
        &mut three,
        "/api/v1/auth/password/change",
        json!({"current_password": PASSWORD, "new_password": new_password}),
    )
    .await;
    assert_eq!(s, 204);
    let (s, _) = post(
        &app,
        &mut Browser::default(),
        "/api/v1/auth/password/forgot",
        json!({"email": email}),
    )
    .await;
    assert_eq!(s, 202);
    let reset = sink.wait_for(&email, "Reset your password").await;
    secrets.add(reset.token());
    let reset_password = "the reset passphrase 3";
    secrets.add(reset_password);
    let mut four = Browser::default();
    let (s, body) = post(
        &app,
        &mut four,
        "/api/v1/auth/password/reset",
        json!({"token": reset.token(), "password": reset_password}),
    )
    .await;
    assert_eq!((s, body["mfa_required"].as_bool()), (200, Some(true)));
    secrets.browser(&four);
    clock().advance(30_000);
    let after_reset = code_now();
    secrets.code(&after_reset);
    let (s, _) = post(
        &app,
        &mut four,
        "/api/v1/auth/mfa/verify",
        json!({"method": "totp", "code": after_reset}),
    )
    .await;
    assert_eq!(s, 200);
    secrets.browser(&four);

    let new_email = unique_email("tour-new");
    let (s, _) = post(
        &app,
        &mut four,
        "/api/v1/auth/email/change",
        json!({"new_email": new_email, "password": reset_password}),
    )
    .await;
    assert_eq!(s, 202);
    let confirm = sink
        .wait_for(&new_email, "Confirm your new email address")
        .await;
    secrets.add(confirm.token());
    let (s, _) = post(
        &app,
        &mut Browser::default(),
        "/api/v1/auth/email/change/confirm",
        json!({"token": confirm.token()}),
    )
    .await;
    assert_eq!(s, 200);

    // Out everywhere; rotate the signing key.
    let (s, _) = post(&app, &mut four, "/api/v1/auth/logout-all", json!({})).await;
    assert_eq!(s, 204);
    latchkey::tokens::keys::KeyRing::rotate(
        app.state.store(),
        app.state.secrets_key(),
        app.state.config().access_ttl,
    )
    .await
    .unwrap();

    // The password hashes the store holds are secrets too.
    let user = app
        .state
        .store()
        .user_by_email(&latchkey::domain::Email::parse(&new_email).unwrap())
        .await
        .unwrap()
        .unwrap();
    secrets.add(user.password_hash.clone().unwrap());

    // The grep finds what it looks for: a secret anywhere, a code only where no digit
    // touches it.
    assert_eq!(secrets.found_in(&format!("x{PASSWORD}y")), [PASSWORD]);
    assert_eq!(
        secrets.found_in(&format!("code={right}.")),
        [right.as_str()]
    );
    assert!(secrets.found_in(&format!("9{right}")).is_empty());

    // Every event of the tour, as stored and as the API and CLI show it.
    let stored = all_stored(&app).await;
    let kinds: std::collections::BTreeSet<&str> = stored.iter().map(|e| e.kind.as_str()).collect();
    for k in [
        "signup",
        "login_succeeded",
        "login_failed",
        "mfa_failed",
        "refresh_reused",
        "session_revoked",
        "logout_all",
        "password_changed",
        "password_reset_requested",
        "password_reset",
        "email_verified",
        "email_changed",
        "mfa_enabled",
        "passkey_added",
        "passkey_removed",
        "keys_rotated",
    ] {
        assert!(kinds.contains(k), "the tour wrote {k}: {kinds:?}");
    }
    let dump: String = stored
        .iter()
        .map(|e| {
            format!(
                "{} {} {:?} {:?} {:?} {:?} {}\n",
                e.kind, e.at, e.user, e.session, e.ip, e.user_agent, e.detail
            )
        })
        .collect();
    let leaked = secrets.found_in(&dump);
    assert!(leaked.is_empty(), "secrets in events: {leaked:?}\n{dump}");
    for e in &stored {
        let Value::Object(detail) = &e.detail else {
            panic!("detail is an object: {}", e.detail)
        };
        assert!(detail.len() <= 4, "a small detail: {}", e.detail);
    }

    // Every log line so far (this test's and any other's of the binary).
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    let lines = text.lines().count();
    assert!(lines > 50, "logs were captured: {lines} lines");
    for k in ["signup", "refresh_reused", "mfa_failed", "password_reset"] {
        assert!(
            text.lines()
                .any(|l| l.contains("latchkey::event") && l.contains(&format!("type=\"{k}\""))),
            "a structured log line per event ({k})"
        );
    }
    let leaked = secrets.found_in(&text);
    assert!(
        leaked.is_empty(),
        "secrets in logs: {leaked:?}\n{}",
        text.lines()
            .filter(|l| leaked.iter().any(|s| l.contains(s.as_str())))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

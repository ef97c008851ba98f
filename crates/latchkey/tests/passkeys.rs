//! Passkeys (SPEC 11) over real HTTP, with real signed WebAuthn responses from a software
//! authenticator (`passkeys/authenticator.rs`); on SQLite, and on PostgreSQL when
//! `LATCHKEY_TEST_POSTGRES` is set.

mod common;

#[path = "passkeys/authenticator.rs"]
mod authenticator;

use std::time::Duration;

use authenticator::{Claims, Credential};
use common::*;
use latchkey::clock::Clock;
use latchkey::config::Quota;
use latchkey::mfa::Amr;
use latchkey::store::{Change, NewUser, PasskeyRecord, StoreError};
use reqwest::Method;
use serde_json::{Value, json};

const REGISTER_START: &str = "/api/v1/auth/passkeys/register/start";
const REGISTER_FINISH: &str = "/api/v1/auth/passkeys/register/finish";
const LOGIN_START: &str = "/api/v1/auth/passkeys/login/start";
const LOGIN_FINISH: &str = "/api/v1/auth/passkeys/login/finish";
const LIST: &str = "/api/v1/auth/passkeys";

/// The per-IP sign-in limit out of the way; the session clock manual (starting now), so a
/// test can let ceremonies expire.
async fn app() -> TestApp {
    app_with(|_| {}).await
}

async fn app_with(tweak: impl FnOnce(&mut latchkey::Config)) -> TestApp {
    spawn_with(|c| {
        c.rate_limits.auth_per_ip = Quota {
            burst: 10_000,
            period: Duration::from_millis(1),
        };
        c.clock = Clock::manual(latchkey::clock::now_ms());
        tweak(c);
    })
    .await
}

/// POSTs a start endpoint; returns (ceremony, options).
async fn start(app: &TestApp, path: &str, jar: &Jar) -> (String, Value) {
    let res = app.post(path, jar).await;
    assert_eq!(res.status(), 200, "{path}");
    let body: Value = res.json().await.unwrap();
    let ceremony = body["ceremony"].as_str().unwrap().to_owned();
    assert_eq!(ceremony.len(), 43);
    (ceremony, body["options"].clone())
}

async fn post_body(app: &TestApp, path: &str, jar: &Jar, body: &Value) -> reqwest::Response {
    app.with_jar(Method::POST, path, jar)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Registers `cred` on the account of `jar`; returns the passkey's view.
async fn register(app: &TestApp, jar: &Jar, cred: &mut Credential, name: Option<&str>) -> Value {
    let (ceremony, options) = start(app, REGISTER_START, jar).await;
    let credential = cred.register(&options, &Claims::default());
    let res = post_body(
        app,
        REGISTER_FINISH,
        jar,
        &json!({"ceremony": ceremony, "credential": credential, "name": name}),
    )
    .await;
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.unwrap()["passkey"].clone()
}

/// A finished sign-in attempt with `cred` (claims as given).
async fn sign_in(app: &TestApp, cred: &mut Credential, claims: &Claims) -> reqwest::Response {
    let (ceremony, options) = start(app, LOGIN_START, &Jar::default()).await;
    let credential = cred.assert(&options, claims);
    app.post_json(
        LOGIN_FINISH,
        &json!({"ceremony": ceremony, "credential": credential}),
    )
    .await
}

async fn signed_up_with_passkey(app: &TestApp) -> (String, Jar, Credential, Value) {
    let email = unique_email("pk");
    let jar = app.signup(&email).await;
    let mut cred = Credential::new();
    let view = register(app, &jar, &mut cred, Some("Laptop")).await;
    (email, jar, cred, view)
}

fn access_claims(jar: &Jar) -> Value {
    use base64::Engine as _;
    let token = jar.access.as_deref().unwrap();
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_registered_passkey_signs_in_without_password_or_email() {
    let app = app().await;
    let (email, _jar, mut cred, view) = signed_up_with_passkey(&app).await;
    assert_eq!(view["name"], "Laptop");
    assert!(view["last_used_at"].is_null());

    // The options ask for a discoverable credential with user verification.
    let (_, options) = start(&app, REGISTER_START, &_jar).await;
    let sel = &options["publicKey"]["authenticatorSelection"];
    assert_eq!(sel["residentKey"], "required");
    assert_eq!(sel["userVerification"], "required");
    assert_eq!(options["publicKey"]["rp"]["id"], "localhost");
    // The registered credential is excluded from a second registration.
    assert_eq!(
        options["publicKey"]["excludeCredentials"][0]["id"],
        authenticator::b64(&cred.id)
    );
    // Sign-in options name no user and no credential: the authenticator discovers them.
    let (_, login_options) = start(&app, LOGIN_START, &Jar::default()).await;
    assert!(
        login_options["publicKey"]["allowCredentials"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "{login_options}"
    );
    assert_eq!(login_options["publicKey"]["userVerification"], "required");

    let res = sign_in(&app, &mut cred, &Claims::default()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let mut jar = Jar::default();
    jar.update(res.headers());
    let lines = set_cookie_lines(res.headers());
    assert!(lines.iter().any(|l| l.starts_with("access_token=")));
    assert!(lines.iter().any(|l| l.starts_with("refresh_token=")));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["user"]["email"], email.as_str());
    assert!(body["access_expires_at"].is_string());
    assert_eq!(app.me_status(&jar).await, 200);
    let claims = access_claims(&jar);
    assert!(claims["auth_time"].as_i64().unwrap() > 0);
    // A device-bound key (not backup-eligible) with user verification: `hwk` and `mfa`.
    assert_eq!(claims["amr"], json!(["hwk", "mfa"]));

    // The list shows when it was last used; the counter went up and a higher one works.
    let list: Value = app.get(LIST, &jar).await.json().await.unwrap();
    assert_eq!(list["passkeys"].as_array().unwrap().len(), 1);
    assert!(list["passkeys"][0]["last_used_at"].is_string());
    let res = sign_in(&app, &mut cred, &Claims::default()).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a_synced_passkey_without_a_counter_signs_in_repeatedly() {
    let app = app().await;
    let email = unique_email("pk-sync");
    let jar = app.signup(&email).await;
    let mut cred = Credential::new();
    cred.counting = false;
    cred.backup_eligible = true;
    register(&app, &jar, &mut cred, None).await;
    for _ in 0..2 {
        let res = sign_in(&app, &mut cred, &Claims::default()).await;
        assert_eq!(res.status(), 200);
        let mut jar = Jar::default();
        jar.update(res.headers());
        // A syncable (backup-eligible) key is software-held: `swk`.
        assert_eq!(access_claims(&jar)["amr"], json!(["swk", "mfa"]));
    }
    let list: Value = app.get(LIST, &jar).await.json().await.unwrap();
    assert_eq!(list["passkeys"][0]["name"], "Passkey", "the default name");
}

#[tokio::test]
async fn registration_refuses_responses_that_do_not_verify() {
    let app = app().await;
    let jar = app.signup(&unique_email("pk-reg")).await;
    let cases: Vec<(&str, Claims)> = vec![
        (
            "another origin",
            Claims {
                origin: "https://evil.example".into(),
                ..Claims::default()
            },
        ),
        (
            "another relying party",
            Claims {
                rp_id: "evil.example".into(),
                ..Claims::default()
            },
        ),
        (
            "another challenge",
            Claims {
                challenge: Some(vec![7; 32]),
                ..Claims::default()
            },
        ),
        (
            "no user verification",
            Claims {
                user_verified: false,
                ..Claims::default()
            },
        ),
        (
            "an assertion's client data",
            Claims {
                kind: Some("webauthn.get"),
                ..Claims::default()
            },
        ),
    ];
    for (what, claims) in cases {
        let (ceremony, options) = start(&app, REGISTER_START, &jar).await;
        let credential = Credential::new().register(&options, &claims);
        let res = post_body(
            &app,
            REGISTER_FINISH,
            &jar,
            &json!({"ceremony": ceremony, "credential": credential}),
        )
        .await;
        assert_eq!(res.status(), 400, "{what}");
        assert_problem(res, 400, "passkey_invalid").await;
    }
    let list: Value = app.get(LIST, &jar).await.json().await.unwrap();
    assert_eq!(list["passkeys"], json!([]));
}

#[tokio::test]
async fn a_ceremony_is_single_use_expires_and_belongs_to_its_account() {
    let app = app().await;
    let jar = app.signup(&unique_email("pk-once")).await;
    let (ceremony, options) = start(&app, REGISTER_START, &jar).await;
    let mut cred = Credential::new();
    let credential = cred.register(&options, &Claims::default());
    let body = json!({"ceremony": ceremony, "credential": credential});
    // A refused answer uses the ceremony up too.
    let bad = json!({"ceremony": ceremony, "credential": Credential::new().register(&options, &Claims { origin: "https://evil.example".into(), ..Claims::default() })});
    assert_problem(
        post_body(&app, REGISTER_FINISH, &jar, &bad).await,
        400,
        "passkey_invalid",
    )
    .await;
    assert_problem(
        post_body(&app, REGISTER_FINISH, &jar, &body).await,
        400,
        "passkey_challenge_expired",
    )
    .await;

    // Another account cannot finish this account's ceremony.
    let (ceremony, options) = start(&app, REGISTER_START, &jar).await;
    let other = app.signup(&unique_email("pk-other")).await;
    let credential = cred.register(&options, &Claims::default());
    let body = json!({"ceremony": ceremony, "credential": credential});
    assert_problem(
        post_body(&app, REGISTER_FINISH, &other, &body).await,
        400,
        "passkey_challenge_expired",
    )
    .await;

    // Expired after five minutes.
    let (ceremony, options) = start(&app, REGISTER_START, &jar).await;
    let credential = cred.register(&options, &Claims::default());
    app.state.config().clock.advance(5 * 60 * 1000 + 1);
    let body = json!({"ceremony": ceremony, "credential": credential});
    assert_problem(
        post_body(&app, REGISTER_FINISH, &jar, &body).await,
        400,
        "passkey_challenge_expired",
    )
    .await;

    // A sign-in ceremony is not a registration one, nor the reverse.
    let (login_ceremony, _) = start(&app, LOGIN_START, &Jar::default()).await;
    let (ceremony, options) = start(&app, REGISTER_START, &jar).await;
    let credential = cred.register(&options, &Claims::default());
    let body = json!({"ceremony": login_ceremony, "credential": credential});
    assert_problem(
        post_body(&app, REGISTER_FINISH, &jar, &body).await,
        400,
        "passkey_challenge_expired",
    )
    .await;
    let body =
        json!({"ceremony": ceremony, "credential": cred.assert(&options, &Claims::default())});
    assert_problem(
        app.post_json(LOGIN_FINISH, &body).await,
        400,
        "passkey_challenge_expired",
    )
    .await;
}

#[tokio::test]
async fn sign_in_refuses_forged_replayed_and_cloned_responses() {
    let app = app().await;
    let (_, jar, mut cred, _) = signed_up_with_passkey(&app).await;

    for (what, claims, code) in [
        (
            "another origin",
            Claims {
                origin: "https://evil.example".into(),
                ..Claims::default()
            },
            "passkey_invalid",
        ),
        (
            "another relying party",
            Claims {
                rp_id: "evil.example".into(),
                ..Claims::default()
            },
            "passkey_invalid",
        ),
        (
            "another challenge",
            Claims {
                challenge: Some(vec![9; 32]),
                ..Claims::default()
            },
            "passkey_invalid",
        ),
        (
            "no user verification",
            Claims {
                user_verified: false,
                ..Claims::default()
            },
            "passkey_invalid",
        ),
        (
            "a registration's client data",
            Claims {
                kind: Some("webauthn.create"),
                ..Claims::default()
            },
            "passkey_invalid",
        ),
    ] {
        let res = sign_in(&app, &mut cred, &claims).await;
        assert_eq!(res.status(), 400, "{what}");
        assert!(res.headers().get("set-cookie").is_none(), "{what}");
        assert_problem(res, 400, code).await;
    }

    // A forged signature: the right credential id and user, another key.
    let mut forger = Credential::new();
    forger.id = cred.id.clone();
    forger.user_handle = cred.user_handle.clone();
    assert_problem(
        sign_in(&app, &mut forger, &Claims::default()).await,
        400,
        "passkey_invalid",
    )
    .await;

    // An unknown credential; a known one presented for another user.
    let mut stranger = Credential::new();
    stranger.user_handle = cred.user_handle.clone();
    assert_problem(
        sign_in(&app, &mut stranger, &Claims::default()).await,
        400,
        "passkey_unknown",
    )
    .await;
    let mut wrong_user = Credential::new();
    let other_jar = app.signup(&unique_email("pk-b")).await;
    register(&app, &other_jar, &mut wrong_user, None).await;
    let saved = std::mem::replace(&mut wrong_user.user_handle, cred.user_handle.clone());
    assert_problem(
        sign_in(&app, &mut wrong_user, &Claims::default()).await,
        400,
        "passkey_invalid",
    )
    .await;
    wrong_user.user_handle = saved;

    // A replayed assertion: the same ceremony again, then its answer in a new ceremony.
    let (ceremony, options) = start(&app, LOGIN_START, &Jar::default()).await;
    let credential = cred.assert(&options, &Claims::default());
    let body = json!({"ceremony": ceremony, "credential": credential});
    assert_eq!(app.post_json(LOGIN_FINISH, &body).await.status(), 200);
    assert_problem(
        app.post_json(LOGIN_FINISH, &body).await,
        400,
        "passkey_challenge_expired",
    )
    .await;
    let (ceremony, _) = start(&app, LOGIN_START, &Jar::default()).await;
    let body = json!({"ceremony": ceremony, "credential": credential});
    assert_problem(
        app.post_json(LOGIN_FINISH, &body).await,
        400,
        "passkey_invalid",
    )
    .await;

    // A counter that goes back (a cloned authenticator) is refused; the stored counter
    // stays, so the genuine authenticator keeps working.
    let before = cred.counter;
    cred.counter = 1;
    assert_problem(
        sign_in(&app, &mut cred, &Claims::default()).await,
        400,
        "passkey_invalid",
    )
    .await;
    cred.counter = before;
    assert_eq!(
        sign_in(&app, &mut cred, &Claims::default()).await.status(),
        200
    );

    // An expired sign-in ceremony.
    let (ceremony, options) = start(&app, LOGIN_START, &Jar::default()).await;
    app.state.config().clock.advance(5 * 60 * 1000 + 1);
    let body =
        json!({"ceremony": ceremony, "credential": cred.assert(&options, &Claims::default())});
    assert_problem(
        app.post_json(LOGIN_FINISH, &body).await,
        400,
        "passkey_challenge_expired",
    )
    .await;
    drop(jar);
}

#[tokio::test]
async fn malformed_requests_are_400_or_413_never_5xx() {
    let app = app().await;
    let jar = app.signup(&unique_email("pk-bad")).await;
    let (ceremony, _) = start(&app, LOGIN_START, &Jar::default()).await;
    let (reg_ceremony, _) = start(&app, REGISTER_START, &jar).await;
    let junk_credentials = [
        json!(null),
        json!("x"),
        json!({}),
        json!({"id": "AA", "rawId": "!!", "type": "public-key", "response": {}}),
        json!({"id": "AA", "rawId": "AA", "type": "public-key", "response": {"clientDataJSON": "AA", "authenticatorData": "AA", "signature": "AA", "userHandle": "AA"}}),
        json!({"id": "AA", "rawId": "AA", "type": "public-key", "response": {"clientDataJSON": "AA", "attestationObject": "AA"}}),
        json!({"id": "AA", "rawId": "AA", "type": "public-key", "response": {"clientDataJSON": authenticator::b64(b"{\"type\":1}"), "authenticatorData": "AAAA", "signature": "", "userHandle": authenticator::b64(&[0; 16])}}),
    ];
    for credential in &junk_credentials {
        for (path, c) in [(LOGIN_FINISH, &ceremony), (REGISTER_FINISH, &reg_ceremony)] {
            let res = post_body(
                &app,
                path,
                &jar,
                &json!({"ceremony": c, "credential": credential}),
            )
            .await;
            let status = res.status().as_u16();
            assert_eq!(status, 400, "{path} {credential}");
            let code = res.json::<Value>().await.unwrap()["code"].clone();
            assert!(
                code == "passkey_invalid"
                    || code == "passkey_challenge_expired"
                    || code == "passkey_unknown",
                "{path} {credential}: {code}"
            );
        }
    }
    for path in [LOGIN_FINISH, REGISTER_FINISH] {
        for body in [
            json!({}),
            json!({"ceremony": 1, "credential": {}}),
            json!({"credential": {}}),
            json!([]),
        ] {
            let res = post_body(&app, path, &jar, &body).await;
            assert_problem(res, 400, "invalid_request").await;
        }
        let res = app
            .with_jar(Method::POST, path, &jar)
            .header("content-type", "application/json")
            .body("{\"ceremony\": ")
            .send()
            .await
            .unwrap();
        assert_problem(res, 400, "invalid_request").await;
        for ceremony in ["", "short", &"A".repeat(43), &"é".repeat(43)] {
            let res = post_body(
                &app,
                path,
                &jar,
                &json!({"ceremony": ceremony, "credential": {"id": "AA"}}),
            )
            .await;
            assert_eq!(res.status(), 400, "{path} {ceremony:?}");
        }
        let huge = json!({"ceremony": ceremony, "credential": {"id": "A".repeat(40_000)}});
        let res = post_body(&app, path, &jar, &huge).await;
        assert_problem(res, 413, "payload_too_large").await;
        let res = app
            .with_jar(Method::POST, path, &jar)
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_problem(res, 415, "unsupported_media_type").await;
    }
    // A name that breaks the display-name rules.
    let (reg_ceremony, options) = start(&app, REGISTER_START, &jar).await;
    let credential = Credential::new().register(&options, &Claims::default());
    let res = post_body(
        &app,
        REGISTER_FINISH,
        &jar,
        &json!({"ceremony": reg_ceremony, "credential": credential, "name": "a\u{202e}b"}),
    )
    .await;
    assert_problem(res, 400, "invalid_request").await;
}

#[tokio::test]
async fn signed_in_endpoints_need_a_session_and_adding_or_removing_recent_authentication() {
    let app = app().await;
    let anon = Jar::default();
    for (method, path) in [
        (Method::POST, REGISTER_START),
        (Method::GET, LIST),
        (
            Method::DELETE,
            "/api/v1/auth/passkeys/0190a0a0-0000-7000-8000-000000000000",
        ),
    ] {
        let res = app.with_jar(method, path, &anon).send().await.unwrap();
        assert_problem(res, 401, "token_missing").await;
    }
    let res = post_body(
        &app,
        REGISTER_FINISH,
        &anon,
        &json!({"ceremony": "A".repeat(43), "credential": {}}),
    )
    .await;
    assert_problem(res, 401, "token_missing").await;
    let res = app
        .with_jar(
            Method::PATCH,
            "/api/v1/auth/passkeys/0190a0a0-0000-7000-8000-000000000000",
            &anon,
        )
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_problem(res, 401, "token_missing").await;

    // A sign-in more than 10 minutes ago: listing and renaming work, adding and removing
    // need a fresh sign-in.
    let (_, _, _, view) = signed_up_with_passkey(&app).await;
    let email = unique_email("pk-old");
    app.state.config().clock.advance(-11 * 60 * 1000);
    let old = app.signup(&email).await;
    app.state.config().clock.advance(11 * 60 * 1000);
    assert_problem(
        app.post(REGISTER_START, &old).await,
        403,
        "reauthentication_required",
    )
    .await;
    assert_eq!(app.get(LIST, &old).await.status(), 200);
    let res = app
        .with_jar(
            Method::DELETE,
            &format!("{LIST}/{}", view["id"].as_str().unwrap()),
            &old,
        )
        .send()
        .await
        .unwrap();
    assert_problem(res, 403, "reauthentication_required").await;
}

#[tokio::test]
async fn passkeys_are_renamed_and_removed_by_their_owner_only() {
    let app = app().await;
    let (email, jar, mut cred, view) = signed_up_with_passkey(&app).await;
    let mut second = Credential::new();
    let view2 = register(&app, &jar, &mut second, Some("Phone")).await;
    let id = view["id"].as_str().unwrap().to_owned();
    let path = format!("{LIST}/{id}");

    let rename = |jar: &Jar, path: &str, name: Value| {
        app.with_jar(Method::PATCH, path, jar)
            .json(&json!({ "name": name }))
            .send()
    };
    let res = rename(&jar, &path, json!("  Work laptop ")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap()["passkey"]["name"],
        "Work laptop"
    );
    let res = rename(&jar, &path, json!("bad\u{0007}")).await.unwrap();
    assert_problem(res, 400, "invalid_request").await;
    let res = rename(&jar, &path, json!(null)).await.unwrap();
    assert_eq!(
        res.json::<Value>().await.unwrap()["passkey"]["name"],
        "Passkey"
    );

    // Another account sees none of them and can touch none.
    let other = app.signup(&unique_email("pk-other")).await;
    let list: Value = app.get(LIST, &other).await.json().await.unwrap();
    assert_eq!(list["passkeys"], json!([]));
    assert_problem(
        rename(&other, &path, json!("mine")).await.unwrap(),
        404,
        "not_found",
    )
    .await;
    let res = app
        .with_jar(Method::DELETE, &path, &other)
        .send()
        .await
        .unwrap();
    assert_problem(res, 404, "not_found").await;
    for bad in ["nope", "0190a0a0-0000-7000-8000-000000000000"] {
        let res = app
            .with_jar(Method::DELETE, &format!("{LIST}/{bad}"), &jar)
            .send()
            .await
            .unwrap();
        assert_problem(res, 404, "not_found").await;
        assert_problem(
            rename(&jar, &format!("{LIST}/{bad}"), json!("x"))
                .await
                .unwrap(),
            404,
            "not_found",
        )
        .await;
    }

    // Removing: the first is gone (and no longer signs in); removing the last one mails a
    // notice (the password remains a way in).
    let res = app
        .with_jar(Method::DELETE, &path, &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = app
        .with_jar(Method::DELETE, &path, &jar)
        .send()
        .await
        .unwrap();
    assert_problem(res, 404, "not_found").await;
    assert_problem(
        sign_in(&app, &mut cred, &Claims::default()).await,
        400,
        "passkey_unknown",
    )
    .await;
    assert!(!notices(&app).await.contains(&"mfa_disabled".to_owned()));
    let res = app
        .with_jar(
            Method::DELETE,
            &format!("{LIST}/{}", view2["id"].as_str().unwrap()),
            &jar,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(notices(&app).await, vec!["mfa_disabled".to_owned()]);
    let list: Value = app.get(LIST, &jar).await.json().await.unwrap();
    assert_eq!(list["passkeys"], json!([]));
    let _ = email;
}

/// The kinds of notices in the outbox, newest first (verification mails left out).
async fn notices(app: &TestApp) -> Vec<String> {
    app.state
        .store()
        .recent_mail(50)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.kind)
        .filter(|k| k != "verify_email")
        .collect()
}

fn passkey_row(user: latchkey::domain::UserId, n: u8) -> PasskeyRecord {
    PasskeyRecord {
        id: uuid::Uuid::now_v7(),
        user_id: user,
        credential_id: vec![n; 16],
        credential: "{}".into(),
        name: format!("k{n}"),
        created_at: n as i64,
        last_used_at: None,
    }
}

#[tokio::test]
async fn the_last_way_in_cannot_be_removed() {
    let app = app().await;
    let store = app.state.store();
    // An account with no password and no provider: passkeys are its only way in.
    let user = NewUser {
        id: latchkey::domain::UserId::new(),
        email: latchkey::domain::Email::parse(&unique_email("pk-only")).unwrap(),
        name: None,
        password_hash: None,
        email_verified: true,
        created_at: 0,
    };
    let id = user.id;
    store.create_user(user).await.unwrap();
    let (a, b) = (passkey_row(id, 1), passkey_row(id, 2));
    store.insert_passkey(&a, &[]).await.unwrap();
    store.insert_passkey(&b, &[]).await.unwrap();
    // The same credential id cannot be registered twice.
    assert!(matches!(
        store.insert_passkey(&passkey_row(id, 1), &[]).await,
        Err(StoreError::Conflict)
    ));

    // Over HTTP (a session for the account, Bearer): the first goes, the last stays.
    let tokens = latchkey::session::start(&app.state, id, Amr::HWK | Amr::MFA, Default::default())
        .await
        .unwrap();
    let delete = |pk: uuid::Uuid| {
        app.http
            .delete(app.url(&format!("{LIST}/{pk}")))
            .bearer_auth(&tokens.access_token)
            .send()
    };
    assert_eq!(delete(a.id).await.unwrap().status(), 204);
    assert_problem(delete(b.id).await.unwrap(), 409, "last_sign_in_method").await;
    assert_eq!(store.passkeys(id).await.unwrap().len(), 1);

    // In the store, concurrent removals of the last two never both succeed.
    let c = passkey_row(id, 3);
    store.insert_passkey(&c, &[]).await.unwrap();
    let (del_b, del_c) = (
        [Change::DeletePasskey { user: id, id: b.id }],
        [Change::DeletePasskey { user: id, id: c.id }],
    );
    let (r1, r2) = tokio::join!(store.apply(&del_b), store.apply(&del_c));
    assert_eq!(
        [r1.is_ok(), r2.is_ok()].iter().filter(|ok| **ok).count(),
        1,
        "{r1:?} {r2:?}"
    );
    assert_eq!(store.passkeys(id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn passkeys_are_off_when_public_url_is_not_a_domain() {
    let app = app_with(|c| {
        let mut p = latchkey::Config::from_pairs([
            ("PUBLIC_URL", "http://127.0.0.1:8080"),
            ("SECRETS_KEY", TEST_SECRETS_KEY),
        ])
        .unwrap();
        p.database_url = c.database_url.clone();
        p.password = c.password;
        p.rate_limits = c.rate_limits;
        *c = p;
    })
    .await;
    assert_problem(
        app.post(LOGIN_START, &Jar::default()).await,
        404,
        "passkeys_not_configured",
    )
    .await;
    let jar = app.signup(&unique_email("pk-ip")).await;
    assert_problem(
        app.post(REGISTER_START, &jar).await,
        404,
        "passkeys_not_configured",
    )
    .await;
}

/// The second-factor cookie a response set (`mfa_pending`), if any.
fn mfa_cookie(res: &reqwest::Response) -> Option<String> {
    set_cookie_lines(res.headers()).iter().find_map(|l| {
        let v = l.strip_prefix("mfa_pending=")?.split(';').next()?;
        (!v.is_empty()).then(|| v.to_owned())
    })
}

async fn with_mfa_cookie(
    app: &TestApp,
    path: &str,
    cookie: &str,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut req = app
        .http
        .post(app.url(path))
        .header("cookie", format!("mfa_pending={cookie}"));
    if let Some(b) = body {
        req = req.json(b);
    }
    req.send().await.unwrap()
}

/// A right password for an account with a passkey: the second-factor cookie.
async fn password_step(app: &TestApp, email: &str) -> String {
    let res = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let cookie = mfa_cookie(&res).expect("the second-factor cookie");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["mfa_required"], true, "{body}");
    assert!(
        body["methods"]
            .as_array()
            .unwrap()
            .contains(&json!("passkey")),
        "{body}"
    );
    cookie
}

const MFA_START: &str = "/api/v1/auth/mfa/passkey/start";
const MFA_FINISH: &str = "/api/v1/auth/mfa/passkey/finish";

#[tokio::test]
async fn a_passkey_is_the_second_step_of_a_password_sign_in() {
    let app = app().await;
    let (email, _, mut cred, _) = signed_up_with_passkey(&app).await;
    let (_, other_jar, _, _) = signed_up_with_passkey(&app).await;
    let mut others = Credential::new();
    register(&app, &other_jar, &mut others, None).await;

    let cookie = password_step(&app, &email).await;
    // No cookie, or a made-up one: no pending sign-in.
    assert_problem(
        app.post(MFA_START, &Jar::default()).await,
        401,
        "mfa_expired",
    )
    .await;
    assert_problem(
        with_mfa_cookie(&app, MFA_START, &"A".repeat(43), None).await,
        401,
        "mfa_expired",
    )
    .await;

    // The options offer exactly the account's passkey.
    let (ceremony, options) = mfa_start(&app, &cookie).await;
    let allowed = options["publicKey"]["allowCredentials"].as_array().unwrap();
    assert_eq!(allowed.len(), 1);
    assert_eq!(allowed[0]["id"], authenticator::b64(&cred.id));

    // Another account's passkey, and a response for another origin: refused (each one of
    // the pending sign-in's attempts), no cookies.
    let body =
        json!({"ceremony": ceremony, "credential": others.assert(&options, &Claims::default())});
    let res = with_mfa_cookie(&app, MFA_FINISH, &cookie, Some(&body)).await;
    assert!(set_cookie_lines(res.headers()).is_empty());
    assert_problem(res, 400, "passkey_invalid").await;
    let (ceremony, options) = mfa_start(&app, &cookie).await;
    let bad = Claims {
        origin: "https://evil.example".into(),
        ..Claims::default()
    };
    let body = json!({"ceremony": ceremony, "credential": cred.assert(&options, &bad)});
    assert_problem(
        with_mfa_cookie(&app, MFA_FINISH, &cookie, Some(&body)).await,
        400,
        "passkey_invalid",
    )
    .await;
    // A discoverable sign-in ceremony is not this ceremony.
    let (login_ceremony, login_options) = start_anon(&app).await;
    let body = json!({"ceremony": login_ceremony, "credential": cred.assert(&login_options, &Claims::default())});
    assert_problem(
        with_mfa_cookie(&app, MFA_FINISH, &cookie, Some(&body)).await,
        400,
        "passkey_challenge_expired",
    )
    .await;

    // The right passkey signs in: amr = password + key + mfa; the cookie is used up.
    let (ceremony, options) = mfa_start(&app, &cookie).await;
    let body =
        json!({"ceremony": ceremony, "credential": cred.assert(&options, &Claims::default())});
    let res = with_mfa_cookie(&app, MFA_FINISH, &cookie, Some(&body)).await;
    assert_eq!(res.status(), 200);
    let lines = set_cookie_lines(res.headers());
    assert!(
        lines.iter().any(|l| l.starts_with("mfa_pending=;")),
        "{lines:?}"
    );
    let mut jar = Jar::default();
    jar.update(res.headers());
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["user"]["email"], email.as_str());
    assert_eq!(access_claims(&jar)["amr"], json!(["pwd", "hwk", "mfa"]));
    assert_eq!(app.me_status(&jar).await, 200);
    let res = with_mfa_cookie(&app, MFA_START, &cookie, None).await;
    assert_problem(res, 401, "mfa_expired").await;

    // Five refused answers use the pending sign-in up.
    let cookie = password_step(&app, &email).await;
    for _ in 0..5 {
        let (ceremony, options) = mfa_start(&app, &cookie).await;
        let body = json!({"ceremony": ceremony, "credential": cred.assert(&options, &bad)});
        assert_problem(
            with_mfa_cookie(&app, MFA_FINISH, &cookie, Some(&body)).await,
            400,
            "passkey_invalid",
        )
        .await;
    }
    assert_problem(
        with_mfa_cookie(&app, MFA_START, &cookie, None).await,
        401,
        "mfa_expired",
    )
    .await;
}

async fn mfa_start(app: &TestApp, cookie: &str) -> (String, Value) {
    let res = with_mfa_cookie(app, MFA_START, cookie, None).await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    (
        v["ceremony"].as_str().unwrap().to_owned(),
        v["options"].clone(),
    )
}

async fn start_anon(app: &TestApp) -> (String, Value) {
    start(app, LOGIN_START, &Jar::default()).await
}

#[tokio::test]
async fn a_passkey_renews_recent_authentication() {
    let app = app().await;
    let (_, mut jar, mut cred, _) = signed_up_with_passkey(&app).await;
    let (_, other_jar, _, _) = signed_up_with_passkey(&app).await;
    let mut others = Credential::new();
    register(&app, &other_jar, &mut others, None).await;
    // Eleven minutes later: adding a passkey needs a fresh sign-in.
    app.state.config().clock.advance(11 * 60 * 1000);
    assert_problem(
        app.post(REGISTER_START, &jar).await,
        403,
        "reauthentication_required",
    )
    .await;
    const START: &str = "/api/v1/auth/reauthenticate/passkey/start";
    const FINISH: &str = "/api/v1/auth/reauthenticate/passkey/finish";
    assert_problem(app.post(START, &Jar::default()).await, 401, "token_missing").await;

    // Another account's passkey does not prove who this is.
    let (ceremony, options) = start(&app, START, &jar).await;
    let body =
        json!({"ceremony": ceremony, "credential": others.assert(&options, &Claims::default())});
    assert_problem(
        post_body(&app, FINISH, &jar, &body).await,
        400,
        "passkey_invalid",
    )
    .await;
    // Nor does another account's ceremony.
    let (theirs, options) = start(&app, START, &other_jar).await;
    let body = json!({"ceremony": theirs, "credential": cred.assert(&options, &Claims::default())});
    assert_problem(
        post_body(&app, FINISH, &jar, &body).await,
        400,
        "passkey_challenge_expired",
    )
    .await;

    let (ceremony, options) = start(&app, START, &jar).await;
    let body =
        json!({"ceremony": ceremony, "credential": cred.assert(&options, &Claims::default())});
    let res = post_body(&app, FINISH, &jar, &body).await;
    assert_eq!(res.status(), 200);
    jar.update(res.headers());
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["amr"], json!(["pwd", "hwk", "mfa"]));
    assert_eq!(access_claims(&jar)["amr"], json!(["pwd", "hwk", "mfa"]));
    assert_eq!(app.post(REGISTER_START, &jar).await.status(), 200);
}

//! Each family of events is written by its action, with who, where and a detail.

use serde_json::json;

use crate::authenticator::{Claims, Credential};
use crate::common::smtp::{Sink, use_sink};
use crate::common::{PASSWORD, unique_email};
use crate::*;
use latchkey::events::EventQuery;

#[tokio::test]
async fn signup_login_and_a_failed_login_of_a_known_user_are_recorded() {
    let app = app().await;
    let (email, mut b) = signed_up(&app).await;
    let ev = events_of(&app, &mut b).await;
    assert_eq!(types(&ev), ["login_succeeded", "signup"]);
    let signup = find(&ev, "signup");
    assert_eq!(signup["detail"], json!({"method": "password"}));
    assert_eq!(signup["ip"], "127.0.0.1");
    assert_eq!(signup["user_agent"], UA);
    let login = find(&ev, "login_succeeded");
    assert_eq!(login["session_id"], sid_of(&b));
    assert_eq!(login["detail"]["amr"], "pwd");
    assert!(login["time"].as_str().unwrap().ends_with('Z'));

    // A wrong password for this account: `login_failed`; for an unknown address: nothing
    // anywhere (there is no account to record it for).
    let before = all_stored(&app).await.len();
    let mut other = Browser::default();
    let (s, _) = post(
        &app,
        &mut other,
        "/api/v1/auth/login",
        json!({"email": email, "password": "not the password"}),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = post(
        &app,
        &mut other,
        "/api/v1/auth/login",
        json!({"email": unique_email("nobody"), "password": "whatever it is"}),
    )
    .await;
    assert_eq!(s, 401);
    // `login_failed` is written just after the answer (so the answer's timing says nothing
    // of whether the account exists): wait for it.
    let mut stored = all_stored(&app).await.len();
    for _ in 0..200 {
        if stored > before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        stored = all_stored(&app).await.len();
    }
    assert_eq!(stored, before + 1);
    let ev = events_of(&app, &mut b).await;
    let failed = &ev[0];
    assert_eq!(failed["type"], "login_failed");
    assert_eq!(failed["detail"], json!({"reason": "password"}));
    assert!(failed["session_id"].is_null());
    assert_eq!(failed["user_agent"], UA);

    // A second sign-in: its own `login_succeeded`, for its own session.
    let b2 = logged_in(&app, &email).await;
    let ev = events_of(&app, &mut b).await;
    assert_eq!(ev[0]["type"], "login_succeeded");
    assert_eq!(ev[0]["session_id"], sid_of(&b2));
}

#[tokio::test]
async fn refresh_is_no_event_but_reuse_logout_revocation_and_logout_all_are() {
    let app = app().await;
    let (email, mut b) = signed_up(&app).await;
    let n = events_of(&app, &mut b).await.len();

    // A refresh writes nothing.
    let (s, _) = post(&app, &mut b, "/api/v1/auth/refresh", json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(
        events_of(&app, &mut b).await.len(),
        n,
        "refresh is no event"
    );

    // Reuse: a rotated-away token presented after the grace window.
    let mut victim = logged_in(&app, &email).await;
    let victim_sid = sid_of(&victim);
    let stolen = victim.clone();
    let (s, _) = post(&app, &mut victim, "/api/v1/auth/refresh", json!({})).await;
    assert_eq!(s, 200);
    app.state.config().clock.advance(60_000);
    let mut thief = stolen;
    let (s, body) = post(&app, &mut thief, "/api/v1/auth/refresh", json!({})).await;
    assert_eq!((s, body["code"].as_str()), (401, Some("refresh_reused")));
    let ev = events_of(&app, &mut b).await;
    assert_eq!(types(&ev[..2]), ["session_revoked", "refresh_reused"]);
    assert_eq!(ev[0]["detail"]["by"], "reuse");
    assert_eq!(ev[0]["session_id"], victim_sid.as_str());
    assert_eq!(ev[1]["session_id"], victim_sid.as_str());

    // Revoking another session, and logging out: `session_revoked` by the user.
    let other = logged_in(&app, &email).await;
    let other_sid = sid_of(&other);
    let (s, _) = call(
        &app,
        &mut b,
        reqwest::Method::DELETE,
        &format!("/api/v1/auth/sessions/{other_sid}"),
        None,
    )
    .await;
    assert_eq!(s, 204);
    let ev = events_of(&app, &mut b).await;
    assert_eq!(ev[0]["type"], "session_revoked");
    assert_eq!(ev[0]["detail"]["by"], "user");
    assert_eq!(ev[0]["session_id"], other_sid.as_str());
    // Already revoked: no second event.
    let (s, _) = call(
        &app,
        &mut b,
        reqwest::Method::DELETE,
        &format!("/api/v1/auth/sessions/{other_sid}"),
        None,
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(events_of(&app, &mut b).await.len(), ev.len());

    let mut leaving = logged_in(&app, &email).await;
    let leaving_sid = sid_of(&leaving);
    let (s, _) = post(&app, &mut leaving, "/api/v1/auth/logout", json!({})).await;
    assert_eq!(s, 204);
    let ev = events_of(&app, &mut b).await;
    assert_eq!(ev[0]["type"], "session_revoked");
    assert_eq!(ev[0]["session_id"], leaving_sid.as_str());
    assert_eq!(ev[0]["detail"], json!({"by": "user", "via": "logout"}));
    assert_eq!(ev[0]["user_agent"], UA);

    // Logout everywhere: one `logout_all`, from this session.
    let sid = sid_of(&b);
    let (s, _) = post(&app, &mut b, "/api/v1/auth/logout-all", json!({})).await;
    assert_eq!(s, 204);
    let mut again = logged_in(&app, &email).await;
    let ev = events_of(&app, &mut again).await;
    assert_eq!(types(&ev[..2]), ["login_succeeded", "logout_all"]);
    assert_eq!(ev[1]["session_id"], sid.as_str());
}

#[tokio::test]
async fn second_factor_events_enabled_failed_and_disabled() {
    use totp_rs::{Builder, Secret};
    let app = app().await;
    let (email, mut b) = signed_up(&app).await;
    let (s, setup) = post(&app, &mut b, "/api/v1/auth/mfa/totp/setup", json!({})).await;
    assert_eq!(s, 200);
    let totp = Builder::new()
        .with_secret(Secret::try_from_base32(setup["secret"].as_str().unwrap()).unwrap())
        .build()
        .unwrap();
    let step = |app: &TestApp| app.state.config().clock.now_ms() / 30_000;
    let code = |st: i64| totp.generate(st as u64 * 30).to_string();
    let (s, _) = post(
        &app,
        &mut b,
        "/api/v1/auth/mfa/totp/confirm",
        json!({"code": code(step(&app))}),
    )
    .await;
    assert_eq!(s, 200);
    let ev = events_of(&app, &mut b).await;
    assert_eq!(ev[0]["type"], "mfa_enabled");
    assert_eq!(ev[0]["detail"], json!({"method": "totp"}));
    assert_eq!(ev[0]["session_id"], sid_of(&b));

    // The second step: a wrong code is `mfa_failed`, the right one `login_succeeded`.
    let mut two = Browser::default();
    let (s, body) = post(
        &app,
        &mut two,
        "/api/v1/auth/login",
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!((s, body["mfa_required"].as_bool()), (200, Some(true)));
    let right = code(step(&app) + 1);
    let wrong = format!("{:06}", (right.parse::<u32>().unwrap() + 1) % 1_000_000);
    let (s, _) = post(
        &app,
        &mut two,
        "/api/v1/auth/mfa/verify",
        json!({"method": "totp", "code": wrong}),
    )
    .await;
    assert_eq!(s, 400);
    app.state.config().clock.advance(30_000);
    let (s, _) = post(
        &app,
        &mut two,
        "/api/v1/auth/mfa/verify",
        json!({"method": "totp", "code": right}),
    )
    .await;
    assert_eq!(s, 200);
    let ev = events_of(&app, &mut b).await;
    assert_eq!(types(&ev[..2]), ["login_succeeded", "mfa_failed"]);
    assert_eq!(
        ev[1]["detail"],
        json!({"method": "totp", "during": "sign_in"})
    );
    assert_eq!(ev[0]["detail"]["amr"], "pwd otp mfa");

    // Off again (the session is recent).
    let (s, _) = call(
        &app,
        &mut b,
        reqwest::Method::DELETE,
        "/api/v1/auth/mfa/totp",
        None,
    )
    .await;
    assert_eq!(s, 204);
    let ev = events_of(&app, &mut b).await;
    assert_eq!(ev[0]["type"], "mfa_disabled");
    assert_eq!(
        ev[0]["detail"],
        json!({"method": "totp", "last_factor": true})
    );
}

#[tokio::test]
async fn passkey_added_refused_as_second_step_and_removed() {
    let app = app().await;
    let (email, mut b) = signed_up(&app).await;
    let (s, started) = post(
        &app,
        &mut b,
        "/api/v1/auth/passkeys/register/start",
        json!({}),
    )
    .await;
    assert_eq!(s, 200);
    let mut cred = Credential::new();
    let credential = cred.register(&started["options"], &Claims::default());
    let (s, added) = post(
        &app,
        &mut b,
        "/api/v1/auth/passkeys/register/finish",
        json!({"ceremony": started["ceremony"], "credential": credential, "name": "Laptop"}),
    )
    .await;
    assert_eq!(s, 201, "{added}");
    let id = added["passkey"]["id"].as_str().unwrap().to_owned();
    let ev = events_of(&app, &mut b).await;
    assert_eq!(ev[0]["type"], "passkey_added");
    assert_eq!(ev[0]["detail"], json!({"passkey_id": id, "name": "Laptop"}));

    // As the second step of a password sign-in, a response for another origin is refused:
    // `mfa_failed` by passkey.
    let mut two = Browser::default();
    let (s, body) = post(
        &app,
        &mut two,
        "/api/v1/auth/login",
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!((s, body["mfa_required"].as_bool()), (200, Some(true)));
    let (s, started) = post(&app, &mut two, "/api/v1/auth/mfa/passkey/start", json!({})).await;
    assert_eq!(s, 200, "{started}");
    let bad = Claims {
        origin: "https://evil.example".into(),
        ..Claims::default()
    };
    let assertion = cred.assert(&started["options"], &bad);
    let (s, _) = post(
        &app,
        &mut two,
        "/api/v1/auth/mfa/passkey/finish",
        json!({"ceremony": started["ceremony"], "credential": assertion}),
    )
    .await;
    assert_eq!(s, 400);
    let ev = events_of(&app, &mut b).await;
    assert_eq!(ev[0]["type"], "mfa_failed");
    assert_eq!(
        ev[0]["detail"],
        json!({"method": "passkey", "during": "sign_in", "error": "passkey_invalid"})
    );

    let (s, _) = call(
        &app,
        &mut b,
        reqwest::Method::DELETE,
        &format!("/api/v1/auth/passkeys/{id}"),
        None,
    )
    .await;
    assert_eq!(s, 204);
    let ev = events_of(&app, &mut b).await;
    assert_eq!(ev[0]["type"], "passkey_removed");
    assert_eq!(ev[0]["detail"]["passkey_id"], id.as_str());
}

#[tokio::test]
async fn mail_flows_record_verification_reset_and_changes() {
    let sink = Sink::start();
    let app = app_with(|c| use_sink(c, &sink)).await;
    let (email, mut b) = signed_up(&app).await;

    // Verify the address from the signup mail.
    let mail = sink.wait_for(&email, "Verify your email address").await;
    let (s, _) = post(
        &app,
        &mut Browser::default(),
        "/api/v1/auth/email/verify",
        json!({"token": mail.token()}),
    )
    .await;
    assert_eq!(s, 200);
    let ev = events_of(&app, &mut b).await;
    assert_eq!(ev[0]["type"], "email_verified");
    assert_eq!(ev[0]["detail"], json!({"email": email}));

    // Change the password: `password_changed` and the other sessions revoked.
    let other = logged_in(&app, &email).await;
    let (s, _) = post(
        &app,
        &mut b,
        "/api/v1/auth/password/change",
        json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"}),
    )
    .await;
    assert_eq!(s, 204);
    drop(other);
    let ev = events_of(&app, &mut b).await;
    assert_eq!(types(&ev[..2]), ["session_revoked", "password_changed"]);
    assert_eq!(
        ev[0]["detail"],
        json!({"by": "password_change", "scope": "others"})
    );
    assert_eq!(ev[1]["session_id"], sid_of(&b));

    // Forgot and reset: `password_reset_requested` (queued in the background), then
    // `password_reset` with every session revoked, then the new session's sign-in.
    let (s, _) = post(
        &app,
        &mut Browser::default(),
        "/api/v1/auth/password/forgot",
        json!({"email": email}),
    )
    .await;
    assert_eq!(s, 202);
    let reset = sink.wait_for(&email, "Reset your password").await;
    let mut fresh = Browser::default();
    let (s, _) = post(
        &app,
        &mut fresh,
        "/api/v1/auth/password/reset",
        json!({"token": reset.token(), "password": PASSWORD}),
    )
    .await;
    assert_eq!(s, 200);
    let ev = events_of(&app, &mut fresh).await;
    assert_eq!(
        types(&ev[..4]),
        [
            "login_succeeded",
            "session_revoked",
            "password_reset",
            "password_reset_requested"
        ]
    );
    assert_eq!(
        ev[1]["detail"],
        json!({"by": "password_change", "scope": "all"})
    );
    assert_eq!(ev[3]["ip"], "127.0.0.1");

    // An address change whose new address another account takes meanwhile: the confirmation
    // is refused inside its transaction (the link was already marked used in it), which rolls
    // back — and records no `email_changed`.
    let taken = unique_email("ev-taken");
    let (s, _) = post(
        &app,
        &mut fresh,
        "/api/v1/auth/email/change",
        json!({"new_email": taken, "password": PASSWORD}),
    )
    .await;
    assert_eq!(s, 202);
    let link = sink
        .wait_for(&taken, "Confirm your new email address")
        .await;
    let (s, _) = post(
        &app,
        &mut Browser::default(),
        "/api/v1/auth/signup",
        json!({"email": taken, "password": PASSWORD}),
    )
    .await;
    assert_eq!(s, 201);
    let before = events_of(&app, &mut fresh).await.len();
    let (s, _) = post(
        &app,
        &mut Browser::default(),
        "/api/v1/auth/email/change/confirm",
        json!({"token": link.token()}),
    )
    .await;
    assert_eq!(s, 409);
    assert_eq!(events_of(&app, &mut fresh).await.len(), before);

    // Change the address: nothing until the link is opened, then `email_changed`.
    let new_email = unique_email("ev-new");
    let (s, _) = post(
        &app,
        &mut fresh,
        "/api/v1/auth/email/change",
        json!({"new_email": new_email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(s, 202);
    let confirm = sink
        .wait_for(&new_email, "Confirm your new email address")
        .await;
    let (s, _) = post(
        &app,
        &mut Browser::default(),
        "/api/v1/auth/email/change/confirm",
        json!({"token": confirm.token()}),
    )
    .await;
    assert_eq!(s, 200);
    let ev = events_of(&app, &mut fresh).await;
    assert_eq!(ev[0]["type"], "email_changed");
    assert_eq!(
        ev[0]["detail"],
        json!({"old_email": email, "new_email": new_email})
    );
}

#[tokio::test]
async fn identity_linked_user_disabled_and_keys_rotated_outside_a_users_requests() {
    let app = app().await;
    let (email, mut b) = signed_up(&app).await;

    // A verified identity of the same address links (and, the address never having been
    // verified here, signs the squatter's sessions out): `identity_linked`.
    let id = latchkey::oidc::Identity {
        issuer: "https://issuer.example".into(),
        subject: "sub-1".into(),
        email: Some(email.clone()),
        email_verified: true,
        name: None,
    };
    let user = latchkey::oidc::account::resolve_user(&app.state, &id)
        .await
        .unwrap();
    let stored = all_stored(&app).await;
    let linked = stored
        .iter()
        .find(|e| e.kind == "identity_linked")
        .expect("identity_linked");
    assert_eq!(linked.user, Some(user.id));
    assert_eq!(linked.detail, json!({"issuer": "https://issuer.example"}));
    // The address was never verified here, so the password's sessions were signed out.
    let (s, _) = call(
        &app,
        &mut b,
        reqwest::Method::GET,
        "/api/v1/auth/events",
        None,
    )
    .await;
    assert_eq!(s, 401);

    // A scheduled or commanded key rotation: `keys_rotated`, of no user — in no one's list.
    let key = latchkey::tokens::keys::KeyRing::rotate(
        app.state.store(),
        app.state.secrets_key(),
        app.state.config().access_ttl,
    )
    .await
    .unwrap();
    let stored = all_stored(&app).await;
    assert_eq!(stored[0].kind, "keys_rotated");
    assert_eq!(stored[0].user, None);
    assert_eq!(
        stored[0].detail,
        json!({"kid": key.kid, "trigger": "command"})
    );
    let own: Vec<String> = app
        .state
        .store()
        .events(EventQuery {
            user: Some(user.id),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(own, ["identity_linked", "login_succeeded", "signup"]);
}

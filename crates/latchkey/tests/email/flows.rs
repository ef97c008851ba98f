//! Each flow end to end: the request, the mail it causes, the link in it, and the result.

use serde_json::json;

use super::common::smtp::Sink;
use super::common::{self, Jar, PASSWORD, assert_problem, unique_email};
use super::{app_with_mail, subject};

#[tokio::test]
async fn signup_mails_a_verification_link_that_verifies_the_address_once() {
    let sink = Sink::start();
    let app = app_with_mail(&sink).await;
    let email = unique_email("verify");
    let jar = app.signup(&email).await;
    let mail = sink.wait_for(&email, subject::VERIFY).await;
    let public = &app.state.config().public_url;
    assert!(
        mail.link()
            .starts_with(&format!("{public}/verify-email#token=")),
        "{}",
        mail.link()
    );
    assert!(mail.html.contains(&mail.token()), "the HTML part links too");
    let me: serde_json::Value = app.get("/api/v1/me", &jar).await.json().await.unwrap();
    assert_eq!(me["email_verified"], false);

    let res = app
        .post_json("/api/v1/auth/email/verify", &json!({"token": mail.token()}))
        .await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["user"]["email"], email.as_str());
    assert_eq!(body["user"]["email_verified"], true);
    let me: serde_json::Value = app.get("/api/v1/me", &jar).await.json().await.unwrap();
    assert_eq!(me["email_verified"], true);

    // Single use.
    let res = app
        .post_json("/api/v1/auth/email/verify", &json!({"token": mail.token()}))
        .await;
    assert_problem(res, 400, "token_invalid").await;
    // Already verified: no new link.
    let res = app.post("/api/v1/auth/email/verify/send", &jar).await;
    assert_problem(res, 409, "already_verified").await;
}

#[tokio::test]
async fn forgot_and_reset_sets_the_password_and_signs_out_every_other_session() {
    let sink = Sink::start();
    let app = app_with_mail(&sink).await;
    let email = unique_email("reset");
    let first = app.signup(&email).await;
    let second: Jar = app.login(&email).await;

    let res = app
        .post_json("/api/v1/auth/password/forgot", &json!({"email": email}))
        .await;
    assert_eq!(res.status(), 202);
    let mail = sink.wait_for(&email, subject::RESET).await;
    let public = &app.state.config().public_url;
    assert!(
        mail.link()
            .starts_with(&format!("{public}/reset-password#token="))
    );

    // A refused password does not use the token up.
    let res = app
        .post_json(
            "/api/v1/auth/password/reset",
            &json!({"token": mail.token(), "password": "short"}),
        )
        .await;
    assert_problem(res, 400, "weak_password").await;

    let new_password = "a brand new passphrase";
    let res = app
        .post_json(
            "/api/v1/auth/password/reset",
            &json!({"token": mail.token(), "password": new_password}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let mut third = Jar::default();
    third.update(res.headers());
    assert!(third.access.is_some() && third.refresh.is_some());
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["user"]["email_verified"], true);

    // Every earlier session is gone at once; the new one works.
    assert_eq!(app.me_status(&first).await, 401);
    assert_eq!(app.me_status(&second).await, 401);
    assert_eq!(app.me_status(&third).await, 200);
    let mut old = first.clone();
    assert_eq!(app.refresh(&mut old).await.0, 401);

    // The token is used; the old password is gone; the new one signs in.
    let res = app
        .post_json(
            "/api/v1/auth/password/reset",
            &json!({"token": mail.token(), "password": "yet another passphrase"}),
        )
        .await;
    assert_problem(res, 400, "token_invalid").await;
    let res = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": email, "password": PASSWORD}),
        )
        .await;
    assert_problem(res, 401, "invalid_credentials").await;
    let res = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": email, "password": new_password}),
        )
        .await;
    assert_eq!(res.status(), 200);
    sink.wait_for(&email, subject::PASSWORD_RESET).await;
}

async fn forgot(app: &common::TestApp, sink: &Sink, email: &str, n: usize) -> String {
    let res = app
        .post_json("/api/v1/auth/password/forgot", &json!({"email": email}))
        .await;
    assert_eq!(res.status(), 202);
    sink.wait_n(email, subject::RESET, n, std::time::Duration::from_secs(15))
        .await
        .remove(n - 1)
        .token()
}

async fn reset_status(app: &common::TestApp, token: &str) -> reqwest::Response {
    app.post_json(
        "/api/v1/auth/password/reset",
        &json!({"token": token, "password": "another good passphrase"}),
    )
    .await
}

#[tokio::test]
async fn a_new_reset_request_or_a_password_change_voids_outstanding_reset_links() {
    let sink = Sink::start();
    let app = app_with_mail(&sink).await;
    let email = unique_email("void");
    let jar = app.signup(&email).await;
    let first = forgot(&app, &sink, &email, 1).await;
    let second = forgot(&app, &sink, &email, 2).await;
    assert_ne!(first, second);
    assert_problem(reset_status(&app, &first).await, 400, "token_invalid").await;

    // A password change voids the newer one too.
    let res = app
        .with_jar(reqwest::Method::POST, "/api/v1/auth/password/change", &jar)
        .json(&json!({"current_password": PASSWORD, "new_password": "changed passphrase"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_problem(reset_status(&app, &second).await, 400, "token_invalid").await;
}

fn change_password(
    app: &common::TestApp,
    jar: &Jar,
    current: &str,
    new: &str,
) -> reqwest::RequestBuilder {
    app.with_jar(reqwest::Method::POST, "/api/v1/auth/password/change", jar)
        .json(&json!({"current_password": current, "new_password": new}))
}

#[tokio::test]
async fn password_change_needs_the_current_password_and_signs_out_the_other_sessions() {
    let sink = Sink::start();
    let app = app_with_mail(&sink).await;
    let email = unique_email("change");
    let mine = app.signup(&email).await;
    let other = app.login(&email).await;

    // A wrong current password is 403, never 401 (secureFetch would sign the user out).
    let res = change_password(&app, &mine, "not the password", "whatever passphrase")
        .send()
        .await
        .unwrap();
    assert_problem(res, 403, "invalid_credentials").await;
    let res = change_password(&app, &mine, PASSWORD, "short")
        .send()
        .await
        .unwrap();
    assert_problem(res, 400, "weak_password").await;
    // No session: 401.
    let res = change_password(&app, &Jar::default(), PASSWORD, "whatever passphrase")
        .send()
        .await
        .unwrap();
    assert_problem(res, 401, "token_missing").await;
    assert_eq!(app.me_status(&other).await, 200, "failures changed nothing");

    let res = change_password(&app, &mine, PASSWORD, "whatever passphrase")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(app.me_status(&mine).await, 200, "this session stays");
    assert_eq!(
        app.me_status(&other).await,
        401,
        "the other is revoked at once"
    );
    let mut still = mine.clone();
    assert_eq!(app.refresh(&mut still).await.0, 200);
    let res = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": email, "password": "whatever passphrase"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    sink.wait_for(&email, subject::PASSWORD_CHANGED).await;
}

/// The claims of an access token (no verification: the server did that).
fn claims(jar: &Jar) -> serde_json::Value {
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
async fn sensitive_changes_need_a_recent_sign_in_which_refresh_does_not_renew() {
    let sink = Sink::start();
    let app =
        super::app_with_mail_and(&sink, |c| c.recent_auth = std::time::Duration::from_secs(1))
            .await;
    let email = unique_email("recent");
    let mut jar = app.signup(&email).await;
    let signed_in_at = claims(&jar)["auth_time"].as_i64().unwrap();
    assert!(signed_in_at > 0);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(app.refresh(&mut jar).await.0, 200);
    assert_eq!(
        claims(&jar)["auth_time"].as_i64(),
        Some(signed_in_at),
        "auth_time is kept across refresh"
    );
    let res = change_password(&app, &jar, PASSWORD, "whatever passphrase")
        .send()
        .await
        .unwrap();
    assert_problem(res, 403, "reauthentication_required").await;
    let res = app
        .with_jar(reqwest::Method::POST, "/api/v1/auth/email/change", &jar)
        .json(&json!({"new_email": unique_email("new"), "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_problem(res, 403, "reauthentication_required").await;
    // Signing in again is recent.
    let fresh = app.login(&email).await;
    assert!(claims(&fresh)["auth_time"].as_i64().unwrap() >= signed_in_at);
    let res = change_password(&app, &fresh, PASSWORD, "whatever passphrase")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
}

fn change_email(
    app: &common::TestApp,
    jar: &Jar,
    new_email: &str,
    password: &str,
) -> reqwest::RequestBuilder {
    app.with_jar(reqwest::Method::POST, "/api/v1/auth/email/change", jar)
        .json(&json!({"new_email": new_email, "password": password}))
}

async fn confirm(app: &common::TestApp, token: &str) -> reqwest::Response {
    app.post_json(
        "/api/v1/auth/email/change/confirm",
        &json!({"token": token}),
    )
    .await
}

#[tokio::test]
async fn address_change_is_confirmed_at_the_new_address_and_noticed_at_the_old() {
    let sink = Sink::start();
    let app = app_with_mail(&sink).await;
    let old = unique_email("old");
    let new = unique_email("new");
    let jar = app.signup(&old).await;
    let other = app.login(&old).await;

    let res = change_email(&app, &jar, &new, "wrong password")
        .send()
        .await
        .unwrap();
    assert_problem(res, 403, "invalid_credentials").await;
    let res = change_email(&app, &jar, "not an address", PASSWORD)
        .send()
        .await
        .unwrap();
    assert_problem(res, 400, "invalid_email").await;
    let taken = unique_email("taken");
    app.signup(&taken).await;
    let res = change_email(&app, &jar, &taken, PASSWORD)
        .send()
        .await
        .unwrap();
    assert_problem(res, 409, "email_taken").await;

    let res = change_email(&app, &jar, &new, PASSWORD)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let mail = sink.wait_for(&new, subject::CONFIRM_CHANGE).await;
    let public = &app.state.config().public_url;
    assert!(
        mail.link()
            .starts_with(&format!("{public}/confirm-email#token="))
    );
    // Nothing changed yet.
    let me: serde_json::Value = app.get("/api/v1/me", &jar).await.json().await.unwrap();
    assert_eq!(me["email"], old.as_str());

    let res = confirm(&app, &mail.token()).await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["user"]["email"], new.as_str());
    assert_eq!(body["user"]["email_verified"], true);
    assert_problem(confirm(&app, &mail.token()).await, 400, "token_invalid").await;
    sink.wait_for(&old, subject::EMAIL_CHANGED).await;
    // No session was revoked; the address signs in, the old one no longer does.
    assert_eq!(app.me_status(&other).await, 200);
    let me: serde_json::Value = app.get("/api/v1/me", &jar).await.json().await.unwrap();
    assert_eq!(me["email"], new.as_str());
    app.login(&new).await;
    let res = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": old, "password": PASSWORD}),
        )
        .await;
    assert_problem(res, 401, "invalid_credentials").await;
}

#[tokio::test]
async fn a_pending_address_change_reserves_nothing_and_its_link_survives_a_conflict() {
    let sink = Sink::start();
    let app = app_with_mail(&sink).await;
    let me = unique_email("pending");
    let wanted = unique_email("wanted");
    let jar = app.signup(&me).await;
    let res = change_email(&app, &jar, &wanted, PASSWORD)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let token = sink
        .wait_for(&wanted, subject::CONFIRM_CHANGE)
        .await
        .token();

    // Someone else signs up with the address meanwhile: confirming is 409.
    app.signup(&wanted).await;
    assert_problem(confirm(&app, &token).await, 409, "email_taken").await;
    let now: serde_json::Value = app.get("/api/v1/me", &jar).await.json().await.unwrap();
    assert_eq!(now["email"], me.as_str(), "nothing changed");

    // The conflict did not use the link up: once the address is free again, it works.
    // The other account moves to another address through its own confirmed change.
    let elsewhere = unique_email("elsewhere");
    let squat = app.login(&wanted).await;
    let res = change_email(&app, &squat, &elsewhere, PASSWORD)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let moved = sink
        .wait_for(&elsewhere, subject::CONFIRM_CHANGE)
        .await
        .token();
    assert_eq!(confirm(&app, &moved).await.status(), 200);
    let res = confirm(&app, &token).await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["user"]["email"], wanted.as_str());
}

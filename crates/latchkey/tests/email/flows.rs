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
    let _ = common::PASSWORD;
}

//! Recent authentication (SPEC 11): what needs it, and reauthentication.

use serde_json::json;

use crate::common::{PASSWORD, assert_problem};
use crate::*;

async fn send(
    app: &TestApp,
    b: &Browser,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> reqwest::Response {
    let mut req = app
        .http
        .request(method, app.url(path))
        .header("cookie", b.header_for(path));
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn factor_changes_need_a_recent_sign_in() {
    let app = app().await;
    let (_, mut b) = signed_up(&app).await;
    let (auth, _) = enable_totp(&app, &mut b).await;
    advance(&app, 11 * 60);
    use reqwest::Method as M;
    for (method, path, body) in [
        (M::POST, "/api/v1/auth/mfa/totp/setup", None),
        (
            M::POST,
            "/api/v1/auth/mfa/totp/confirm",
            Some(json!({"code": auth.code(step_now(&app))})),
        ),
        (M::DELETE, "/api/v1/auth/mfa/totp", None),
        (M::POST, "/api/v1/auth/mfa/recovery-codes", None),
        (
            M::POST,
            "/api/v1/auth/password/change",
            Some(json!({"current_password": PASSWORD, "new_password": "another long one"})),
        ),
    ] {
        let res = send(&app, &b, method, path, body).await;
        assert_problem(res, 403, "reauthentication_required").await;
    }
    // Reading the status needs no recent sign-in.
    let res = send(&app, &b, M::GET, "/api/v1/auth/mfa", None).await;
    assert_eq!(res.status(), 200);
    // Without a session: 401, before any recency question.
    let res = app
        .http
        .post(app.url("/api/v1/auth/mfa/totp/setup"))
        .send()
        .await
        .unwrap();
    assert_problem(res, 401, "token_missing").await;
}

#[tokio::test]
async fn reauthenticating_renews_auth_time_for_the_session_and_its_refreshes() {
    let app = app().await;
    let (_, mut b) = signed_up(&app).await;
    let first = access_claims(&b)["auth_time"].as_i64().unwrap();
    let refresh_before = b.value("refresh_token").unwrap().to_owned();
    advance(&app, 11 * 60);
    let res = send(
        &app,
        &b,
        reqwest::Method::POST,
        "/api/v1/auth/mfa/totp/setup",
        None,
    )
    .await;
    assert_problem(res, 403, "reauthentication_required").await;

    // A wrong password: 403 invalid_credentials (never 401), nothing renewed.
    let res = send(
        &app,
        &b,
        reqwest::Method::POST,
        "/api/v1/auth/reauthenticate",
        Some(json!({"method": "password", "password": "not the password"})),
    )
    .await;
    assert!(common::set_cookie_lines(res.headers()).is_empty());
    assert_problem(res, 403, "invalid_credentials").await;

    let (s, body) = post(
        &app,
        &mut b,
        "/api/v1/auth/reauthenticate",
        json!({"method": "password", "password": PASSWORD}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["amr"], json!(["pwd"]));
    let c = access_claims(&b);
    assert_eq!(c["auth_time"].as_i64().unwrap(), first + 11 * 60);
    assert_eq!(
        b.value("refresh_token").unwrap(),
        refresh_before,
        "the refresh cookie is left as it is"
    );
    // Now recent: TOTP can be set up.
    let (auth, _) = enable_totp(&app, &mut b).await;

    // A refresh keeps the renewed auth_time (it is in the session row).
    advance(&app, 60);
    let (s, _) = post(&app, &mut b, "/api/v1/auth/refresh", json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(
        access_claims(&b)["auth_time"].as_i64().unwrap(),
        first + 11 * 60
    );

    // Later, a TOTP code renews it too, and `otp` joins the session's amr.
    advance(&app, 11 * 60);
    let wrong = if auth.code(step_now(&app)) == "000000" {
        "000001"
    } else {
        "000000"
    };
    let res = send(
        &app,
        &b,
        reqwest::Method::POST,
        "/api/v1/auth/reauthenticate",
        Some(json!({"method": "totp", "code": wrong})),
    )
    .await;
    assert_problem(res, 403, "invalid_credentials").await;
    let (s, body) = post(
        &app,
        &mut b,
        "/api/v1/auth/reauthenticate",
        json!({"method": "totp", "code": auth.code(step_now(&app))}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let c = access_claims(&b);
    assert_eq!(c["amr"], json!(["pwd", "otp"]));
    assert_eq!(c["auth_time"].as_i64().unwrap(), first + 23 * 60);
    // The same code twice: refused (a step is accepted once).
    let res = send(
        &app,
        &b,
        reqwest::Method::POST,
        "/api/v1/auth/reauthenticate",
        Some(json!({"method": "totp", "code": auth.code(step_now(&app))})),
    )
    .await;
    assert_problem(res, 403, "invalid_credentials").await;
    let (s, _) = post(&app, &mut b, "/api/v1/auth/mfa/recovery-codes", json!({})).await;
    assert_eq!(s, 200);

    // Malformed bodies: 400.
    for body in [
        json!({"method": "passkey"}),
        json!({"password": PASSWORD}),
        json!({"method": "totp", "code": "12x456"}),
    ] {
        let res = send(
            &app,
            &b,
            reqwest::Method::POST,
            "/api/v1/auth/reauthenticate",
            Some(body),
        )
        .await;
        assert_problem(res, 400, "invalid_request").await;
    }
}

#[tokio::test]
async fn wrong_reauthentication_passwords_are_rate_limited() {
    let app = app_with(|c| {
        c.rate_limits.auth_per_email = latchkey::config::Quota {
            burst: 2,
            period: std::time::Duration::from_secs(3600),
        };
    })
    .await;
    let (_, b) = signed_up(&app).await;
    for _ in 0..2 {
        let res = send(
            &app,
            &b,
            reqwest::Method::POST,
            "/api/v1/auth/reauthenticate",
            Some(json!({"method": "password", "password": "wrong wrong"})),
        )
        .await;
        assert_problem(res, 403, "invalid_credentials").await;
    }
    let res = send(
        &app,
        &b,
        reqwest::Method::POST,
        "/api/v1/auth/reauthenticate",
        Some(json!({"method": "password", "password": PASSWORD})),
    )
    .await;
    assert_problem(res, 429, "rate_limited").await;
}

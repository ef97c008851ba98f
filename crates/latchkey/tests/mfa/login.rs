//! The two-step sign-in: the pending sign-in's limits and lifetime, the second-factor
//! cookie, malformed codes, and what the tokens say.

use serde_json::json;

use crate::common::{PASSWORD, assert_problem, into_production, unique_email};
use crate::*;

/// A code that is certainly wrong now.
fn wrong(auth: &Authenticator, app: &TestApp) -> String {
    let right: Vec<u32> = (-1..=1)
        .map(|d| auth.code(step_now(app) + d).parse().unwrap())
        .collect();
    (0..1_000_000u32)
        .find(|c| !right.contains(c))
        .map(|c| format!("{c:06}"))
        .unwrap()
}

#[tokio::test]
async fn five_wrong_codes_use_up_a_pending_sign_in() {
    let app = app().await;
    let (email, mut b) = signed_up(&app).await;
    let (auth, _) = enable_totp(&app, &mut b).await;
    advance(&app, 30);
    let mut p = password_step(&app, &email).await;
    for i in 0..5 {
        let (s, body) = verify(&app, &mut p, "totp", &wrong(&auth, &app)).await;
        assert_eq!(
            (s, &body["code"]),
            (400, &json!("invalid_code")),
            "attempt {i}"
        );
    }
    // The right code no longer helps: sign in again. The cookie is cleared.
    let (s, body) = verify(&app, &mut p, "totp", &auth.code(step_now(&app))).await;
    assert_eq!((s, &body["code"]), (401, &json!("mfa_expired")));
    assert!(!p.has("mfa_pending"));
    let mut p = password_step(&app, &email).await;
    let (s, _) = verify(&app, &mut p, "totp", &auth.code(step_now(&app))).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn wrong_codes_are_limited_per_user_across_pending_sign_ins() {
    let app = app_with(|c| {
        c.rate_limits.mfa_per_user = latchkey::config::Quota {
            burst: 3,
            period: std::time::Duration::from_secs(3600),
        };
    })
    .await;
    let (email, mut b) = signed_up(&app).await;
    let (auth, _) = enable_totp(&app, &mut b).await;
    advance(&app, 30);
    let mut p1 = password_step(&app, &email).await;
    let mut p2 = password_step(&app, &email).await;
    for which in [1, 2, 1] {
        let p = if which == 1 { &mut p1 } else { &mut p2 };
        let (s, _) = verify(&app, p, "totp", &wrong(&auth, &app)).await;
        assert_eq!(s, 400);
    }
    // A fresh pending sign-in has attempts left, but the user's budget is spent.
    let mut p3 = password_step(&app, &email).await;
    let res = app
        .http
        .post(app.url("/api/v1/auth/mfa/verify"))
        .header("cookie", p3.header_for("/api/v1/auth/mfa/verify"))
        .json(&json!({"method": "totp", "code": auth.code(step_now(&app))}))
        .send()
        .await
        .unwrap();
    assert!(res.headers().contains_key("retry-after"));
    assert_problem(res, 429, "rate_limited").await;
    // Another user is not affected.
    let (email2, mut b2) = signed_up(&app).await;
    let (auth2, _) = enable_totp(&app, &mut b2).await;
    advance(&app, 30);
    let mut q = password_step(&app, &email2).await;
    let (s, _) = verify(&app, &mut q, "totp", &auth2.code(step_now(&app))).await;
    assert_eq!(s, 200);
    let _ = &mut p3;
}

#[tokio::test]
async fn a_pending_sign_in_expires_after_five_minutes() {
    let app = app().await;
    let (email, mut b) = signed_up(&app).await;
    let (auth, _) = enable_totp(&app, &mut b).await;
    let mut p = password_step(&app, &email).await;
    advance(&app, 301);
    let res = app
        .http
        .post(app.url("/api/v1/auth/mfa/verify"))
        .header("cookie", p.header_for("/api/v1/auth/mfa/verify"))
        .json(&json!({"method": "totp", "code": auth.code(step_now(&app))}))
        .send()
        .await
        .unwrap();
    let cleared = common::set_cookie_lines(res.headers());
    assert!(
        cleared
            .iter()
            .any(|l| l.starts_with("mfa_pending=;") && l.contains("Max-Age=0")),
        "{cleared:?}"
    );
    assert_problem(res, 401, "mfa_expired").await;

    // No cookie, or a made-up one: the same.
    p.remove("mfa_pending");
    let (s, body) = verify(&app, &mut p, "totp", "123456").await;
    assert_eq!((s, &body["code"]), (401, &json!("mfa_expired")));
    let res = app
        .http
        .post(app.url("/api/v1/auth/mfa/verify"))
        .header(
            "cookie",
            "mfa_pending=q8Yc2hVtJm4dN0pX7rL1sK9fB3gW5zE6aU_iO-yRvHw",
        )
        .json(&json!({"method": "totp", "code": "123456"}))
        .send()
        .await
        .unwrap();
    assert_problem(res, 401, "mfa_expired").await;
}

#[tokio::test]
async fn codes_with_spaces_pass_and_malformed_ones_cost_no_attempt() {
    let app = app().await;
    let (email, mut b) = signed_up(&app).await;
    let (auth, _) = enable_totp(&app, &mut b).await;
    advance(&app, 30);
    let mut p = password_step(&app, &email).await;
    // Non-digits: 400 invalid_request, many times over, without using up the sign-in.
    for bad in ["12a456", "١٢٣٤٥٦", "123-456", "<script>"] {
        let (s, body) = verify(&app, &mut p, "totp", bad).await;
        assert_eq!(
            (s, &body["code"]),
            (400, &json!("invalid_request")),
            "{bad}"
        );
    }
    for bad in ["", "12345", "1234567", "0000000000000"] {
        let (s, body) = verify(&app, &mut p, "totp", bad).await;
        assert_eq!((s, &body["code"]), (400, &json!("invalid_code")), "{bad}");
    }
    for (body, code) in [
        (
            json!({"method": "sms", "code": "123456"}),
            "invalid_request",
        ),
        (json!({"method": "totp", "code": 123456}), "invalid_request"),
        (json!({"method": "totp"}), "invalid_request"),
    ] {
        let res = app
            .http
            .post(app.url("/api/v1/auth/mfa/verify"))
            .header("cookie", p.header_for("/api/v1/auth/mfa/verify"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_problem(res, 400, code).await;
    }
    // A body over 16 KiB: 413.
    let huge = json!({"method": "totp", "code": " ".repeat(20_000)});
    let res = app
        .http
        .post(app.url("/api/v1/auth/mfa/verify"))
        .header("cookie", p.header_for("/api/v1/auth/mfa/verify"))
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_problem(res, 413, "payload_too_large").await;
    // Spaces anywhere are ignored.
    let code = auth.code(step_now(&app));
    let spaced = format!(" {} {} ", &code[..3], &code[3..]);
    let (s, body) = verify(&app, &mut p, "totp", &spaced).await;
    assert_eq!(s, 200, "{body}");
}

#[tokio::test]
async fn tokens_carry_amr_and_auth_time_and_refresh_keeps_them() {
    let app = app().await;
    let (email, mut b) = signed_up(&app).await;
    let c = access_claims(&b);
    assert_eq!(c["amr"], json!(["pwd"]));
    let signup_time = c["auth_time"].as_i64().unwrap();
    assert_eq!(signup_time, app.state.config().clock.now_ms() / 1000);

    let (auth, _) = enable_totp(&app, &mut b).await;
    advance(&app, 60);
    let mut p = password_step(&app, &email).await;
    let (s, _) = verify(&app, &mut p, "totp", &auth.code(step_now(&app))).await;
    assert_eq!(s, 200);
    let c = access_claims(&p);
    assert_eq!(c["amr"], json!(["pwd", "otp", "mfa"]));
    let t = c["auth_time"].as_i64().unwrap();
    assert_eq!(t, signup_time + 60);

    advance(&app, 120);
    let (s, _) = post(&app, &mut p, "/api/v1/auth/refresh", json!({})).await;
    assert_eq!(s, 200);
    let c = access_claims(&p);
    assert_eq!(c["amr"], json!(["pwd", "otp", "mfa"]));
    assert_eq!(c["auth_time"].as_i64().unwrap(), t);
    assert!(c["iat"].as_i64().unwrap() >= t + 120);
}

#[tokio::test]
async fn the_second_factor_cookie_follows_spec_3_in_both_modes() {
    for production in [false, true] {
        let app = app_with(|c| {
            if production {
                let clock = c.clock.clone();
                let limits = c.rate_limits;
                into_production(c);
                c.clock = clock;
                c.rate_limits = limits;
            }
        })
        .await;
        let email = unique_email("mfa-cookie");
        let mut b = Browser::default();
        let (s, _) = post(
            &app,
            &mut b,
            "/api/v1/auth/signup",
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
        assert_eq!(s, 201);
        // enable_totp sends whatever the jar holds, names included.
        let (auth, _) = enable_totp(&app, &mut b).await;
        advance(&app, 30);
        let res = app
            .post_json(
                "/api/v1/auth/login",
                &json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["cache-control"], "no-store");
        let lines = common::set_cookie_lines(res.headers());
        assert_eq!(lines.len(), 1, "only the second-factor cookie: {lines:?}");
        let (name, value) = lines[0]
            .split("; ")
            .next()
            .unwrap()
            .split_once('=')
            .unwrap();
        let mut attrs: Vec<&str> = lines[0].split("; ").skip(1).collect();
        attrs.sort();
        let mut want = vec![
            "HttpOnly",
            "Max-Age=300",
            "Path=/api/v1/auth/mfa",
            "SameSite=Strict",
        ];
        if production {
            want.push("Secure");
            want.sort();
            assert_eq!(name, "__Secure-mfa_pending");
        } else {
            assert_eq!(name, "mfa_pending");
        }
        assert_eq!(attrs, want, "production={production}");
        assert_eq!(value.len(), 43, "256 random bits, base64url");

        let res = app
            .http
            .post(app.url("/api/v1/auth/mfa/verify"))
            .header("cookie", format!("{name}={value}"))
            .json(&json!({"method": "totp", "code": auth.code(step_now(&app))}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let lines = common::set_cookie_lines(res.headers());
        let cleared = lines
            .iter()
            .find(|l| l.starts_with(&format!("{name}=;")))
            .expect("second-factor cookie cleared");
        assert!(cleared.contains("Max-Age=0") && cleared.contains("Path=/api/v1/auth/mfa"));
        assert_eq!(cleared.contains("Secure"), production);
        let access = if production {
            "__Host-access_token="
        } else {
            "access_token="
        };
        assert!(lines.iter().any(|l| l.starts_with(access)), "{lines:?}");
        // A second presentation of the same cookie signs in nobody.
        let res = app
            .http
            .post(app.url("/api/v1/auth/mfa/verify"))
            .header("cookie", format!("{name}={value}"))
            .json(&json!({"method": "totp", "code": auth.code(step_now(&app) + 1)}))
            .send()
            .await
            .unwrap();
        assert_problem(res, 401, "mfa_expired").await;
    }
}

#[tokio::test]
async fn a_password_reset_still_asks_for_the_second_factor() {
    let app = app().await;
    let (email, mut b) = signed_up(&app).await;
    let (auth, _) = enable_totp(&app, &mut b).await;
    let user = app
        .state
        .store()
        .user_by_email(&latchkey::domain::Email::parse(&email).unwrap())
        .await
        .unwrap()
        .unwrap();
    let out = app.state.mailer().with_token(
        latchkey::store::TokenPurpose::ResetPassword,
        user.id,
        &user.email,
    );
    let token = out.token.as_ref().unwrap().clone();
    app.state
        .store()
        .apply(&[latchkey::store::Change::InsertToken(&token)])
        .await
        .unwrap();
    // The link's token is in the queued message; read it back through the mailer.
    let link = app.state.mailer().open(&out.entry).unwrap().links[0].clone();
    let raw = link.split("#token=").nth(1).unwrap().to_owned();
    let mut r = Browser::default();
    let (s, body) = post(
        &app,
        &mut r,
        "/api/v1/auth/password/reset",
        json!({"token": raw, "password": "a brand new password"}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["mfa_required"], true);
    assert!(!r.has("access_token") && r.has("mfa_pending"));
    advance(&app, 30);
    let (s, _) = verify(&app, &mut r, "totp", &auth.code(step_now(&app))).await;
    assert_eq!(s, 200);
    assert!(r.has("access_token"));
}

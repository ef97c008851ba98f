//! TOTP enrolment and codes: step boundaries, replay, recovery codes, disabling.

use serde_json::json;

use crate::common::assert_problem;
use crate::*;

#[tokio::test]
async fn setup_gives_a_secret_uri_and_an_svg_qr_code_that_confirm_turns_on() {
    let app = app().await;
    let (email, mut b) = signed_up(&app).await;
    let (s, _, h) = call(
        &app,
        &mut b,
        reqwest::Method::POST,
        "/api/v1/auth/mfa/totp/setup",
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(h["cache-control"], "no-store");
    let (s, setup) = post(&app, &mut b, "/api/v1/auth/mfa/totp/setup", json!({})).await;
    assert_eq!(s, 200);
    let secret = setup["secret"].as_str().unwrap();
    assert_eq!(secret.len(), 32, "160 bits in base32");
    let uri = setup["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/localhost:"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    assert!(uri.contains(&email.replace('@', "%40")), "{uri}");
    let svg = setup["qr_svg"].as_str().unwrap();
    assert!(svg.contains("<svg") && !svg.contains("script"), "plain SVG");

    // Not on until confirmed: login is still one step.
    let (_, st, _) = call(&app, &mut b, reqwest::Method::GET, "/api/v1/auth/mfa", None).await;
    assert_eq!(st["totp"], false);
    assert_eq!(st["totp_pending"], true);
    let mut other = Browser::default();
    let (s, body) = post(
        &app,
        &mut other,
        "/api/v1/auth/login",
        json!({"email": email, "password": common::PASSWORD}),
    )
    .await;
    assert_eq!(s, 200);
    assert!(body["user"].is_object() && other.has("access_token"));

    // A wrong code does not confirm; the right one does, with ten recovery codes.
    let auth = Authenticator::from_base32(secret);
    let wrong = format!(
        "{:06}",
        (auth.code(step_now(&app)).parse::<u32>().unwrap() + 1) % 1_000_000
    );
    let res = app
        .http
        .post(app.url("/api/v1/auth/mfa/totp/confirm"))
        .header("cookie", b.header_for("/api/v1/auth/mfa/totp/confirm"))
        .json(&json!({"code": wrong}))
        .send()
        .await
        .unwrap();
    assert_problem(res, 400, "invalid_code").await;
    let (s, done) = post(
        &app,
        &mut b,
        "/api/v1/auth/mfa/totp/confirm",
        json!({"code": auth.code(step_now(&app))}),
    )
    .await;
    assert_eq!(s, 200, "{done}");
    let codes = done["recovery_codes"].as_array().unwrap();
    assert_eq!(codes.len(), 10);
    assert!(codes.iter().all(|c| c.as_str().unwrap().len() == 19));
    let (_, st, _) = call(&app, &mut b, reqwest::Method::GET, "/api/v1/auth/mfa", None).await;
    assert_eq!(st["totp"], true);
    assert_eq!(st["recovery_codes_left"], 10);
    assert_eq!(st["methods"], json!(["totp", "recovery_code"]));

    // A second setup while on is refused (turn it off first).
    let res = app
        .http
        .post(app.url("/api/v1/auth/mfa/totp/setup"))
        .header("cookie", b.header_for("/api/v1/auth/mfa/totp/setup"))
        .send()
        .await
        .unwrap();
    assert_problem(res, 409, "totp_already_enabled").await;

    // The secret is sealed at rest: the stored bytes are not the secret.
    let user = app
        .state
        .store()
        .user_by_email(&latchkey::domain::Email::parse(&email).unwrap())
        .await
        .unwrap()
        .unwrap();
    let rec = app.state.store().totp(user.id).await.unwrap().unwrap();
    let raw = totp_rs::Secret::try_from_base32(secret).unwrap();
    assert!(rec.secret.key_id.is_some());
    assert!(!rec.secret.bytes.windows(20).any(|w| w == raw.as_ref()));
}

#[tokio::test]
async fn codes_one_step_off_are_accepted_two_steps_off_refused_and_no_step_twice() {
    let app = app().await;
    let (email, mut b) = signed_up(&app).await;
    let (auth, _) = enable_totp(&app, &mut b).await;
    let s0 = step_now(&app); // confirm used this step
    advance(&app, 30 * 3); // now s0 + 3

    let mut p = password_step(&app, &email).await;
    for off in [-2i64, 2] {
        let (s, body) = verify(&app, &mut p, "totp", &auth.code(s0 + 3 + off)).await;
        assert_eq!((s, &body["code"]), (400, &json!("invalid_code")), "{off}");
    }
    // +1 step: accepted, signed in.
    let (s, body) = verify(&app, &mut p, "totp", &auth.code(s0 + 4)).await;
    assert_eq!(s, 200, "{body}");
    assert!(p.has("access_token") && p.has("refresh_token") && p.has("device"));
    assert!(!p.has("mfa_pending"), "second-factor cookie cleared");

    // The same step again (another sign-in): refused; so is an earlier step still within
    // the window (only steps after the last used one count).
    let mut p = password_step(&app, &email).await;
    let (s, _) = verify(&app, &mut p, "totp", &auth.code(s0 + 4)).await;
    assert_eq!(s, 400, "replayed step");
    let (s, _) = verify(&app, &mut p, "totp", &auth.code(s0 + 3)).await;
    assert_eq!(s, 400, "a step before the last used one");
    // -1 step is accepted when it is new.
    advance(&app, 90); // now s0 + 6
    let (s, body) = verify(&app, &mut p, "totp", &auth.code(s0 + 5)).await;
    assert_eq!(s, 200, "{body}");

    // The edges of a step: the last millisecond of step n still accepts n + 1, and the first
    // of n + 1 accepts n + 2.
    let now = app.state.config().clock.now_ms();
    let to_end = 30_000 - now.rem_euclid(30_000) - 1;
    app.state.config().clock.advance(to_end);
    let n = step_now(&app);
    let mut p = password_step(&app, &email).await;
    let (s, _) = verify(&app, &mut p, "totp", &auth.code(n + 1)).await;
    assert_eq!(s, 200);
    app.state.config().clock.advance(1);
    let mut p = password_step(&app, &email).await;
    let (s, _) = verify(&app, &mut p, "totp", &auth.code(n + 2)).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn recovery_codes_work_once_in_any_spelling() {
    let app = app().await;
    let (email, mut b) = signed_up(&app).await;
    let (_, codes) = enable_totp(&app, &mut b).await;

    let mut p = password_step(&app, &email).await;
    let (s, body) = verify(&app, &mut p, "recovery_code", &codes[0]).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(access_claims(&p)["amr"], json!(["pwd", "otp", "mfa"]));

    let mut p = password_step(&app, &email).await;
    let (s, body) = verify(&app, &mut p, "recovery_code", &codes[0]).await;
    assert_eq!(
        (s, &body["code"]),
        (400, &json!("invalid_code")),
        "used once"
    );
    // Upper case, spaces for hyphens.
    let spelled = codes[1].to_uppercase().replace('-', " ");
    let (s, _) = verify(&app, &mut p, "recovery_code", &spelled).await;
    assert_eq!(s, 200);

    let (_, st, _) = call(&app, &mut b, reqwest::Method::GET, "/api/v1/auth/mfa", None).await;
    assert_eq!(st["recovery_codes_left"], 8);

    // Regenerating voids the old ones.
    let (s, fresh) = post(&app, &mut b, "/api/v1/auth/mfa/recovery-codes", json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(fresh["recovery_codes"].as_array().unwrap().len(), 10);
    let mut p = password_step(&app, &email).await;
    let (s, _) = verify(&app, &mut p, "recovery_code", &codes[2]).await;
    assert_eq!(s, 400, "old codes are void");
    let (s, _) = verify(
        &app,
        &mut p,
        "recovery_code",
        fresh["recovery_codes"][0].as_str().unwrap(),
    )
    .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn turning_totp_off_makes_login_one_step_and_mails_a_notice() {
    let app = app().await;
    let (email, mut b) = signed_up(&app).await;
    let (_, codes) = enable_totp(&app, &mut b).await;
    let (s, _, _) = call(
        &app,
        &mut b,
        reqwest::Method::DELETE,
        "/api/v1/auth/mfa/totp",
        None,
    )
    .await;
    assert_eq!(s, 204);
    let mail = app.state.store().recent_mail(10).await.unwrap();
    assert!(
        mail.iter().any(|m| m.kind == "mfa_disabled"),
        "notice queued"
    );
    let (s, _, _) = call(
        &app,
        &mut b,
        reqwest::Method::DELETE,
        "/api/v1/auth/mfa/totp",
        None,
    )
    .await;
    assert_eq!(s, 404, "nothing left to turn off");

    let mut again = Browser::default();
    let (s, body) = post(
        &app,
        &mut again,
        "/api/v1/auth/login",
        json!({"email": email, "password": common::PASSWORD}),
    )
    .await;
    assert_eq!(s, 200);
    assert!(body.get("mfa_required").is_none() && again.has("access_token"));
    assert_eq!(access_claims(&again)["amr"], json!(["pwd"]));
    // The recovery codes went with the last factor.
    let (_, st, _) = call(&app, &mut b, reqwest::Method::GET, "/api/v1/auth/mfa", None).await;
    assert_eq!(st["recovery_codes_left"], 0);
    assert!(!codes.is_empty());
}

//! SPEC 5 and 6: sign-in flows, the refresh rule, logout and revocation.

mod common;

#[path = "sessions/generations.rs"]
mod generations;
#[path = "sessions/simulation.rs"]
mod simulation;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn signup_me_refresh_me_logout_me() {
    let app = spawn().await;
    let email = unique_email("flow");
    let res = app.post_json("/api/v1/auth/signup", &json!({"email": format!("  {}  ", email.to_uppercase()), "password": PASSWORD, "name": "Ada"})).await;
    assert_eq!(res.status(), 201);
    let mut jar = Jar::default();
    jar.update(res.headers());
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["user"]["email"], email, "email canonicalised");
    assert_eq!(body["user"]["name"], "Ada");
    assert_eq!(body["user"]["providers"], json!(["password"]));
    assert!(body["access_expires_at"].as_str().is_some());

    let me: Value = app.get("/api/v1/me", &jar).await.json().await.unwrap();
    assert_eq!(me["email"], email);
    for k in [
        "id",
        "email",
        "name",
        "email_verified",
        "created_at",
        "providers",
    ] {
        assert!(me.get(k).is_some(), "{k}");
    }

    let before = jar.clone();
    let (status, body) = app.refresh(&mut jar).await;
    assert_eq!(status, 200);
    assert!(body["access_expires_at"].as_str().is_some());
    assert_ne!(jar.refresh, before.refresh, "refresh rotates");
    assert_ne!(jar.access, before.access);
    assert_eq!(app.me_status(&jar).await, 200);

    let res = app.post("/api/v1/auth/logout", &jar).await;
    assert_eq!(res.status(), 204);
    let old = jar.clone();
    jar.update(res.headers());
    assert!(
        jar.access.is_none() && jar.refresh.is_none(),
        "logout clears both cookies"
    );
    // The access token of the logged-out session is dead at once, though unexpired.
    assert_problem(app.get("/api/v1/me", &old).await, 401, "session_revoked").await;
    assert_problem(app.get("/api/v1/me", &jar).await, 401, "token_missing").await;
    let mut stale = old.clone();
    assert_eq!(app.refresh(&mut stale).await.0, 401);
}

#[tokio::test]
async fn wrong_password_and_unknown_email_answer_identically() {
    let app = spawn().await;
    let email = unique_email("cred");
    app.signup(&email).await;
    let wrong = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": email, "password": "not the password"}),
        )
        .await;
    let unknown = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": unique_email("nobody"), "password": "not the password"}),
        )
        .await;
    let malformed = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": "not-an-email", "password": "not the password"}),
        )
        .await;
    let mut bodies = Vec::new();
    for res in [wrong, unknown, malformed] {
        assert!(res.headers().get("set-cookie").is_none());
        bodies.push(assert_problem(res, 401, "invalid_credentials").await);
    }
    assert_eq!(bodies[0], bodies[1]);
    assert_eq!(bodies[1], bodies[2]);
    // And the right password works, with any casing of the email.
    let ok = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": email.to_uppercase(), "password": PASSWORD}),
        )
        .await;
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn signup_validates_input() {
    let app = spawn().await;
    let email = unique_email("dup");
    app.signup(&email).await;
    assert_problem(
        app.post_json(
            "/api/v1/auth/signup",
            &json!({"email": email.to_uppercase(), "password": PASSWORD}),
        )
        .await,
        409,
        "email_taken",
    )
    .await;
    assert_problem(
        app.post_json(
            "/api/v1/auth/signup",
            &json!({"email": "nope", "password": PASSWORD}),
        )
        .await,
        400,
        "invalid_email",
    )
    .await;
    assert_problem(
        app.post_json(
            "/api/v1/auth/signup",
            &json!({"email": unique_email("w"), "password": "short"}),
        )
        .await,
        400,
        "weak_password",
    )
    .await;
    assert_problem(
        app.post_json(
            "/api/v1/auth/signup",
            &json!({"email": unique_email("w"), "password": "x".repeat(257)}),
        )
        .await,
        400,
        "weak_password",
    )
    .await;
    assert_problem(
        app.post_json("/api/v1/auth/signup", &json!({"email": unique_email("w")}))
            .await,
        400,
        "invalid_request",
    )
    .await;
    assert_problem(
        app.post_json(
            "/api/v1/auth/signup",
            &json!({"email": unique_email("w"), "password": 12345678}),
        )
        .await,
        400,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn logout_is_204_with_no_or_bad_cookies() {
    let app = spawn().await;
    for cookie in [
        "",
        "refresh_token=garbage; access_token=garbage",
        "refresh_token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let res = app
            .http
            .post(app.url("/api/v1/auth/logout"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204, "{cookie:?}");
        assert_eq!(set_cookies(res.headers()).len(), 2, "both cookies cleared");
        assert_eq!(res.headers()["cache-control"], "no-store");
    }
}

#[tokio::test]
async fn logout_with_only_the_refresh_cookie_revokes_the_session() {
    let app = spawn().await;
    let jar = app.signup(&unique_email("lo")).await;
    let only_refresh = Jar {
        access: None,
        refresh: jar.refresh.clone(),
    };
    assert_eq!(
        app.post("/api/v1/auth/logout", &only_refresh)
            .await
            .status(),
        204
    );
    assert_problem(app.get("/api/v1/me", &jar).await, 401, "session_revoked").await;
    let mut j = jar.clone();
    let res = app.post("/api/v1/auth/refresh", &j).await;
    j.update(res.headers());
    assert_problem(res, 401, "session_revoked").await;
}

#[tokio::test]
async fn logout_all_revokes_every_session_of_the_user_only() {
    let app = spawn().await;
    let email = unique_email("all");
    let a = app.signup(&email).await;
    let b = app.login(&email).await;
    let other = app.signup(&unique_email("other")).await;
    assert_problem(
        app.post("/api/v1/auth/logout-all", &Jar::default()).await,
        401,
        "token_missing",
    )
    .await;
    let res = app.post("/api/v1/auth/logout-all", &a).await;
    assert_eq!(res.status(), 204);
    assert_eq!(set_cookies(res.headers()).len(), 2);
    assert_problem(app.get("/api/v1/me", &a).await, 401, "session_revoked").await;
    assert_problem(app.get("/api/v1/me", &b).await, 401, "session_revoked").await;
    let mut b2 = b.clone();
    assert_eq!(app.refresh(&mut b2).await.0, 401);
    assert_eq!(
        app.me_status(&other).await,
        200,
        "another user's session is untouched"
    );
}

#[tokio::test]
async fn sessions_are_listed_and_one_can_be_revoked() {
    let app = spawn().await;
    let email = unique_email("list");
    let a = app.signup(&email).await;
    let b = app.login(&email).await;
    let list: Value = app
        .get("/api/v1/auth/sessions", &a)
        .await
        .json()
        .await
        .unwrap();
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    for s in sessions {
        for k in [
            "id",
            "created_at",
            "last_used_at",
            "user_agent",
            "ip",
            "current",
        ] {
            assert!(s.get(k).is_some(), "{k}");
        }
        assert_eq!(s["ip"], "127.0.0.1");
    }
    let other_id = sessions.iter().find(|s| s["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Another user cannot revoke it.
    let stranger = app.signup(&unique_email("stranger")).await;
    assert_problem(
        app.with_jar(
            reqwest::Method::DELETE,
            &format!("/api/v1/auth/sessions/{other_id}"),
            &stranger,
        )
        .send()
        .await
        .unwrap(),
        404,
        "not_found",
    )
    .await;
    assert_eq!(app.me_status(&b).await, 200);
    let res = app
        .with_jar(
            reqwest::Method::DELETE,
            &format!("/api/v1/auth/sessions/{other_id}"),
            &a,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_problem(app.get("/api/v1/me", &b).await, 401, "session_revoked").await;
    assert_eq!(app.me_status(&a).await, 200);
    let res = app
        .with_jar(
            reqwest::Method::DELETE,
            &format!("/api/v1/auth/sessions/{other_id}"),
            &a,
        )
        .send()
        .await
        .unwrap();
    assert_problem(res, 404, "not_found").await;
    let res = app
        .with_jar(
            reqwest::Method::DELETE,
            "/api/v1/auth/sessions/not-a-uuid",
            &a,
        )
        .send()
        .await
        .unwrap();
    assert_problem(res, 404, "not_found").await;
    let list: Value = app
        .get("/api/v1/auth/sessions", &a)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn refresh_without_or_with_unknown_cookie_is_401_and_clears() {
    let app = spawn().await;
    for (cookie, code) in [
        ("", "refresh_missing"),
        ("refresh_token=short", "refresh_invalid"),
        (
            "refresh_token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "refresh_invalid",
        ),
    ] {
        let res = app
            .http
            .post(app.url("/api/v1/auth/refresh"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        let cleared = set_cookies(res.headers());
        assert_eq!(cleared.len(), 2, "{code}: both cookies cleared");
        assert!(cleared.iter().all(|(_, v, zero)| v.is_empty() && *zero));
        assert_problem(res, 401, code).await;
    }
}

#[tokio::test]
async fn previous_token_within_grace_gets_the_same_session_and_keeps_working() {
    let app = spawn().await;
    let tab_a = app.signup(&unique_email("grace")).await;
    let mut tab_b = tab_a.clone();
    let mut a = tab_a.clone();
    assert_eq!(app.refresh(&mut a).await.0, 200);
    // Tab B presents the token A just rotated: within grace, not theft.
    let (status, _) = app.refresh(&mut tab_b).await;
    assert_eq!(status, 200);
    assert_eq!(
        tab_b.refresh, a.refresh,
        "the racer is handed the session's current token"
    );
    assert_eq!(app.me_status(&tab_b).await, 200);
    // Whichever cookie the jar kept, it keeps working, for both holders, repeatedly.
    assert_eq!(app.refresh(&mut tab_b).await.0, 200);
    assert_eq!(app.refresh(&mut tab_b).await.0, 200);
    assert_eq!(app.me_status(&tab_b).await, 200);
    let list: Value = app
        .get("/api/v1/auth/sessions", &tab_b)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["sessions"].as_array().unwrap().len(),
        1,
        "no second session was created"
    );
}

#[tokio::test]
async fn previous_token_after_grace_is_reuse_and_kills_the_session() {
    let app = spawn_with(|c| c.reuse_grace = Duration::from_millis(300)).await;
    let stolen = app.signup(&unique_email("reuse")).await;
    let mut victim = stolen.clone();
    assert_eq!(app.refresh(&mut victim).await.0, 200);
    assert_eq!(app.me_status(&victim).await, 200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut thief = stolen.clone();
    let res = app.post("/api/v1/auth/refresh", &thief).await;
    thief.update(res.headers());
    assert!(thief.refresh.is_none(), "cookies cleared");
    assert_problem(res, 401, "refresh_reused").await;
    // The whole session is revoked: the victim's live access token and refresh token too.
    assert_problem(app.get("/api/v1/me", &victim).await, 401, "session_revoked").await;
    let res = app.post("/api/v1/auth/refresh", &victim).await;
    assert_problem(res, 401, "session_revoked").await;
}

#[tokio::test]
async fn an_older_retired_token_is_reuse_even_within_grace() {
    let app = spawn().await;
    let t0 = app.signup(&unique_email("old")).await;
    let mut j = t0.clone();
    assert_eq!(app.refresh(&mut j).await.0, 200); // t1
    assert_eq!(app.refresh(&mut j).await.0, 200); // t2: t0 is now older than "previous"
    let mut old = t0.clone();
    let res = app.post("/api/v1/auth/refresh", &old).await;
    old.update(res.headers());
    assert_problem(res, 401, "refresh_reused").await;
    assert_problem(app.get("/api/v1/me", &j).await, 401, "session_revoked").await;
}

#[tokio::test]
async fn fifty_concurrent_refreshes_with_one_token_all_succeed_and_every_cookie_works() {
    let app = std::sync::Arc::new(spawn().await);
    let jar = app.signup(&unique_email("storm")).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let app = app.clone();
        let mut j = jar.clone();
        tasks.push(tokio::spawn(async move {
            let (s, _) = app.refresh(&mut j).await;
            (s, j)
        }));
    }
    let mut jars = Vec::new();
    for t in tasks {
        let (s, j) = t.await.unwrap();
        assert_eq!(s, 200);
        jars.push(j);
    }
    let first = jars[0].refresh.clone();
    assert!(
        jars.iter().all(|j| j.refresh == first),
        "every racer holds the session's one current token"
    );
    for j in &jars {
        assert_eq!(app.me_status(j).await, 200);
    }
    // Each resulting cookie keeps refreshing.
    let mut j = jars.pop().unwrap();
    assert_eq!(app.refresh(&mut j).await.0, 200);
    assert_eq!(app.me_status(&j).await, 200);
}

#[tokio::test]
async fn idle_and_absolute_lifetimes_end_sessions() {
    let app = spawn_with(|c| c.refresh_ttl = Duration::from_secs(1)).await;
    let mut jar = app.signup(&unique_email("idle")).await;
    assert_eq!(
        refresh_cookie_max_age(&app, &jar).await,
        1,
        "Max-Age is the idle lifetime, rounded up"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let res = app.post("/api/v1/auth/refresh", &jar).await;
    jar.update(res.headers());
    assert_problem(res, 401, "refresh_expired").await;

    let app = spawn_with(|c| c.session_max_age = Duration::from_secs(1)).await;
    // A session shorter than the verifier's leeway gets no usable access token at all (its
    // `exp` could not end with the session, SPEC 8); the refresh cookie still works.
    let res = app
        .post_json(
            "/api/v1/auth/signup",
            &json!({"email": unique_email("abs"), "password": PASSWORD}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let mut jar = Jar::default();
    jar.update(res.headers());
    assert!(jar.access.is_none() && jar.refresh.is_some());
    assert_eq!(
        app.refresh(&mut jar).await.0,
        200,
        "refreshing inside the absolute lifetime works"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let res = app.post("/api/v1/auth/refresh", &jar).await;
    assert_problem(res, 401, "refresh_expired").await;
}

/// Max-Age of the refresh cookie a refresh sets (the refresh is within grace, so `jar`
/// stays usable).
async fn refresh_cookie_max_age(app: &TestApp, jar: &Jar) -> u64 {
    let res = app.post("/api/v1/auth/refresh", jar).await;
    let line = set_cookie_lines(res.headers())
        .into_iter()
        .find(|l| l.starts_with("refresh_token="))
        .unwrap();
    line.split("; ")
        .find_map(|a| a.strip_prefix("Max-Age="))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn revocation_made_elsewhere_reaches_this_instance_quickly() {
    let app = spawn().await;
    let jar = app.signup(&unique_email("elsewhere")).await;
    let me: Value = app
        .get("/api/v1/auth/sessions", &jar)
        .await
        .json()
        .await
        .unwrap();
    let sid: latchkey::domain::SessionId =
        me["sessions"][0]["id"].as_str().unwrap().parse().unwrap();
    // As the CLI or another instance would: straight in the store, not through this app.
    assert!(
        app.state
            .store()
            .revoke_session(sid, None, latchkey::clock::now_ms(), "admin", &[])
            .await
            .unwrap()
    );
    let started = std::time::Instant::now();
    loop {
        if app.me_status(&jar).await == 401 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "revocation not seen within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn disabled_users_cannot_log_in() {
    let app = spawn().await;
    let email = unique_email("dis");
    app.signup(&email).await;
    let u = app
        .state
        .store()
        .user_by_email(&latchkey::domain::Email::parse(&email).unwrap())
        .await
        .unwrap()
        .unwrap();
    app.state
        .store()
        .set_user_disabled(u.id, Some(1), &[])
        .await
        .unwrap();
    assert_problem(
        app.post_json(
            "/api/v1/auth/login",
            &json!({"email": email, "password": PASSWORD}),
        )
        .await,
        401,
        "invalid_credentials",
    )
    .await;
}

#[tokio::test]
async fn a_planted_second_refresh_cookie_is_refused_and_logout_signs_out_both() {
    let app = spawn().await;
    let victim = app.signup(&unique_email("victim")).await;
    let attacker = app.signup(&unique_email("attacker")).await;
    let both = format!(
        "refresh_token={}; refresh_token={}",
        attacker.refresh.as_ref().unwrap(),
        victim.refresh.as_ref().unwrap()
    );
    let res = app
        .http
        .post(app.url("/api/v1/auth/refresh"))
        .header("cookie", &both)
        .send()
        .await
        .unwrap();
    assert_eq!(set_cookies(res.headers()).len(), 2, "cleared");
    assert_problem(res, 401, "refresh_invalid").await;
    let res = app
        .http
        .post(app.url("/api/v1/auth/logout"))
        .header("cookie", &both)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_problem(app.get("/api/v1/me", &victim).await, 401, "session_revoked").await;
    assert_problem(
        app.get("/api/v1/me", &attacker).await,
        401,
        "session_revoked",
    )
    .await;
}

#[tokio::test]
async fn pruning_removes_only_dead_sessions() {
    let app = spawn_with(|c| c.refresh_ttl = Duration::from_millis(300)).await;
    let dead = app.signup(&unique_email("dead")).await;
    let mut rotated = dead.clone();
    assert_eq!(app.refresh(&mut rotated).await.0, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let live = app.signup(&unique_email("live")).await;
    let now = latchkey::clock::now_ms();
    assert_eq!(
        app.state.store().prune_sessions(now).await.unwrap(),
        1,
        "the expired session goes"
    );
    assert_eq!(app.me_status(&live).await, 200);
    let mut l = live.clone();
    assert_eq!(app.refresh(&mut l).await.0, 200, "the live one stays");
    let mut d = dead.clone();
    assert_eq!(app.refresh(&mut d).await.0, 401);
}

/// Issue 14: pruning deletes in batches of `PRUNE_BATCH` rows; every dead session of a large
/// prune goes (more than two batches here), and no live one.
#[tokio::test]
async fn pruning_in_batches_removes_every_dead_session_and_no_live_one() {
    use latchkey::session::{self, ClientInfo};
    use latchkey::store::PRUNE_BATCH;
    let app = spawn_with(|c| c.refresh_ttl = Duration::from_millis(500)).await;
    let owner = app.signup(&unique_email("many")).await;
    let me: serde_json::Value = app.get("/api/v1/me", &owner).await.json().await.unwrap();
    let user: latchkey::domain::UserId = me["id"].as_str().unwrap().parse().unwrap();
    let n = 2 * PRUNE_BATCH + 17;
    for _ in 0..n {
        session::start(
            &app.state,
            user,
            latchkey::mfa::Amr::PWD,
            ClientInfo::default(),
        )
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let live = app.signup(&unique_email("live")).await;
    let now = latchkey::clock::now_ms();
    // The owner's signup session expired too: n + 1.
    assert_eq!(
        app.state.store().prune_sessions(now).await.unwrap(),
        n as u64 + 1
    );
    assert_eq!(app.state.store().prune_sessions(now).await.unwrap(), 0);
    let mut l = live.clone();
    assert_eq!(app.refresh(&mut l).await.0, 200, "the live one stays");
}

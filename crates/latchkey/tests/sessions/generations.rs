//! Issue 11, item 0: refresh state is O(1) per session. Tokens carry the session's
//! generation under a server MAC; an older generation is reuse without anything being
//! remembered per rotation. Sessions from before (legacy random tokens) keep working and
//! move over at their next refresh.

use std::time::Duration;

use latchkey::domain::{SessionId, UserId};
use latchkey::store::SessionRecord;
use latchkey::tokens::refresh::{RefreshToken, SessionToken};

use super::common::*;

/// Refreshes `token` through the real session code (no HTTP: 10,000 rotations stay quick).
async fn rotate(app: &TestApp, token: &str) -> Result<String, latchkey::ApiError> {
    use secrecy::ExposeSecret as _;
    latchkey::session::rotation::refresh(&app.state, Some(token))
        .await
        .map(|t| t.refresh_token.expose_secret().to_owned())
}

/// How many rows the database holds for a session beyond its own: retired hashes.
async fn retired_rows(url: &str, sid: SessionId) -> i64 {
    if url.starts_with("sqlite") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        let n: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM retired_tokens WHERE session_id = ?")
            .bind(sid.0.to_string())
            .fetch_one(&pool)
            .await
            .unwrap();
        n.0
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let n: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM retired_tokens WHERE session_id = $1")
            .bind(sid.0)
            .fetch_one(&pool)
            .await
            .unwrap();
        n.0
    }
}

/// A file (not in-memory) SQLite database, or a fresh PostgreSQL one, that a second
/// connection can inspect.
async fn inspectable_app() -> (TestApp, String) {
    let url = match fresh_database_url().await {
        u if u.starts_with("postgres") => u,
        _ => {
            let dir = std::env::temp_dir().join(format!("latchkey-gen-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            format!("sqlite://{}", dir.join("db.sqlite").display())
        }
    };
    let mut config = test_config_on(&url);
    config.rate_limits.refresh_per_session = latchkey::config::Quota {
        burst: 1_000_000,
        period: Duration::from_millis(1),
    };
    (spawn_config(config).await, url)
}

/// 10,000 rotations on SQLite (about 5 s here); on PostgreSQL, where each is a network
/// round trip, 1,000 show the same (no growth past the first rotations) in CI's budget.
#[tokio::test]
async fn ten_thousand_rotations_keep_the_state_constant_and_the_first_token_is_still_reuse() {
    let (app, url) = inspectable_app().await;
    let rotations: i64 = if url.starts_with("sqlite") {
        10_000
    } else {
        1_000
    };
    let jar = app.signup(&unique_email("gen")).await;
    let first = jar.refresh.clone().unwrap();
    let sid = app
        .state
        .store()
        .live_sessions(None, latchkey::clock::now_ms())
        .await
        .unwrap()[0]
        .id;

    let mut token = rotate(&app, &first).await.unwrap();
    let first_rotation = token.clone();
    for _ in 1..3 {
        token = rotate(&app, &token).await.unwrap();
    }
    let after_three = retired_rows(&url, sid).await;
    for _ in 3..rotations {
        token = rotate(&app, &token).await.unwrap();
    }
    let s = app.state.store().session_by_id(sid).await.unwrap().unwrap();
    assert_eq!(s.generation, rotations);
    let rows = retired_rows(&url, sid).await;
    assert!(rows <= 2, "{rows} retired rows after {rotations} rotations");
    assert_eq!(rows, after_three, "no growth after the first rotations");

    // The token of the first rotation, long past its grace, is detected as reuse.
    let mut stale = Jar {
        access: None,
        refresh: Some(first_rotation),
    };
    let (status, body) = app.refresh(&mut stale).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("refresh_reused"))
    );
    let mut newest = Jar {
        access: None,
        refresh: Some(token),
    };
    assert_eq!(
        app.refresh(&mut newest).await.0,
        401,
        "the whole session is revoked"
    );
}

#[tokio::test]
async fn a_forged_or_future_session_token_is_invalid_and_signs_nobody_out() {
    let app = spawn().await;
    let mut jar = app.signup(&unique_email("forge")).await;
    let sid = app
        .state
        .store()
        .live_sessions(None, latchkey::clock::now_ms())
        .await
        .unwrap()[0]
        .id;
    // Knowing a session id (it is in every access token) is not enough to name a token.
    let other_secret = latchkey::tokens::refresh::RefreshSecret::from_bytes(&[9; 32]).unwrap();
    for forged in [
        SessionToken::issue(&other_secret, sid, 0),
        SessionToken::issue(&other_secret, sid, 1),
    ] {
        let mut j = Jar {
            access: None,
            refresh: Some(forged.expose().to_owned()),
        };
        let (status, body) = app.refresh(&mut j).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("refresh_invalid"))
        );
    }
    // A genuine token of a generation the session never reached (a restored backup).
    let ahead = SessionToken::issue(app.state.refresh_secret(), sid, 5);
    let mut j = Jar {
        access: None,
        refresh: Some(ahead.expose().to_owned()),
    };
    let (status, body) = app.refresh(&mut j).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("refresh_invalid"))
    );
    // The session lives on.
    assert_eq!(app.refresh(&mut jar).await.0, 200);
    assert_eq!(app.me_status(&jar).await, 200);
}

/// A session as a version before session tokens left it: a random current token, found by
/// hash, generation 0.
async fn legacy_session(app: &TestApp, user: UserId) -> (SessionId, RefreshToken) {
    let now = latchkey::clock::now_ms();
    let token = RefreshToken::generate();
    let s = SessionRecord {
        id: SessionId::new(),
        user_id: user,
        current_hash: token.hash(),
        previous_hash: None,
        rotated_at: None,
        created_at: now,
        last_used_at: now,
        idle_expires_at: now + 3_600_000,
        absolute_expires_at: now + 7_200_000,
        revoked_at: None,
        user_agent: None,
        ip: None,
        auth_time: now,
        amr: latchkey::mfa::Amr::NONE,
        generation: 0,
    };
    assert!(app.state.store().insert_session(&s, &[]).await.unwrap());
    (s.id, token)
}

#[tokio::test]
async fn sessions_with_legacy_tokens_move_over_without_signing_anyone_out() {
    let app = spawn_with(|c| c.reuse_grace = Duration::from_millis(600)).await;
    let email = unique_email("legacy");
    app.signup(&email).await;
    let user = app
        .state
        .store()
        .user_by_email(&latchkey::domain::Email::parse(&email).unwrap())
        .await
        .unwrap()
        .unwrap()
        .id;
    let (sid, legacy) = legacy_session(&app, user).await;

    // The legacy token refreshes into a session token of generation 1.
    let mut jar = Jar {
        access: None,
        refresh: Some(legacy.expose().to_owned()),
    };
    let (status, _) = app.refresh(&mut jar).await;
    assert_eq!(status, 200);
    let new = jar.refresh.clone().unwrap();
    assert_eq!(new.len(), 75, "a session token: {new}");
    let parsed = SessionToken::parse(&new, app.state.refresh_secret()).unwrap();
    assert_eq!((parsed.sid, parsed.generation), (sid, 1));
    assert_eq!(app.me_status(&jar).await, 200);

    // A legacy session's generation 0 was never a session token: one made for it anyway (only
    // the server could) names no token of the session.
    let (other_sid, _) = legacy_session(&app, user).await;
    let mut made = Jar {
        access: None,
        refresh: Some(
            SessionToken::issue(app.state.refresh_secret(), other_sid, 0)
                .expose()
                .to_owned(),
        ),
    };
    let (status, body) = app.refresh(&mut made).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("refresh_invalid"))
    );

    // A racing tab presenting the legacy token within grace gets the same current token.
    let mut racer = Jar {
        access: None,
        refresh: Some(legacy.expose().to_owned()),
    };
    assert_eq!(app.refresh(&mut racer).await.0, 200);
    assert_eq!(racer.refresh.as_deref(), Some(new.as_str()));

    // Two more rotations, then the legacy token (long retired) is reuse.
    assert_eq!(app.refresh(&mut jar).await.0, 200);
    assert_eq!(app.refresh(&mut jar).await.0, 200);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut stale = Jar {
        access: None,
        refresh: Some(legacy.expose().to_owned()),
    };
    let (status, body) = app.refresh(&mut stale).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("refresh_reused"))
    );
    assert_eq!(app.refresh(&mut jar).await.0, 401, "the session is revoked");
}

//! `GET /api/v1/auth/events`: pages newest first, opaque cursors, the user's own only,
//! refusals as problem+json; and retention.

use latchkey::domain::UserId;
use latchkey::events::{Event, EventKind};
use serde_json::{Value, json};

use crate::common::assert_problem;
use crate::*;

/// The signed-in browser's user id (from `/api/v1/me`).
async fn user_id(app: &TestApp, b: &mut Browser) -> UserId {
    let (s, me) = call(app, b, reqwest::Method::GET, "/api/v1/me", None).await;
    assert_eq!(s, 200);
    me["id"].as_str().unwrap().parse().unwrap()
}

/// Writes `n` numbered events for `user` straight into the store.
async fn seed(app: &TestApp, user: UserId, n: usize, tag: &str) {
    let now = app.state.config().clock.now_ms();
    let events: Vec<Event> = (0..n)
        .map(|i| {
            Event::new(EventKind::LoginFailed, now + i as i64)
                .user(user)
                .with("tag", tag)
                .with("n", i as u64)
        })
        .collect();
    app.state.store().insert_events(&events).await.unwrap();
}

async fn page(app: &TestApp, b: &mut Browser, query: &str) -> (u16, Value) {
    call(
        app,
        b,
        reqwest::Method::GET,
        &format!("/api/v1/auth/events{query}"),
        None,
    )
    .await
}

#[tokio::test]
async fn pages_are_newest_first_without_overlap_and_the_last_has_no_cursor() {
    let app = app().await;
    let (_, mut b) = signed_up(&app).await;
    let me = user_id(&app, &mut b).await;
    seed(&app, me, 23, "mine").await;
    // 23 seeded + signup + login_succeeded = 25: pages of 10, 10, 5.
    let mut seen: Vec<Value> = Vec::new();
    let mut query = "?limit=10".to_owned();
    let mut sizes = Vec::new();
    loop {
        let (s, body) = page(&app, &mut b, &query).await;
        assert_eq!(s, 200, "{body}");
        let events = body["events"].as_array().unwrap();
        sizes.push(events.len());
        seen.extend(events.iter().cloned());
        match body["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(c.len(), 11, "opaque, short");
                query = format!("?limit=10&cursor={c}");
            }
            None => break,
        }
    }
    assert_eq!(sizes, [10, 10, 5]);
    let ns: Vec<u64> = seen
        .iter()
        .filter_map(|e| e["detail"]["n"].as_u64())
        .collect();
    assert_eq!(
        ns,
        (0..23).rev().collect::<Vec<u64>>(),
        "newest first, no overlap"
    );
    assert_eq!(types(&seen[23..]), ["login_succeeded", "signup"]);
    assert!(
        seen.iter()
            .all(|e| e["time"].as_str().unwrap().ends_with('Z'))
    );

    // The default page is 20; exactly `limit` left gives no further cursor.
    let (_, body) = page(&app, &mut b, "").await;
    assert_eq!(body["events"].as_array().unwrap().len(), 20);
    assert!(body["next_cursor"].is_string());
    let (_, body) = page(&app, &mut b, "?limit=25").await;
    assert_eq!(body["events"].as_array().unwrap().len(), 25);
    assert!(body["next_cursor"].is_null());
    let (_, body) = page(&app, &mut b, "?limit=100").await;
    assert!(body["next_cursor"].is_null());
}

#[tokio::test]
async fn a_user_sees_only_their_own_events_whatever_the_cursor() {
    let app = app().await;
    let (_, mut alice) = signed_up(&app).await;
    let (_, mut bob) = signed_up(&app).await;
    let a = user_id(&app, &mut alice).await;
    let bo = user_id(&app, &mut bob).await;
    seed(&app, a, 5, "alice").await;
    seed(&app, bo, 5, "bob").await;
    seed(&app, a, 5, "alice").await;

    let (_, body) = page(&app, &mut alice, "?limit=100").await;
    let mine = body["events"].as_array().unwrap();
    assert_eq!(mine.len(), 12);
    assert!(mine.iter().all(|e| e["detail"]["tag"] != "bob"), "{body}");
    // Bob's sessions never appear in Alice's list.
    let bob_sid = sid_of(&bob);
    assert!(mine.iter().all(|e| e["session_id"] != bob_sid.as_str()));

    // Alice's cursor in Bob's hands pages through Bob's events only.
    let (_, first) = page(&app, &mut alice, "?limit=1").await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let (s, body) = page(&app, &mut bob, &format!("?cursor={cursor}")).await;
    assert_eq!(s, 200);
    let theirs = body["events"].as_array().unwrap();
    assert_eq!(theirs.len(), 7, "{body}");
    assert!(theirs.iter().all(|e| e["detail"]["tag"] != "alice"));
}

#[tokio::test]
async fn bad_parameters_are_400_and_no_session_is_401() {
    let app = app().await;
    let (_, mut b) = signed_up(&app).await;
    for (q, code) in [
        ("?limit=0", "invalid_limit"),
        ("?limit=101", "invalid_limit"),
        ("?limit=ten", "invalid_limit"),
        ("?limit=-3", "invalid_limit"),
        ("?limit=1&limit=2", "invalid_limit"),
        ("?cursor=", "invalid_cursor"),
        ("?cursor=not-a-cursor", "invalid_cursor"),
        ("?cursor=AAAAAAAAAAB", "invalid_cursor"),
        ("?cursor=_AAAAAAAAAA", "invalid_cursor"),
        ("?cursor=%2F%2F%2F%2F", "invalid_cursor"),
    ] {
        let res = app
            .http
            .get(app.url(&format!("/api/v1/auth/events{q}")))
            .header("cookie", b.header_for("/api/v1/auth/events"))
            .send()
            .await
            .unwrap();
        assert_problem(res, 400, code).await;
    }
    // The document's cursor pattern is the one the server accepts, exactly.
    let doc = app.get_json("/api/v1/openapi.json").await;
    let params = doc["paths"]["/api/v1/auth/events"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let cursor = params.iter().find(|p| p["name"] == "cursor").unwrap();
    assert_eq!(
        cursor["schema"]["pattern"],
        latchkey::events::CURSOR_PATTERN
    );

    let (s, _) = page(&app, &mut b, "?unknown=1").await;
    assert_eq!(s, 200, "unknown parameters are ignored");

    let res = app
        .http
        .get(app.url("/api/v1/auth/events"))
        .send()
        .await
        .unwrap();
    assert_problem(res, 401, "token_missing").await;
    // Bearer works like the cookie.
    let token = b.value("access_token").unwrap().to_owned();
    let res = app
        .http
        .get(app.url("/api/v1/auth/events?limit=1"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["events"].as_array().unwrap().len(), 1);
    assert_eq!(body["events"][0]["type"], "login_succeeded");
}

#[tokio::test]
async fn events_older_than_the_retention_are_pruned() {
    let app = app_with(|c| c.events_retention = std::time::Duration::from_secs(3600)).await;
    let (_, mut b) = signed_up(&app).await;
    let me = user_id(&app, &mut b).await;
    let now = app.state.config().clock.now_ms();
    let old = Event::new(EventKind::LoginFailed, now - 2 * 3600 * 1000)
        .user(me)
        .with("age", "old");
    let recent = Event::new(EventKind::LoginFailed, now - 30 * 60 * 1000)
        .user(me)
        .with("age", "recent");
    app.state
        .store()
        .insert_events(&[old, recent])
        .await
        .unwrap();
    assert_eq!(events_of(&app, &mut b).await.len(), 4);

    let pruned = latchkey::events::prune(app.state.store(), app.state.config())
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    let ev = events_of(&app, &mut b).await;
    assert_eq!(ev.len(), 3);
    assert!(ev.iter().all(|e| e["detail"]["age"] != "old"));

    // An hour and a half on, only the sign-up's own events (now 90 minutes old) and the
    // "recent" one (two hours old) have gone too.
    app.state.config().clock.advance(90 * 60 * 1000);
    let pruned = latchkey::events::prune(app.state.store(), app.state.config())
        .await
        .unwrap();
    assert_eq!(pruned, 3);
    assert_eq!(all_stored(&app).await.len(), 0);
    let _ = json!(null);
}

//! The library mounted into a host application: `AuthUser` guards the host's own routes.

mod common;

use axum::extract::{FromRef, State};
use axum::{Router, routing::get};
use common::*;
use latchkey::{AppState, AuthUser};

#[derive(Clone)]
struct Host {
    latchkey: AppState,
    name: &'static str,
}

impl FromRef<Host> for AppState {
    fn from_ref(h: &Host) -> AppState {
        h.latchkey.clone()
    }
}

async fn whoami(State(h): State<Host>, user: AuthUser) -> String {
    format!("{}:{}", h.name, user.user_id)
}

#[tokio::test]
async fn auth_user_protects_a_host_route() {
    let state = AppState::start(test_config().await).await.unwrap();
    let host = Router::new()
        .route("/whoami", get(whoami))
        .with_state(Host {
            latchkey: state.clone(),
            name: "host",
        });
    let app = latchkey::http::router(state.clone()).merge(host);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(latchkey::serve(
        listener,
        app,
        state.serve_options(),
        std::future::pending(),
    ));
    let http = reqwest::Client::new();

    let res = http.get(format!("{base}/whoami")).send().await.unwrap();
    assert_problem(res, 401, "token_missing").await;

    let res = http
        .post(format!("{base}/api/v1/auth/signup"))
        .json(&serde_json::json!({"email": unique_email("host"), "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let mut jar = Jar::default();
    jar.update(res.headers());
    let user: serde_json::Value = res.json().await.unwrap();
    let res = http
        .get(format!("{base}/whoami"))
        .header("cookie", jar.header_for("/whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.text().await.unwrap(),
        format!("host:{}", user["user"]["id"].as_str().unwrap())
    );
}

#[derive(Clone)]
struct Guarded {
    latchkey: AppState,
}

impl FromRef<Guarded> for AppState {
    fn from_ref(h: &Guarded) -> AppState {
        h.latchkey.clone()
    }
}

async fn fresh_only(latchkey::RequireRecentAuth(user): latchkey::RequireRecentAuth) -> String {
    format!("recent:{}", user.user_id)
}

async fn mfa_only(latchkey::RequireMfa(user): latchkey::RequireMfa) -> String {
    format!("mfa:{}", user.claims.amr.join(" "))
}

/// SPEC 11's extractors in a host: `RequireRecentAuth` follows the session's `auth_time`
/// (403 `reauthentication_required` after 10 minutes), `RequireMfa` its `amr`.
#[tokio::test]
async fn recent_auth_and_mfa_extractors_guard_host_routes() {
    let mut config = test_config().await;
    config.clock = latchkey::clock::Clock::manual(latchkey::clock::now_ms());
    let state = AppState::start(config).await.unwrap();
    let host = Router::new()
        .route("/fresh", axum::routing::post(fresh_only))
        .route("/mfa", get(mfa_only))
        .with_state(Guarded {
            latchkey: state.clone(),
        });
    let app = latchkey::http::router(state.clone()).merge(host);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(latchkey::serve(
        listener,
        app,
        state.serve_options(),
        std::future::pending(),
    ));
    let http = reqwest::Client::new();
    let res = http.post(format!("{base}/fresh")).send().await.unwrap();
    assert_problem(res, 401, "token_missing").await;

    let res = http
        .post(format!("{base}/api/v1/auth/signup"))
        .json(&serde_json::json!({"email": unique_email("guard"), "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let mut jar = Jar::default();
    jar.update(res.headers());
    let res = http
        .post(format!("{base}/fresh"))
        .header("cookie", jar.header_for("/fresh"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = http
        .get(format!("{base}/mfa"))
        .header("cookie", jar.header_for("/mfa"))
        .send()
        .await
        .unwrap();
    assert_problem(res, 403, "mfa_required").await;

    state.config().clock.advance(10 * 60 * 1000 + 1000);
    let res = http
        .post(format!("{base}/fresh"))
        .header("cookie", jar.header_for("/fresh"))
        .send()
        .await
        .unwrap();
    assert_problem(res, 403, "reauthentication_required").await;
    let res = http
        .post(format!("{base}/api/v1/auth/reauthenticate"))
        .header("cookie", jar.header_for("/api/v1/auth/reauthenticate"))
        .json(&serde_json::json!({"method": "password", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    jar.update(res.headers());
    let res = http
        .post(format!("{base}/fresh"))
        .header("cookie", jar.header_for("/fresh"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

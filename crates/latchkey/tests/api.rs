//! SPEC 6 (operations): health, readiness, metrics, JWKS, and the OpenAPI document.

mod common;

use common::*;
use serde_json::Value;

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn().await;
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.http
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn openapi_document_is_3_1_and_covers_every_route() {
    let app = spawn().await;
    let doc: Value = app.get_json("/api/v1/openapi.json").await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/auth/signup", "post"),
        ("/api/v1/auth/login", "post"),
        ("/api/v1/auth/refresh", "post"),
        ("/api/v1/auth/logout", "post"),
        ("/api/v1/auth/logout-all", "post"),
        ("/api/v1/auth/sessions", "get"),
        ("/api/v1/auth/sessions/{id}", "delete"),
        ("/api/v1/me", "get"),
        ("/.well-known/jwks.json", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/api/v1/openapi.json", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} documented"
        );
    }
    let text = doc.to_string();
    for code in [
        "invalid_credentials",
        "refresh_reused",
        "session_revoked",
        "rate_limited",
        "cross_origin_rejected",
        "email_taken",
    ] {
        assert!(text.contains(code), "code {code} documented");
    }
}

#[tokio::test]
async fn metrics_count_logins_failures_refreshes_and_latency() {
    let app = spawn().await;
    let email = unique_email("m");
    app.signup(&email).await;
    let mut jar = app.login(&email).await;
    let _ = app
        .post_json(
            "/api/v1/auth/login",
            &serde_json::json!({"email": email, "password": "wrong password"}),
        )
        .await;
    app.refresh(&mut jar).await;
    app.post("/api/v1/auth/logout", &jar).await;
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for m in [
        "latchkey_logins_total",
        "latchkey_login_failures_total",
        "latchkey_refreshes_total",
        "latchkey_revocations_total",
        "latchkey_http_requests_total",
        "latchkey_http_request_duration_seconds",
    ] {
        assert!(text.contains(m), "{m} in /metrics");
    }
}

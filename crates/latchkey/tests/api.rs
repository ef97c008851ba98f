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

/// Issue 11 (schemathesis): the document declares how each operation authenticates — the
/// access cookie or `Authorization: Bearer` for the signed-in ones, the refresh cookie for
/// refresh, optional for logout, nothing for the rest — and the server agrees: each
/// signed-in operation answers 401 `token_missing` without credentials and accepts the
/// access token both ways.
#[tokio::test]
async fn openapi_security_matches_what_the_server_enforces() {
    let app = spawn().await;
    let doc: Value = app.get_json("/api/v1/openapi.json").await;
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["access_cookie"]["type"], "apiKey");
    assert_eq!(schemes["access_cookie"]["in"], "cookie");
    assert_eq!(schemes["access_cookie"]["name"], "access_token");
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["refresh_cookie"]["in"], "cookie");
    assert_eq!(schemes["refresh_cookie"]["name"], "refresh_token");

    let signed_in = [
        ("post", "/api/v1/auth/logout-all"),
        ("get", "/api/v1/auth/sessions"),
        ("delete", "/api/v1/auth/sessions/{id}"),
        ("get", "/api/v1/auth/events"),
        ("get", "/api/v1/me"),
        ("post", "/api/v1/auth/email/verify/send"),
        ("post", "/api/v1/auth/password/change"),
        ("post", "/api/v1/auth/email/change"),
        ("get", "/api/v1/auth/mfa"),
        ("post", "/api/v1/auth/mfa/totp/setup"),
        ("post", "/api/v1/auth/mfa/totp/confirm"),
        ("delete", "/api/v1/auth/mfa/totp"),
        ("post", "/api/v1/auth/mfa/recovery-codes"),
        ("post", "/api/v1/auth/reauthenticate"),
    ];
    let both = serde_json::json!([{"access_cookie": []}, {"bearer": []}]);
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let security = &op["security"];
            match (method.as_str(), path.as_str()) {
                m if signed_in.contains(&m) => assert_eq!(security, &both, "{method} {path}"),
                // The passkey endpoints of a signed-in user (tests/passkeys.rs checks what
                // each answers without credentials); sign-in with a passkey needs none.
                (_, p)
                    if (p.starts_with("/api/v1/auth/passkeys")
                        && !p.starts_with("/api/v1/auth/passkeys/login/"))
                        || p.starts_with("/api/v1/auth/reauthenticate/passkey/") =>
                {
                    assert_eq!(security, &both, "{method} {path}")
                }
                ("post", "/api/v1/auth/refresh") => {
                    assert_eq!(security, &serde_json::json!([{"refresh_cookie": []}]))
                }
                ("post", p)
                    if p == "/api/v1/auth/mfa/verify"
                        || p.starts_with("/api/v1/auth/mfa/passkey/") =>
                {
                    assert_eq!(
                        security,
                        &serde_json::json!([{"mfa_pending_cookie": []}]),
                        "{method} {path}"
                    )
                }
                ("post", "/api/v1/auth/logout") => {
                    let s = security.as_array().unwrap();
                    assert!(
                        s.contains(&serde_json::json!({})),
                        "logout needs no credentials"
                    );
                    assert!(s.contains(&serde_json::json!({"refresh_cookie": []})));
                }
                _ => assert!(security.is_null(), "{method} {path} needs no credentials"),
            }
        }
    }

    let email = unique_email("sec");
    app.signup(&email).await;
    let sid = uuid::Uuid::new_v4().to_string();
    for (method, path) in signed_in {
        let url = app.url(&path.replace("{id}", &sid));
        let method: reqwest::Method = method.to_uppercase().parse().unwrap();
        let send = |auth: Option<(&str, String)>| {
            let mut req = app.http.request(method.clone(), url.clone());
            if path.ends_with("/change") {
                req = req.json(&serde_json::json!({}));
            }
            if let Some((name, value)) = auth {
                req = req.header(name, value);
            }
            req.send()
        };
        assert_problem(send(None).await.unwrap(), 401, "token_missing").await;
        for how in ["cookie", "bearer"] {
            // A session of its own each time: logout-all ends it.
            let token = app.login(&email).await.access.unwrap();
            let auth = match how {
                "cookie" => ("cookie", format!("access_token={token}")),
                _ => ("authorization", format!("Bearer {token}")),
            };
            let status = send(Some(auth)).await.unwrap().status();
            assert_ne!(status, 401, "{method} {path} with the {how}");
            assert!(status.as_u16() < 500, "{method} {path}: {status}");
        }
    }
}

/// Issue 11 (schemathesis): operationIds are unique (links name their target by it; the
/// Google routes had `login` and `callback`, the first shared with password login), and
/// every operation that reads a JSON body documents what the layers in front of its handler
/// answer: 400, 408, 413 and 415 (several documented none of 408/413/415).
#[tokio::test]
async fn openapi_operation_ids_are_unique_and_json_bodies_document_transport_errors() {
    let app = spawn().await;
    let doc: Value = app.get_json("/api/v1/openapi.json").await;
    let mut ids = std::collections::HashSet::new();
    let mut bodies = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap();
            assert!(ids.insert(id.to_owned()), "operationId {id} twice");
            if op.get("requestBody").is_none() {
                continue;
            }
            bodies += 1;
            for status in ["400", "408", "413", "415"] {
                let r = &op["responses"][status];
                assert!(
                    r["content"]["application/problem+json"].is_object(),
                    "{method} {path} documents {status} as problem+json"
                );
            }
        }
    }
    assert!(bodies >= 8, "{bodies} operations with a JSON body");
    // And the server does answer them so: an unsupported body type on each.
    for path in [
        "/api/v1/auth/email/verify",
        "/api/v1/auth/email/change/confirm",
        "/api/v1/auth/password/forgot",
        "/api/v1/auth/password/reset",
    ] {
        let res = app
            .http
            .post(app.url(path))
            .body("token=x")
            .send()
            .await
            .unwrap();
        assert_problem(res, 415, "unsupported_media_type").await;
    }
}

/// Issue 11 (schemathesis): the constraints the server enforces are in the document, so a
/// request valid by the document is never refused as malformed — mail tokens are exactly 43
/// base64url characters, session ids are UUIDs, and the signup `name` pattern matches the
/// names signup accepts (schemathesis found names with a format character, valid by the
/// old document, refused with 400).
#[tokio::test]
async fn openapi_carries_token_session_id_and_name_constraints() {
    let app = spawn().await;
    let doc: Value = app.get_json("/api/v1/openapi.json").await;
    let schemas = &doc["components"]["schemas"];
    for (schema, field) in [("TokenRequest", "token"), ("ResetRequest", "token")] {
        let t = &schemas[schema]["properties"][field];
        assert_eq!(t["pattern"], "^[A-Za-z0-9_-]{43}$", "{schema}.{field}");
        assert_eq!(t["minLength"], 43);
        assert_eq!(t["maxLength"], 43);
    }
    let id = &doc["paths"]["/api/v1/auth/sessions/{id}"]["delete"]["parameters"][0];
    assert_eq!(id["schema"]["format"], "uuid");

    let name = &schemas["SignupRequest"]["properties"]["name"];
    assert_eq!(
        name["pattern"].as_str().unwrap(),
        latchkey::domain::DisplayName::json_schema_pattern()
    );
    // What the server says about names the pattern accepts and refuses (the pattern itself
    // is checked against every character in domain.rs's unit tests).
    for (name, accepted) in [
        ("  Ada Lovelace \t", true),
        ("👩\u{200D}💻", true),
        ("evil\u{202E}gnp", false),
        ("soft\u{00AD}hyphen", false),
        ("line\u{2028}break", false),
        ("tab\tinside", false),
    ] {
        let res = app
            .post_json(
                "/api/v1/auth/signup",
                &serde_json::json!({"email": unique_email("name"), "password": PASSWORD, "name": name}),
            )
            .await;
        assert_eq!(res.status() == 201, accepted, "{name:?}: {}", res.status());
    }
}

//! `http::extract::ApiJson`: the JSON request body of every endpoint that takes one.
//!
//! Input: line 1 the request type (`signup`, `login`, `token`, `forgot`, `reset`,
//! `change_password`, `change_email`; anything else picks one by its length), line 2 the
//! `Content-Type` (empty: none), then the body.
//! Properties: a refusal is a 4xx problem+json with a `code` — 415 exactly when the
//! content type is not JSON, 400 when the body is not JSON; a body that is accepted goes
//! through the handler's own checks (`Email::parse`, `Password::parse`, `DisplayName::parse`)
//! without a panic.

use axum::body::Body;
use axum::extract::FromRequest;
use axum::http::{Request, StatusCode, header};
use axum::response::IntoResponse;
use latchkey::ApiError;
use latchkey::domain::{DisplayName, Email, Password};
use latchkey::http::auth::{LoginRequest, SignupRequest};
use latchkey::http::email::{
    ChangeEmailRequest, ChangePasswordRequest, ForgotRequest, ResetRequest, TokenRequest,
};
use latchkey::http::extract::ApiJson;
use latchkey::tokens::refresh::RefreshToken;

const TYPES: &[&str] = &[
    "signup",
    "login",
    "token",
    "forgot",
    "reset",
    "change_password",
    "change_email",
];

fn is_json(ct: &[u8]) -> bool {
    // A header value is text only when it is visible ASCII (`HeaderValue::to_str`).
    if !ct.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) {
        return false;
    }
    let ct = std::str::from_utf8(ct).expect("ASCII");
    let m = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
}

fn check_refusal(e: ApiError, json_type: bool, body: &[u8]) {
    let res = e.into_response();
    let status = res.status();
    assert!(status.is_client_error(), "{status}");
    assert_eq!(
        res.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    let bytes = futures::executor::block_on(axum::body::to_bytes(res.into_body(), 1 << 20))
        .expect("a body");
    let p: serde_json::Value = serde_json::from_slice(&bytes).expect("problem JSON");
    assert!(p["code"].is_string(), "{p}");
    if !json_type {
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    } else if serde_json::from_slice::<serde_json::Value>(body).is_err() {
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}

fn extract<T: serde::de::DeserializeOwned>(ct: &[u8], body: &[u8]) -> Option<T> {
    let mut req = Request::builder().method("POST").uri("/api/v1/auth/x");
    let mut json_type = false;
    if !ct.is_empty()
        && let Ok(v) = axum::http::HeaderValue::from_bytes(ct)
    {
        json_type = is_json(ct);
        req = req.header(header::CONTENT_TYPE, v);
    }
    let req = req.body(Body::from(body.to_vec())).expect("a request");
    match futures::executor::block_on(ApiJson::<T>::from_request(req, &())) {
        Ok(ApiJson(v)) => {
            assert!(json_type, "accepted without a JSON content type");
            Some(v)
        }
        Err(e) => {
            check_refusal(e, json_type, body);
            None
        }
    }
}

fn email(s: &str) {
    let _ = Email::parse(s);
}

fn password(s: String) {
    let _ = Password::parse(s);
}

fn token(s: &str) {
    let _ = RefreshToken::parse(s);
}

pub fn run(data: &[u8]) {
    let (kind, rest) = super::first_line(data);
    let (ct, body) = super::first_line(rest);
    let kind = TYPES
        .iter()
        .position(|t| t.as_bytes() == kind)
        .unwrap_or(kind.len() % TYPES.len());
    match kind {
        0 => {
            if let Some(r) = extract::<SignupRequest>(ct, body) {
                email(&r.email);
                password(r.password);
                if let Some(n) = r.name {
                    let _ = DisplayName::parse(&n);
                }
            }
        }
        1 => {
            if let Some(r) = extract::<LoginRequest>(ct, body) {
                email(&r.email);
                password(r.password);
            }
        }
        2 => {
            if let Some(r) = extract::<TokenRequest>(ct, body) {
                token(&r.token);
            }
        }
        3 => {
            if let Some(r) = extract::<ForgotRequest>(ct, body) {
                email(&r.email);
            }
        }
        4 => {
            if let Some(r) = extract::<ResetRequest>(ct, body) {
                token(&r.token);
                password(r.password);
            }
        }
        5 => {
            if let Some(r) = extract::<ChangePasswordRequest>(ct, body) {
                password(r.current_password);
                password(r.new_password);
            }
        }
        _ => {
            if let Some(r) = extract::<ChangeEmailRequest>(ct, body) {
                email(&r.new_email);
                password(r.password);
            }
        }
    }
}

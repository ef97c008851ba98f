//! The cross-origin check of SPEC 7 — the only place it lives.
//!
//! Unsafe methods are refused with 403 `cross_origin_rejected` when `Sec-Fetch-Site` is
//! present and is neither `same-origin` nor `none`; without it, when `Origin` is present and
//! not a trusted origin. Requests with neither header (curl, servers) pass. A request that
//! authenticates with a Bearer token passes too (a browser cannot attach one cross-site
//! without CORS, which latchkey does not grant) — but only where the Bearer token is what
//! authenticates it (SPEC 8): refresh, logout, login and signup act on cookies or on a
//! password, so a Bearer header changes nothing there and they are always checked.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::http::extract::has_bearer;
use crate::state::AppState;

/// Whether a Bearer token is what authenticates a request to `path`. Under
/// `/api/v1/auth/` only the endpoints that act on the caller's access-token identity
/// qualify; everything else there acts on cookies or on a body. Paths outside it (a host
/// application's own API) authenticate with the Bearer token when one is sent.
fn bearer_authenticates(path: &str) -> bool {
    match path.strip_prefix("/api/v1/auth/") {
        Some(rest) => rest == "logout-all" || rest == "sessions" || rest.starts_with("sessions/"),
        None => true,
    }
}

/// The decision, separate from the middleware so it can be tested as a table.
pub fn allowed(method: &Method, path: &str, headers: &HeaderMap, trusted: &[String]) -> bool {
    if !matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) || (has_bearer(headers) && bearer_authenticates(path))
    {
        return true;
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        return matches!(site.to_str(), Ok("same-origin") | Ok("none"));
    }
    match headers.get(axum::http::header::ORIGIN) {
        None => true,
        Some(o) => o
            .to_str()
            .is_ok_and(|o| trusted.iter().any(|t| t.eq_ignore_ascii_case(o))),
    }
}

pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if allowed(
        req.method(),
        req.uri().path(),
        req.headers(),
        &state.config().allowed_origins,
    ) {
        next.run(req).await
    } else {
        ApiError::CrossOriginRejected.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn matrix() {
        let trusted = vec![
            "http://localhost:8080".to_owned(),
            "https://app.example".to_owned(),
        ];
        type Case<'a> = (Method, &'a [(&'a str, &'a str)], bool);
        let cases: &[Case] = &[
            (Method::GET, &[("sec-fetch-site", "cross-site")], true),
            (Method::POST, &[], true),
            (Method::POST, &[("sec-fetch-site", "same-origin")], true),
            (Method::POST, &[("sec-fetch-site", "none")], true),
            (Method::POST, &[("sec-fetch-site", "same-site")], false),
            (Method::POST, &[("sec-fetch-site", "cross-site")], false),
            (
                Method::DELETE,
                &[
                    ("sec-fetch-site", "cross-site"),
                    ("origin", "http://localhost:8080"),
                ],
                false,
            ),
            (Method::POST, &[("origin", "http://localhost:8080")], true),
            (Method::PUT, &[("origin", "https://app.example")], true),
            (Method::PATCH, &[("origin", "https://evil.example")], false),
            (Method::POST, &[("origin", "null")], false),
            (
                Method::POST,
                &[
                    ("origin", "https://evil.example"),
                    ("authorization", "Bearer x"),
                ],
                true,
            ),
        ];
        for (m, hs, want) in cases {
            assert_eq!(
                allowed(m, "/api/v1/auth/logout-all", &h(hs), &trusted),
                *want,
                "{m} {hs:?}"
            );
        }
    }

    /// Finding 10 (issue 9): a Bearer header exempts only requests it authenticates.
    #[test]
    fn finding_10_bearer_exempts_only_where_it_authenticates() {
        let trusted = vec!["http://localhost:8080".to_owned()];
        let cross =
            |auth: &'static str| h(&[("origin", "https://evil.example"), ("authorization", auth)]);
        for path in [
            "/api/v1/auth/refresh",
            "/api/v1/auth/logout",
            "/api/v1/auth/login",
            "/api/v1/auth/signup",
            "/api/v1/auth/google/callback",
        ] {
            assert!(
                !allowed(&Method::POST, path, &cross("Bearer x"), &trusted),
                "{path}: cookies act here, a Bearer header exempts nothing"
            );
        }
        for path in [
            "/api/v1/auth/logout-all",
            "/api/v1/auth/sessions/0190",
            "/api/app/orders",
        ] {
            assert!(
                allowed(&Method::POST, path, &cross("Bearer x"), &trusted),
                "{path}"
            );
            for empty in ["Bearer", "Bearer ", "Bearer    ", "Basic abc"] {
                assert!(
                    !allowed(&Method::POST, path, &cross(empty), &trusted),
                    "{path} {empty:?}: no Bearer token, no exemption"
                );
            }
        }
    }
}

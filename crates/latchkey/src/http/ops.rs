//! Operational endpoints: health, readiness, metrics, JWKS, OpenAPI.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, Problem};
use crate::state::AppState;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "Alive", body = serde_json::Value)))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses(
    (status = 200, description = "Ready", body = serde_json::Value),
    (status = 503, description = "`unavailable`: the database does not answer", body = Problem, content_type = "application/problem+json"),
))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    match tokio::time::timeout(std::time::Duration::from_secs(2), state.store().ping()).await {
        Ok(Ok(())) => Ok(Json(serde_json::json!({ "status": "ready" }))),
        Ok(Err(e)) => Err(ApiError::Unavailable(Box::new(e))),
        Err(_) => Err(ApiError::Unavailable("database ping timed out".into())),
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.metrics().render();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        body,
    )
        .into_response()
}

/// The public signing keys, for services that verify access tokens themselves.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "ops", responses((status = 200, description = "JWK set (Ed25519, `alg: EdDSA`)", body = serde_json::Value)))]
pub async fn jwks(State(state): State<AppState>) -> Response {
    let set = state.keys().current().jwks.clone();
    let max_age = format!("public, max-age={}", state.config().jwks_max_age.as_secs());
    (
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_str(&max_age).unwrap_or(HeaderValue::from_static("no-store")),
        )],
        Json(set),
    )
        .into_response()
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "ops", responses((status = 200, description = "OpenAPI 3.1 document", body = serde_json::Value)))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::http::openapi::document())
}

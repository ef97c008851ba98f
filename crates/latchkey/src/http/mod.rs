//! The HTTP surface: router, extractors, the origin check, layers, and handlers by resource.

pub mod auth;
pub mod dev_mail;
pub mod email;
pub mod events;
pub mod extract;
pub mod mfa;
pub mod middleware;
pub mod oidc;
pub mod openapi;
pub mod ops;
pub mod origin;
pub mod passkeys;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};

use crate::error::ApiError;
use crate::state::AppState;

/// latchkey's routes, without state or layers — merge them into a larger router and pass
/// the result to [`app`].
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/signup", post(auth::signup))
        .route("/api/v1/auth/login", post(auth::login))
        .route("/api/v1/auth/refresh", post(auth::refresh))
        .route("/api/v1/auth/logout", post(auth::logout))
        .route("/api/v1/auth/logout-all", post(auth::logout_all))
        .route("/api/v1/auth/sessions", get(auth::list_sessions))
        .route("/api/v1/auth/sessions/{id}", delete(auth::delete_session))
        .route("/api/v1/auth/events", get(events::list))
        .route(
            "/api/v1/auth/email/verify/send",
            post(email::send_verification),
        )
        .route("/api/v1/auth/email/verify", post(email::verify))
        .route("/api/v1/auth/email/change", post(email::change_email))
        .route(
            "/api/v1/auth/email/change/confirm",
            post(email::confirm_email_change),
        )
        .route("/api/v1/auth/password/forgot", post(email::forgot))
        .route("/api/v1/auth/password/reset", post(email::reset))
        .route("/api/v1/auth/password/change", post(email::change_password))
        .route(
            "/api/v1/auth/passkeys/register/start",
            post(passkeys::register_start),
        )
        .route(
            "/api/v1/auth/passkeys/register/finish",
            post(passkeys::register_finish),
        )
        .route(
            "/api/v1/auth/passkeys/login/start",
            post(passkeys::login_start),
        )
        .route(
            "/api/v1/auth/passkeys/login/finish",
            post(passkeys::login_finish),
        )
        .route("/api/v1/auth/passkeys", get(passkeys::list))
        .route(
            "/api/v1/auth/passkeys/{id}",
            axum::routing::patch(passkeys::rename).delete(passkeys::remove),
        )
        .route(
            "/api/v1/auth/mfa/passkey/start",
            post(passkeys::second_factor_start),
        )
        .route(
            "/api/v1/auth/mfa/passkey/finish",
            post(passkeys::second_factor_finish),
        )
        .route(
            "/api/v1/auth/reauthenticate/passkey/start",
            post(passkeys::reauthenticate_start),
        )
        .route(
            "/api/v1/auth/reauthenticate/passkey/finish",
            post(passkeys::reauthenticate_finish),
        )
        // Second factors and recent authentication (SPEC 11).
        .route("/api/v1/auth/mfa", get(mfa::status))
        .route("/api/v1/auth/mfa/totp/setup", post(mfa::totp_setup))
        .route("/api/v1/auth/mfa/totp/confirm", post(mfa::totp_confirm))
        .route("/api/v1/auth/mfa/totp", delete(mfa::totp_disable))
        .route(
            "/api/v1/auth/mfa/recovery-codes",
            post(mfa::regenerate_recovery_codes),
        )
        .route("/api/v1/auth/mfa/verify", post(mfa::verify))
        .route("/api/v1/auth/reauthenticate", post(mfa::reauthenticate))
        .route("/dev/mail", get(dev_mail::page))
        .route("/api/v1/auth/google/login", get(oidc::google_login))
        .route("/api/v1/auth/google/callback", get(oidc::google_callback))
        .route("/api/v1/auth/oidc/{name}/login", get(oidc::oidc_login))
        .route(
            "/api/v1/auth/oidc/{name}/callback",
            get(oidc::oidc_callback),
        )
        .route("/api/v1/me", get(auth::me))
        .route("/.well-known/jwks.json", get(ops::jwks))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/api/v1/openapi.json", get(ops::openapi))
}

/// The complete application: latchkey's routes plus `extra` (pages, a host's own routes),
/// with problem+json fallbacks, the origin check, the body limit, security headers and
/// metrics applied to all of them.
pub fn app(state: AppState, extra: Router<AppState>) -> Router {
    routes()
        .merge(extra)
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            origin::layer,
        ))
        .layer(DefaultBodyLimit::max(middleware::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(middleware::body_limit))
        .layer(axum::middleware::from_fn(middleware::observe))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::security_headers,
        ))
        .with_state(state)
}

/// [`app`] with no extra routes.
pub fn router(state: AppState) -> Router {
    app(state, Router::new())
}

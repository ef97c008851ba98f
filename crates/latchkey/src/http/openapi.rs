//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use utoipa::OpenApi;

use crate::error::Problem;
use crate::http::{auth, email, google, ops};

#[derive(OpenApi)]
#[openapi(
    info(title = "latchkey", description = "Self-hosted authentication: password sign-in, EdDSA access cookies, rotating refresh cookies. Every error is `application/problem+json` with a stable `code`; every 401 carries `WWW-Authenticate: Bearer realm=\"latchkey\"`."),
    paths(
        auth::signup, auth::login, auth::refresh, auth::logout, auth::logout_all,
        auth::list_sessions, auth::delete_session, auth::me,
        email::send_verification, email::verify, email::forgot, email::reset,
        email::change_password, email::change_email, email::confirm_email_change,
        google::login, google::callback,
        ops::jwks, ops::healthz, ops::readyz, ops::metrics, ops::openapi,
    ),
    components(schemas(Problem, auth::SignupRequest, auth::LoginRequest, auth::UserView, auth::AuthResponse, auth::RefreshResponse, auth::SessionView, auth::SessionList, auth::SignupResponse, email::TokenRequest, email::ForgotRequest, email::ResetRequest, email::ChangePasswordRequest, email::ChangeEmailRequest, email::UserResponse, email::Accepted)),
    tags((name = "auth"), (name = "email"), (name = "sessions"), (name = "users"), (name = "ops")),
)]
struct ApiDoc;

/// The document served at `/api/v1/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

//! The OpenAPI 3.1 document, generated from the handlers' annotations.
//!
//! Two modifiers complete what the annotations say per handler: the security schemes
//! (the access cookie, `Authorization: Bearer`, and the refresh cookie), and the answers
//! the transport layers give to any operation with a JSON body (408, 413, 415), so the
//! document lists every status a client can receive (`scripts/schemathesis.sh` checks it).

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::error::{PROBLEM_JSON, Problem};
use crate::http::{auth, email, events, mfa, oidc, ops, passkeys};

/// Security scheme names, used in the handlers' `security(...)` annotations.
pub const ACCESS_COOKIE: &str = "access_cookie";
pub const BEARER: &str = "bearer";
pub const REFRESH_COOKIE: &str = "refresh_cookie";
pub const MFA_PENDING_COOKIE: &str = "mfa_pending_cookie";

#[derive(OpenApi)]
#[openapi(
    info(title = "latchkey", description = "Self-hosted authentication: password sign-in, EdDSA access cookies, rotating refresh cookies. Every error is `application/problem+json` with a stable `code`; every 401 carries `WWW-Authenticate: Bearer realm=\"latchkey\"`. Signed-in operations accept the access token either as the access cookie (browsers) or as `Authorization: Bearer` (other clients)."),
    paths(
        auth::signup, auth::login, auth::refresh, auth::logout, auth::logout_all,
        auth::list_sessions, auth::delete_session, auth::me, events::list,
        email::send_verification, email::verify, email::forgot, email::reset,
        email::change_password, email::change_email, email::confirm_email_change,
        oidc::google_login, oidc::google_callback, oidc::oidc_login, oidc::oidc_callback,
        passkeys::register_start, passkeys::register_finish, passkeys::login_start,
        passkeys::login_finish, passkeys::list, passkeys::rename, passkeys::remove,
        passkeys::second_factor_start, passkeys::second_factor_finish,
        passkeys::reauthenticate_start, passkeys::reauthenticate_finish,
        mfa::status, mfa::totp_setup, mfa::totp_confirm, mfa::totp_disable,
        mfa::regenerate_recovery_codes, mfa::verify, mfa::reauthenticate,
        ops::jwks, ops::healthz, ops::readyz, ops::metrics, ops::openapi,
    ),
    components(schemas(Problem, auth::SignupRequest, auth::LoginRequest, auth::UserView, auth::AuthResponse, auth::RefreshResponse, auth::SessionView, auth::SessionList, auth::SignupResponse, email::TokenRequest, email::ForgotRequest, email::ResetRequest, email::ChangePasswordRequest, email::ChangeEmailRequest, email::UserResponse, email::Accepted, mfa::MfaRequiredResponse, mfa::LoginResponse, mfa::TotpSetupResponse, mfa::CodeRequest, mfa::RecoveryCodesResponse, mfa::MfaStatus, mfa::VerifyMethod, mfa::VerifyRequest, mfa::ReauthRequest, mfa::ReauthResponse, passkeys::CeremonyStarted, passkeys::RegisterFinishRequest, passkeys::LoginFinishRequest, passkeys::RenameRequest, passkeys::PasskeyView, passkeys::PasskeyResponse, passkeys::PasskeyList, events::EventView, events::EventPage)),
    modifiers(&SecuritySchemes, &BodyTransportResponses),
    tags((name = "auth"), (name = "email"), (name = "sessions"), (name = "users"), (name = "mfa"), (name = "passkeys"), (name = "events"), (name = "ops")),
)]
struct ApiDoc;

/// The access cookie, Bearer, and the refresh cookie (SPEC 3, 4).
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            ACCESS_COOKIE,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "access_token",
                "The access token (an EdDSA JWT) in the access cookie set by signup, login, \
                 refresh and password reset. In production the cookie is named \
                 `__Host-access_token`.",
            ))),
        );
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "The same access token, for non-browser clients; it wins over the cookie.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            REFRESH_COOKIE,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "refresh_token",
                "The opaque refresh token (43 base64url characters) in the refresh cookie, sent \
                 only to `/api/v1/auth`. In production the cookie is named \
                 `__Secure-refresh_token`.",
            ))),
        );
        components.add_security_scheme(
            MFA_PENDING_COOKIE,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "mfa_pending",
                "The second-factor cookie set by a login whose answer was `mfa_required`: an \
                 opaque token naming the pending sign-in (5 minutes), sent only to \
                 `/api/v1/auth/mfa`. In production the cookie is named `__Secure-mfa_pending`.",
            ))),
        );
    }
}

/// What the layers in front of a JSON handler answer, whichever operation it is: 408 (the
/// body was too slow, `server.rs`), 413 (over 16 KiB) and 415 (not JSON, `ApiJson`).
struct BodyTransportResponses;

impl Modify for BodyTransportResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let problem = || {
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "Problem",
                ))))
                .build()
        };
        let answers = [
            (
                "408",
                "`request_timeout`: the body did not arrive within 10 s of the headers",
            ),
            ("413", "`payload_too_large`: the body is over 16 KiB"),
            (
                "415",
                "`unsupported_media_type`: the body is not `application/json`",
            ),
        ];
        for item in openapi.paths.paths.values_mut() {
            for op in [
                item.get.as_mut(),
                item.post.as_mut(),
                item.put.as_mut(),
                item.patch.as_mut(),
                item.delete.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                if op.request_body.is_none() {
                    continue;
                }
                for (status, description) in answers {
                    op.responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| {
                            ResponseBuilder::new()
                                .description(description)
                                .content(PROBLEM_JSON, problem())
                                .build()
                                .into()
                        });
                }
            }
        }
    }
}

/// The document served at `/api/v1/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

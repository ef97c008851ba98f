//! The one error type of the HTTP API and its mapping to RFC 9457 problem+json.
//!
//! Each variant has a stable `code` (documented in the README and the OpenAPI document).
//! Clients decide on the status; the code says why.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// Every failure a client can see.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("The request is malformed: {0}")]
    InvalidRequest(String),
    #[error("The email address is not valid.")]
    InvalidEmail,
    #[error("{0}")]
    WeakPassword(String),
    #[error("An account with this email already exists.")]
    EmailTaken,
    #[error("Too many requests; retry later.")]
    RateLimited { retry_after_secs: u64 },
    #[error("Email or password is incorrect.")]
    InvalidCredentials,
    #[error("No refresh token was sent.")]
    RefreshMissing,
    #[error("The refresh token is not valid.")]
    RefreshInvalid,
    #[error("The session has expired.")]
    RefreshExpired,
    #[error("The refresh token was already used; the session has been revoked.")]
    RefreshReused,
    #[error("The session has been revoked.")]
    SessionRevoked,
    #[error("No access token was sent.")]
    TokenMissing,
    #[error("The access token has expired.")]
    TokenExpired,
    #[error("The access token is not valid.")]
    TokenInvalid,
    #[error("Not found.")]
    NotFound,
    #[error("This sign-in provider is not configured.")]
    ProviderNotConfigured,
    #[error("Cross-origin request refused.")]
    CrossOriginRejected,
    #[error("The request body is too large.")]
    PayloadTooLarge,
    #[error("The request body must be application/json.")]
    UnsupportedMediaType,
    #[error("Method not allowed.")]
    MethodNotAllowed,
    #[error("The request body did not arrive in time.")]
    RequestTimeout,
    /// A mail token (verification, reset, address change) that is unknown, used, expired,
    /// for another purpose or no longer matches the account (SPEC 10). A 400, unlike the
    /// access token's 401 `token_invalid`.
    #[error("The link is invalid, already used or expired.")]
    LinkInvalid,
    /// `limit` of a list (SPEC 12's events) is not a whole number from 1 to 100.
    #[error("limit must be a whole number from 1 to 100.")]
    InvalidLimit,
    /// A list `cursor` that this server did not hand out.
    #[error("The cursor is not valid.")]
    InvalidCursor,
    #[error("The email address is already verified.")]
    AlreadyVerified,
    #[error("Mail is not configured on this server.")]
    MailNotConfigured,
    /// A signed-in user's wrong password (SPEC 10: 403, never 401 — a 401 means "your
    /// session is gone" to every client).
    #[error("The password is incorrect.")]
    WrongPassword,
    #[error("Sign in again to do this: the last sign-in is too long ago.")]
    ReauthenticationRequired,
    #[error("Verify your email address first: open the link we sent you.")]
    EmailUnverified,
    /// A WebAuthn response that does not verify: malformed, signed over another challenge,
    /// for another origin or relying party, without user verification, a signature that
    /// fails, or a signature counter that went backwards (a cloned authenticator).
    #[error("The passkey response could not be verified.")]
    PasskeyInvalid,
    /// The ceremony id is unknown, already used, expired, or of another ceremony.
    #[error("The passkey request expired or was already used; start again.")]
    PasskeyChallengeExpired,
    /// A sign-in with a passkey this service does not know (removed, or never registered).
    #[error("This passkey is not registered here.")]
    PasskeyUnknown,
    #[error("This passkey is already registered.")]
    PasskeyExists,
    /// Removing it would leave the account with no way to sign in.
    #[error("This is the account's last way to sign in; add another before removing it.")]
    LastSignInMethod,
    /// `PUBLIC_URL`'s host is not a domain name (e.g. an IP address), which WebAuthn needs.
    #[error("Passkeys are not available on this server.")]
    PasskeysNotConfigured,
    /// A wrong, malformed-for-the-factor or replayed second-factor code (SPEC 11: 400,
    /// never 401).
    #[error("The code is not valid.")]
    InvalidCode,
    /// The pending sign-in (second-factor cookie) is missing, expired, used, or out of
    /// attempts: sign in again.
    #[error("The sign-in has expired; enter your password again.")]
    MfaExpired,
    /// A signed-in user's wrong second-factor code where a password would be
    /// `invalid_credentials` too (reauthentication).
    #[error("The code is incorrect.")]
    WrongCode,
    /// The route needs a session that signed in with two factors (`RequireMfa`).
    #[error("This needs a sign-in with a second factor.")]
    MfaRequired,
    /// TOTP is already on (turn it off first to set up a new one).
    #[error("An authenticator app is already set up.")]
    TotpAlreadyEnabled,
    #[error("The service is temporarily unavailable.")]
    Unavailable(#[source] BoxError),
    /// The password-hashing queue is full (SPEC 8).
    #[error("Too many sign-ins in progress; retry shortly.")]
    Overloaded { retry_after_secs: u64 },
    #[error("Internal error.")]
    Internal(#[source] BoxError),
}

/// A boxed error source, so the enum stays `Send + Sync` without another dependency.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The problem+json body (RFC 9457) with latchkey's stable `code`.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct Problem {
    /// Always `about:blank`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// Stable machine-readable reason, e.g. `token_expired`.
    pub code: String,
}

impl ApiError {
    pub fn internal(e: impl Into<BoxError>) -> Self {
        Self::Internal(e.into())
    }

    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            InvalidRequest(_)
            | InvalidEmail
            | WeakPassword(_)
            | LinkInvalid
            | InvalidLimit
            | InvalidCursor
            | InvalidCode
            | PasskeyInvalid
            | PasskeyChallengeExpired
            | PasskeyUnknown => StatusCode::BAD_REQUEST,
            EmailTaken | AlreadyVerified | TotpAlreadyEnabled | PasskeyExists
            | LastSignInMethod => StatusCode::CONFLICT,
            WrongPassword
            | WrongCode
            | ReauthenticationRequired
            | EmailUnverified
            | MfaRequired => StatusCode::FORBIDDEN,
            RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            InvalidCredentials | RefreshMissing | RefreshInvalid | RefreshExpired
            | RefreshReused | SessionRevoked | TokenMissing | TokenExpired | TokenInvalid
            | MfaExpired => StatusCode::UNAUTHORIZED,
            NotFound | ProviderNotConfigured | MailNotConfigured | PasskeysNotConfigured => {
                StatusCode::NOT_FOUND
            }
            CrossOriginRejected => StatusCode::FORBIDDEN,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Unavailable(_) | Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            InvalidRequest(_) => "invalid_request",
            InvalidEmail => "invalid_email",
            WeakPassword(_) => "weak_password",
            EmailTaken => "email_taken",
            RateLimited { .. } => "rate_limited",
            InvalidCredentials => "invalid_credentials",
            RefreshMissing => "refresh_missing",
            RefreshInvalid => "refresh_invalid",
            RefreshExpired => "refresh_expired",
            RefreshReused => "refresh_reused",
            SessionRevoked => "session_revoked",
            TokenMissing => "token_missing",
            TokenExpired => "token_expired",
            TokenInvalid => "token_invalid",
            NotFound => "not_found",
            ProviderNotConfigured => "provider_not_configured",
            CrossOriginRejected => "cross_origin_rejected",
            PayloadTooLarge => "payload_too_large",
            UnsupportedMediaType => "unsupported_media_type",
            MethodNotAllowed => "method_not_allowed",
            RequestTimeout => "request_timeout",
            LinkInvalid => "token_invalid",
            InvalidLimit => "invalid_limit",
            InvalidCursor => "invalid_cursor",
            AlreadyVerified => "already_verified",
            MailNotConfigured => "mail_not_configured",
            WrongPassword => "invalid_credentials",
            ReauthenticationRequired => "reauthentication_required",
            EmailUnverified => "email_unverified",
            PasskeyInvalid => "passkey_invalid",
            PasskeyChallengeExpired => "passkey_challenge_expired",
            PasskeyUnknown => "passkey_unknown",
            PasskeyExists => "passkey_exists",
            LastSignInMethod => "last_sign_in_method",
            PasskeysNotConfigured => "passkeys_not_configured",
            InvalidCode => "invalid_code",
            MfaExpired => "mfa_expired",
            WrongCode => "invalid_credentials",
            MfaRequired => "mfa_required",
            TotpAlreadyEnabled => "totp_already_enabled",
            Unavailable(_) => "unavailable",
            Overloaded { .. } => "overloaded",
            Internal(_) => "internal",
        }
    }

    /// The RFC 6750 `error` parameter of `WWW-Authenticate`, where one applies.
    fn bearer_error(&self) -> Option<&'static str> {
        use ApiError::*;
        match self {
            TokenMissing | InvalidCredentials | MfaExpired => None,
            _ if self.status() == StatusCode::UNAUTHORIZED => Some("invalid_token"),
            _ => None,
        }
    }

    pub fn problem(&self) -> Problem {
        let title = match self {
            // Internal details never reach the client.
            ApiError::Internal(_) => "Internal error.".to_owned(),
            ApiError::Unavailable(_) => "The service is temporarily unavailable.".to_owned(),
            other => other.to_string(),
        };
        Problem {
            kind: "about:blank".into(),
            title,
            status: self.status().as_u16(),
            code: self.code().into(),
        }
    }
}

/// Content type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(e) => tracing::error!(error = %e, "internal error"),
            ApiError::Unavailable(e) => tracing::warn!(error = %e, "store unavailable"),
            _ => {}
        }
        let status = self.status();
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut res = (status, body).into_response();
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::UNAUTHORIZED {
            let v = match self.bearer_error() {
                Some(e) => format!("Bearer realm=\"latchkey\", error=\"{e}\""),
                None => "Bearer realm=\"latchkey\"".to_owned(),
            };
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        if let ApiError::RateLimited { retry_after_secs }
        | ApiError::Overloaded { retry_after_secs } = self
        {
            h.insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs.max(1)),
            );
        }
        res
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Unavailable(src) => ApiError::Unavailable(src),
            other => ApiError::Internal(Box::new(other)),
        }
    }
}

impl From<crate::password::HashError> for ApiError {
    fn from(e: crate::password::HashError) -> Self {
        match e {
            // A full queue drains in about a second (password::DEFAULT_QUEUE_PER_THREAD).
            crate::password::HashError::Overloaded => ApiError::Overloaded {
                retry_after_secs: 1,
            },
            other => ApiError::Internal(Box::new(other)),
        }
    }
}

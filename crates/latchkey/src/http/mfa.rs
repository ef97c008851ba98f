//! `/api/v1/auth/mfa/*` and `/api/v1/auth/reauthenticate` (SPEC 11): TOTP enrolment,
//! recovery codes, the second step of a sign-in, and reauthentication.
//!
//! The rules live in `mfa/` (which step a code is, the pending sign-in, the recent-auth
//! check); this module is the HTTP surface. [`second_factor_required`] and
//! [`complete_pending_login`] are the two halves of a two-step sign-in that other sign-in
//! flows (login, password reset, passkeys) call.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::clock::rfc3339;
use crate::cookies::{clear_mfa_pending_cookie, set_access_cookie, set_mfa_pending_cookie};
use crate::domain::UserId;
use crate::error::{ApiError, Problem};
use crate::events::{Event, EventKind};
use crate::http::auth::{
    AuthResponse, UserView, recognised_device, signed_in_with_password, with_cookies,
};
use crate::http::email::{apply_with_mail, check_password, current_user};
use crate::http::extract::{ApiJson, AuthUser, ClientCtx};
use crate::mail::MailKind;
use crate::mfa::recovery::{self, RecoveryCode};
use crate::mfa::totp::{self, Code, TotpSecret};
use crate::mfa::{Amr, RequireRecentAuth, pending};
use crate::session;
use crate::state::AppState;
use crate::store::{Change, PendingLogin, SecretTable, StoreError, TotpRecord, UserFactors};

/// The answer to a right password when the account has a second factor: only the
/// second-factor cookie is set.
#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct MfaRequiredResponse {
    /// Always `true`.
    pub mfa_required: bool,
    /// What the second step accepts: `totp`, `passkey`, `recovery_code`.
    pub methods: Vec<String>,
}

/// Login's 200: signed in, or waiting for the second factor.
#[derive(Serialize, Deserialize, ToSchema, Debug)]
#[serde(untagged)]
pub enum LoginResponse {
    SignedIn(AuthResponse),
    MfaRequired(MfaRequiredResponse),
}

#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct TotpSetupResponse {
    /// The secret in base32 (no padding), for typing into an authenticator app.
    pub secret: String,
    /// `otpauth://totp/…` (Key URI format): what the QR code holds.
    pub otpauth_uri: String,
    /// The QR code of `otpauth_uri` as an SVG document (`<svg>`, `<rect>`, `<path>` only).
    pub qr_svg: String,
}

#[derive(Deserialize, ToSchema)]
pub struct CodeRequest {
    /// The 6-digit code from the authenticator app; spaces are ignored.
    #[schema(max_length = 64, pattern = "^[0-9 ]*$", example = "123 456")]
    pub code: String,
}

#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct RecoveryCodesResponse {
    /// Ten single-use codes, `xxxx-xxxx-xxxx-xxxx`, shown this once (only their hashes are
    /// kept). Each replaces the second factor for one sign-in.
    pub recovery_codes: Vec<String>,
}

#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct MfaStatus {
    /// TOTP is on.
    pub totp: bool,
    /// A TOTP secret was set up and waits for its confirming code.
    pub totp_pending: bool,
    /// Unused recovery codes.
    pub recovery_codes_left: u32,
    /// Registered passkeys.
    pub passkeys: u32,
    /// What a sign-in's second step would offer (empty: no second step).
    pub methods: Vec<String>,
}

#[derive(Deserialize, ToSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum VerifyMethod {
    Totp,
    RecoveryCode,
}

#[derive(Deserialize, ToSchema)]
pub struct VerifyRequest {
    pub method: VerifyMethod,
    /// A TOTP code (6 digits; spaces ignored) or a recovery code (`xxxx-xxxx-xxxx-xxxx`;
    /// case, spaces and hyphens ignored).
    #[schema(max_length = 64, example = "123456")]
    pub code: String,
}

/// How to reauthenticate: the password, or a TOTP code.
#[derive(Deserialize, ToSchema)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum ReauthRequest {
    Password {
        #[schema(max_length = 256, example = "correct horse battery staple")]
        password: String,
    },
    Totp {
        /// 6 digits; spaces ignored.
        #[schema(max_length = 64, pattern = "^[0-9 ]*$", example = "123456")]
        code: String,
    },
}

#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct ReauthResponse {
    /// When the new access token expires (RFC 3339).
    pub access_expires_at: String,
    /// The session's new `auth_time` (RFC 3339).
    pub auth_time: String,
    /// The session's `amr` (RFC 8176).
    pub amr: Vec<String>,
}

/// A JSON answer that must not be cached (it holds a secret or recovery codes).
fn no_store(status: StatusCode, body: impl Serialize) -> Response {
    let mut res = (status, Json(body)).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The second step is needed: records a pending sign-in for `user`, whose first factor was
/// `first`, and answers 200 `{mfa_required: true, methods}` with only the second-factor
/// cookie. Login and password reset call this when [`UserFactors::any`].
pub async fn second_factor_required(
    state: &AppState,
    user: UserId,
    first: Amr,
    factors: &UserFactors,
) -> Result<Response, ApiError> {
    let started = pending::start(state, user, first, factors).await?;
    metrics::counter!("latchkey_mfa_challenges_total").increment(1);
    let mut headers = HeaderMap::new();
    set_mfa_pending_cookie(state.cookies(), &mut headers, started.cookie_value);
    Ok((
        StatusCode::OK,
        headers,
        Json(MfaRequiredResponse {
            mfa_required: true,
            methods: started.methods,
        }),
    )
        .into_response())
}

/// Completes a pending sign-in whose second factor (`second`, e.g. [`Amr::OTP`] or a
/// passkey's `Amr::HWK`) was just proven: uses it up (once), starts the session with `amr`
/// = the first factor's ∪ `second` ∪ `mfa`, and answers 200 like login: access and refresh
/// cookies (and the device cookie when the first factor was a password), the second-factor
/// cookie cleared.
pub async fn complete_pending_login(
    state: &AppState,
    headers: &HeaderMap,
    client: ClientCtx,
    pending: &PendingLogin,
    second: Amr,
) -> Result<Response, ApiError> {
    pending::finish(state, &pending.id_hash).await?;
    let user = state
        .store()
        .user_by_id(pending.user_id)
        .await?
        .filter(|u| u.disabled_at.is_none())
        .ok_or(ApiError::MfaExpired)?;
    let amr = pending.amr | second | Amr::MFA;
    let tokens = session::start(state, user.id, amr, client.into()).await?;
    metrics::counter!("latchkey_logins_total", "method" => "mfa").increment(1);
    let body = AuthResponse {
        user: UserView::load(state, &user).await?,
        access_expires_at: rfc3339(tokens.access_expires_at * 1000),
    };
    let mut res = if pending.amr.contains(Amr::PWD) {
        let device = recognised_device(state, headers, user.id);
        signed_in_with_password(state, StatusCode::OK, &tokens, body, device.as_ref())
    } else {
        with_cookies(state, StatusCode::OK, &tokens, body)
    };
    clear_mfa_pending_cookie(state.cookies(), res.headers_mut());
    Ok(res)
}

/// An error from a second-factor endpoint; `mfa_expired` also clears the second-factor
/// cookie (it names nothing usable any more).
pub fn mfa_error(state: &AppState, e: ApiError) -> Response {
    if matches!(e, ApiError::MfaExpired) {
        let mut headers = HeaderMap::new();
        clear_mfa_pending_cookie(state.cookies(), &mut headers);
        (headers, e).into_response()
    } else {
        e.into_response()
    }
}

fn issuer(state: &AppState) -> String {
    url::Url::parse(&state.config().public_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "latchkey".to_owned())
}

fn seal_name(user: UserId) -> String {
    user.0.to_string()
}

fn open_secret(state: &AppState, rec: &TotpRecord) -> Result<TotpSecret, ApiError> {
    state
        .secrets_key()
        .open(SecretTable::MfaTotp, &seal_name(rec.user_id), &rec.secret)
        .map(TotpSecret::from_bytes)
        .map_err(ApiError::internal)
}

fn now_secs(state: &AppState) -> i64 {
    state.config().clock.now_ms().div_euclid(1000)
}

/// Checks a code against the user's confirmed TOTP secret and uses its step (once, and
/// only after the last used one). False for a wrong or replayed code, or no TOTP; the
/// codes are computed either way (against a dummy secret when there is none).
async fn check_totp(state: &AppState, user: UserId, code: &Code) -> Result<bool, ApiError> {
    let rec = state
        .store()
        .totp(user)
        .await?
        .filter(|r| r.confirmed_at.is_some());
    let secret = match &rec {
        Some(r) => open_secret(state, r)?,
        None => TotpSecret::from_bytes(vec![0u8; totp::SECRET_BYTES].into()),
    };
    match (rec, secret.matching_step(code, now_secs(state))) {
        (Some(_), Some(step)) => Ok(state.store().use_totp_step(user, step).await?),
        _ => Ok(false),
    }
}

/// Sets up a new TOTP secret (unconfirmed until `confirm`).
#[utoipa::path(post, path = "/api/v1/auth/mfa/totp/setup", tag = "mfa",
    security(("access_cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "A new secret, waiting for its first code at `confirm` (an earlier unconfirmed one is replaced). `Cache-Control: no-store`.", body = TotpSetupResponse),
        (status = 401, description = "`token_missing`, `token_expired`, `token_invalid`, `session_revoked`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`reauthentication_required` (signed in more than 10 minutes ago), `cross_origin_rejected`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`totp_already_enabled`: turn it off first", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn totp_setup(
    State(state): State<AppState>,
    RequireRecentAuth(user): RequireRecentAuth,
) -> Result<Response, ApiError> {
    let u = current_user(&state, &user).await?;
    let secret = TotpSecret::generate();
    let sealed = state
        .secrets_key()
        .seal(SecretTable::MfaTotp, &seal_name(u.id), secret.bytes());
    let stored = state
        .store()
        .put_totp_setup(&TotpRecord {
            user_id: u.id,
            secret: sealed,
            created_at: state.config().clock.now_ms(),
            confirmed_at: None,
            last_step: None,
        })
        .await?;
    if !stored {
        return Err(ApiError::TotpAlreadyEnabled);
    }
    let uri = secret.otpauth_uri(u.email.as_str(), &issuer(&state))?;
    let body = TotpSetupResponse {
        secret: secret.base32().expose_secret().to_owned(),
        qr_svg: totp::qr_svg(uri.expose_secret())?,
        otpauth_uri: uri.expose_secret().to_owned(),
    };
    Ok(no_store(StatusCode::OK, body))
}

/// Turns TOTP on with a first code; answers the recovery codes, once.
#[utoipa::path(post, path = "/api/v1/auth/mfa/totp/confirm", tag = "mfa", request_body = CodeRequest,
    security(("access_cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "TOTP is on; ten recovery codes, shown this once (any earlier ones are void). `Cache-Control: no-store`.", body = RecoveryCodesResponse),
        (status = 400, description = "`invalid_code` (wrong, replayed, or not 6 digits once spaces are removed), `invalid_request` (malformed JSON)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`token_missing`, `token_expired`, `token_invalid`, `session_revoked`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`reauthentication_required`, `cross_origin_rejected`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no TOTP setup to confirm", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`totp_already_enabled`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: too many wrong codes for this user", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn totp_confirm(
    State(state): State<AppState>,
    client: ClientCtx,
    RequireRecentAuth(user): RequireRecentAuth,
    ApiJson(req): ApiJson<CodeRequest>,
) -> Result<Response, ApiError> {
    let code = Code::parse(&req.code)?;
    let rec = state
        .store()
        .totp(user.user_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if rec.confirmed_at.is_some() {
        return Err(ApiError::TotpAlreadyEnabled);
    }
    let budget = pending::user_budget(&state, user.user_id).await?;
    let Some(step) = open_secret(&state, &rec)?.matching_step(&code, now_secs(&state)) else {
        budget.failed();
        return Err(ApiError::InvalidCode);
    };
    let (shown, hashes) = recovery::generate_set();
    let now = state.config().clock.now_ms();
    let event = Event::new(EventKind::MfaEnabled, now)
        .user(user.user_id)
        .session(user.session_id)
        .client(&client.into())
        .with("method", "totp");
    let applied = state
        .store()
        .apply(&[
            Change::Record(&event),
            Change::ConfirmTotp {
                user: user.user_id,
                step,
                created_at: rec.created_at,
                now,
            },
            Change::ReplaceRecoveryCodes {
                user: user.user_id,
                hashes: &hashes,
                now,
            },
        ])
        .await;
    match applied {
        Ok(_) => budget.give_back().await,
        // Confirmed or replaced meanwhile: the code was for a secret no longer waiting.
        Err(StoreError::Refused) => {
            budget.give_back().await;
            return Err(ApiError::InvalidCode);
        }
        Err(e) => {
            budget.give_back().await;
            return Err(e.into());
        }
    }
    metrics::counter!("latchkey_mfa_enabled_total", "method" => "totp").increment(1);
    tracing::info!(user_id = %user.user_id, "TOTP turned on");
    Ok(no_store(
        StatusCode::OK,
        RecoveryCodesResponse {
            recovery_codes: shown,
        },
    ))
}

/// Turns TOTP off (or drops an unconfirmed setup).
#[utoipa::path(delete, path = "/api/v1/auth/mfa/totp", tag = "mfa",
    security(("access_cookie" = []), ("bearer" = [])),
    responses(
        (status = 204, description = "TOTP is off. When it was the last second factor, the recovery codes are void too and a notice is mailed. The password (or sign-in provider) stays, so the account keeps its way in."),
        (status = 401, description = "`token_missing`, `token_expired`, `token_invalid`, `session_revoked`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`reauthentication_required`, `cross_origin_rejected`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: TOTP is not set up", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn totp_disable(
    State(state): State<AppState>,
    client: ClientCtx,
    RequireRecentAuth(user): RequireRecentAuth,
) -> Result<StatusCode, ApiError> {
    let u = current_user(&state, &user).await?;
    let rec = state.store().totp(u.id).await?.ok_or(ApiError::NotFound)?;
    let factors = state.store().user_factors(u.id).await?;
    // TOTP is never a way in by itself (the password, a provider or a passkey is), so
    // turning it off never locks anyone out. When it was the last second factor, the
    // recovery codes (which stand in for a second factor) go with it, and the owner is told.
    let last = rec.confirmed_at.is_some() && factors.passkeys == 0;
    let mut changes = vec![Change::DeleteTotp { user: u.id }];
    if factors.passkeys == 0 {
        changes.push(Change::ReplaceRecoveryCodes {
            user: u.id,
            hashes: &[],
            now: state.config().clock.now_ms(),
        });
    }
    let event = Event::new(EventKind::MfaDisabled, state.config().clock.now_ms())
        .user(u.id)
        .session(user.session_id)
        .client(&client.into())
        .with("method", "totp")
        .with("last_factor", last);
    // Dropping a setup never confirmed is no security change: no event.
    if rec.confirmed_at.is_some() {
        changes.push(Change::Record(&event));
    }
    let notice = (last && state.mailer().enabled()).then(|| {
        state
            .mailer()
            .notice(MailKind::MfaDisabled, &u.email, &u.email)
    });
    apply_with_mail(&state, changes, &notice.iter().collect::<Vec<_>>()).await?;
    if rec.confirmed_at.is_some() {
        metrics::counter!("latchkey_mfa_disabled_total", "method" => "totp").increment(1);
        tracing::info!(user_id = %u.id, last, "TOTP turned off");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces the recovery codes with ten new ones, shown once.
#[utoipa::path(post, path = "/api/v1/auth/mfa/recovery-codes", tag = "mfa",
    security(("access_cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Ten new codes, shown this once; the old ones are void. `Cache-Control: no-store`.", body = RecoveryCodesResponse),
        (status = 401, description = "`token_missing`, `token_expired`, `token_invalid`, `session_revoked`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`reauthentication_required`, `cross_origin_rejected`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no second factor is on, so there is nothing to recover", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn regenerate_recovery_codes(
    State(state): State<AppState>,
    RequireRecentAuth(user): RequireRecentAuth,
) -> Result<Response, ApiError> {
    if !state.store().user_factors(user.user_id).await?.any() {
        return Err(ApiError::NotFound);
    }
    let (shown, hashes) = recovery::generate_set();
    state
        .store()
        .apply(&[Change::ReplaceRecoveryCodes {
            user: user.user_id,
            hashes: &hashes,
            now: state.config().clock.now_ms(),
        }])
        .await?;
    Ok(no_store(
        StatusCode::OK,
        RecoveryCodesResponse {
            recovery_codes: shown,
        },
    ))
}

/// The signed-in user's second factors.
#[utoipa::path(get, path = "/api/v1/auth/mfa", tag = "mfa", operation_id = "mfa_status",
    security(("access_cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Which second factors are on", body = MfaStatus),
        (status = 401, description = "`token_missing`, `token_expired`, `token_invalid`, `session_revoked`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn status(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<MfaStatus>, ApiError> {
    let f = state.store().user_factors(user.user_id).await?;
    let pending = !f.totp
        && state
            .store()
            .totp(user.user_id)
            .await?
            .is_some_and(|r| r.confirmed_at.is_none());
    Ok(Json(MfaStatus {
        totp: f.totp,
        totp_pending: pending,
        recovery_codes_left: if f.any() { f.recovery_codes } else { 0 },
        passkeys: f.passkeys,
        methods: f.methods(),
    }))
}

/// The second step of a sign-in: a TOTP code or a recovery code.
#[utoipa::path(post, path = "/api/v1/auth/mfa/verify", tag = "mfa", operation_id = "mfa_verify", request_body = VerifyRequest,
    security(("mfa_pending_cookie" = [])),
    responses(
        (status = 200, description = "Signed in; access, refresh and device cookies set, the second-factor cookie cleared", body = AuthResponse),
        (status = 400, description = "`invalid_code`: wrong, replayed or already used (counts against the 5 of this sign-in), or malformed — not 6 digits, not a recovery code's 16 characters (counts nothing); `invalid_request`: malformed JSON or an unknown `method`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`mfa_expired`: no pending sign-in, or it expired (5 minutes), was used or ran out of attempts (5) — sign in again; the second-factor cookie is cleared", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`cross_origin_rejected`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: too many wrong codes for this user across sign-ins", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn verify(
    State(state): State<AppState>,
    client: ClientCtx,
    headers: HeaderMap,
    ApiJson(req): ApiJson<VerifyRequest>,
) -> Response {
    match verify_inner(&state, client, &headers, req).await {
        Ok(res) => res,
        Err(e) => mfa_error(&state, e),
    }
}

async fn verify_inner(
    state: &AppState,
    client: ClientCtx,
    headers: &HeaderMap,
    req: VerifyRequest,
) -> Result<Response, ApiError> {
    let pending = pending::from_request(state, headers).await?;
    // A malformed code cannot be right: refused before it costs an attempt.
    enum Parsed {
        Totp(Code),
        Recovery(RecoveryCode),
    }
    let parsed = match req.method {
        VerifyMethod::Totp => Parsed::Totp(Code::parse(&req.code)?),
        VerifyMethod::RecoveryCode => Parsed::Recovery(RecoveryCode::parse(&req.code)?),
    };
    let attempt = pending::attempt(state, &pending).await?;
    let user = pending.user_id;
    // Both kinds read the TOTP row and make one conditional write, so a wrong code of
    // either kind costs about the same.
    let ok = match &parsed {
        Parsed::Totp(code) => check_totp(state, user, code).await,
        Parsed::Recovery(code) => {
            let _ = state.store().totp(user).await;
            let now = state.config().clock.now_ms();
            state
                .store()
                .use_recovery_code(user, &code.hash(), now)
                .await
                .map_err(ApiError::from)
        }
    };
    let ok = match ok {
        Ok(ok) => ok,
        Err(e) => {
            attempt.succeeded().await; // no verdict: nothing counted against the user
            return Err(e);
        }
    };
    if !ok {
        attempt.failed();
        metrics::counter!("latchkey_mfa_failures_total").increment(1);
        let method = match parsed {
            Parsed::Totp(_) => "totp",
            Parsed::Recovery(_) => "recovery_code",
        };
        let event = Event::new(EventKind::MfaFailed, state.config().clock.now_ms())
            .user(user)
            .client(&client.into())
            .with("method", method)
            .with("during", "sign_in");
        state.store().insert_events(&[event]).await?;
        return Err(ApiError::InvalidCode);
    }
    attempt.succeeded().await;
    if matches!(parsed, Parsed::Recovery(_)) {
        tracing::info!(user_id = %user, "second factor: a recovery code was used");
    }
    complete_pending_login(state, headers, client, &pending, Amr::OTP).await
}

/// Proves who the signed-in user is again, renewing the session's `auth_time`.
#[utoipa::path(post, path = "/api/v1/auth/reauthenticate", tag = "auth", request_body = ReauthRequest,
    security(("access_cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The session's `auth_time` is now (kept across refresh) and the method joins its `amr`; a new access cookie carries them (the refresh cookie is unchanged)", body = ReauthResponse),
        (status = 400, description = "`invalid_code` (a TOTP code that is not 6 digits), `invalid_request` (malformed JSON, an unknown `method`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`token_missing`, `token_expired`, `token_invalid`, `session_revoked`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`invalid_credentials` (wrong password or code; counted like a failed sign-in), `cross_origin_rejected`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: too many wrong passwords or codes", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`overloaded`: the password-hashing queue is full", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn reauthenticate(
    State(state): State<AppState>,
    client: ClientCtx,
    user: AuthUser,
    ApiJson(req): ApiJson<ReauthRequest>,
) -> Result<Response, ApiError> {
    let method = match req {
        ReauthRequest::Password { password } => {
            let u = current_user(&state, &user).await?;
            // No password (a provider-only account): the same 403 as a wrong one, after the
            // same work (the dummy hash).
            check_password(&state, &u, &password).await?;
            Amr::PWD
        }
        ReauthRequest::Totp { code } => {
            let code = Code::parse(&code)?;
            let budget = pending::user_budget(&state, user.user_id).await?;
            match check_totp(&state, user.user_id, &code).await {
                Ok(true) => budget.give_back().await,
                Ok(false) => {
                    budget.failed();
                    let event = Event::new(EventKind::MfaFailed, state.config().clock.now_ms())
                        .user(user.user_id)
                        .session(user.session_id)
                        .client(&client.into())
                        .with("method", "totp")
                        .with("during", "reauthenticate");
                    state.store().insert_events(&[event]).await?;
                    return Err(ApiError::WrongCode);
                }
                Err(e) => {
                    budget.give_back().await;
                    return Err(e);
                }
            }
            Amr::OTP
        }
    };
    let (s, access) =
        session::reauthenticated(&state, user.session_id, user.user_id, method).await?;
    let mut headers = HeaderMap::new();
    set_access_cookie(
        state.cookies(),
        &mut headers,
        &access.access_token,
        access.access_max_age,
    );
    let body = ReauthResponse {
        access_expires_at: rfc3339(access.access_expires_at * 1000),
        auth_time: rfc3339(s.auth_time.div_euclid(1000) * 1000),
        amr: s.amr.to_claim(),
    };
    Ok((StatusCode::OK, headers, Json(body)).into_response())
}

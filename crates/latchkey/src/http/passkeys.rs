//! `/api/v1/auth/passkeys/*` (SPEC 11): register, sign in (discoverable credentials, no
//! email typed), list, rename, remove. The WebAuthn rules live in [`crate::passkeys`];
//! these handlers parse, authorise and answer.
//!
//! Every failed ceremony is a 400 (`passkey_invalid`, `passkey_unknown`,
//! `passkey_challenge_expired`), never a 401: a 401 means "your session is gone" to every
//! client (SPEC 10), and the sign-in endpoints are not retried by `secureFetch` anyway.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::clock::rfc3339;
use crate::cookies::set_access_cookie;
use crate::domain::DisplayName;
use crate::error::{ApiError, Problem};
use crate::events::{Event, EventKind};
use crate::http::auth::{AuthResponse, UserView, signed_in_with_password};
use crate::http::email::apply_with_mail;
use crate::http::extract::{ApiJson, AuthUser, ClientCtx};
use crate::http::mfa::{ReauthResponse, complete_pending_login, mfa_error};
use crate::mail::MailKind;
use crate::mfa::{Amr, RequireRecentAuth, pending};
use crate::passkeys::{self, DEFAULT_NAME};
use crate::session;
use crate::state::AppState;
use crate::store::{CeremonyKind, Change, PasskeyRecord, StoreError, UserRecord};

/// A started ceremony: send `ceremony` back to its `/finish`.
#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct CeremonyStarted {
    /// Names this ceremony at `/finish`: 43 base64url characters, single use, valid for 5
    /// minutes.
    #[schema(pattern = "^[A-Za-z0-9_-]{43}$")]
    pub ceremony: String,
    /// webauthn-rs's options, `{publicKey: {...}}`: binary members (`challenge`, `user.id`,
    /// `excludeCredentials[].id`, `allowCredentials[].id`) are base64url strings to decode
    /// before `navigator.credentials.create()`/`.get()` (`client/latchkey-passkeys.js` does).
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
}

/// `/register/finish`'s body.
#[derive(Deserialize, ToSchema)]
pub struct RegisterFinishRequest {
    #[schema(pattern = "^[A-Za-z0-9_-]{43}$")]
    pub ceremony: String,
    /// The `PublicKeyCredential` from `navigator.credentials.create()` as JSON: `id`,
    /// `rawId`, `type: "public-key"`, `response.clientDataJSON` and
    /// `response.attestationObject` (base64url), `response.transports`, and the client
    /// extension results. Anything else: 400 `passkey_invalid`.
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
    /// A name for the passkey (rules of a display name); blank or absent: "Passkey".
    #[schema(schema_with = passkey_name_schema)]
    pub name: Option<String>,
}

/// `/login/finish`'s body.
#[derive(Deserialize, ToSchema)]
pub struct LoginFinishRequest {
    #[schema(pattern = "^[A-Za-z0-9_-]{43}$")]
    pub ceremony: String,
    /// The `PublicKeyCredential` from `navigator.credentials.get()` as JSON: `id`, `rawId`,
    /// `type: "public-key"`, `response.clientDataJSON`, `response.authenticatorData`,
    /// `response.signature` and `response.userHandle` (base64url). Anything else: 400
    /// `passkey_invalid`.
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
}

#[derive(Deserialize, ToSchema)]
pub struct RenameRequest {
    #[schema(schema_with = passkey_name_schema)]
    pub name: Option<String>,
}

fn passkey_name_schema() -> utoipa::openapi::schema::Object {
    crate::http::auth::name_schema(
        "Passkey name: at most 100 characters once trimmed, the rules of a display name \
             (no control, separator or format characters but U+200C/U+200D). Blank or null: \
             \"Passkey\".",
        "Laptop",
    )
}

/// A passkey as the API shows it.
#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct PasskeyView {
    pub id: uuid::Uuid,
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; null until first used to sign in.
    pub last_used_at: Option<String>,
}

impl From<&PasskeyRecord> for PasskeyView {
    fn from(p: &PasskeyRecord) -> Self {
        Self {
            id: p.id,
            name: p.name.clone(),
            created_at: rfc3339(p.created_at),
            last_used_at: p.last_used_at.map(rfc3339),
        }
    }
}

#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct PasskeyResponse {
    pub passkey: PasskeyView,
}

#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct PasskeyList {
    pub passkeys: Vec<PasskeyView>,
}

fn clean_name(name: Option<String>) -> Result<String, ApiError> {
    let Some(n) = name else {
        return Ok(DEFAULT_NAME.to_owned());
    };
    match DisplayName::parse(&n) {
        Ok(Some(n)) => Ok(n.into_string()),
        Ok(None) => Ok(DEFAULT_NAME.to_owned()),
        Err(e) => Err(ApiError::InvalidRequest(e.to_string())),
    }
}

/// The signed-in user, or 401 when the account is gone or disabled.
async fn current_user(state: &AppState, user: &AuthUser) -> Result<UserRecord, ApiError> {
    state
        .store()
        .user_by_id(user.user_id)
        .await?
        .filter(|u| u.disabled_at.is_none())
        .ok_or(ApiError::SessionRevoked)
}

fn started(s: passkeys::Started<serde_json::Value>) -> Json<CeremonyStarted> {
    Json(CeremonyStarted {
        ceremony: s.ceremony.expose().to_owned(),
        options: s.options,
    })
}

/// Starts adding a passkey to the signed-in account.
#[utoipa::path(post, path = "/api/v1/auth/passkeys/register/start", tag = "passkeys",
    security(("access_cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Options for `navigator.credentials.create()` (a discoverable credential with user verification; the account's passkeys excluded) and the ceremony id", body = CeremonyStarted),
        (status = 401, description = "`token_missing`, `token_expired`, `token_invalid`, `session_revoked`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`reauthentication_required` (signed in more than 10 minutes ago), `cross_origin_rejected`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`passkeys_not_configured`: PUBLIC_URL's host is not a domain name", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn register_start(
    State(state): State<AppState>,
    RequireRecentAuth(user): RequireRecentAuth,
) -> Result<Json<CeremonyStarted>, ApiError> {
    let u = current_user(&state, &user).await?;
    Ok(started(passkeys::start_registration(&state, &u).await?))
}

/// Finishes adding a passkey.
#[utoipa::path(post, path = "/api/v1/auth/passkeys/register/finish", tag = "passkeys",
    request_body = RegisterFinishRequest,
    security(("access_cookie" = []), ("bearer" = [])),
    responses(
        (status = 201, description = "Registered", body = PasskeyResponse),
        (status = 400, description = "`passkey_invalid` (the response does not verify: wrong challenge, origin or relying party, no user verification, bad attestation, malformed), `passkey_challenge_expired` (unknown, used, expired, or another account's ceremony), `invalid_request`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`token_missing`, `token_expired`, `token_invalid`, `session_revoked`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`cross_origin_rejected`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`passkeys_not_configured`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`passkey_exists`: this credential is registered already", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn register_finish(
    State(state): State<AppState>,
    client: ClientCtx,
    user: AuthUser,
    ApiJson(req): ApiJson<RegisterFinishRequest>,
) -> Result<Response, ApiError> {
    let name = clean_name(req.name)?;
    let credential = passkeys::parse_credential(req.credential)?;
    let added = Event::new(EventKind::PasskeyAdded, state.config().clock.now_ms())
        .user(user.user_id)
        .session(user.session_id)
        .client(&client.into());
    let record = passkeys::finish_registration(
        &state,
        user.user_id,
        &req.ceremony,
        &credential,
        name,
        added,
    )
    .await?;
    tracing::info!(user_id = %user.user_id, passkey = %record.id, "passkey added");
    Ok((
        StatusCode::CREATED,
        Json(PasskeyResponse {
            passkey: PasskeyView::from(&record),
        }),
    )
        .into_response())
}

/// Starts a sign-in with a passkey (no email: the authenticator offers its passkeys).
#[utoipa::path(post, path = "/api/v1/auth/passkeys/login/start", tag = "passkeys",
    responses(
        (status = 200, description = "Options for `navigator.credentials.get()` — with a button, or with `mediation: 'conditional'` for autofill (the page chooses) — and the ceremony id", body = CeremonyStarted),
        (status = 403, description = "`cross_origin_rejected`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`passkeys_not_configured`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited` (per client IP, shared with login), with `Retry-After`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn login_start(
    State(state): State<AppState>,
    client: ClientCtx,
) -> Result<Json<CeremonyStarted>, ApiError> {
    // A server without passkeys spends no one's sign-in budget on saying so.
    passkeys::rp(&state)?;
    state.limiter().check_auth_ip(&client.rate_key).await?;
    Ok(started(passkeys::start_login(&state).await?))
}

/// Finishes a passkey sign-in: a new session, like a password login.
#[utoipa::path(post, path = "/api/v1/auth/passkeys/login/finish", tag = "passkeys",
    request_body = LoginFinishRequest,
    responses(
        (status = 200, description = "Signed in (the access token's `amr` says `hwk` or `swk`, and `mfa`); access, refresh and device cookies set", body = AuthResponse),
        (status = 400, description = "`passkey_invalid` (does not verify: wrong challenge, origin or relying party, bad signature, no user verification, a signature counter that went backwards, a user handle that is not the passkey's owner, malformed), `passkey_unknown` (no such passkey registered), `passkey_challenge_expired` (unknown, used or expired ceremony), `invalid_request`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`invalid_credentials`: the account is disabled", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`cross_origin_rejected`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`passkeys_not_configured`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`, with `Retry-After`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn login_finish(
    State(state): State<AppState>,
    client: ClientCtx,
    ApiJson(req): ApiJson<LoginFinishRequest>,
) -> Result<Response, ApiError> {
    passkeys::rp(&state)?;
    state.limiter().check_auth_ip(&client.rate_key).await?;
    let credential = passkeys::parse_credential(req.credential)?;
    let signed = passkeys::finish_login(&state, &req.ceremony, &credential).await?;
    let tokens = session::start(&state, signed.user.id, signed.amr, client.into()).await?;
    metrics::counter!("latchkey_logins_total", "method" => "passkey").increment(1);
    tracing::info!(user_id = %signed.user.id, passkey = %signed.passkey.id, amr = %signed.amr.to_text(), "signed in with a passkey");
    let body = AuthResponse {
        user: UserView::load(&state, &signed.user).await?,
        access_expires_at: rfc3339(tokens.access_expires_at * 1000),
    };
    Ok(signed_in_with_password(
        &state,
        StatusCode::OK,
        &tokens,
        body,
        None,
    ))
}

/// The signed-in user's passkeys.
#[utoipa::path(get, path = "/api/v1/auth/passkeys", tag = "passkeys",
    security(("access_cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The account's passkeys, oldest first", body = PasskeyList),
        (status = 401, description = "`token_missing`, `token_expired`, `token_invalid`, `session_revoked`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<PasskeyList>, ApiError> {
    let passkeys = state.store().passkeys(user.user_id).await?;
    Ok(Json(PasskeyList {
        passkeys: passkeys.iter().map(PasskeyView::from).collect(),
    }))
}

/// Renames one of the signed-in user's passkeys.
#[utoipa::path(patch, path = "/api/v1/auth/passkeys/{id}", tag = "passkeys",
    request_body = RenameRequest,
    security(("access_cookie" = []), ("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Passkey id (from `GET /api/v1/auth/passkeys`); any other value is 404")),
    responses(
        (status = 200, description = "Renamed", body = PasskeyResponse),
        (status = 400, description = "`invalid_request` (a name that breaks the rules)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`token_missing`, `token_expired`, `token_invalid`, `session_revoked`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`cross_origin_rejected`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such passkey of this user", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn rename(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<RenameRequest>,
) -> Result<Json<PasskeyResponse>, ApiError> {
    let id: uuid::Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
    let name = clean_name(req.name)?;
    if !state
        .store()
        .rename_passkey(user.user_id, id, &name)
        .await?
    {
        return Err(ApiError::NotFound);
    }
    let p = state
        .store()
        .passkeys(user.user_id)
        .await?
        .into_iter()
        .find(|p| p.id == id)
        .ok_or(ApiError::NotFound)?;
    Ok(Json(PasskeyResponse {
        passkey: PasskeyView::from(&p),
    }))
}

/// Removes one of the signed-in user's passkeys.
#[utoipa::path(delete, path = "/api/v1/auth/passkeys/{id}", tag = "passkeys",
    security(("access_cookie" = []), ("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Passkey id (from `GET /api/v1/auth/passkeys`); any other value is 404")),
    responses(
        (status = 204, description = "Removed; when it was the account's last passkey, a notice is mailed"),
        (status = 401, description = "`token_missing`, `token_expired`, `token_invalid`, `session_revoked`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`reauthentication_required` (signed in more than 10 minutes ago), `cross_origin_rejected`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such passkey of this user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`last_sign_in_method`: the account has no password, no linked provider and no other passkey", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn remove(
    State(state): State<AppState>,
    client: ClientCtx,
    RequireRecentAuth(user): RequireRecentAuth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: uuid::Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
    let u = current_user(&state, &user).await?;
    if !state
        .store()
        .passkeys(u.id)
        .await?
        .iter()
        .any(|p| p.id == id)
    {
        return Err(ApiError::NotFound);
    }
    // The last passkey with TOTP off is the last second factor (SPEC 11): the recovery
    // codes, which stand in for one, go with it, and the owner is told. (Two concurrent
    // removals of the last two may both miss that; the way-in rule below is atomic, this is
    // best effort.)
    let factors = state.store().user_factors(u.id).await?;
    let last = factors.passkeys == 1 && !factors.totp;
    let removed = Event::new(EventKind::PasskeyRemoved, state.config().clock.now_ms())
        .user(u.id)
        .session(user.session_id)
        .client(&client.into())
        .with("passkey_id", id.to_string())
        .with("last_factor", last);
    let mut changes = vec![
        Change::DeletePasskey { user: u.id, id },
        Change::Record(&removed),
    ];
    if last {
        changes.push(Change::ReplaceRecoveryCodes {
            user: u.id,
            hashes: &[],
            now: state.config().clock.now_ms(),
        });
    }
    let notice = (last && state.mailer().enabled()).then(|| {
        state
            .mailer()
            .notice(MailKind::MfaDisabled, &u.email, &u.email)
    });
    match apply_with_mail(&state, changes, &notice.iter().collect::<Vec<_>>()).await {
        Ok(_) => {}
        Err(StoreError::Refused) => return Err(ApiError::LastSignInMethod),
        Err(e) => return Err(e.into()),
    }
    metrics::counter!("latchkey_mfa_disabled_total", "method" => "passkey").increment(1);
    tracing::info!(user_id = %u.id, passkey = %id, last, "passkey removed");
    Ok(StatusCode::NO_CONTENT)
}

/// Starts the second step of a password sign-in with one of the account's passkeys.
#[utoipa::path(post, path = "/api/v1/auth/mfa/passkey/start", tag = "passkeys",
    security(("mfa_pending_cookie" = [])),
    responses(
        (status = 200, description = "Options for `navigator.credentials.get()` offering the account's passkeys, and the ceremony id", body = CeremonyStarted),
        (status = 400, description = "`passkey_unknown`: the account has no passkey", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`mfa_expired`: no live pending sign-in (the second-factor cookie is cleared)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`cross_origin_rejected`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`passkeys_not_configured`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn second_factor_start(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let result = async {
        let pending = pending::from_request(&state, &headers).await?;
        passkeys::start_for_user(&state, pending.user_id, CeremonyKind::SecondFactor).await
    }
    .await;
    match result {
        Ok(s) => started(s).into_response(),
        Err(e) => mfa_error(&state, e),
    }
}

/// Finishes the second step with a passkey: signs in.
#[utoipa::path(post, path = "/api/v1/auth/mfa/passkey/finish", tag = "passkeys",
    request_body = LoginFinishRequest,
    security(("mfa_pending_cookie" = [])),
    responses(
        (status = 200, description = "Signed in (`amr`: the first factor, `hwk` or `swk`, and `mfa`); auth cookies set, the second-factor cookie cleared", body = AuthResponse),
        (status = 400, description = "`passkey_invalid` (does not verify, or not one of the account's passkeys; counts as one of the pending sign-in's 5 attempts), `passkey_unknown`, `passkey_challenge_expired`, `invalid_request`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`mfa_expired`: no live pending sign-in (used, expired or out of attempts)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`cross_origin_rejected`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`passkeys_not_configured`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: the account's second-factor budget is spent", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn second_factor_finish(
    State(state): State<AppState>,
    headers: HeaderMap,
    client: ClientCtx,
    ApiJson(req): ApiJson<LoginFinishRequest>,
) -> Response {
    let result = async {
        let pending = pending::from_request(&state, &headers).await?;
        let credential = passkeys::parse_credential(req.credential)?;
        let attempt = pending::attempt(&state, &pending).await?;
        let key = match passkeys::finish_for_user(
            &state,
            pending.user_id,
            CeremonyKind::SecondFactor,
            &req.ceremony,
            &credential,
        )
        .await
        {
            Ok(key) => {
                attempt.succeeded().await;
                key
            }
            Err(e) => {
                attempt.failed();
                let event = Event::new(EventKind::MfaFailed, state.config().clock.now_ms())
                    .user(pending.user_id)
                    .client(&client.into())
                    .with("method", "passkey")
                    .with("during", "sign_in")
                    .with("error", e.code());
                state.store().insert_events(&[event]).await?;
                return Err(e);
            }
        };
        complete_pending_login(&state, &headers, client, &pending, key).await
    }
    .await;
    result.unwrap_or_else(|e| mfa_error(&state, e))
}

/// Starts proving who the signed-in user is again with a passkey.
#[utoipa::path(post, path = "/api/v1/auth/reauthenticate/passkey/start", tag = "passkeys",
    security(("access_cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Options for `navigator.credentials.get()` offering the account's passkeys, and the ceremony id", body = CeremonyStarted),
        (status = 400, description = "`passkey_unknown`: the account has no passkey", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`token_missing`, `token_expired`, `token_invalid`, `session_revoked`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`cross_origin_rejected`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`passkeys_not_configured`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn reauthenticate_start(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<CeremonyStarted>, ApiError> {
    Ok(started(
        passkeys::start_for_user(&state, user.user_id, CeremonyKind::Reauthenticate).await?,
    ))
}

/// Finishes reauthentication with a passkey: the session's `auth_time` is now.
#[utoipa::path(post, path = "/api/v1/auth/reauthenticate/passkey/finish", tag = "passkeys",
    request_body = LoginFinishRequest,
    security(("access_cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The session's `auth_time` is now and `hwk`/`swk` and `mfa` join its `amr`; a new access cookie carries them", body = ReauthResponse),
        (status = 400, description = "`passkey_invalid`, `passkey_unknown`, `passkey_challenge_expired`, `invalid_request`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`token_missing`, `token_expired`, `token_invalid`, `session_revoked`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`cross_origin_rejected`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`passkeys_not_configured`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn reauthenticate_finish(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<LoginFinishRequest>,
) -> Result<Response, ApiError> {
    let credential = passkeys::parse_credential(req.credential)?;
    let key = passkeys::finish_for_user(
        &state,
        user.user_id,
        CeremonyKind::Reauthenticate,
        &req.ceremony,
        &credential,
    )
    .await?;
    // A passkey with user verification is itself two factors.
    let (s, access) =
        session::reauthenticated(&state, user.session_id, user.user_id, key | Amr::MFA).await?;
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

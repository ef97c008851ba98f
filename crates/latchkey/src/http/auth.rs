//! `/api/v1/auth/*`: signup, login, refresh, logout, logout-all, sessions.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::clock::{now_ms, rfc3339};
use crate::cookies::{clear_auth_cookies, read_cookie, set_auth_cookies, set_device_cookie};
use crate::device::Device;
use crate::domain::{DisplayName, Email, Password, SessionId, UserId};
use crate::error::{ApiError, Problem};
use crate::events::{Event, EventKind, RevokedBy};
use crate::http::extract::{ApiJson, AuthUser, ClientCtx, access_token_of, authenticate};
use crate::http::mfa::LoginResponse;
use crate::mfa::Amr;
use crate::ratelimit::LoginBudget;
use crate::session::{self, IssuedTokens, rotation};
use crate::state::AppState;
use crate::store::{NewUser, StoreError, UserRecord};

#[derive(Deserialize, ToSchema)]
pub struct SignupRequest {
    /// Canonicalised (trimmed, NFC, lower-cased) before use; at most 254 characters.
    #[schema(format = Email, max_length = 254, example = "ada@example.com")]
    pub email: String,
    /// 8 to 256 characters.
    #[schema(
        min_length = 8,
        max_length = 256,
        example = "correct horse battery staple"
    )]
    pub password: String,
    /// Display name, at most 100 characters after trimming; no control characters and no
    /// format characters (bidi controls, zero-width space…) other than U+200C/U+200D.
    #[schema(schema_with = display_name_schema)]
    pub name: Option<String>,
}

/// `SignupRequest.name`: its `pattern` is [`DisplayName::json_schema_pattern`], which matches
/// exactly the names signup accepts (the length bound is in the pattern because it counts
/// after trimming).
fn display_name_schema() -> utoipa::openapi::schema::Object {
    name_schema(
        "Display name: at most 100 characters once trimmed of white space, with no control \
             characters (Cc), line or paragraph separators (Zl, Zp) or format characters (Cf: \
             bidi controls, zero-width space, …) other than U+200C and U+200D. Blank or null: \
             no name.",
        "Ada Lovelace",
    )
}

/// A nullable string whose `pattern` is [`DisplayName::json_schema_pattern`]: every name the
/// API takes (a user's, a passkey's) follows the display-name rule.
pub(crate) fn name_schema(description: &str, example: &str) -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .description(Some(description))
        .pattern(Some(DisplayName::json_schema_pattern()))
        .examples([example])
        .build()
}

#[derive(Deserialize, ToSchema)]
pub struct LoginRequest {
    #[schema(max_length = 254, example = "ada@example.com")]
    pub email: String,
    #[schema(max_length = 256, example = "correct horse battery staple")]
    pub password: String,
}

/// A user as the API shows it.
#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct UserView {
    pub id: uuid::Uuid,
    pub email: String,
    pub name: Option<String>,
    pub email_verified: bool,
    /// RFC 3339.
    pub created_at: String,
    /// Sign-in methods: `password`, `google`, and the names of the other OpenID providers
    /// (`OIDC_PROVIDERS`) the user has an identity at (`oidc` for an issuer no longer
    /// configured).
    pub providers: Vec<String>,
}

/// The store's sign-in methods (`password` and issuers) as the API names them.
fn method_names(state: &AppState, raw: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for m in raw {
        let name = if m == "password" {
            m
        } else {
            state
                .provider_for_issuer(&m)
                .map_or("oidc", |p| p.name())
                .to_owned()
        };
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

impl UserView {
    pub async fn load(state: &AppState, u: &UserRecord) -> Result<Self, ApiError> {
        let raw = state.store().user_providers(u.id).await?;
        Ok(Self::new(u, method_names(state, raw)))
    }

    pub fn new(u: &UserRecord, providers: Vec<String>) -> Self {
        Self {
            id: u.id.0,
            email: u.email.as_str().to_owned(),
            name: u.name.clone(),
            email_verified: u.email_verified,
            created_at: rfc3339(u.created_at),
            providers,
        }
    }
}

#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct AuthResponse {
    pub user: UserView,
    /// When the access token expires (RFC 3339).
    pub access_expires_at: String,
}

/// The answer to signup: signed in, or — with `REQUIRE_EMAIL_VERIFICATION=true` — created
/// and waiting for the address to be verified (no cookies, no `access_expires_at`).
#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct SignupResponse {
    pub user: UserView,
    /// When the access token expires (RFC 3339); absent when no session was started.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub access_expires_at: Option<String>,
    /// True when the account must verify its address (the mailed link) before signing in.
    pub verification_required: bool,
}

#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct RefreshResponse {
    /// When the new access token expires (RFC 3339).
    pub access_expires_at: String,
}

#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct SessionView {
    pub id: uuid::Uuid,
    pub created_at: String,
    pub last_used_at: String,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    /// Whether this is the session making the request.
    pub current: bool,
}

#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
}

pub(crate) fn with_cookies(
    state: &AppState,
    status: StatusCode,
    tokens: &IssuedTokens,
    body: impl Serialize,
) -> Response {
    let mut headers = HeaderMap::new();
    set_auth_cookies(state.cookies(), &mut headers, &tokens.cookies());
    (status, headers, Json(body)).into_response()
}

/// [`with_cookies`] for a password sign-in: also the device cookie for `user` (keeping the
/// id of the `device` the browser presented, if it was this user's).
pub(crate) fn signed_in_with_password(
    state: &AppState,
    status: StatusCode,
    tokens: &IssuedTokens,
    body: impl Serialize,
    device: Option<&Device>,
) -> Response {
    let mut res = with_cookies(state, status, tokens, body);
    set_device_cookie(
        state.cookies(),
        res.headers_mut(),
        state.device_key().issue(tokens.user_id, device),
    );
    res
}

fn cleared(state: &AppState, res: impl IntoResponse) -> Response {
    let mut headers = HeaderMap::new();
    clear_auth_cookies(state.cookies(), &mut headers);
    (headers, res).into_response()
}

fn clean_name(name: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(n) = name else { return Ok(None) };
    DisplayName::parse(&n)
        .map(|n| n.map(DisplayName::into_string))
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))
}

/// Creates a password account and signs it in.
#[utoipa::path(post, path = "/api/v1/auth/signup", tag = "auth", request_body = SignupRequest,
    responses(
        (status = 201, description = "Account created and a verification link mailed; access, refresh and device cookies set — unless `REQUIRE_EMAIL_VERIFICATION=true`: then no cookies and `verification_required: true`", body = SignupResponse,
            links(("login" = (operation_id = "login", description = "Sign in to the new account with the same email and password.",
                request_body = json!({"email": "$request.body#/email", "password": "$request.body#/password"}))))),
        (status = 400, description = "`invalid_request`, `invalid_email`, `weak_password`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`cross_origin_rejected`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`email_taken`", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "`request_timeout`: the body did not arrive within 10 s of the headers", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`, with `Retry-After`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`overloaded`: the password-hashing queue is full, retry after `Retry-After`; `unavailable`: the database cannot be reached", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn signup(
    State(state): State<AppState>,
    client: ClientCtx,
    ApiJson(req): ApiJson<SignupRequest>,
) -> Result<Response, ApiError> {
    state.limiter().check_auth_ip(&client.rate_key).await?;
    let email = Email::parse(&req.email).map_err(|_| ApiError::InvalidEmail)?;
    state.limiter().check_signup_email(email.as_str()).await?;
    let name = clean_name(req.name)?;
    let password =
        Password::parse(req.password).map_err(|e| ApiError::WeakPassword(e.to_string()))?;
    let hash = state
        .hasher()
        .hash(password)
        .await
        .map_err(ApiError::from)?;
    let new_user = NewUser {
        id: crate::domain::UserId::new(),
        email,
        name,
        password_hash: Some(hash),
        email_verified: false,
        created_at: now_ms(),
    };
    // The account, its verification mail and its `signup` event, in one transaction.
    let client: crate::session::ClientInfo = client.into();
    crate::http::email::create_account(&state, &new_user, &client)
        .await
        .map_err(|e| match e {
            StoreError::Conflict => ApiError::EmailTaken,
            e => e.into(),
        })?;
    let user = UserRecord::from(new_user);
    metrics::counter!("latchkey_signups_total").increment(1);
    let view = UserView::new(&user, vec!["password".to_owned()]);
    if state.config().mail.require_verification {
        let body = SignupResponse {
            user: view,
            access_expires_at: None,
            verification_required: true,
        };
        return Ok((StatusCode::CREATED, Json(body)).into_response());
    }
    let tokens = session::start(&state, user.id, Amr::PWD, client).await?;
    let body = SignupResponse {
        user: view,
        access_expires_at: Some(rfc3339(tokens.access_expires_at * 1000)),
        verification_required: false,
    };
    Ok(signed_in_with_password(
        &state,
        StatusCode::CREATED,
        &tokens,
        body,
        None,
    ))
}

/// Signs in with email and password.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in (`{user, access_expires_at}`; access, refresh and device cookies set) — or, when the account has a second factor (SPEC 11), `{mfa_required: true, methods}` with only the second-factor cookie: finish at `/api/v1/auth/mfa/verify`", body = LoginResponse),
        (status = 400, description = "`invalid_request`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`invalid_credentials` — the same for an unknown email", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`cross_origin_rejected`; `email_unverified` (right password, but `REQUIRE_EMAIL_VERIFICATION=true` and the address is not verified yet)", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "`request_timeout`: the body did not arrive within 10 s of the headers", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`, with `Retry-After`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`overloaded`: the password-hashing queue is full, retry after `Retry-After`; `unavailable`: the database cannot be reached", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn login(
    State(state): State<AppState>,
    client: ClientCtx,
    headers: HeaderMap,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    state.limiter().check_auth_ip(&client.rate_key).await?;
    let email = Email::parse(&req.email).ok();
    let user = match &email {
        Some(e) => state.store().user_by_email(e).await?,
        None => None,
    };
    // Lockout resistance (SPEC 8): failures count against this device's own budget when it
    // presents a valid device cookie for the account, else against the account's shared one.
    let device = user
        .as_ref()
        .and_then(|u| recognised_device(&state, &headers, u.id));
    let budget = match (&device, &email) {
        (Some(d), _) => Some(LoginBudget::Device(d.id.clone())),
        (None, Some(e)) => Some(LoginBudget::Email(e.as_str().to_owned())),
        (None, None) => None,
    };
    let attempt = state.limiter().login_attempt(budget).await?;
    // Unknown email, malformed email, or no password: the dummy hash is verified, so every
    // failure costs one Argon2id verification and returns the same answer.
    let verdict = state
        .hasher()
        .verify(
            &req.password,
            user.as_ref().and_then(|u| u.password_hash.as_deref()),
        )
        .await;
    let ok = match verdict {
        Ok(ok) => ok,
        Err(e) => {
            // Overloaded or failed: no verdict on the password, so no failure counted.
            attempt.give_back().await;
            return Err(e.into());
        }
    };
    let user = match user {
        Some(u) if ok && u.disabled_at.is_none() => u,
        known => {
            attempt.failed();
            metrics::counter!("latchkey_login_failures_total").increment(1);
            // SPEC 12: `login_failed` for a known account only (an unknown address has no
            // history to add it to). Written after the answer, not before it: the answer
            // must take as long for an unknown address as for a known one.
            if let Some(u) = known {
                let reason = if ok { "disabled" } else { "password" };
                let event = Event::new(EventKind::LoginFailed, state.config().clock.now_ms())
                    .user(u.id)
                    .client(&client.into())
                    .with("reason", reason);
                let state = state.clone();
                tokio::spawn(async move {
                    if let Err(e) = state.store().insert_events(&[event]).await {
                        tracing::warn!(error = %e, "login_failed event not recorded");
                    }
                });
            }
            return Err(ApiError::InvalidCredentials);
        }
    };
    attempt.give_back().await;
    // SPEC 10: with REQUIRE_EMAIL_VERIFICATION, a password account signs in only once its
    // address is verified (told only to someone who knows the password).
    if state.config().mail.require_verification && !user.email_verified {
        return Err(ApiError::EmailUnverified);
    }
    // SPEC 11: an account with a second factor gets only the second-factor cookie now.
    let factors = state.store().user_factors(user.id).await?;
    if factors.any() {
        return crate::http::mfa::second_factor_required(&state, user.id, Amr::PWD, &factors).await;
    }
    let tokens = session::start(&state, user.id, Amr::PWD, client.into()).await?;
    metrics::counter!("latchkey_logins_total", "method" => "password").increment(1);
    let body = AuthResponse {
        user: UserView::load(&state, &user).await?,
        access_expires_at: rfc3339(tokens.access_expires_at * 1000),
    };
    Ok(signed_in_with_password(
        &state,
        StatusCode::OK,
        &tokens,
        body,
        device.as_ref(),
    ))
}

/// The device a valid device cookie of the request names, when it is `user`'s. A browser
/// may hold cookies planted beside ours: the first valid one for this user counts.
pub(crate) fn recognised_device(
    state: &AppState,
    headers: &HeaderMap,
    user: UserId,
) -> Option<Device> {
    read_cookie(headers, state.cookies().device_name())
        .into_iter()
        .filter_map(|v| state.device_key().verify(v))
        .find(|d| d.user == user)
}

/// The distinct non-empty refresh cookie values of the request. More than one means a
/// cookie was planted beside ours (e.g. with `Domain=` from a sibling subdomain).
fn refresh_cookies(state: &AppState, headers: &HeaderMap) -> Vec<String> {
    let mut values: Vec<String> = Vec::new();
    for v in read_cookie(headers, state.cookies().refresh_name()) {
        if !v.is_empty() && !values.iter().any(|x| x == v) {
            values.push(v.to_owned());
        }
    }
    values
}

/// Rotates the refresh token and issues a new access token for the same session.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth",
    security(("refresh_cookie" = [])),
    responses(
        (status = 200, description = "Rotated; new cookies set", body = RefreshResponse),
        (status = 401, description = "`refresh_missing`, `refresh_invalid`, `refresh_expired`, `refresh_reused`, `session_revoked`; both cookies cleared", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`cross_origin_rejected`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn refresh(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let presented = match refresh_cookies(&state, &headers).as_slice() {
        [] => None,
        [one] => Some(one.clone()),
        _ => return cleared(&state, ApiError::RefreshInvalid),
    };
    match rotation::refresh(&state, presented.as_deref()).await {
        Ok(tokens) => with_cookies(
            &state,
            StatusCode::OK,
            &tokens,
            RefreshResponse {
                access_expires_at: rfc3339(tokens.access_expires_at * 1000),
            },
        ),
        Err(e) if e.status() == StatusCode::UNAUTHORIZED => cleared(&state, e),
        Err(e) => e.into_response(),
    }
}

/// Revokes the current session (found by the refresh cookie, else the access token).
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    security(("refresh_cookie" = []), ("access_cookie" = []), ("bearer" = []), ()),
    responses(
        (status = 204, description = "Signed out; cookies cleared — also with no or bad cookies"),
        (status = 403, description = "`cross_origin_rejected`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the session could not be revoked", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn logout(
    State(state): State<AppState>,
    client: ClientCtx,
    headers: HeaderMap,
) -> Response {
    let client: crate::session::ClientInfo = client.into();
    let by_user = |sid: SessionId| {
        Event::new(EventKind::SessionRevoked, state.config().clock.now_ms())
            .session(sid)
            .client(&client)
            .with("by", RevokedBy::User.as_str())
            .with("via", "logout")
    };
    let result: Result<(), ApiError> = async {
        // Every presented refresh token that names a session is signed out.
        let mut revoked_any = false;
        for raw in refresh_cookies(&state, &headers) {
            use crate::tokens::refresh::Presented;
            let sid = match Presented::parse(&raw, state.refresh_secret()) {
                // The tag proves the server made it for this session (any generation).
                Some(Presented::Session(t)) => Some(t.sid),
                Some(Presented::Legacy(t)) => state
                    .store()
                    .session_by_token_hash(&t.hash())
                    .await?
                    .map(|(s, _)| s.id),
                None => None,
            };
            if let Some(sid) = sid {
                session::revoke(&state, sid, None, "logout", &[by_user(sid)]).await?;
                revoked_any = true;
            }
        }
        if revoked_any {
            return Ok(());
        }
        if let Ok(Some(token)) = access_token_of(&headers, state.cookies().access_name())
            && let Ok(claims) = authenticate(&state, &token).await
        {
            let event = by_user(claims.sid).user(claims.sub);
            session::revoke(&state, claims.sid, Some(claims.sub), "logout", &[event]).await?;
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => cleared(&state, StatusCode::NO_CONTENT),
        Err(e) => cleared(&state, e),
    }
}

/// Revokes every session of the signed-in user.
#[utoipa::path(post, path = "/api/v1/auth/logout-all", tag = "auth",
    security(("access_cookie" = []), ("bearer" = [])),
    responses(
        (status = 204, description = "Every session revoked; cookies cleared"),
        (status = 401, description = "`token_missing`, `token_expired`, `token_invalid`, `session_revoked`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`cross_origin_rejected`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn logout_all(
    State(state): State<AppState>,
    client: ClientCtx,
    user: AuthUser,
) -> Result<Response, ApiError> {
    let event = Event::new(EventKind::LogoutAll, state.config().clock.now_ms())
        .user(user.user_id)
        .session(user.session_id)
        .client(&client.into());
    session::revoke_all(&state, user.user_id, "logout_all", &[event]).await?;
    Ok(cleared(&state, StatusCode::NO_CONTENT))
}

/// The signed-in user's live sessions.
#[utoipa::path(get, path = "/api/v1/auth/sessions", tag = "sessions",
    security(("access_cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Live sessions, most recently used first", body = SessionList,
            links(("delete_session" = (operation_id = "delete_session", description = "Revoke one of the listed sessions (the first is the most recently used, often the caller's own).",
                parameters(("id" = "$response.body#/sessions/0/id")))))),
        (status = 401, description = "`token_missing`, `token_expired`, `token_invalid`, `session_revoked`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_sessions(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<SessionList>, ApiError> {
    let sessions = state
        .store()
        .live_sessions(Some(user.user_id), now_ms())
        .await?
        .into_iter()
        .map(|s| SessionView {
            id: s.id.0,
            created_at: rfc3339(s.created_at),
            last_used_at: rfc3339(s.last_used_at),
            user_agent: s.user_agent,
            ip: s.ip,
            current: s.id == user.session_id,
        })
        .collect();
    Ok(Json(SessionList { sessions }))
}

/// Revokes one of the signed-in user's sessions.
#[utoipa::path(delete, path = "/api/v1/auth/sessions/{id}", tag = "sessions",
    security(("access_cookie" = []), ("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Session id (from `GET /api/v1/auth/sessions`); any other value is 404")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "`token_missing`, `token_expired`, `token_invalid`, `session_revoked`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`cross_origin_rejected`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such live session of this user", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_session(
    State(state): State<AppState>,
    client: ClientCtx,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let sid: SessionId = id.parse().map_err(|_| ApiError::NotFound)?;
    let event = Event::revoked(
        state.config().clock.now_ms(),
        user.user_id,
        sid,
        RevokedBy::User,
    )
    .client(&client.into())
    .with("from_session", user.session_id.0.to_string());
    if session::revoke(&state, sid, Some(user.user_id), "revoked_by_user", &[event]).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

/// The signed-in user.
#[utoipa::path(get, path = "/api/v1/me", tag = "users",
    security(("access_cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The current user", body = UserView),
        (status = 401, description = "`token_missing`, `token_expired`, `token_invalid`, `session_revoked`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn me(State(state): State<AppState>, user: AuthUser) -> Result<Response, ApiError> {
    let body = match state.profiles().get(user.user_id) {
        Some(body) => body,
        None => {
            let (u, providers) = state
                .store()
                .user_profile(user.user_id)
                .await?
                .filter(|(u, _)| u.disabled_at.is_none())
                .ok_or(ApiError::SessionRevoked)?;
            let body = axum::body::Bytes::from(
                serde_json::to_vec(&UserView::new(&u, method_names(&state, providers)))
                    .map_err(ApiError::internal)?,
            );
            state.profiles().insert(user.user_id, body.clone());
            body
        }
    };
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

//! `/api/v1/auth/email/*` and `/api/v1/auth/password/*`: verification, reset, and changing
//! the password or the address (SPEC 10).
//!
//! Every mail goes out through the outbox in the same transaction as its change
//! ([`Store::apply`]). A mail token is first looked up (unknown, used, expired or another
//! purpose: 400 `token_invalid` before any expensive work), then used by the transaction
//! itself, which re-checks everything atomically — two requests with one token cannot both
//! succeed. A failure that is the client's (a weak password, an address taken meanwhile)
//! rolls the transaction back, so the token survives it.
//!
//! [`Store::apply`]: crate::store::Store::apply

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::clock::{now_ms, rfc3339};
use crate::domain::{Email, Password};
use crate::error::{ApiError, Problem};
use crate::events::{Event, EventKind, RevokedBy};
use crate::http::auth::{AuthResponse, UserView, signed_in_with_password};
use crate::http::extract::{ApiJson, AuthUser, ClientCtx};
use crate::mail::{MailKind, MailToken, Outgoing};
use crate::ratelimit::LoginBudget;
use crate::session;
use crate::state::AppState;
use crate::store::{Change, EmailToken, StoreError, TokenPurpose, UserRecord};

#[derive(Deserialize, ToSchema)]
pub struct TokenRequest {
    /// The token from the link's fragment (`#token=…`): 43 base64url characters.
    #[schema(
        min_length = 43,
        max_length = 43,
        pattern = "^[A-Za-z0-9_-]{43}$",
        example = "q8Yc2hVtJm4dN0pX7rL1sK9fB3gW5zE6aU_iO-yRvHw"
    )]
    pub token: String,
}

#[derive(Deserialize, ToSchema)]
pub struct ForgotRequest {
    #[schema(format = Email, max_length = 254, example = "ada@example.com")]
    pub email: String,
}

#[derive(Deserialize, ToSchema)]
pub struct ResetRequest {
    /// The token from the reset link's fragment: 43 base64url characters.
    #[schema(
        min_length = 43,
        max_length = 43,
        pattern = "^[A-Za-z0-9_-]{43}$",
        example = "q8Yc2hVtJm4dN0pX7rL1sK9fB3gW5zE6aU_iO-yRvHw"
    )]
    pub token: String,
    /// 8 to 256 characters.
    #[schema(
        min_length = 8,
        max_length = 256,
        example = "a new correct horse battery"
    )]
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
pub struct ChangePasswordRequest {
    #[schema(max_length = 256, example = "correct horse battery staple")]
    pub current_password: String,
    /// 8 to 256 characters.
    #[schema(
        min_length = 8,
        max_length = 256,
        example = "a new correct horse battery"
    )]
    pub new_password: String,
}

#[derive(Deserialize, ToSchema)]
pub struct ChangeEmailRequest {
    #[schema(format = Email, max_length = 254, example = "ada.lovelace@example.com")]
    pub new_email: String,
    #[schema(max_length = 256, example = "correct horse battery staple")]
    pub password: String,
}

#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct UserResponse {
    pub user: UserView,
}

/// The answer of every request that queues mail.
#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct Accepted {
    pub message: String,
}

fn accepted(message: &str) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(Accepted {
            message: message.to_owned(),
        }),
    )
        .into_response()
}

/// Guards the mail endpoints: 404 `mail_not_configured` with `SMTP_URL=disabled` — first,
/// before the session or the body is looked at (SPEC 10).
pub struct MailEnabled;

impl axum::extract::FromRequestParts<AppState> for MailEnabled {
    type Rejection = ApiError;

    async fn from_request_parts(
        _parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, ApiError> {
        if state.mailer().enabled() {
            Ok(MailEnabled)
        } else {
            Err(ApiError::MailNotConfigured)
        }
    }
}

/// The stored token a presented one names, if it can still be used for `purpose`.
async fn usable_token(
    state: &AppState,
    raw: &str,
    purpose: TokenPurpose,
) -> Result<EmailToken, ApiError> {
    let token = MailToken::parse(raw.trim()).ok_or(ApiError::LinkInvalid)?;
    match state.store().email_token(&token.hash()).await? {
        Some(t) if t.purpose == purpose && t.used_at.is_none() && t.expires_at > now_ms() => Ok(t),
        _ => Err(ApiError::LinkInvalid),
    }
}

/// A failed precondition of a token's transaction is the token's fault.
fn token_refused(e: StoreError) -> ApiError {
    match e {
        StoreError::Refused => ApiError::LinkInvalid,
        StoreError::Conflict => ApiError::EmailTaken,
        e => e.into(),
    }
}

/// The signed-in user, or 401 when the account is gone or disabled.
pub(crate) async fn current_user(
    state: &AppState,
    user: &AuthUser,
) -> Result<UserRecord, ApiError> {
    state
        .store()
        .user_by_id(user.user_id)
        .await?
        .filter(|u| u.disabled_at.is_none())
        .ok_or(ApiError::SessionRevoked)
}

/// SPEC 11: changing the password or address needs a sign-in within the last 10 minutes.
fn require_recent(state: &AppState, user: &AuthUser) -> Result<(), ApiError> {
    crate::mfa::require::check_recent(state, user)
}

/// Checks a signed-in user's password: 403 `invalid_credentials` when wrong (never 401),
/// counted against the account's failure budget like a failed login.
pub(crate) async fn check_password(
    state: &AppState,
    u: &UserRecord,
    password: &str,
) -> Result<(), ApiError> {
    let attempt = state
        .limiter()
        .login_attempt(Some(LoginBudget::Email(u.email.as_str().to_owned())))
        .await?;
    match state
        .hasher()
        .verify(password, u.password_hash.as_deref())
        .await
    {
        Ok(true) => {
            attempt.give_back().await;
            Ok(())
        }
        Ok(false) => {
            attempt.failed();
            Err(ApiError::WrongPassword)
        }
        Err(e) => {
            attempt.give_back().await;
            Err(e.into())
        }
    }
}

/// Writes `changes` plus `mail` in one transaction, then announces the mail.
pub(crate) async fn apply_with_mail(
    state: &AppState,
    mut changes: Vec<Change<'_>>,
    mail: &[&Outgoing],
) -> Result<Vec<crate::domain::SessionId>, StoreError> {
    for m in mail {
        if let Some(t) = &m.token {
            changes.push(Change::InsertToken(t));
        }
        changes.push(Change::Enqueue(&m.entry));
    }
    let revoked = state.store().apply(&changes).await?;
    state.mailer().queued(mail);
    Ok(revoked)
}

/// The changes that create a password account and, when mail is on, mail its verification
/// link. Used by signup.
pub(crate) async fn create_account(
    state: &AppState,
    user: &crate::store::NewUser,
    client: &crate::session::ClientInfo,
) -> Result<(), StoreError> {
    let signup = Event::new(EventKind::Signup, user.created_at)
        .user(user.id)
        .client(client)
        .with("method", "password");
    let mail = state.mailer().enabled().then(|| {
        state
            .mailer()
            .with_token(TokenPurpose::VerifyEmail, user.id, &user.email)
    });
    apply_with_mail(
        state,
        vec![Change::CreateUser(user), Change::Record(&signup)],
        &mail.iter().collect::<Vec<_>>(),
    )
    .await
    .map(|_| ())
}

/// Mails a new verification link to the signed-in user's address.
#[utoipa::path(post, path = "/api/v1/auth/email/verify/send", tag = "email",
    security(("access_cookie" = []), ("bearer" = [])),
    responses(
        (status = 202, description = "A verification link is on its way", body = Accepted),
        (status = 401, description = "`token_missing`, `token_expired`, `token_invalid`, `session_revoked`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`cross_origin_rejected`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`mail_not_configured`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`already_verified`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`, with `Retry-After`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn send_verification(
    State(state): State<AppState>,
    _mail: MailEnabled,
    client: ClientCtx,
    user: AuthUser,
) -> Result<Response, ApiError> {
    let u = current_user(&state, &user).await?;
    if u.email_verified {
        return Err(ApiError::AlreadyVerified);
    }
    state
        .limiter()
        .check_mail(&client.rate_key, u.email.as_str())
        .await?;
    let mail = state
        .mailer()
        .with_token(TokenPurpose::VerifyEmail, u.id, &u.email);
    apply_with_mail(&state, vec![], &[&mail]).await?;
    Ok(accepted("A verification link is on its way."))
}

/// Marks the address a verification link was sent to verified.
#[utoipa::path(post, path = "/api/v1/auth/email/verify", tag = "email", request_body = TokenRequest,
    responses(
        (status = 200, description = "Verified", body = UserResponse),
        (status = 400, description = "`token_invalid` (unknown, used, expired, for another purpose, or the address changed since), `invalid_request`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`cross_origin_rejected`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`mail_not_configured`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn verify(
    State(state): State<AppState>,
    _mail: MailEnabled,
    client: ClientCtx,
    ApiJson(req): ApiJson<TokenRequest>,
) -> Result<Json<UserResponse>, ApiError> {
    let t = usable_token(&state, &req.token, TokenPurpose::VerifyEmail).await?;
    let now = now_ms();
    let event = Event::new(EventKind::EmailVerified, now)
        .user(t.user_id)
        .client(&client.into())
        .with("email", t.email.as_str());
    state
        .store()
        .apply(&[
            Change::UseToken {
                hash: &t.hash,
                purpose: t.purpose,
                user: t.user_id,
                now,
            },
            Change::MarkVerified {
                user: t.user_id,
                email: &t.email,
            },
            Change::Record(&event),
        ])
        .await
        .map_err(token_refused)?;
    user_response(&state, t.user_id).await
}

async fn user_response(
    state: &AppState,
    id: crate::domain::UserId,
) -> Result<Json<UserResponse>, ApiError> {
    state.profiles().invalidate(id);
    let u = state
        .store()
        .user_by_id(id)
        .await?
        .ok_or(ApiError::LinkInvalid)?;
    Ok(Json(UserResponse {
        user: UserView::load(state, &u).await?,
    }))
}

/// Mails a password-reset link if an account has the address.
#[utoipa::path(post, path = "/api/v1/auth/password/forgot", tag = "email", request_body = ForgotRequest,
    responses(
        (status = 202, description = "The same answer, in the same time, whether or not an account has the address; the mail (if any) is queued after the response", body = Accepted),
        (status = 400, description = "`invalid_email`, `invalid_request`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`cross_origin_rejected`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`mail_not_configured`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited` (per client IP and per address), with `Retry-After`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn forgot(
    State(state): State<AppState>,
    _mail: MailEnabled,
    client: ClientCtx,
    ApiJson(req): ApiJson<ForgotRequest>,
) -> Result<Response, ApiError> {
    let email = Email::parse(&req.email).map_err(|_| ApiError::InvalidEmail)?;
    state
        .limiter()
        .check_mail(&client.rate_key, email.as_str())
        .await?;
    // No lookup here: known and unknown addresses take the same path and the same time.
    if !state.mailer().request_reset(email, client.ip) {
        tracing::warn!("forgot password: too many requests waiting; this one was dropped");
    }
    Ok(accepted(
        "If an account has this address, a link to reset its password is on its way.",
    ))
}

/// The background half of forgot-password: voids the account's outstanding reset links and
/// mails a new one. Nothing for an unknown or disabled address.
pub(crate) async fn send_reset_link(
    state: &AppState,
    email: &Email,
    ip: &str,
) -> Result<(), StoreError> {
    let Some(u) = state.store().user_by_email(email).await? else {
        tracing::info!(%ip, "forgot password: no account has the address; nothing sent");
        return Ok(());
    };
    if u.disabled_at.is_some() {
        tracing::info!(user_id = %u.id, "forgot password: the account is disabled; nothing sent");
        return Ok(());
    }
    let mail = state
        .mailer()
        .with_token(TokenPurpose::ResetPassword, u.id, &u.email);
    let now = now_ms();
    let event = Event::new(EventKind::PasswordResetRequested, now)
        .user(u.id)
        .client(&crate::session::ClientInfo {
            ip: Some(ip.to_owned()),
            user_agent: None,
        });
    apply_with_mail(
        state,
        vec![
            Change::VoidTokens {
                user: u.id,
                purposes: &[TokenPurpose::ResetPassword],
                now,
            },
            Change::Record(&event),
        ],
        &[&mail],
    )
    .await?;
    tracing::info!(user_id = %u.id, %ip, "forgot password: reset link queued");
    Ok(())
}

/// Sets a new password with a reset link's token; signs out every session and in a new one.
#[utoipa::path(post, path = "/api/v1/auth/password/reset", tag = "email", request_body = ResetRequest,
    responses(
        (status = 200, description = "Password set, address verified, every session revoked, signed in anew; access, refresh and device cookies set — or, when the account has a second factor, `{mfa_required: true, methods}` with only the second-factor cookie", body = crate::http::mfa::LoginResponse),
        (status = 400, description = "`token_invalid`, `weak_password` (the token survives it), `invalid_request`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`cross_origin_rejected`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`mail_not_configured`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`overloaded`: the password-hashing queue is full, retry after `Retry-After`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn reset(
    State(state): State<AppState>,
    _mail: MailEnabled,
    client: ClientCtx,
    ApiJson(req): ApiJson<ResetRequest>,
) -> Result<Response, ApiError> {
    let t = usable_token(&state, &req.token, TokenPurpose::ResetPassword).await?;
    let password =
        Password::parse(req.password).map_err(|e| ApiError::WeakPassword(e.to_string()))?;
    let hash = state.hasher().hash(password).await?;
    let now = now_ms();
    let notice = state
        .mailer()
        .notice(MailKind::PasswordReset, &t.email, &t.email);
    let info: crate::session::ClientInfo = client.into();
    let reset_event = Event::new(EventKind::PasswordReset, now)
        .user(t.user_id)
        .client(&info);
    let revoked_event = Event::new(EventKind::SessionRevoked, now)
        .user(t.user_id)
        .client(&info)
        .with("by", RevokedBy::PasswordChange.as_str())
        .with("scope", "all");
    let revoked = apply_with_mail(
        &state,
        vec![
            Change::UseToken {
                hash: &t.hash,
                purpose: t.purpose,
                user: t.user_id,
                now,
            },
            Change::SetPassword {
                user: t.user_id,
                hash: &hash,
            },
            Change::MarkVerified {
                user: t.user_id,
                email: &t.email,
            },
            Change::VoidTokens {
                user: t.user_id,
                purposes: &[TokenPurpose::ResetPassword],
                now,
            },
            Change::RevokeSessions {
                user: t.user_id,
                except: None,
                now,
                reason: "password_reset",
            },
            Change::Record(&reset_event),
            Change::Record(&revoked_event),
        ],
        &[&notice],
    )
    .await
    .map_err(token_refused)?;
    session::mark_revoked(&state, &revoked, now, "password_reset");
    state.profiles().invalidate(t.user_id);
    let u = state
        .store()
        .user_by_id(t.user_id)
        .await?
        .ok_or(ApiError::LinkInvalid)?;
    // SPEC 11: a reset proves the mailbox, not the second factor — an account that has one
    // is asked for it before the new session starts (the password is set either way).
    let factors = state.store().user_factors(u.id).await?;
    if factors.any() {
        return crate::http::mfa::second_factor_required(
            &state,
            u.id,
            crate::mfa::Amr::PWD,
            &factors,
        )
        .await;
    }
    let tokens = session::start(&state, u.id, crate::mfa::Amr::PWD, info).await?;
    let body = AuthResponse {
        user: UserView::load(&state, &u).await?,
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

/// Changes the signed-in user's password; signs out every other session.
#[utoipa::path(post, path = "/api/v1/auth/password/change", tag = "email", request_body = ChangePasswordRequest,
    security(("access_cookie" = []), ("bearer" = [])),
    responses(
        (status = 204, description = "Changed; every other session revoked, outstanding reset links void, a notice mailed"),
        (status = 400, description = "`weak_password`, `invalid_request`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid session: `token_missing`, `token_expired`, `token_invalid`, `session_revoked`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`invalid_credentials` (wrong current password), `reauthentication_required` (signed in more than 10 minutes ago), `cross_origin_rejected`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: too many wrong passwords", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`overloaded`: the password-hashing queue is full", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn change_password(
    State(state): State<AppState>,
    client: ClientCtx,
    user: AuthUser,
    ApiJson(req): ApiJson<ChangePasswordRequest>,
) -> Result<StatusCode, ApiError> {
    require_recent(&state, &user)?;
    let password =
        Password::parse(req.new_password).map_err(|e| ApiError::WeakPassword(e.to_string()))?;
    let u = current_user(&state, &user).await?;
    check_password(&state, &u, &req.current_password).await?;
    let hash = state.hasher().hash(password).await?;
    let now = now_ms();
    let notice = state.mailer().enabled().then(|| {
        state
            .mailer()
            .notice(MailKind::PasswordChanged, &u.email, &u.email)
    });
    let info: crate::session::ClientInfo = client.into();
    let changed = Event::new(EventKind::PasswordChanged, now)
        .user(u.id)
        .session(user.session_id)
        .client(&info);
    let revoked_event = Event::new(EventKind::SessionRevoked, now)
        .user(u.id)
        .session(user.session_id)
        .client(&info)
        .with("by", RevokedBy::PasswordChange.as_str())
        .with("scope", "others");
    let revoked = apply_with_mail(
        &state,
        vec![
            Change::SetPassword {
                user: u.id,
                hash: &hash,
            },
            Change::VoidTokens {
                user: u.id,
                purposes: &[TokenPurpose::ResetPassword],
                now,
            },
            Change::RevokeSessions {
                user: u.id,
                except: Some(user.session_id),
                now,
                reason: "password_changed",
            },
            Change::Record(&changed),
            Change::Record(&revoked_event),
        ],
        &notice.iter().collect::<Vec<_>>(),
    )
    .await?;
    session::mark_revoked(&state, &revoked, now, "password_changed");
    state.profiles().invalidate(u.id);
    Ok(StatusCode::NO_CONTENT)
}

/// Mails a confirmation link to a new address for the signed-in user.
#[utoipa::path(post, path = "/api/v1/auth/email/change", tag = "email", request_body = ChangeEmailRequest,
    security(("access_cookie" = []), ("bearer" = [])),
    responses(
        (status = 202, description = "A confirmation link is on its way to the new address; nothing changes until it is opened", body = Accepted),
        (status = 400, description = "`invalid_email`, `invalid_request`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid session: `token_missing`, `token_expired`, `token_invalid`, `session_revoked`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`invalid_credentials`, `reauthentication_required`, `cross_origin_rejected`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`mail_not_configured`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`email_taken`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`, with `Retry-After`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn change_email(
    State(state): State<AppState>,
    _mail: MailEnabled,
    client: ClientCtx,
    user: AuthUser,
    ApiJson(req): ApiJson<ChangeEmailRequest>,
) -> Result<Response, ApiError> {
    require_recent(&state, &user)?;
    let new_email = Email::parse(&req.new_email).map_err(|_| ApiError::InvalidEmail)?;
    state
        .limiter()
        .check_mail(&client.rate_key, new_email.as_str())
        .await?;
    let u = current_user(&state, &user).await?;
    check_password(&state, &u, &req.password).await?;
    if state.store().user_by_email(&new_email).await?.is_some() {
        return Err(ApiError::EmailTaken);
    }
    let mail = state
        .mailer()
        .with_token(TokenPurpose::ChangeEmail, u.id, &new_email);
    apply_with_mail(
        &state,
        vec![Change::VoidTokens {
            user: u.id,
            purposes: &[TokenPurpose::ChangeEmail],
            now: now_ms(),
        }],
        &[&mail],
    )
    .await?;
    Ok(accepted(
        "A link to confirm the new address is on its way to it.",
    ))
}

/// Switches the account to the address a confirmation link was sent to.
#[utoipa::path(post, path = "/api/v1/auth/email/change/confirm", tag = "email", request_body = TokenRequest,
    responses(
        (status = 200, description = "The address changed (verified); a notice went to the old one", body = UserResponse),
        (status = 400, description = "`token_invalid`, `invalid_request`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`cross_origin_rejected`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`mail_not_configured`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`email_taken`: another account took the address meanwhile (the link stays usable)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn confirm_email_change(
    State(state): State<AppState>,
    _mail: MailEnabled,
    client: ClientCtx,
    ApiJson(req): ApiJson<TokenRequest>,
) -> Result<Json<UserResponse>, ApiError> {
    let t = usable_token(&state, &req.token, TokenPurpose::ChangeEmail).await?;
    let u = state
        .store()
        .user_by_id(t.user_id)
        .await?
        .ok_or(ApiError::LinkInvalid)?;
    let now = now_ms();
    let notice = state
        .mailer()
        .notice(MailKind::EmailChanged, &u.email, &t.email);
    let event = Event::new(EventKind::EmailChanged, now)
        .user(t.user_id)
        .client(&client.into())
        .with("old_email", u.email.as_str())
        .with("new_email", t.email.as_str());
    apply_with_mail(
        &state,
        vec![
            Change::UseToken {
                hash: &t.hash,
                purpose: t.purpose,
                user: t.user_id,
                now,
            },
            Change::SetEmail {
                user: t.user_id,
                email: &t.email,
            },
            // Links sent to the old address (or for another change) die with it.
            Change::VoidTokens {
                user: t.user_id,
                purposes: &TokenPurpose::ALL,
                now,
            },
            Change::Record(&event),
        ],
        &[&notice],
    )
    .await
    .map_err(token_refused)?;
    user_response(&state, t.user_id).await
}

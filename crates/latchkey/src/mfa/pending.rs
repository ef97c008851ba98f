//! Pending sign-ins: the state between a right first factor and the second (SPEC 11).
//!
//! A right password for an account with a second factor creates a [`PendingLogin`] and
//! answers with the second-factor cookie only (no auth cookies, no device cookie). The
//! cookie's value is 256 random bits (the mail-token shape); the store keeps its SHA-256.
//! A pending sign-in lives 5 minutes, allows at most [`MAX_ATTEMPTS`] codes, and is used up
//! by the one that succeeds. Each code attempt also counts against the user's second-factor
//! budget (`RateLimits::mfa_per_user`, shared by every instance on PostgreSQL), which a
//! success gives back.

use axum::http::HeaderMap;

use crate::clock::ms;
use crate::cookies::{MFA_PENDING_MAX_AGE, read_cookie};
use crate::domain::UserId;
use crate::error::ApiError;
use crate::mfa::Amr;
use crate::ratelimit::{LoginAttempt, LoginBudget};
use crate::state::AppState;
use crate::store::{PendingLogin, TokenHash, UserFactors};
use crate::tokens::refresh::RefreshToken as PendingToken;

/// Wrong codes one pending sign-in allows; then it is used up (`mfa_expired`).
pub const MAX_ATTEMPTS: i32 = 5;

/// A new pending sign-in: its cookie value (to set with
/// [`crate::cookies::set_mfa_pending_cookie`]) and the methods it offers.
pub struct Started {
    pub cookie_value: String,
    pub methods: Vec<String>,
}

/// Records a pending sign-in for `user`, whose first factor was `first` (e.g. [`Amr::PWD`]).
pub async fn start(
    state: &AppState,
    user: UserId,
    first: Amr,
    factors: &UserFactors,
) -> Result<Started, ApiError> {
    let now = state.config().clock.now_ms();
    let token = PendingToken::generate();
    let methods = factors.methods();
    state
        .store()
        .insert_pending_login(&PendingLogin {
            id_hash: token.hash(),
            user_id: user,
            amr: first,
            methods: methods.clone(),
            created_at: now,
            expires_at: now.saturating_add(ms(MFA_PENDING_MAX_AGE)),
            attempts: 0,
            used_at: None,
        })
        .await?;
    Ok(Started {
        cookie_value: token.expose().to_owned(),
        methods,
    })
}

/// The live pending sign-in named by the request's second-factor cookie: not used, not
/// expired, attempts left. Anything else — no cookie, several, an unknown one — is 401
/// `mfa_expired`.
pub async fn from_request(state: &AppState, headers: &HeaderMap) -> Result<PendingLogin, ApiError> {
    let values = read_cookie(headers, state.cookies().mfa_pending_name());
    let [raw] = values.as_slice() else {
        return Err(ApiError::MfaExpired);
    };
    let token = PendingToken::parse(raw).ok_or(ApiError::MfaExpired)?;
    let now = state.config().clock.now_ms();
    state
        .store()
        .pending_login(&token.hash())
        .await?
        .filter(|p| p.is_live(now, MAX_ATTEMPTS))
        .ok_or(ApiError::MfaExpired)
}

/// One code attempt on a pending sign-in, taken before the code is checked (so concurrent
/// guesses cannot overshoot): a unit of the user's second-factor budget (429 when spent)
/// and one of the pending sign-in's [`MAX_ATTEMPTS`] (401 `mfa_expired` when none is left).
/// Settle it with [`CodeAttempt::failed`] or [`CodeAttempt::succeeded`].
pub async fn attempt(state: &AppState, pending: &PendingLogin) -> Result<CodeAttempt, ApiError> {
    let budget = user_budget(state, pending.user_id).await?;
    let now = state.config().clock.now_ms();
    if !state
        .store()
        .take_pending_attempt(&pending.id_hash, now, MAX_ATTEMPTS)
        .await?
    {
        budget.give_back().await;
        return Err(ApiError::MfaExpired);
    }
    Ok(CodeAttempt { budget })
}

/// A unit of `user`'s second-factor failure budget (also used by reauthentication).
pub async fn user_budget(state: &AppState, user: UserId) -> Result<LoginAttempt, ApiError> {
    state
        .limiter()
        .login_attempt(Some(LoginBudget::SecondFactor(user.0.to_string())))
        .await
}

/// See [`attempt`].
pub struct CodeAttempt {
    budget: LoginAttempt,
}

impl CodeAttempt {
    /// The code was wrong: both units stay taken.
    pub fn failed(self) {
        self.budget.failed();
    }

    /// The code was right: the user's budget unit goes back (the pending sign-in is then
    /// used up by [`finish`] anyway).
    pub async fn succeeded(self) {
        self.budget.give_back().await;
    }
}

/// Uses the pending sign-in up; `mfa_expired` when another request did first (the same
/// cookie presented twice at once signs in once).
pub async fn finish(state: &AppState, id_hash: &TokenHash) -> Result<(), ApiError> {
    let now = state.config().clock.now_ms();
    if state.store().finish_pending_login(id_hash, now).await? {
        Ok(())
    } else {
        Err(ApiError::MfaExpired)
    }
}

//! Extractors for routes that need more than a session (SPEC 11), for latchkey's own
//! routes and for host applications:
//!
//! ```ignore
//! async fn delete_account(RequireRecentAuth(user): RequireRecentAuth) -> … { … }
//! async fn payouts(RequireMfa(user): RequireMfa) -> … { … }
//! ```
//!
//! Both first authenticate exactly like [`AuthUser`] (same 401s), then add their check.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;

use crate::error::ApiError;
use crate::http::extract::AuthUser;
use crate::state::AppState;

/// A user whose session proved who they are within `Config::recent_auth` (10 minutes):
/// its access token's `auth_time`. Otherwise 403 `reauthentication_required`; the client
/// then calls `POST /api/v1/auth/reauthenticate` and retries.
#[derive(Debug, Clone)]
pub struct RequireRecentAuth(pub AuthUser);

/// A user whose session signed in with two factors (its access token's `amr` has `mfa`).
/// Otherwise 403 `mfa_required`. A session without `amr` (from before the claim) never
/// qualifies.
#[derive(Debug, Clone)]
pub struct RequireMfa(pub AuthUser);

/// The recent-authentication rule, the one place it lives: `auth_time` within
/// `Config::recent_auth` of now (the clock of the session rules).
pub fn check_recent(state: &AppState, user: &AuthUser) -> Result<(), ApiError> {
    let now_secs = state.config().clock.now_ms().div_euclid(1000);
    if user
        .claims
        .authenticated_within(state.config().recent_auth, now_secs)
    {
        Ok(())
    } else {
        Err(ApiError::ReauthenticationRequired)
    }
}

impl<S> FromRequestParts<S> for RequireRecentAuth
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        check_recent(&AppState::from_ref(state), &user)?;
        Ok(Self(user))
    }
}

impl<S> FromRequestParts<S> for RequireMfa
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        if user.claims.amr().is_mfa() {
            Ok(Self(user))
        } else {
            Err(ApiError::MfaRequired)
        }
    }
}

impl std::ops::Deref for RequireRecentAuth {
    type Target = AuthUser;
    fn deref(&self) -> &AuthUser {
        &self.0
    }
}

impl std::ops::Deref for RequireMfa {
    type Target = AuthUser;
    fn deref(&self) -> &AuthUser {
        &self.0
    }
}

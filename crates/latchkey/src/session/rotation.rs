//! The refresh rule (SPEC 5) — the only place it lives.
//!
//! * The session's current token rotates: a compare-and-swap in the store makes it the
//!   previous one and installs `successor(token)` as current.
//! * The immediately previous token, presented again within `REFRESH_REUSE_GRACE` of its
//!   rotation, is a racing caller (two tabs, two instances): it gets `successor(token)` —
//!   which *is* the session's current token — and a new access token for the same session.
//!   Every racer therefore ends up holding the same working refresh token, whatever order
//!   the responses reach the cookie jar.
//! * Any other retired token, or the previous one after the grace window, is theft: the
//!   whole session is revoked and the answer is `refresh_reused`.

use subtle::ConstantTimeEq;

use crate::clock::{ms, now_ms};
use crate::error::ApiError;
use crate::session::{IssuedTokens, issue, revoke};
use crate::state::AppState;
use crate::store::TokenMatch;
use crate::tokens::refresh::RefreshToken;

/// Rotates (or, within grace, re-issues) the session's tokens for a presented refresh token.
pub async fn refresh(state: &AppState, presented: Option<&str>) -> Result<IssuedTokens, ApiError> {
    let raw = presented.ok_or(ApiError::RefreshMissing)?;
    let token = RefreshToken::parse(raw).ok_or(ApiError::RefreshInvalid)?;
    let hash = token.hash();
    let cfg = state.config();

    // A lost compare-and-swap means another request rotated first; look again (the token
    // is then the previous one and the grace rule answers). Bounded: each retry follows a
    // successful rotation by someone else.
    for _ in 0..4 {
        let now = now_ms();
        let (session, which) = state
            .store()
            .session_by_token_hash(&hash)
            .await?
            .ok_or(ApiError::RefreshInvalid)?;
        if session.revoked_at.is_some() {
            return Err(ApiError::SessionRevoked);
        }
        if now >= session.expires_at() {
            return Err(ApiError::RefreshExpired);
        }
        state
            .limiter()
            .check_refresh(&session.id.to_string())
            .await?;

        match which {
            TokenMatch::Current => {
                let successor = token.successor(state.refresh_secret());
                let idle = now
                    .saturating_add(ms(cfg.refresh_ttl))
                    .min(session.absolute_expires_at);
                if state
                    .store()
                    .rotate_session(session.id, &hash, &successor.hash(), now, idle)
                    .await?
                {
                    let mut s = session;
                    s.idle_expires_at = idle;
                    metrics::counter!("latchkey_refreshes_total", "kind" => "rotated").increment(1);
                    return issue(state, &s, successor, now);
                }
            }
            TokenMatch::Previous => {
                let successor = token.successor(state.refresh_secret());
                let within_grace = session
                    .rotated_at
                    .is_some_and(|at| now - at <= ms(cfg.reuse_grace));
                let is_parent_of_current: bool =
                    successor.hash().ct_eq(&session.current_hash).into();
                if within_grace && is_parent_of_current {
                    metrics::counter!("latchkey_refreshes_total", "kind" => "grace").increment(1);
                    return issue(state, &session, successor, now);
                }
                revoke(state, session.id, None, "refresh_reused").await?;
                metrics::counter!("latchkey_refresh_reuse_detected_total").increment(1);
                tracing::warn!(session_id = %session.id, user_id = %session.user_id, "refresh token reused after rotation; session revoked");
                return Err(ApiError::RefreshReused);
            }
            TokenMatch::Retired => {
                revoke(state, session.id, None, "refresh_reused").await?;
                metrics::counter!("latchkey_refresh_reuse_detected_total").increment(1);
                tracing::warn!(session_id = %session.id, user_id = %session.user_id, "retired refresh token presented; session revoked");
                return Err(ApiError::RefreshReused);
            }
        }
    }
    Err(ApiError::internal(
        "refresh did not settle after repeated concurrent rotations",
    ))
}

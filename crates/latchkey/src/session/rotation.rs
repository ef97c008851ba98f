//! The refresh rule (SPEC 5) — the only place it lives.
//!
//! A session's refresh token is the [`SessionToken`] of its current generation `g`: made by
//! the server alone (a MAC), the same bytes for the same `(session, g)`.
//!
//! * Generation `g` (the current token) rotates: a compare-and-swap in the store moves the
//!   session to `g + 1`, whose token is the answer.
//! * Generation `g - 1` (the immediately previous token), presented again within
//!   `REFRESH_REUSE_GRACE` of the rotation, is a racing caller (two tabs, two instances):
//!   it gets the token of `g` — the session's current token — and a new access token for
//!   the same session. Every racer therefore ends up holding the same working refresh
//!   token, whatever order the responses reach the cookie jar.
//! * Any older generation, or `g - 1` after the grace window, is theft: the whole session is
//!   revoked and the answer is `refresh_reused`. Nothing per rotation is stored for this:
//!   the generation number says how old a token is (O(1) state per session).
//!
//! The common case — the current token of a live session — is one store statement
//! ([`crate::store::Store::advance_current_session`]: the compare-and-swap also checks
//! revocation and expiry and returns the session). Only when it changes nothing is the
//! session read and the rule above applied in full; the answer is the same either way.
//!
//! Legacy tokens (random, from before session tokens) are still found by hash: the current
//! one rotates into a session token, the previous one within grace gets the current token,
//! and older ones (remembered as retired) are reuse.

use secrecy::SecretString;
use subtle::ConstantTimeEq;

use crate::clock::ms;
use crate::error::ApiError;
use crate::events::{Event, EventKind, RevokedBy};
use crate::session::{IssuedTokens, issue, revoke};
use crate::state::AppState;
use crate::store::{SessionRecord, TokenMatch};
use crate::tokens::refresh::{Presented, RefreshToken, SessionToken};

/// Rotates (or, within grace, re-issues) the session's tokens for a presented refresh token.
pub async fn refresh(state: &AppState, presented: Option<&str>) -> Result<IssuedTokens, ApiError> {
    let raw = presented.ok_or(ApiError::RefreshMissing)?;
    match Presented::parse(raw, state.refresh_secret()).ok_or(ApiError::RefreshInvalid)? {
        Presented::Session(token) => refresh_session_token(state, token).await,
        Presented::Legacy(token) => refresh_legacy(state, token).await,
    }
}

/// The checks every refresh makes on the session it names, in order. `charged` is the
/// per-session limit's answer when it was already asked for this attempt (the
/// one-statement rotation asks first); otherwise the limit is asked now.
async fn usable(
    state: &AppState,
    session: &SessionRecord,
    now: i64,
    charged: &mut Option<Result<(), ApiError>>,
) -> Result<(), ApiError> {
    if session.revoked_at.is_some() {
        return Err(ApiError::SessionRevoked);
    }
    if now >= session.expires_at() {
        return Err(ApiError::RefreshExpired);
    }
    match charged.take() {
        Some(answer) => answer,
        None => state.limiter().check_refresh(&session.id.to_string()).await,
    }
}

fn within_grace(state: &AppState, session: &SessionRecord, now: i64) -> bool {
    session
        .rotated_at
        .is_some_and(|at| now - at <= ms(state.config().reuse_grace))
}

/// Rotates `session` from `presented_hash` (its current token) to the next generation;
/// `None` when another request rotated or revoked first.
async fn rotate(
    state: &AppState,
    session: SessionRecord,
    presented_hash: &crate::store::TokenHash,
    now: i64,
) -> Result<Option<IssuedTokens>, ApiError> {
    let next_generation = session.generation + 1;
    let successor = SessionToken::issue(state.refresh_secret(), session.id, next_generation as u64);
    let idle = now
        .saturating_add(ms(state.config().refresh_ttl))
        .min(session.absolute_expires_at);
    if !state
        .store()
        .advance_session(
            session.id,
            session.generation,
            presented_hash,
            &successor.hash(),
            now,
            idle,
        )
        .await?
    {
        return Ok(None);
    }
    let s = SessionRecord {
        idle_expires_at: idle,
        generation: next_generation,
        ..session
    };
    metrics::counter!("latchkey_refreshes_total", "kind" => "rotated").increment(1);
    issue(state, &s, SecretString::from(successor.expose()), now).map(Some)
}

/// Within grace: the session's current token again, if it is a session token whose hash
/// the store holds (it always is once the session rotated under this version).
fn current_again(
    state: &AppState,
    session: &SessionRecord,
    now: i64,
) -> Option<Result<IssuedTokens, ApiError>> {
    let current = SessionToken::issue(
        state.refresh_secret(),
        session.id,
        session.generation as u64,
    );
    let same: bool = current.hash().ct_eq(&session.current_hash).into();
    same.then(|| {
        metrics::counter!("latchkey_refreshes_total", "kind" => "grace").increment(1);
        issue(state, session, SecretString::from(current.expose()), now)
    })
}

async fn reused(state: &AppState, session: &SessionRecord, why: &str) -> ApiError {
    // SPEC 12: the reuse and the revocation it causes, in the revocation's transaction.
    let now = state.config().clock.now_ms();
    let events = [
        Event::new(EventKind::RefreshReused, now)
            .user(session.user_id)
            .session(session.id)
            .with("why", why),
        Event::revoked(now, session.user_id, session.id, RevokedBy::Reuse),
    ];
    if let Err(e) = revoke(state, session.id, None, "refresh_reused", &events).await {
        return e;
    }
    metrics::counter!("latchkey_refresh_reuse_detected_total").increment(1);
    tracing::warn!(session_id = %session.id, user_id = %session.user_id, why, "refresh token reused after rotation; session revoked");
    ApiError::RefreshReused
}

/// The common case — the current token of a live session, past its first two rotations —
/// in one store statement, without reading the session first (issue 14). `None` when the
/// statement's conditions did not all hold: the full rule below decides then.
async fn rotate_current(
    state: &AppState,
    token: &SessionToken,
    hash: &crate::store::TokenHash,
) -> Result<Option<IssuedTokens>, ApiError> {
    let Ok(generation) = i64::try_from(token.generation) else {
        return Ok(None);
    };
    let Some(next_generation) = generation.checked_add(1) else {
        return Ok(None);
    };
    let now = state.config().clock.now_ms();
    let successor = SessionToken::issue(state.refresh_secret(), token.sid, next_generation as u64);
    let idle = now.saturating_add(ms(state.config().refresh_ttl));
    let Some(session) = state
        .store()
        .advance_current_session(token.sid, generation, hash, &successor.hash(), now, idle)
        .await?
    else {
        return Ok(None);
    };
    metrics::counter!("latchkey_refreshes_total", "kind" => "rotated").increment(1);
    issue(state, &session, SecretString::from(successor.expose()), now).map(Some)
}

async fn refresh_session_token(
    state: &AppState,
    token: SessionToken,
) -> Result<IssuedTokens, ApiError> {
    let hash = token.hash();
    // The per-session limit gates every rotation, the one-statement one too; its answer is
    // then reused by the full rule, so one attempt is charged once.
    let mut charged = Some(state.limiter().check_refresh(&token.sid.to_string()).await);
    if matches!(charged, Some(Ok(())))
        && let Some(tokens) = rotate_current(state, &token, &hash).await?
    {
        return Ok(tokens);
    }
    // A lost compare-and-swap means another request rotated first; look again (the token
    // is then the previous one and the grace rule answers). Bounded: each retry follows a
    // successful rotation by someone else.
    for _ in 0..4 {
        let now = state.config().clock.now_ms();
        let session = state
            .store()
            .session_by_id(token.sid)
            .await?
            .ok_or(ApiError::RefreshInvalid)?;
        usable(state, &session, now, &mut charged).await?;
        let current = session.generation as u64;
        if token.generation == current {
            // Always true for a token this server issued, except generation 0 of a session
            // whose first token was a legacy one (never issued as a session token).
            if !bool::from(hash.ct_eq(&session.current_hash)) {
                return Err(ApiError::RefreshInvalid);
            }
            if let Some(tokens) = rotate(state, session, &hash, now).await? {
                return Ok(tokens);
            }
        } else if token.generation.checked_add(1) == Some(current) {
            if within_grace(state, &session, now) {
                if let Some(tokens) = current_again(state, &session, now) {
                    return tokens;
                }
                return Err(ApiError::RefreshInvalid);
            }
            return Err(reused(state, &session, "previous token after the grace window").await);
        } else if token.generation < current {
            return Err(reused(state, &session, "token of an older generation").await);
        } else {
            // A generation the session never reached: only a database restored from an
            // older backup does this. Not theft; the token is simply unknown.
            return Err(ApiError::RefreshInvalid);
        }
    }
    Err(ApiError::internal(
        "refresh did not settle after repeated concurrent rotations",
    ))
}

async fn refresh_legacy(state: &AppState, token: RefreshToken) -> Result<IssuedTokens, ApiError> {
    let hash = token.hash();
    for _ in 0..4 {
        let now = state.config().clock.now_ms();
        let (session, which) = state
            .store()
            .session_by_token_hash(&hash)
            .await?
            .ok_or(ApiError::RefreshInvalid)?;
        usable(state, &session, now, &mut None).await?;
        match which {
            TokenMatch::Current => {
                if let Some(tokens) = rotate(state, session, &hash, now).await? {
                    return Ok(tokens);
                }
            }
            TokenMatch::Previous if within_grace(state, &session, now) => {
                if let Some(tokens) = current_again(state, &session, now) {
                    return tokens;
                }
                // Rotated by a version before session tokens: the current token is the
                // legacy successor of this one.
                let successor = token.successor(state.refresh_secret());
                if bool::from(successor.hash().ct_eq(&session.current_hash)) {
                    metrics::counter!("latchkey_refreshes_total", "kind" => "grace").increment(1);
                    return issue(state, &session, SecretString::from(successor.expose()), now);
                }
                return Err(reused(state, &session, "previous legacy token").await);
            }
            TokenMatch::Previous => {
                return Err(reused(state, &session, "previous token after the grace window").await);
            }
            TokenMatch::Retired => {
                return Err(reused(state, &session, "retired legacy token").await);
            }
        }
    }
    Err(ApiError::internal(
        "refresh did not settle after repeated concurrent rotations",
    ))
}

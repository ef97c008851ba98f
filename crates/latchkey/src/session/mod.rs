//! Sessions: starting one at sign-in ([`start`]), the refresh rule ([`rotation`]), and
//! revocation reaching every instance ([`revocation`]).

pub mod profiles;
pub mod revocation;
pub mod rotation;

use std::time::Duration;

use crate::clock::ms;
use crate::domain::{SessionId, UserId};
use crate::error::ApiError;
use crate::events::{Event, EventKind};
use crate::state::AppState;
use crate::store::SessionRecord;
use secrecy::{ExposeSecret as _, SecretString};

use crate::tokens::access;
use crate::tokens::refresh::SessionToken;

/// What a sign-in or a refresh hands to the cookie writer.
pub struct IssuedTokens {
    pub access_token: String,
    /// Unix seconds.
    pub access_expires_at: i64,
    pub access_max_age: Duration,
    /// The refresh token's text (a [`SessionToken`], or a legacy token handed back within
    /// the grace window).
    pub refresh_token: SecretString,
    pub refresh_max_age: Duration,
    pub session_id: SessionId,
    pub user_id: UserId,
}

impl IssuedTokens {
    pub fn cookies(&self) -> crate::cookies::AuthCookies<'_> {
        crate::cookies::AuthCookies {
            access_token: &self.access_token,
            access_max_age: self.access_max_age,
            refresh_token: self.refresh_token.expose_secret(),
            refresh_max_age: self.refresh_max_age,
        }
    }
}

/// Client details recorded with a session, for the session list.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

/// Starts a new session for `user`, who just authenticated by `amr` (RFC 8176: password
/// `Amr::PWD`, an OpenID provider `Amr::FED`, password and a second factor
/// `Amr::PWD_OTP_MFA`, …), and issues its first tokens.
pub async fn start(
    state: &AppState,
    user: UserId,
    amr: crate::mfa::Amr,
    client: ClientInfo,
) -> Result<IssuedTokens, ApiError> {
    let cfg = state.config();
    let now = state.config().clock.now_ms();
    let id = SessionId::new();
    let token = SessionToken::issue(state.refresh_secret(), id, 0);
    let absolute = now.saturating_add(ms(cfg.session_max_age));
    let record = SessionRecord {
        id,
        user_id: user,
        current_hash: token.hash(),
        previous_hash: None,
        rotated_at: None,
        created_at: now,
        last_used_at: now,
        idle_expires_at: now.saturating_add(ms(cfg.refresh_ttl)).min(absolute),
        absolute_expires_at: absolute,
        revoked_at: None,
        user_agent: client.user_agent.map(|ua| ua.chars().take(256).collect()),
        ip: client.ip,
        auth_time: now,
        amr,
        generation: 0,
    };
    // SPEC 12: `login_succeeded` is one more insert in the write that creates the session.
    let event = Event::new(EventKind::LoginSucceeded, now)
        .user(user)
        .session(id)
        .client(&ClientInfo {
            user_agent: record.user_agent.clone(),
            ip: record.ip.clone(),
        })
        .with("amr", amr.to_text());
    if !state.store().insert_session(&record, &[event]).await? {
        // The user was disabled (or removed) while signing in.
        return Err(ApiError::InvalidCredentials);
    }
    issue(state, &record, SecretString::from(token.expose()), now)
}

/// An access token alone (reauthentication renews it without touching the refresh token).
pub struct IssuedAccess {
    pub access_token: String,
    /// Unix seconds.
    pub access_expires_at: i64,
    pub access_max_age: Duration,
}

/// Signs an access token for the session and pairs it with `refresh`.
pub(crate) fn issue(
    state: &AppState,
    s: &SessionRecord,
    refresh: SecretString,
    now: i64,
) -> Result<IssuedTokens, ApiError> {
    let access = issue_access(state, s, now)?;
    let refresh_left = (s.expires_at() - now).max(0) as u64;
    Ok(IssuedTokens {
        access_token: access.access_token,
        access_expires_at: access.access_expires_at,
        access_max_age: access.access_max_age,
        refresh_token: refresh,
        refresh_max_age: Duration::from_millis(refresh_left),
        session_id: s.id,
        user_id: s.user_id,
    })
}

/// Signs an access token for the session: its user, `auth_time` and `amr`.
pub(crate) fn issue_access(
    state: &AppState,
    s: &SessionRecord,
    now: i64,
) -> Result<IssuedAccess, ApiError> {
    let cfg = state.config();
    let now_secs = now.div_euclid(1000);
    // An access token never outlives its session (SPEC 8): `exp` is capped at the session's
    // absolute expiry, rounded down to the second, less the verifier's clock-skew leeway
    // (which accepts a token that long past its `exp`).
    let last_second = s.absolute_expires_at.div_euclid(1000) - access::LEEWAY_SECS as i64;
    let ttl = (cfg.access_ttl.as_secs() as i64)
        .min(last_second - now_secs)
        .max(0);
    let keys = state.keys().current();
    let who = access::Subject {
        sub: s.user_id,
        sid: s.id,
        auth_time: s.auth_time.div_euclid(1000),
        amr: s.amr,
    };
    let (token, claims) =
        access::issue(&keys, &cfg.public_url, who, now_secs, ttl).map_err(ApiError::internal)?;
    Ok(IssuedAccess {
        access_token: token,
        access_expires_at: claims.exp,
        access_max_age: Duration::from_secs(ttl as u64),
    })
}

/// Records that the user of session `sid` just proved who they are again (SPEC 11's
/// reauthentication, by `method`): the session's `auth_time` becomes now and `method` joins
/// its `amr`, in the store — so every later refresh keeps them — and a new access token
/// carries them. `SessionRevoked` when the session is gone, revoked or not `user`'s.
pub async fn reauthenticated(
    state: &AppState,
    sid: SessionId,
    user: UserId,
    method: crate::mfa::Amr,
) -> Result<(SessionRecord, IssuedAccess), ApiError> {
    let now = state.config().clock.now_ms();
    let s = state
        .store()
        .session_by_id(sid)
        .await?
        .filter(|s| s.user_id == user && s.is_live(now))
        .ok_or(ApiError::SessionRevoked)?;
    let amr = s.amr | method;
    if !state
        .store()
        .reauthenticate_session(sid, user, now, amr)
        .await?
    {
        return Err(ApiError::SessionRevoked);
    }
    let s = SessionRecord {
        auth_time: now,
        amr,
        ..s
    };
    let access = issue_access(state, &s, now)?;
    Ok((s, access))
}

/// Revokes one session: in the store, and at once in this instance's revoked set. `events`
/// are written with it (only if it was live); those without a user get the session's.
pub async fn revoke(
    state: &AppState,
    sid: SessionId,
    user: Option<UserId>,
    reason: &str,
    events: &[Event],
) -> Result<bool, ApiError> {
    let now = state.config().clock.now_ms();
    let done = state
        .store()
        .revoke_session(sid, user, now, reason, events)
        .await?;
    if done {
        mark_revoked(state, &[sid], now, reason);
    }
    Ok(done)
}

/// Revokes every session of a user.
pub async fn revoke_all(
    state: &AppState,
    user: UserId,
    reason: &str,
    events: &[Event],
) -> Result<u64, ApiError> {
    let now = state.config().clock.now_ms();
    let revoked = state
        .store()
        .revoke_user_sessions(user, now, reason, events)
        .await?;
    mark_revoked(state, &revoked, now, reason);
    Ok(revoked.len() as u64)
}

/// The one path every revocation made by this instance takes after the store has recorded
/// it: the sessions enter the in-memory revoked set at once, so their access tokens stop
/// working here immediately (other instances learn of it by polling the store).
pub fn mark_revoked(state: &AppState, sids: &[SessionId], now: i64, reason: &str) {
    for sid in sids {
        state.revocations().insert(*sid, now);
    }
    if !sids.is_empty() {
        metrics::counter!("latchkey_revocations_total", "reason" => reason.to_owned())
            .increment(sids.len() as u64);
    }
}

//! Security events (SPEC 12): what happened to an account, recorded in the same transaction
//! as the change itself, and logged once as one structured line (`latchkey::event`).
//!
//! The rule of this module: an [`Event`] holds no secret. Its `detail` is built only from
//! ids, names, counts and reasons by the call sites below; no constructor takes a token,
//! password, code or hash. A write to the store carries its events ([`crate::store::Change::Record`]
//! inside `Store::apply`, or the `events` argument of the single writes), so an event exists
//! if and only if its change committed.

use serde_json::{Map, Value};

use crate::domain::{SessionId, UserId};
use crate::session::ClientInfo;

/// What happened. The names are the API's `type` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Signup,
    LoginSucceeded,
    LoginFailed,
    MfaFailed,
    RefreshReused,
    SessionRevoked,
    LogoutAll,
    PasswordChanged,
    PasswordResetRequested,
    PasswordReset,
    EmailVerified,
    EmailChanged,
    MfaEnabled,
    MfaDisabled,
    PasskeyAdded,
    PasskeyRemoved,
    IdentityLinked,
    UserDisabled,
    KeysRotated,
}

impl EventKind {
    pub const ALL: [EventKind; 19] = [
        EventKind::Signup,
        EventKind::LoginSucceeded,
        EventKind::LoginFailed,
        EventKind::MfaFailed,
        EventKind::RefreshReused,
        EventKind::SessionRevoked,
        EventKind::LogoutAll,
        EventKind::PasswordChanged,
        EventKind::PasswordResetRequested,
        EventKind::PasswordReset,
        EventKind::EmailVerified,
        EventKind::EmailChanged,
        EventKind::MfaEnabled,
        EventKind::MfaDisabled,
        EventKind::PasskeyAdded,
        EventKind::PasskeyRemoved,
        EventKind::IdentityLinked,
        EventKind::UserDisabled,
        EventKind::KeysRotated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Signup => "signup",
            EventKind::LoginSucceeded => "login_succeeded",
            EventKind::LoginFailed => "login_failed",
            EventKind::MfaFailed => "mfa_failed",
            EventKind::RefreshReused => "refresh_reused",
            EventKind::SessionRevoked => "session_revoked",
            EventKind::LogoutAll => "logout_all",
            EventKind::PasswordChanged => "password_changed",
            EventKind::PasswordResetRequested => "password_reset_requested",
            EventKind::PasswordReset => "password_reset",
            EventKind::EmailVerified => "email_verified",
            EventKind::EmailChanged => "email_changed",
            EventKind::MfaEnabled => "mfa_enabled",
            EventKind::MfaDisabled => "mfa_disabled",
            EventKind::PasskeyAdded => "passkey_added",
            EventKind::PasskeyRemoved => "passkey_removed",
            EventKind::IdentityLinked => "identity_linked",
            EventKind::UserDisabled => "user_disabled",
            EventKind::KeysRotated => "keys_rotated",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Who revoked a session (`session_revoked`'s `detail.by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokedBy {
    /// The user: logout, or revoking one of their sessions.
    User,
    /// An operator (`latchkey sessions revoke`, `latchkey users disable`).
    Admin,
    /// Refresh-token reuse detection.
    Reuse,
    /// A password change or reset.
    PasswordChange,
}

impl RevokedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            RevokedBy::User => "user",
            RevokedBy::Admin => "admin",
            RevokedBy::Reuse => "reuse",
            RevokedBy::PasswordChange => "password_change",
        }
    }
}

/// One security event, to be written with its change.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    /// Unix milliseconds.
    pub at: i64,
    /// `None` only for events of no user (`keys_rotated`).
    pub user: Option<UserId>,
    pub session: Option<SessionId>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// A small JSON object: ids, names, methods, reasons — never a secret.
    pub detail: Map<String, Value>,
}

/// The longest user agent kept (like a session's).
const USER_AGENT_MAX: usize = 256;

impl Event {
    pub fn new(kind: EventKind, at: i64) -> Self {
        Event {
            kind,
            at,
            user: None,
            session: None,
            ip: None,
            user_agent: None,
            detail: Map::new(),
        }
    }

    pub fn user(mut self, user: UserId) -> Self {
        self.user = Some(user);
        self
    }

    pub fn session(mut self, session: SessionId) -> Self {
        self.session = Some(session);
        self
    }

    /// The client's IP and user agent.
    pub fn client(mut self, client: &ClientInfo) -> Self {
        self.ip = client.ip.clone();
        self.user_agent = client
            .user_agent
            .as_ref()
            .map(|ua| ua.chars().take(USER_AGENT_MAX).collect());
        self
    }

    /// Adds `key: value` to the detail. Values are names and ids, never secrets.
    pub fn with(mut self, key: &'static str, value: impl Into<Value>) -> Self {
        self.detail.insert(key.to_owned(), value.into());
        self
    }

    /// `session_revoked` of `session`, with who did it.
    pub fn revoked(at: i64, user: UserId, session: SessionId, by: RevokedBy) -> Self {
        Event::new(EventKind::SessionRevoked, at)
            .user(user)
            .session(session)
            .with("by", by.as_str())
    }

    /// The detail as stored (JSON text).
    pub fn detail_json(&self) -> String {
        Value::Object(self.detail.clone()).to_string()
    }
}

/// An event as stored: with its id (the order, and the API's cursor).
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub id: i64,
    pub kind: String,
    pub at: i64,
    pub user: Option<UserId>,
    pub session: Option<SessionId>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: Value,
}

/// Which events [`crate::store::Store::events`] reads, newest first.
#[derive(Debug, Clone, Copy, Default)]
pub struct EventQuery {
    /// One user's; all when `None`.
    pub user: Option<UserId>,
    /// Only those with an id below this (the page after a cursor).
    pub before_id: Option<i64>,
    /// Only those at or after this time (Unix ms).
    pub since: Option<i64>,
    pub limit: i64,
}

/// Logs each committed event as one structured line (target `latchkey::event`). Called by
/// the store backends after the transaction that wrote them committed, so a line means
/// the change happened.
pub fn logged(events: &[Event]) {
    for e in events {
        tracing::info!(
            target: "latchkey::event",
            r#type = e.kind.as_str(),
            user = e.user.map(|u| u.0.to_string()),
            session = e.session.map(|s| s.0.to_string()),
            ip = e.ip.as_deref(),
            detail = %serde_json::Value::Object(e.detail.clone()),
            "security event"
        );
    }
}

/// Deletes the events older than `EVENTS_RETENTION` (by the config's clock); run by the
/// background loop every ~10 minutes. Returns how many went.
pub async fn prune(
    store: &dyn crate::store::Store,
    config: &crate::config::Config,
) -> Result<u64, crate::store::StoreError> {
    let cutoff = config
        .clock
        .now_ms()
        .saturating_sub(crate::clock::ms(config.events_retention));
    store.prune_events(cutoff).await
}

/// The cursors [`encode_cursor`] makes: 11 base64url characters of a big-endian non-negative
/// `i64` — the first character's top bit clear, the last one's two unused bits clear.
pub const CURSOR_PATTERN: &str = "^[A-Za-f][A-Za-z0-9_-]{9}[AEIMQUYcgkosw048]$";

/// The API's opaque cursor for "events older than this one".
pub fn encode_cursor(id: i64) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.to_be_bytes())
}

/// Reads a cursor made by [`encode_cursor`]; `None` for anything else. Every string of
/// [`CURSOR_PATTERN`] is one (a non-negative id), so a client following the OpenAPI
/// document never sends a refused cursor.
pub fn decode_cursor(s: &str) -> Option<i64> {
    use base64::Engine as _;
    if s.len() != 11 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()?;
    let id = i64::from_be_bytes(bytes.try_into().ok()?);
    (id >= 0 && encode_cursor(id) == s).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        let pattern = regex::Regex::new(CURSOR_PATTERN).unwrap();
        for id in [0, 1, 2, 255, 1 << 40, i64::MAX] {
            let c = encode_cursor(id);
            assert_eq!(decode_cursor(&c), Some(id));
            assert!(pattern.is_match(&c), "{c}");
        }
        for bad in [
            "",
            "abc",
            "%%%%%%%%%%%",
            "AAAAAAAAAAB",
            "/////////w_",
            "vCEtFg9lV_j",
        ] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
            assert!(!pattern.is_match(bad), "{bad}");
        }
        assert_eq!(decode_cursor(&encode_cursor(-5)), None);
        // Exactly the strings of the pattern are cursors (schemathesis sends any of them):
        // the first and last characters over their whole range.
        let b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for first in b64.chars() {
            for last in b64.chars() {
                let c = format!("{first}abcXYZ09_{last}");
                assert_eq!(pattern.is_match(&c), decode_cursor(&c).is_some(), "{c}");
            }
        }
    }

    #[test]
    fn every_kind_has_its_name() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
    }
}

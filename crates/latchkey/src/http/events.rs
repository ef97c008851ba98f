//! `GET /api/v1/auth/events` (SPEC 12): the signed-in user's own security events, newest
//! first, a page at a time.

use axum::Json;
use axum::extract::{RawQuery, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::clock::rfc3339;
use crate::error::{ApiError, Problem};
use crate::events::{EventQuery, EventRecord, decode_cursor, encode_cursor};
use crate::http::extract::AuthUser;
use crate::state::AppState;

/// Events per page when `limit` is not given, and the most one page may hold.
pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

/// One security event.
#[derive(Serialize, Deserialize, ToSchema, Debug)]
#[schema(example = json!({
    "type": "login_succeeded",
    "time": "2026-12-02T09:14:03.123Z",
    "ip": "203.0.113.7",
    "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
    "session_id": "0193a5c2-7d1e-7b3a-9f00-2c4d6e8fa1b2",
    "detail": {"amr": "pwd"}
}))]
pub struct EventView {
    /// What happened: `signup`, `login_succeeded`, `login_failed`, `mfa_failed`,
    /// `refresh_reused`, `session_revoked` (`detail.by`: `user`, `admin`, `reuse`,
    /// `password_change`), `logout_all`, `password_changed`, `password_reset_requested`,
    /// `password_reset`, `email_verified`, `email_changed`, `mfa_enabled`, `mfa_disabled`,
    /// `passkey_added`, `passkey_removed`, `identity_linked`, `user_disabled`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When (RFC 3339, UTC).
    pub time: String,
    /// The client's IP, when the event came from a request.
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The session it concerns or came from, if any.
    pub session_id: Option<uuid::Uuid>,
    /// A small object of ids, names and reasons; never a secret.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

impl From<EventRecord> for EventView {
    fn from(e: EventRecord) -> Self {
        EventView {
            kind: e.kind,
            time: rfc3339(e.at),
            ip: e.ip,
            user_agent: e.user_agent,
            session_id: e.session.map(|s| s.0),
            detail: e.detail,
        }
    }
}

/// A page of events.
#[derive(Serialize, Deserialize, ToSchema, Debug)]
#[schema(example = json!({
    "events": [
        {"type": "password_changed", "time": "2026-12-02T09:20:41.000Z", "ip": "203.0.113.7",
         "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
         "session_id": "0193a5c2-7d1e-7b3a-9f00-2c4d6e8fa1b2", "detail": {}},
        {"type": "login_succeeded", "time": "2026-12-02T09:14:03.123Z", "ip": "203.0.113.7",
         "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
         "session_id": "0193a5c2-7d1e-7b3a-9f00-2c4d6e8fa1b2", "detail": {"amr": "pwd"}}
    ],
    "next_cursor": "AAAAAAAAACo"
}))]
pub struct EventPage {
    /// Newest first.
    pub events: Vec<EventView>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// `limit` and `cursor` from the query string. Unknown parameters are ignored; a repeated
/// one is refused like a bad value.
fn parse_query(raw: Option<&str>) -> Result<(i64, Option<i64>), ApiError> {
    let mut limit = None;
    let mut cursor = None;
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "limit" => {
                let n = v
                    .parse::<i64>()
                    .ok()
                    .filter(|n| {
                        (1..=MAX_LIMIT).contains(n) && v.bytes().all(|b| b.is_ascii_digit())
                    })
                    .ok_or(ApiError::InvalidLimit)?;
                if limit.replace(n).is_some() {
                    return Err(ApiError::InvalidLimit);
                }
            }
            "cursor" => {
                let id = decode_cursor(v).ok_or(ApiError::InvalidCursor)?;
                if cursor.replace(id).is_some() {
                    return Err(ApiError::InvalidCursor);
                }
            }
            _ => {}
        }
    }
    Ok((limit.unwrap_or(DEFAULT_LIMIT), cursor))
}

/// The signed-in user's security events, newest first.
#[utoipa::path(get, path = "/api/v1/auth/events", tag = "events", operation_id = "list_events",
    security(("access_cookie" = []), ("bearer" = [])),
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Events per page, 1 to 100 (default 20)", example = 10),
        ("cursor" = Option<String>, Query, min_length = 11, max_length = 11, pattern = "^[A-Za-f][A-Za-z0-9_-]{9}[AEIMQUYcgkosw048]$", description = "The `next_cursor` of the previous page (opaque); absent for the newest page", example = "AAAAAAAAACo"),
    ),
    responses(
        (status = 200, description = "The user's own events, newest first; `next_cursor` null on the last page", body = EventPage),
        (status = 400, description = "`invalid_limit` (not 1 to 100), `invalid_cursor` (not one this server handed out)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`token_missing`, `token_expired`, `token_invalid`, `session_revoked`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    RawQuery(raw): RawQuery,
) -> Result<Json<EventPage>, ApiError> {
    let (limit, before_id) = parse_query(raw.as_deref())?;
    let mut rows = state
        .store()
        .events(EventQuery {
            user: Some(user.user_id),
            before_id,
            since: None,
            limit: limit + 1,
        })
        .await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|e| encode_cursor(e.id))
    } else {
        None
    };
    Ok(Json(EventPage {
        events: rows.into_iter().map(EventView::from).collect(),
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_checked() {
        assert_eq!(parse_query(None).unwrap(), (DEFAULT_LIMIT, None));
        assert_eq!(parse_query(Some("limit=5&x=1")).unwrap(), (5, None));
        let c = encode_cursor(42);
        assert_eq!(
            parse_query(Some(&format!("cursor={c}&limit=100"))).unwrap(),
            (100, Some(42))
        );
        for bad in [
            "limit=0",
            "limit=101",
            "limit=-1",
            "limit=+5",
            "limit=",
            "limit=a",
            "limit=1&limit=2",
        ] {
            assert_eq!(
                parse_query(Some(bad)).unwrap_err().code(),
                "invalid_limit",
                "{bad}"
            );
        }
        for bad in [
            "cursor=",
            "cursor=zz",
            "cursor=%41AAAAAAAAAA",
            &format!("cursor={c}&cursor={c}"),
        ] {
            assert_eq!(
                parse_query(Some(bad)).unwrap_err().code(),
                "invalid_cursor",
                "{bad}"
            );
        }
    }
}

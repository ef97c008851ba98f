//! The events table's SQL (SPEC 12), shared as written by both backends (`$n` placeholders
//! work on both). Ids bind as TEXT on SQLite and UUID on PostgreSQL, so each backend binds.

/// `$1` at, `$2` kind, `$3` user id, `$4` session id, `$5` ip, `$6` user agent, `$7` detail.
pub(super) const INSERT_EVENT: &str = "INSERT INTO events (at, kind, user_id, session_id, ip, user_agent, detail) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// Newest first. `$1` user (NULL: all), `$2` id below (NULL: from the newest), `$3` at or
/// after (NULL: any time), `$4` limit.
pub(super) const SELECT_EVENTS_SQLITE: &str = "SELECT id, at, kind, user_id, session_id, ip, user_agent, detail FROM events \
     WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR id < $2) AND ($3 IS NULL OR at >= $3) \
     ORDER BY id DESC LIMIT $4";
pub(super) const SELECT_EVENTS_POSTGRES: &str = "SELECT id, at, kind, user_id, session_id, ip, user_agent, detail FROM events \
     WHERE ($1::uuid IS NULL OR user_id = $1) AND ($2::bigint IS NULL OR id < $2) \
     AND ($3::bigint IS NULL OR at >= $3) ORDER BY id DESC LIMIT $4";

pub(super) const PRUNE_EVENTS: &str = "DELETE FROM events WHERE at < $1";

/// A stored detail back to JSON (an object; anything unreadable becomes `{}`).
pub(super) fn detail_from(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::Object(Default::default()))
}

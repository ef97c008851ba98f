-- Security events (SPEC 12): one row per security-relevant change, written in the same
-- transaction as the change. Never a secret: `detail` is a small JSON object of ids, names
-- and reasons. `id` orders them (newest first is `id DESC`) and is the API's cursor.
-- `user_id` is NULL only for events of no user (`keys_rotated`); no foreign key, so the
-- history outlives what it is about. Rows older than EVENTS_RETENTION are pruned.
CREATE TABLE events (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    user_id    UUID,
    session_id UUID,
    ip         TEXT,
    user_agent TEXT,
    detail     TEXT NOT NULL
);
CREATE INDEX events_user ON events(user_id, id);
CREATE INDEX events_at ON events(at);

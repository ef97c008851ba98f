-- OAuth sign-in attempts whose callback has run, by SHA-256 of their `state`: a callback
-- replayed with the same (still valid) state cookie is refused. Rows are pruned once the
-- attempt would have expired anyway. (Mirrors migrations/sqlite/0002_oauth_states.sql.)
CREATE TABLE oauth_states_used (
    id         BYTEA PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX oauth_states_used_expires ON oauth_states_used(expires_at);

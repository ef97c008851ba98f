-- OAuth sign-in attempts whose callback has run, by SHA-256 of their `state`: a callback
-- replayed with the same (still valid) state cookie is refused. Rows are pruned once the
-- attempt would have expired anyway.
CREATE TABLE oauth_states_used (
    id         BLOB PRIMARY KEY NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX oauth_states_used_expires ON oauth_states_used(expires_at);

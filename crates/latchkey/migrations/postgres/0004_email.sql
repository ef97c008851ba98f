-- Email flows (SPEC 10) and recent authentication (SPEC 11).

-- When the session's user last proved who they are (password, provider, reset): the access
-- token's `auth_time`, kept across refresh. Existing sessions: their sign-in.
ALTER TABLE sessions ADD COLUMN auth_time BIGINT NOT NULL DEFAULT 0;
UPDATE sessions SET auth_time = created_at;

-- Tokens sent by mail: only their SHA-256 is stored. Each is bound to one purpose, one user
-- and the address it was sent to, and used at most once.
CREATE TABLE email_tokens (
    hash       BYTEA PRIMARY KEY,
    purpose    TEXT NOT NULL,
    user_id    UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    email      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX email_tokens_user ON email_tokens(user_id, purpose);
CREATE INDEX email_tokens_expires ON email_tokens(expires_at);

-- Mail to deliver, written in the same transaction as the change that causes it. `body` is
-- the message sealed with SECRETS_KEY (`key_id` names the key); it is erased once the
-- message is delivered or given up, and the row's metadata stays for metrics.
CREATE TABLE outbox (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    body            BYTEA,
    key_id          TEXT,
    created_at      BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    claimed_until   BIGINT,
    sent_at         BIGINT,
    failed_at       BIGINT,
    last_error      TEXT
);
CREATE INDEX outbox_due ON outbox(next_attempt_at) WHERE sent_at IS NULL AND failed_at IS NULL;
CREATE INDEX outbox_created ON outbox(created_at);

-- latchkey schema (PostgreSQL); mirrors migrations/sqlite/0001_init.sql.
-- Timestamps are Unix milliseconds (BIGINT), ids are UUIDs, token hashes are SHA-256 (BYTEA).
CREATE TABLE users (
    id             UUID PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE,
    name           TEXT,
    password_hash  TEXT,
    email_verified BOOLEAN NOT NULL DEFAULT FALSE,
    created_at     BIGINT NOT NULL,
    disabled_at    BIGINT
);

CREATE TABLE identities (
    issuer     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    user_id    UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    email      TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX identities_user ON identities(user_id);

-- One row per session (a family of refresh tokens). Only SHA-256 hashes of the current and
-- the immediately previous refresh token are kept.
CREATE TABLE sessions (
    id                  UUID PRIMARY KEY,
    user_id             UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    current_hash        BYTEA NOT NULL UNIQUE,
    previous_hash       BYTEA,
    rotated_at          BIGINT,
    created_at          BIGINT NOT NULL,
    last_used_at        BIGINT NOT NULL,
    idle_expires_at     BIGINT NOT NULL,
    absolute_expires_at BIGINT NOT NULL,
    revoked_at          BIGINT,
    revoked_reason      TEXT,
    user_agent          TEXT,
    ip                  TEXT
);
CREATE INDEX sessions_previous_hash ON sessions(previous_hash);
CREATE INDEX sessions_user ON sessions(user_id);
CREATE INDEX sessions_revoked_at ON sessions(revoked_at);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    private_der BYTEA NOT NULL,
    public_key  BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT
);

CREATE TABLE server_secrets (
    name       TEXT PRIMARY KEY,
    value      BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

-- Hashes of a session's older refresh tokens: presenting one is reuse (theft).
CREATE TABLE retired_tokens (
    hash       BYTEA PRIMARY KEY,
    session_id UUID NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    retired_at BIGINT NOT NULL
);
CREATE INDEX retired_tokens_session ON retired_tokens(session_id);

-- Rate limits shared by every instance (PostgreSQL only): one GCRA "theoretical arrival
-- time" per (bucket, SHA-256 of the key), in the database's clock (Unix ms). UNLOGGED: no
-- WAL per login attempt; after a crash or fail-over the limits start afresh, which is
-- harmless. `tat` is deliberately not indexed so updates stay HOT.
CREATE UNLOGGED TABLE rate_limits (
    bucket TEXT NOT NULL,
    key    BYTEA NOT NULL,
    tat    BIGINT NOT NULL,
    PRIMARY KEY (bucket, key)
);

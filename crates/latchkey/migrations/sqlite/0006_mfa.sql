-- Second factors and recent authentication (SPEC 11).

-- How the session's user authenticated (RFC 8176 `amr` values, space-separated: `pwd`,
-- `otp`, `hwk`, `swk`, `fed`, `mfa`), copied into every access token of the session and
-- kept across refresh like `auth_time`. Existing sessions: '' — unknown. Sessions never
-- recorded how they started (password, Google or a reset link), so no value would be
-- honest; their tokens carry no `amr` and never count as multi-factor.
ALTER TABLE sessions ADD COLUMN amr TEXT NOT NULL DEFAULT '';

-- A user's TOTP secret (RFC 6238), sealed with SECRETS_KEY (bound to the table and the
-- user id, `key_id` names the key). `confirmed_at` NULL: set up but not yet confirmed with
-- a code (it protects nothing until then). `last_step`: the last time step a code was
-- accepted for; only later steps are accepted (a code works once).
CREATE TABLE mfa_totp (
    user_id      TEXT PRIMARY KEY NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    secret       BLOB NOT NULL,
    key_id       TEXT,
    created_at   INTEGER NOT NULL,
    confirmed_at INTEGER,
    last_step    INTEGER
);

-- Recovery codes: only their SHA-256 (a code is 80 random bits, so a fast hash is enough:
-- the stored hash cannot be searched back to a code). Each works once.
CREATE TABLE mfa_recovery_codes (
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    hash       BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    used_at    INTEGER,
    PRIMARY KEY (user_id, hash)
);

-- Sign-ins waiting for their second factor: the SHA-256 of the second-factor cookie's
-- random token, the user, what the first factor was (`amr`), the methods offered, and how
-- many codes were tried (at most 5). Dead after `expires_at` (5 minutes) or once used.
CREATE TABLE mfa_pending (
    id_hash    BLOB PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    amr        TEXT NOT NULL,
    methods    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    used_at    INTEGER
);
CREATE INDEX mfa_pending_expires ON mfa_pending(expires_at);

-- Passkeys (SPEC 11). Timestamps are Unix milliseconds.

-- A user's registered passkeys. `credential` is webauthn-rs's serialized `Passkey` (JSON):
-- the credential id, its public key, the signature counter and flags. Public material only,
-- so it is stored in clear: a copy of this table lets nobody sign in.
CREATE TABLE passkeys (
    id            TEXT PRIMARY KEY NOT NULL,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    credential_id BLOB NOT NULL UNIQUE,
    credential    TEXT NOT NULL,
    name          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER
);
CREATE INDEX passkeys_user ON passkeys(user_id);

-- WebAuthn ceremonies in progress (registration, sign-in): the server-side state that pairs
-- with the challenge the browser got, keyed by the SHA-256 of the ceremony id the browser
-- holds. Taken (deleted) by the ceremony's finish, whatever its outcome: single use. Rows
-- past `expires_at` are never used and are deleted when a new ceremony starts.
CREATE TABLE webauthn_ceremonies (
    id         BLOB PRIMARY KEY NOT NULL,
    kind       TEXT NOT NULL,
    user_id    TEXT REFERENCES users(id) ON DELETE CASCADE,
    state      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX webauthn_ceremonies_expires ON webauthn_ceremonies(expires_at);

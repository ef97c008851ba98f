-- Scheduled signing-key rotation (SPEC 13, KEY_ROTATION_INTERVAL): a key may be published
-- before it signs. A key signs from `activates_at` until its `retired_at`; the key it
-- replaces is retired at the new key's `activates_at`. Existing keys signed from creation.
-- (0006 and 0007 are the second-factor and passkey tables.)
ALTER TABLE signing_keys ADD COLUMN activates_at BIGINT;
UPDATE signing_keys SET activates_at = created_at;

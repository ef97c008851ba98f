-- Secrets at rest (SPEC 8); mirrors migrations/sqlite/0003_secrets_at_rest.sql. Private
-- signing keys and server secrets are sealed with SECRETS_KEY (XChaCha20-Poly1305); `key_id`
-- names the key that sealed a row. NULL marks a row written in clear by an older version:
-- it is sealed in place at the next start.
ALTER TABLE signing_keys ADD COLUMN key_id TEXT;
ALTER TABLE server_secrets ADD COLUMN key_id TEXT;

-- Seeds are not kept (issue 9, finding 8): the first key is agreed on through the
-- one-active-key index below instead.
DELETE FROM server_secrets WHERE name = 'initial_signing_key_seed';

-- At most one unretired signing key. Instances starting together on an empty database each
-- insert a first key; the index lets exactly one win. Older databases could only hold one
-- (they agreed through the seed), but retire any extra, keeping the newest, to be sure.
UPDATE signing_keys SET retired_at = created_at
WHERE retired_at IS NULL
  AND kid <> (SELECT kid FROM signing_keys WHERE retired_at IS NULL
              ORDER BY created_at DESC, kid COLLATE "C" DESC LIMIT 1);
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys ((retired_at IS NULL))
WHERE retired_at IS NULL;

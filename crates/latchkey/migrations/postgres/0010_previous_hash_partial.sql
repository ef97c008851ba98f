-- Issue 14: only legacy refresh tokens are looked up by hash (`session_by_token_hash`), and a
-- legacy hash sits in `previous_hash` only while its session is at generation 0 or 1: the
-- first two rotations move it to `retired_tokens`. The lookup now says so, and this partial
-- index holds only the rows it can match (on SQLite, where it replaces the full index, a
-- rotation at generation 2 or later writes 3.3 WAL pages instead of 5.3).
-- Migrations only add (docs/deploy.md): instances of the previous version may still run
-- during a rolling restart and their lookup needs the full `sessions_previous_hash`, so it
-- stays until a later release drops it. Building this index holds writes to `sessions` for
-- about 1.5 s per million sessions (measured on the 1M bench database), reads go on.
CREATE INDEX sessions_previous_hash_legacy ON sessions(previous_hash) WHERE generation <= 1;

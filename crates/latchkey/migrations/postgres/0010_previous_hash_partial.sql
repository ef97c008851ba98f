-- Issue 14: only legacy refresh tokens are looked up by hash (`session_by_token_hash`), and a
-- legacy hash sits in `previous_hash` only while its session is at generation 0 or 1: the
-- first two rotations move it to `retired_tokens`. Indexing every session's previous hash
-- made each rotation update two more entries at random places in that index (on SQLite at
-- 1M sessions, 6.1 WAL pages written per rotation instead of 3.3). The partial index holds
-- only the rows a lookup can match, so a rotation from generation 2 on leaves it alone.
DROP INDEX sessions_previous_hash;
CREATE INDEX sessions_previous_hash ON sessions(previous_hash) WHERE generation <= 1;

-- Issue 14: only legacy refresh tokens are looked up by hash (`session_by_token_hash`), and a
-- legacy hash sits in `previous_hash` only while its session is at generation 0 or 1: the
-- first two rotations move it to `retired_tokens`. Indexing every session's previous hash
-- made each rotation move two more entries at random places in that index (on the 1M
-- database, a rotation at generation 2 or later wrote 5.3 WAL pages; 3.3 with this index).
-- The partial index holds only the rows a lookup can match, so later rotations leave it alone.
-- (SQLite serves one instance: no older binary runs on this database while it changes.)
DROP INDEX sessions_previous_hash;
CREATE INDEX sessions_previous_hash ON sessions(previous_hash) WHERE generation <= 1;

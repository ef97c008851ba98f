-- O(1) refresh state (issue 11): a session's refresh tokens carry its generation, MAC'd by
-- the server; presenting an older generation is reuse, so nothing is remembered per
-- rotation any more. Existing sessions start at generation 0 with their current (legacy)
-- token, and move to session tokens at their next refresh — nobody is signed out.
-- `retired_tokens` keeps only what legacy tokens need (at most two rows per session, the
-- hashes displaced by its first two rotations) and empties as those sessions end.
ALTER TABLE sessions ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;

#!/usr/bin/env python3
"""Query plans of every statement on a hot path (issue 14), on the seeded 1M databases.

Called by bench/scale.py; prints Markdown. The statements are those of
crates/latchkey/src/store/{sqlite,postgres}.rs with sample values in place of the bound
parameters (user 12345, a seeded session, a token hash that exists nowhere), or, for SQLite,
the statement's own `?` placeholders where a literal would let the planner fold a condition
away.
"""
import subprocess

U = "00000000-0000-4000-8000-000000003039"  # seeded user 12345
S = "00000000-0001-4000-8000-000000003039"  # a seeded live session
H = "00" * 32  # a token hash
NEW = "ffffffff-ffff-4fff-8fff-ffffffffffff"  # a session id nobody has

# (where it runs, SQLite statement, PostgreSQL statement)
HOT = [
    ("`GET /me`, profile (once per second per user; the cache holds it meanwhile)",
     f"SELECT id, email, name, password_hash, email_verified, created_at, disabled_at, EXISTS(SELECT 1 FROM identities WHERE user_id = users.id) FROM users WHERE id = '{U}'",
     f"SELECT id, email, name, password_hash, email_verified, created_at, disabled_at, EXISTS(SELECT 1 FROM identities WHERE user_id = users.id) FROM users WHERE id = '{U}'"),
    ("every instance, every 500 ms: sessions revoked since the last poll",
     "SELECT id, revoked_at FROM sessions WHERE revoked_at >= 9999999999999",
     "SELECT id, revoked_at FROM sessions WHERE revoked_at >= 9999999999999"),
    ("refresh: the session by id (from the MAC'd token)",
     f"SELECT * FROM sessions WHERE id = '{S}'",
     f"SELECT * FROM sessions WHERE id = '{S}'"),
    ("refresh: rotate (compare-and-set on generation and hash)",
     f"UPDATE sessions SET previous_hash = current_hash, current_hash = x'{H}', generation = generation + 1, rotated_at = 1, last_used_at = 1, idle_expires_at = 1 WHERE id = '{S}' AND generation = 7 AND current_hash = x'{H}' AND revoked_at IS NULL",
     f"UPDATE sessions SET previous_hash = current_hash, current_hash = '\\x{H}', generation = generation + 1, rotated_at = 1, last_used_at = 1, idle_expires_at = 1 WHERE id = '{S}' AND generation = 7 AND current_hash = '\\x{H}' AND revoked_at IS NULL"),
    ("refresh: a legacy token's hash (sessions from before generations)",
     "SELECT * FROM sessions WHERE current_hash = ?1 UNION ALL SELECT * FROM sessions WHERE previous_hash = ?1 AND generation <= 1 LIMIT 1",
     f"SELECT * FROM sessions WHERE current_hash = '\\x{H}' OR (previous_hash = '\\x{H}' AND generation <= 1) LIMIT 1"),
    ("login: the user by email",
     "SELECT * FROM users WHERE email = 'scale-12345@bench.example'",
     "SELECT * FROM users WHERE email = 'scale-12345@bench.example'"),
    ("login, signup: a new session (only for an enabled user)",
     f"INSERT INTO sessions (id, user_id, current_hash, created_at, last_used_at, idle_expires_at, absolute_expires_at, auth_time, amr) SELECT 'x', '{U}', x'{H}', 1, 1, 1, 1, 1, 'pwd' WHERE EXISTS (SELECT 1 FROM users WHERE id = '{U}' AND disabled_at IS NULL)",
     # One statement with the login's event (PostgresStore::insert_session).
     f"WITH s AS (INSERT INTO sessions (id, user_id, current_hash, created_at, last_used_at, idle_expires_at, absolute_expires_at, user_agent, ip, auth_time, amr) "
     f"SELECT '{NEW}', '{U}', '\\x{H}', 1, 1, 1, 1, 'ua', '127.0.0.1', 1, 'pwd' WHERE EXISTS (SELECT 1 FROM users WHERE id = '{U}' AND disabled_at IS NULL) RETURNING id) "
     f"INSERT INTO events (at, kind, user_id, session_id, ip, user_agent, detail) SELECT 1, 'login_succeeded', '{U}', '{NEW}', '127.0.0.1', 'ua', '{{}}' FROM s"),
    ("logout: revoke one session",
     f"UPDATE sessions SET revoked_at = 1, revoked_reason = 'user' WHERE id = '{S}' AND revoked_at IS NULL",
     f"UPDATE sessions SET revoked_at = 1, revoked_reason = 'user' WHERE id = '{S}' AND revoked_at IS NULL"),
    ("logout-all, password change: every session of a user",
     f"UPDATE sessions SET revoked_at = 1, revoked_reason = 'user' WHERE user_id = '{U}' AND revoked_at IS NULL",
     f"UPDATE sessions SET revoked_at = 1, revoked_reason = 'user' WHERE user_id = '{U}' AND revoked_at IS NULL"),
    ("`GET /sessions`: a user's live sessions",
     "SELECT * FROM sessions WHERE user_id = ?2 AND revoked_at IS NULL AND idle_expires_at > ?1 AND absolute_expires_at > ?1 ORDER BY last_used_at DESC",
     f"SELECT * FROM sessions WHERE revoked_at IS NULL AND idle_expires_at > 1 AND absolute_expires_at > 1 AND user_id = '{U}' ORDER BY last_used_at DESC"),
    ("pruning (every 10 minutes): the read that finds dead sessions",
     "SELECT rowid FROM sessions WHERE absolute_expires_at < 1 OR idle_expires_at < 1 OR revoked_at < 1 LIMIT 100000",
     "SELECT id FROM sessions WHERE absolute_expires_at < 1 OR idle_expires_at < 1 OR revoked_at < 1 LIMIT 100000"),
]


def sqlite_plan(path, sql):
    out = subprocess.run(["sqlite3", path, f"EXPLAIN QUERY PLAN {sql}"], capture_output=True, text=True)
    lines = [l.strip("|- `").strip() for l in out.stdout.splitlines() if l.strip() and l.strip() != "QUERY PLAN"]
    return "; ".join(lines) or out.stderr.strip()


def pg_plan(url, sql):
    # EXPLAIN ANALYZE inside a rolled-back transaction: the writes are measured, not kept.
    script = f"BEGIN; EXPLAIN (ANALYZE, COSTS OFF, TIMING ON, SUMMARY ON) {sql}; ROLLBACK;"
    out = subprocess.run(["psql", url, "-qtA", "-c", script], capture_output=True, text=True)
    lines = [l.strip() for l in out.stdout.splitlines() if l.strip() and l.strip() not in ("BEGIN", "ROLLBACK")]
    keep = [l for l in lines if not l.startswith("Planning Time")]
    return "; ".join(keep) or out.stderr.strip()


def markdown(sqlite_path, pg_url):
    rows = ["| hot path | SQLite `EXPLAIN QUERY PLAN` | PostgreSQL `EXPLAIN ANALYZE` |", "|---|---|---|"]
    for where, lite, pg in HOT:
        a = sqlite_plan(sqlite_path, lite) if sqlite_path else "–"
        b = pg_plan(pg_url, pg) if (pg_url and pg) else "–"
        rows.append(f"| {where} | {a.replace('|', '/')} | {b.replace('|', '/')} |")
    return "\n".join(rows)

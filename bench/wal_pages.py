#!/usr/bin/env python3
"""WAL pages one refresh rotation writes on SQLite (issue 14, migration 0010).

Usage: python3 bench/wal_pages.py [DB]  (default: the 1M template of bench/scale.py,
target/scale/1M-1.db; run `bash bench/run.sh --scale` once to make it).

On a copy of DB: 4,096 sessions are put at generation 5 (past the first two rotations, as
most sessions of a running service are), then 4,000 rotations run as
`advance_current_session` writes them, each its own transaction, with automatic checkpoints
off; WAL bytes ÷ 4,120 (page + frame header) ÷ rotations is printed. Once with the schema as
migrated (partial `sessions_previous_hash`), once with the full index of before 0010.
"""
import os, shutil, sqlite3, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/scale/1M-1.db")
ROTATIONS = 4000


def pages_per_rotation(src, full_index):
    work = tempfile.mkdtemp(prefix="lk-wal-")
    db = os.path.join(work, "w.db")
    try:
        shutil.copyfile(src, db)
        c = sqlite3.connect(db, isolation_level=None)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA wal_autocheckpoint=0")
        if full_index:
            c.execute("DROP INDEX sessions_previous_hash")
            c.execute("CREATE INDEX sessions_previous_hash ON sessions(previous_hash)")
        ids = [r[0] for r in c.execute(
            "SELECT id FROM sessions WHERE revoked_at IS NULL ORDER BY rowid DESC LIMIT 4096")]
        c.executemany("UPDATE sessions SET generation = 5, previous_hash = randomblob(32) WHERE id = ?",
                      [(i,) for i in ids])
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for n in range(ROTATIONS):
            c.execute("UPDATE sessions SET previous_hash = current_hash, current_hash = ?, "
                      "generation = generation + 1, rotated_at = 1, last_used_at = 1 WHERE id = ?",
                      (os.urandom(32), ids[n % len(ids)]))
        frames = (os.path.getsize(db + "-wal") - 32) / (4096 + 24)
        c.close()
        return frames / ROTATIONS
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    print(f"{SRC}: WAL pages per rotation at generation >= 2")
    print(f"  partial index (0010): {pages_per_rotation(SRC, False):.2f}")
    print(f"  full index (before):  {pages_per_rotation(SRC, True):.2f}")

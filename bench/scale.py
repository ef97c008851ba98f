#!/usr/bin/env python3
"""latchkey at scale (issue 14): how each cost grows with the data. Run through
`bash bench/run.sh --scale [seconds-per-run]`; stdlib only.

Datasets (seeded once by `scale_seed seed`, kept as templates and reused while the
migrations do not change; every run works on a copy):

- `empty`: only the 100,000 users the run signs in (no other sessions);
- `10k`, `100k`, `1M`: that many users, as many live sessions, and a tenth of that revoked
  inside the revocation window (what a starting server loads).

On each copy, `scale_seed mint` starts real sessions for the run's users (the code a login
runs after its password check), then a server starts on it and wrk drives it.
"""
import hashlib, json, os, re, shutil, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as b  # noqa: E402  (Server, wrk, parse_wrk, …)

ROOT = b.ROOT
SEED = os.path.join(ROOT, "target/release/examples/scale_seed")
# A dry run of the script itself: LK_SCALE_DIVISOR=100 divides every size, LK_SCALE_PROFILE=debug
# uses the debug binaries.
DIV = int(os.environ.get("LK_SCALE_DIVISOR", "1"))
if os.environ.get("LK_SCALE_PROFILE") == "debug":
    SEED = SEED.replace("/release/", "/debug/")
    b.BIN = b.BIN.replace("/release/", "/debug/")
CACHE = os.path.join(ROOT, "target/scale")
DUR = b.DUR
PASSWORD = "bench password 123"  # scale_seed's PASSWORD
WORKING_SET = 100_000 // DIV
# Tokens are minted before the server starts: one fixed PUBLIC_URL (the tokens' iss and aud)
# for both.
ENV = {"ACCESS_TOKEN_TTL": "2h", "SECRETS_KEY": b.SECRETS_KEY, "PUBLIC_URL": "http://127.0.0.1:8099"}
DATASETS = {  # name: (users, live sessions, revoked sessions)
    "empty": (WORKING_SET, 0, 0),
    "10k": (10_000 // DIV, 10_000 // DIV, 1_000 // DIV),
    "100k": (100_000 // DIV, 100_000 // DIV, 10_000 // DIV),
    "1M": (1_000_000 // DIV, 1_000_000 // DIV, 100_000 // DIV),
}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def migrations_stamp():
    h = hashlib.sha256()
    for kind in ("sqlite", "postgres"):
        d = os.path.join(ROOT, "crates/latchkey/migrations", kind)
        for name in sorted(os.listdir(d)):
            h.update(name.encode())
            with open(os.path.join(d, name), "rb") as f:
                h.update(f.read())
    with open(os.path.join(ROOT, "crates/latchkey/examples/scale_seed.rs"), "rb") as f:
        h.update(f.read())
    return h.hexdigest()[:16]


def psql(sql, db=None):
    url = b.PG_ADMIN if db is None else b.PG_ADMIN.rsplit("/", 1)[0] + "/" + db
    return subprocess.run(["psql", url, "-qtAc", sql], check=True, capture_output=True, text=True).stdout.strip()


def pg_url(db):
    return b.PG_ADMIN.rsplit("/", 1)[0] + "/" + db


def run_seed(url, *args):
    env = dict(os.environ, DATABASE_URL=url, RUST_LOG="warn", **ENV)
    out = subprocess.run([SEED, *args], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"scale_seed {' '.join(args)} failed:\n{out.stderr}")
    return out.stderr.strip()


def template(kind, name):
    """The seeded template of a dataset: built once per migrations stamp."""
    users, live, revoked = DATASETS[name]
    stamp = migrations_stamp()
    os.makedirs(CACHE, exist_ok=True)
    marker = os.path.join(CACHE, f"{kind}-{name}-{DIV}.stamp")
    fresh = os.path.exists(marker) and open(marker).read() == stamp
    args = ["seed", "--users", str(users), "--live", str(live), "--revoked", str(revoked)]
    if kind == "sqlite":
        path = os.path.join(CACHE, f"{name}-{DIV}.db")
        if not fresh or not os.path.exists(path):
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(path + suffix):
                    os.remove(path + suffix)
            t = time.perf_counter()
            log(f"seeding SQLite {name}: {run_seed(f'sqlite://{path}?mode=rwc', *args)}")
            seconds = time.perf_counter() - t
            with open(marker, "w") as f:
                f.write(stamp)
            with open(marker + ".seconds", "w") as f:
                f.write(f"{seconds:.1f}")
        return path
    db = f"latchkey_scale_{name.lower()}_{DIV}"
    exists = psql(f"SELECT 1 FROM pg_database WHERE datname = '{db}'") == "1"
    if not fresh or not exists:
        psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        psql(f'CREATE DATABASE "{db}"')
        t = time.perf_counter()
        log(f"seeding PostgreSQL {name}: {run_seed(pg_url(db), *args)}")
        seconds = time.perf_counter() - t
        with open(marker, "w") as f:
            f.write(stamp)
        with open(marker + ".seconds", "w") as f:
            f.write(f"{seconds:.1f}")
    return db


def seed_seconds(kind, name):
    try:
        return float(open(os.path.join(CACHE, f"{kind}-{name}-{DIV}.stamp.seconds")).read())
    except OSError:
        return None


class Copy:
    """A working copy of a template, removed afterwards."""

    def __init__(self, kind, name, work):
        self.kind = kind
        src = template(kind, name)
        if kind == "sqlite":
            self.path = os.path.join(work, f"{name}.db")
            shutil.copyfile(src, self.path)
            self.url = f"sqlite://{self.path}"
        else:
            self.db = f"latchkey_scale_run_{name.lower()}"
            psql(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
            psql(f'CREATE DATABASE "{self.db}" TEMPLATE "{src}"')
            self.url = pg_url(self.db)

    def size_mb(self):
        if self.kind == "sqlite":
            return round(sum(os.path.getsize(self.path + s) for s in ("", "-wal") if os.path.exists(self.path + s)) / 2**20, 1)
        return round(int(psql(f"SELECT pg_database_size('{self.db}')")) / 2**20, 1)

    def drop(self):
        if self.kind == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(self.path + suffix):
                    os.remove(self.path + suffix)
        else:
            psql(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')


OPEN_LOOP = SEED.replace("scale_seed", "refresh_open_loop")


def open_loop(port, tokens, offset, sessions, rate, dur=None):
    out = subprocess.run([OPEN_LOOP, "--url", f"http://127.0.0.1:{port}", "--tokens", tokens, "--offset", str(offset),
                          "--sessions", str(sessions), "--rate", str(rate), "--seconds", str(dur or DUR)],
                         capture_output=True, text=True, check=True)
    r = json.loads(out.stdout)
    # The columns every row shares; the whole object is kept beside them.
    return dict(r, rps=r["achieved_rps"])


def revoked_loaded(srv):
    m = re.search(r"latchkey_revoked_sessions\S* (\d+)", srv.metrics())
    return int(m.group(1)) if m else None


def measure(kind, name, work, full=True):
    """Every row on one dataset."""
    users = DATASETS[name][0]
    me_users = min(users, WORKING_SET)
    cp = Copy(kind, name, work)
    res = {"dataset": name, "kind": kind, "users": users}
    try:
        tokens = os.path.join(work, f"tokens-{kind}-{name}.tsv")
        t = time.perf_counter()
        run_seed(cp.url, "mint", "--from", "0", "--count", str(me_users), "--out", tokens)
        res["mint_s"] = round(time.perf_counter() - t, 1)
        res["db_mb"] = cp.size_mb()
        srv = b.Server(cp.url, work, extra_env=ENV)
        res["start_ms"] = round(srv.start_ms, 1)
        time.sleep(1)
        res["rss_idle_mb"] = round(srv.rss_kb() / 1024, 1)
        try:
            env = {"LK_TOKENS_FILE": tokens, "LK_THREADS": "2"}
            # One pass to make every user's token known once (as in production, where a
            # user calls more than once), then the measured run.
            b.wrk(srv.port, "/api/v1/me", "me_many.lua", threads=2, conns=32, dur=3, env=env)
            res["me_many"] = b.wrk(srv.port, "/api/v1/me", "me_many.lua", threads=2, conns=32, env=env)
            if full:
                res["login"] = b.wrk(srv.port, "/api/v1/auth/login", "login_many.lua", conns=16,
                                     env={"LK_USERS": str(users), "LK_PASSWORD": PASSWORD})
                res["signup"] = b.wrk(srv.port, "/api/v1/auth/signup", "signup_many.lua", conns=16,
                                      env={"LK_RUN": f"{kind}{name}{int(time.time())}", "LK_PASSWORD": PASSWORD})
            renv = {"LK_TOKENS_FILE": tokens, "LK_THREADS": "8", "LK_SESSIONS": "4096"}
            res["refresh"] = b.wrk(srv.port, "/api/v1/auth/refresh", "refresh_many.lua", threads=8, conns=8, env=renv)
            if kind == "sqlite" and full and me_users >= 3 * 4096:
                # Open loop at 1,500 rotations/s offered, on sessions the unpaced run did not
                # touch: requests leave on schedule whatever the answers do, latency counted
                # from when each was due (examples/refresh_open_loop.rs).
                # Each run on sessions of its own: a session's minted token is spent by the
                # first rotation.
                n = min(8192, (me_users - 4096) // 2)
                res["refresh_open_1000"] = open_loop(srv.port, tokens, offset=4096, sessions=n, rate=1000)
                res["refresh_paced"] = open_loop(srv.port, tokens, offset=4096 + n, sessions=n, rate=1500)
            res["revoked_in_memory"] = revoked_loaded(srv)
            res["rss_after_mb"] = round(srv.rss_kb() / 1024, 1)
        finally:
            srv.stop()
    finally:
        cp.drop()
    return res


def startup_and_revoked(kind, work):
    """Start-up to first 200 on the 1M database (100k revoked), and what the revoked set
    costs: RSS after start on it minus RSS after start on the same data with no revoked
    sessions, per entry."""
    out = {}
    cp = Copy(kind, "1M", work)
    try:
        starts, rss = [], []
        for _ in range(3):
            srv = b.Server(cp.url, work, extra_env=ENV)
            starts.append(srv.start_ms)
            time.sleep(1)
            rss.append(srv.rss_kb())
            out["revoked_loaded"] = revoked_loaded(srv)
            srv.stop()
        out["start_ms"] = [round(s, 1) for s in starts]
        out["rss_kb_with_revoked"] = min(rss)
        if kind == "sqlite":
            # Same database, the revocations moved out of the window: none loaded.
            subprocess.run(["sqlite3", cp.path, "UPDATE sessions SET revoked_at = revoked_at - 864000000 WHERE revoked_at IS NOT NULL"],
                           check=True)
        else:
            psql("UPDATE sessions SET revoked_at = revoked_at - 864000000 WHERE revoked_at IS NOT NULL", cp.db)
        rss = []
        for _ in range(3):
            srv = b.Server(cp.url, work, extra_env=ENV)
            time.sleep(1)
            rss.append(srv.rss_kb())
            srv.stop()
        out["rss_kb_without_revoked"] = min(rss)
        n = out["revoked_loaded"] or 0
        out["bytes_per_revoked_entry"] = round((out["rss_kb_with_revoked"] - out["rss_kb_without_revoked"]) * 1024 / n) if n else None
    finally:
        cp.drop()
    return out


def pruning(kind, work):
    """`/me` p99 while the periodic pruning deletes expired sessions from the 1M database
    (200,000 made expired; a prune takes up to 100,000 and the first runs ~10 s after
    start), against its p99 once pruned."""
    cp = Copy(kind, "1M", work)
    out = {}
    try:
        # 200k of the live sessions expire (idle) a month ago: the next prune deletes them.
        # (A literal, not 30 * 86400000: PostgreSQL would multiply in 32-bit integers.)
        expire = (f"UPDATE sessions SET idle_expires_at = idle_expires_at - {30 * 86_400_000} WHERE {{key}} IN "
                  f"(SELECT {{key}} FROM sessions WHERE revoked_at IS NULL LIMIT {200_000 // DIV})")
        if kind == "sqlite":
            subprocess.run(["sqlite3", cp.path, expire.format(key="rowid")], check=True)
        else:
            psql(expire.format(key="id"), cp.db)
            psql("VACUUM ANALYZE sessions", cp.db)
        tokens = os.path.join(work, f"tokens-prune-{kind}.tsv")
        run_seed(cp.url, "mint", "--from", "0", "--count", str(WORKING_SET), "--out", tokens)
        logpath = os.path.join(work, f"prune-{kind}.log")
        with open(logpath, "w") as logf:
            srv = b.Server(cp.url, work, extra_env=dict(ENV, RUST_LOG="info"), log=logf)
            try:
                env = {"LK_TOKENS_FILE": tokens, "LK_THREADS": "2"}
                t0 = time.time()
                during = b.wrk(srv.port, "/api/v1/me", "me_many.lua", threads=2, conns=32, dur=20, env=env)
                pruned = None
                for _ in range(30):
                    text = open(logpath).read()
                    m = re.search(r'"sessions":(\d+)[^\n]*pruned expired|pruned expired[^\n]*"sessions":(\d+)', text)
                    if m:
                        pruned = int(m.group(1) or m.group(2))
                        break
                    time.sleep(1)
                out["pruned_sessions"] = pruned
                out["during"] = during
                out["during_window_s"] = round(time.time() - t0, 1)
                out["after"] = b.wrk(srv.port, "/api/v1/me", "me_many.lua", threads=2, conns=32, dur=20, env=env)
            finally:
                srv.stop()
    finally:
        cp.drop()
    return out


def ratio(a, b_):
    return None if not a or not b_ else round(a / b_, 2)


def main():
    res = {"cores": os.cpu_count(), "load_before": b.loadavg(), "duration_s": DUR, "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    work = tempfile.mkdtemp(prefix="latchkey-scale-")
    pg = b.pg_available()
    t_all = time.perf_counter()
    try:
        res["sqlite"] = {}
        for name in ("empty", "1M"):
            log(f"SQLite {name}")
            res["sqlite"][name] = measure("sqlite", name, work)
        for name in ("10k", "100k"):
            log(f"SQLite {name} (cost curve)")
            res["sqlite"][name] = measure("sqlite", name, work, full=False)
        log("SQLite start-up and revoked set at 1M")
        res["sqlite_startup"] = startup_and_revoked("sqlite", work)
        log("SQLite pruning at 1M")
        res["prune"] = pruning("sqlite", work)
        if pg:
            res["postgres"] = {}
            for name in ("empty", "1M"):
                log(f"PostgreSQL {name}")
                res["postgres"][name] = measure("postgres", name, work)
            log("PostgreSQL start-up and revoked set at 1M")
            res["postgres_startup"] = startup_and_revoked("postgres", work)
            log("PostgreSQL pruning at 1M")
            res["postgres_prune"] = pruning("postgres", work)
        import explain
        res["plans_md"] = explain.markdown(template("sqlite", "1M"), pg_url(template("postgres", "1M")) if pg else None)
        res["seed_seconds"] = {f"{k}-{n}": seed_seconds(k, n) for k in ("sqlite", "postgres") for n in DATASETS}
        res["divisor"] = DIV
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res["total_s"] = round(time.perf_counter() - t_all)
    res["load_after"] = b.loadavg()
    report(res)


def fmt(v, nd=1):
    return "–" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def report(res):
    rows = [("GET /api/v1/me, 100k users round-robin", "me_many"), ("POST login, many users", "login"),
            ("POST signup", "signup"), ("POST refresh, 4,096 sessions", "refresh"),
            ("POST refresh, open loop at 1,000/s offered (8,192 sessions)", "refresh_open_1000"),
            ("POST refresh, open loop at 1,500/s offered (8,192 sessions)", "refresh_paced")]
    lines = ["| scenario | db | empty: req/s | p50 | p99 ms | 1M: req/s | p50 | p99 ms | p99 1M ÷ empty | errors |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for kind, label in (("sqlite", "SQLite"), ("postgres", "PostgreSQL")):
        data = res.get(kind)
        if not data:
            continue
        for title, key in rows:
            e, m = data["empty"].get(key), data["1M"].get(key)
            if not e or not m:
                continue
            lines.append(f"| {title} | {label} | {fmt(e['rps'], 0)} | {fmt(e['p50_ms'], 2)} | {fmt(e['p99_ms'], 2)} | "
                         f"{fmt(m['rps'], 0)} | {fmt(m['p50_ms'], 2)} | {fmt(m['p99_ms'], 2)} | "
                         f"{fmt(ratio(m['p99_ms'], e['p99_ms']), 2)} | {e['errors'] + m['errors']} |")
    curve = ["| users (live sessions, revoked) | db MB | start ms | `/me` req/s | `/me` p99 ms | refresh req/s | refresh p99 ms | revoked in memory | RSS after runs MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    s = res["sqlite"]
    for name in ("10k", "100k", "1M"):
        r = s[name]
        u, live, rev = DATASETS[name]
        curve.append(f"| {name} ({live:,}, {rev:,}) | {r['db_mb']} | {r['start_ms']} | {fmt(r['me_many']['rps'], 0)} | "
                     f"{fmt(r['me_many']['p99_ms'], 2)} | {fmt(r['refresh']['rps'], 0)} | {fmt(r['refresh']['p99_ms'], 2)} | "
                     f"{r['revoked_in_memory']} | {r['rss_after_mb']} |")
    st = res["sqlite_startup"]
    extra = ["", "| measure | SQLite | PostgreSQL |", "|---|---:|---:|"]
    pst = res.get("postgres_startup") or {}
    extra.append(f"| start to first 200 on 1M (100k revoked), 3 starts (ms) | {', '.join(map(str, st['start_ms']))} | "
                 f"{', '.join(map(str, pst.get('start_ms', [])))} |")
    extra.append(f"| revoked sessions loaded at start | {st['revoked_loaded']} | {pst.get('revoked_loaded')} |")
    extra.append(f"| revoked set: RSS with − without, per entry (bytes) | {st['bytes_per_revoked_entry']} | {pst.get('bytes_per_revoked_entry')} |")
    extra.append(f"| seeding 1M users + 1.1M sessions (s, when it last ran) | {res['seed_seconds'].get('sqlite-1M')} | {res['seed_seconds'].get('postgres-1M')} |")
    def prune_cell(p):
        if not p:
            return "–"
        return (f"{p['pruned_sessions']}: {fmt(p['during']['p99_ms'], 2)} / {fmt(p['after']['p99_ms'], 2)} "
                f"(× {fmt(ratio(p['during']['p99_ms'], p['after']['p99_ms']), 2)})")
    extra.append(f"| `/me` p99 during a prune, pruned sessions: during / after (ms) | {prune_cell(res['prune'])} | "
                 f"{prune_cell(res.get('postgres_prune'))} |")
    extra.append(f"| cores; load before / after; total run (s) | {res['cores']}; {res['load_before']} / {res['load_after']}; {res['total_s']} | |")
    text = "\n".join(lines) + "\n\nCost curve (SQLite; `/me` over every user up to 100,000):\n\n" + "\n".join(curve) + "\n" + "\n".join(extra)
    text += "\n\nQuery plans on the 1M databases (`bench/explain.py`):\n\n" + res["plans_md"]
    print(text)
    with open(os.path.join(ROOT, "bench/scale-results.json"), "w") as f:
        json.dump(res, f, indent=2)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/*.json", ":!bench/*.md"],
                           cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dry = f" (dry run: every size ÷ {DIV}, {os.environ.get('LK_SCALE_PROFILE', 'release')} build)" if DIV != 1 else ""
    section = (f"{SCALE_START}\n## Scale\n\nProduced by `bash bench/run.sh --scale {DUR}` at commit `{commit}`"
               f"{' (with uncommitted changes)' if dirty else ''}{dry}, {res['started']}, on the same {res['cores']}-core "
               "machine as wrk, in "
               f"{res['total_s']} s. Raw data: `bench/scale-results.json`.\n\n" + text + "\n\n" + SCALE_NOTES + f"\n{SCALE_END}\n")
    path = os.path.join(ROOT, "bench/RESULTS.md")
    old = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
    if SCALE_START in old:  # replaced where it stands (what follows it stays after it)
        new = old[:old.index(SCALE_START)] + section + old[old.index(SCALE_END) + len(SCALE_END) + 1:]
    else:
        new = old.rstrip("\n") + "\n\n" + section
    with open(path, "w") as f:
        f.write(new)
    log(f"wrote the Scale section of {path}")


SCALE_START = "<!-- scale:start (bench/scale.py writes this section) -->"
SCALE_END = "<!-- scale:end -->"
SCALE_NOTES = """### What each scale row measures

- Datasets: `empty` holds only the 100,000 users the run signs in; `10k`, `100k` and `1M`
  hold that many users, as many live sessions and a tenth as many sessions revoked inside the
  revocation window, all written by `scale_seed seed` in bulk SQL (one shared Argon2id hash).
  Each run works on a copy; the run's own sessions are started by `scale_seed mint` through
  `session::start`, the code a login runs after its password check.
- `/me` round-robin: 32 connections, each request the next of 100,000 users' Bearer tokens
  (more than the verified-token cache's 16,384 entries and than the one-second profile
  cache can hold for one user), after one 3-second pass.
- login: the users of the dataset in a stride, each request from another client IP through
  the trusted proxy; Argon2id-bound, so its latency is what compares across sizes. signup:
  new addresses.
- refresh: 8 connections cycling 4,096 sessions, each keeping its session's newest token
  (every request a real rotation). Open loop: `examples/refresh_open_loop.rs` sends 1,000, then
  1,500 rotations a second on schedule over another 8,192 sessions, whatever the answers do, and
  counts each latency from when the request was due (no coordinated omission); req/s is the
  rate of 200s achieved.
- start-up: `/healthz` answering 200 after exec, three starts on the 1M copy; the revoked set
  is `VmRSS` after start with the 100,000 revocations in the window minus with them moved out
  of it, divided by the entries loaded.
- prune: 200,000 of the 1M database's live sessions made idle-expired (on each of SQLite and
  PostgreSQL); the first prune (up to 100,000 sessions) runs about 10 s after start, inside the
  20-second `/me` run called "during", compared with a 20-second run after it."""


if __name__ == "__main__":
    main()

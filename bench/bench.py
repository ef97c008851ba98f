#!/usr/bin/env python3
"""latchkey benchmark orchestrator (stdlib only). Run through bench/run.sh."""
import json, os, re, socket, subprocess, sys, tempfile, time, urllib.request, http.client, uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/latchkey")
ARGON = os.path.join(ROOT, "target/release/examples/argon2_capacity")
LUA = os.path.join(ROOT, "bench/lua")
DUR = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 10
PASSWORD = "bench password 123"
PG_ADMIN = os.environ.get("LATCHKEY_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres")
# Required with PostgreSQL (SPEC 2); a fixed bench-only key.
SECRETS_KEY = os.environ.get("SECRETS_KEY", "zpMxY6ELREkcE3Drna0VwrpJxQsHuMm8p8IYx3MDrs8=")


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


class Server:
    def __init__(self, db_url, workdir, extra_env=None, log=None):
        self.port = free_port()
        env = dict(os.environ, DATABASE_URL=db_url, LISTEN_ADDR=f"127.0.0.1:{self.port}",
                   PUBLIC_URL=f"http://127.0.0.1:{self.port}", TRUSTED_PROXIES="127.0.0.1",
                   LOG_FORMAT="json", RUST_LOG="warn", SECRETS_KEY=SECRETS_KEY)
        env.update(extra_env or {})
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([BIN], cwd=workdir, env=env, stdout=subprocess.DEVNULL,
                                     stderr=log if log is not None else subprocess.DEVNULL)
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                c.request("GET", "/healthz"); r = c.getresponse(); r.read()
                if r.status == 200:
                    break
            except OSError:
                pass
            if time.perf_counter() - t0 > 30:
                raise SystemExit("server did not start")
            time.sleep(0.002)
        self.start_ms = (time.perf_counter() - t0) * 1000

    def rss_kb(self, field="VmRSS"):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def post(self, path, body, ip):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        c.request("POST", path, json.dumps(body), {"Content-Type": "application/json", "X-Forwarded-For": ip})
        r = c.getresponse(); r.read()
        cookies = {}
        for k, v in r.getheaders():
            if k.lower() == "set-cookie":
                name, _, rest = v.partition("=")
                cookies[name] = rest.split(";")[0]
        return r.status, cookies

    def metrics(self):
        return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics").read().decode()


def parse_wrk(out):
    def num(pattern, default=0.0):
        m = re.search(pattern, out)
        return float(m.group(1)) if m else default

    def lat(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return None
        v, u = float(m.group(1)), m.group(2)
        return v / 1000 if u == "us" else v * 1000 if u == "s" else v

    non2xx = num(r"Non-2xx or 3xx responses:\s+(\d+)")
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errs = non2xx + (sum(int(x) for x in sock.groups()) if sock else 0)
    return {"rps": num(r"Requests/sec:\s+([\d.]+)"), "p50_ms": lat(50), "p99_ms": lat(99), "errors": int(errs),
            "requests": int(num(r"(\d+) requests in"))}


def wrk(port, path, script=None, threads=2, conns=32, dur=DUR, env=None, background=False):
    cmd = ["wrk", "--latency", f"-t{threads}", f"-c{conns}", f"-d{dur}s"]
    if script:
        cmd += ["-s", os.path.join(LUA, script)]
    cmd.append(f"http://127.0.0.1:{port}{path}")
    e = dict(os.environ, **(env or {}))
    if background:
        return subprocess.Popen(cmd, env=e, stdout=subprocess.PIPE, text=True)
    return parse_wrk(subprocess.run(cmd, env=e, capture_output=True, text=True, check=True).stdout)


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def make_users(srv, n):
    tokens, access = [], None
    for i in range(n):
        st, ck = srv.post("/api/v1/auth/signup", {"email": f"bench{i}@bench.example", "password": PASSWORD},
                          f"10.200.{i // 250}.{i % 250 + 1}")
        assert st == 201, st
        tokens.append(ck["refresh_token"]); access = ck["access_token"]
    return tokens, access


def refresh_bench(srv, tokens, workdir):
    path = os.path.join(workdir, f"tokens-{srv.port}.txt")
    with open(path, "w") as f:
        f.write("\n".join(tokens) + "\n")
    threads = 8
    r = wrk(srv.port, "/api/v1/auth/refresh", "refresh.lua", threads=threads, conns=threads, dur=max(5, DUR // 2),
            env={"LK_TOKENS_FILE": path, "LK_THREADS": str(threads)})
    m = srv.metrics()
    rotated = re.search(r'latchkey_refreshes_total\{kind="rotated"\} (\d+)', m)
    grace = re.search(r'latchkey_refreshes_total\{kind="grace"\} (\d+)', m)
    r["rotated"] = int(rotated.group(1)) if rotated else 0
    r["grace"] = int(grace.group(1)) if grace else 0
    return r


def pg_available():
    try:
        subprocess.run(["psql", PG_ADMIN, "-qtAc", "select 1"], check=True, capture_output=True, timeout=5)
        return True
    except Exception:
        return False


def main():
    res = {"cores": os.cpu_count(), "load_before": loadavg(), "duration_s": DUR}
    work = tempfile.mkdtemp(prefix="latchkey-bench-")
    db = f"sqlite://{work}/bench.db"
    srv = Server(db, work)
    res["start_fresh_ms"] = round(srv.start_ms, 1)
    tokens, access = make_users(srv, 512)
    srv.stop()
    srv = Server(db, work)  # existing database: the start-up figure that matters
    res["start_existing_ms"] = round(srv.start_ms, 1)
    time.sleep(1)
    res["rss_idle_mb"] = round(srv.rss_kb() / 1024, 1)
    st, ck = srv.post("/api/v1/auth/login", {"email": "bench0@bench.example", "password": PASSWORD}, "10.250.0.1")
    access = ck["access_token"]

    res["healthz"] = wrk(srv.port, "/healthz")
    res["me_cookie"] = wrk(srv.port, "/api/v1/me", "me_cookie.lua", env={"LK_ACCESS": access})
    res["me_bearer"] = wrk(srv.port, "/api/v1/me", "me_bearer.lua", env={"LK_ACCESS": access})
    res["login"] = wrk(srv.port, "/api/v1/auth/login", "login.lua", conns=16, env={"LK_USERS": "512", "LK_PASSWORD": PASSWORD})
    flood = wrk(srv.port, "/api/v1/auth/login", "login.lua", conns=16, dur=DUR + 2, background=True,
                env={"LK_USERS": "512", "LK_PASSWORD": PASSWORD})
    time.sleep(1)
    res["me_during_login_flood"] = wrk(srv.port, "/api/v1/me", "me_cookie.lua", threads=1, conns=8, env={"LK_ACCESS": access})
    flood.wait()
    res["refresh_sqlite"] = refresh_bench(srv, tokens, work)
    res["rss_peak_mb"] = round(srv.rss_kb("VmHWM") / 1024, 1)
    srv.stop()

    # Finding 12 (issue 9): memory after a login flood, on a server that did nothing else
    # (the /me floods above leave their own runtime buffers behind).
    srv = Server(db, work)
    wrk(srv.port, "/api/v1/auth/login", "login.lua", conns=16, env={"LK_USERS": "512", "LK_PASSWORD": PASSWORD})
    time.sleep(30)
    res["rss_after_login_flood_mb"] = round(srv.rss_kb() / 1024, 1)
    srv.stop()

    if pg_available():
        name = "latchkey_bench_" + uuid.uuid4().hex[:12]
        subprocess.run(["psql", PG_ADMIN, "-qtAc", f"CREATE DATABASE {name}"], check=True, capture_output=True)
        pg = Server(PG_ADMIN.rsplit("/", 1)[0] + "/" + name, work)
        try:
            ptokens, _ = make_users(pg, 512)
            res["refresh_postgres"] = refresh_bench(pg, ptokens, work)
        finally:
            pg.stop()
            subprocess.run(["psql", PG_ADMIN, "-qtAc", f"DROP DATABASE IF EXISTS {name}"], capture_output=True)
    else:
        res["refresh_postgres"] = None

    res["argon2_raw"] = json.loads(subprocess.run([ARGON, str(min(DUR, 5))], capture_output=True, text=True, check=True).stdout)
    size = subprocess.run("npx --no-install esbuild --minify latchkey.js | gzip -9 | wc -c", shell=True, cwd=os.path.join(ROOT, "client"),
                          capture_output=True, text=True)
    res["client_min_gzip_bytes"] = int(size.stdout.strip() or 0)
    res["load_after"] = loadavg()
    res["ratios"] = {
        "me_cookie_over_healthz": round(res["me_cookie"]["rps"] / res["healthz"]["rps"], 3),
        "login_over_raw_argon2": round(res["login"]["rps"] / res["argon2_raw"]["verifies_per_sec"], 3),
    }
    report(res)


def fmt(v, nd=1):
    return "–" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def report(res):
    rows = [("GET /healthz", res["healthz"]), ("GET /api/v1/me (cookie)", res["me_cookie"]),
            ("GET /api/v1/me (Bearer)", res["me_bearer"]), ("POST /api/v1/auth/login", res["login"]),
            ("GET /api/v1/me during login flood", res["me_during_login_flood"]),
            ("POST /api/v1/auth/refresh (SQLite)", res["refresh_sqlite"])]
    if res.get("refresh_postgres"):
        rows.append(("POST /api/v1/auth/refresh (PostgreSQL)", res["refresh_postgres"]))
    lines = ["| scenario | req/s | p50 ms | p99 ms | errors |", "|---|---:|---:|---:|---:|"]
    for name, r in rows:
        lines.append(f"| {name} | {fmt(r['rps'], 0)} | {fmt(r['p50_ms'], 2)} | {fmt(r['p99_ms'], 2)} | {r['errors']} |")
    a = res["argon2_raw"]
    extra = [
        "",
        "| measure | value |", "|---|---:|",
        f"| `/api/v1/me` ÷ `/healthz` | {res['ratios']['me_cookie_over_healthz']} |",
        f"| raw Argon2id verifies/s ({a['cores']} cores, m=19456 KiB, t=2, p=1) | {a['verifies_per_sec']} |",
        f"| login ÷ raw Argon2id | {res['ratios']['login_over_raw_argon2']} |",
        f"| refresh rotations (SQLite run: rotated / grace) | {res['refresh_sqlite']['rotated']} / {res['refresh_sqlite']['grace']} |",
        f"| resident memory idle / peak (MB) | {res['rss_idle_mb']} / {res['rss_peak_mb']} |",
        f"| resident memory 30 s after the login flood (MB) | {res['rss_after_login_flood_mb']} |",
        f"| start to first 200: fresh / existing database (ms) | {res['start_fresh_ms']} / {res['start_existing_ms']} |",
        f"| client, minified + gzip (bytes) | {res['client_min_gzip_bytes']} |",
        f"| cores; load average before / after | {res['cores']}; {res['load_before']} / {res['load_after']} |",
    ]
    table = "\n".join(lines + extra)
    print(table)
    with open(os.path.join(ROOT, "bench/results.json"), "w") as f:
        json.dump(res, f, indent=2)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results.json", ":!bench/RESULTS.md"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    # The Scale section (bench/scale.py) is kept as it is.
    scale = ""
    if os.path.exists(os.path.join(ROOT, "bench/RESULTS.md")):
        old = open(os.path.join(ROOT, "bench/RESULTS.md")).read()
        if "<!-- scale:start" in old:
            scale = "\n" + old[old.index("<!-- scale:start"):]
    with open(os.path.join(ROOT, "bench/RESULTS.md"), "w") as f:
        f.write("# Benchmark results\n\n")
        f.write(f"Produced by `bash bench/run.sh {DUR}` at commit `{commit}`{' (with uncommitted changes)' if dirty else ''}, "
                f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, wrk on the same {res['cores']}-core machine "
                "(load generator and server share the cores). Absolute figures drift on shared machines; the ratios are "
                "what to compare. Raw data: `bench/results.json`.\n\n")
        f.write(table + "\n")
        f.write("""
## What each row measures

- `/healthz`: the bare server (router, middleware, JSON) — the baseline.
- `/api/v1/me`: one signed-in user, 32 connections. Every request checks the token (a
  byte-identical token is answered from the verified-token cache, never past its `exp`) and
  the revoked-session set; the profile comes from the one-second per-user `/me` cache, so
  this row measures the hot path of a user calling `/me` repeatedly. Before those two caches
  the same command printed 11.7k req/s (every request an Ed25519 verification and two SQLite
  queries), and 25.5k req/s with the token cache and a one-query profile read.
- login: 512 accounts cycled, each request from another client IP through the trusted-proxy
  header, so neither rate limit is what is measured; raw Argon2id is
  `target/release/examples/argon2_capacity` on all cores with nothing else running.
- `/me` during a login flood: 16 connections of logins saturate the hashing threads while 8
  connections call `/me`.
- refresh: 8 connections, each cycling its own 64 sessions and keeping each session's newest
  token, so every request is a real rotation (the rotated/grace counts above show it).
- memory: `VmRSS` one second after start on an existing database; peak is `VmHWM` after all
  runs (two Argon2 buffers of 19 MiB are part of it). "30 s after the login flood" is
  `VmRSS` of a fresh server on the same database 30 s after a 16-connection login run like
  the one above: hashing threads unmap their Argon2 buffer after 3 s idle (target ≤ 20 MB;
  before, each thread kept its 19 MiB for ever).
""")
        f.write(scale)


if __name__ == "__main__":
    main()

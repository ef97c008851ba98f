#!/usr/bin/env python3
"""latchkey soak: realistic mixed load for N minutes against a release build on a file
SQLite database (or PostgreSQL with SOAK_DATABASE_URL), one table row per minute.

Run through scripts/soak.sh. Not part of the test command (it takes minutes by design).

Load model: SOAK_BROWSERS browsers (default 120), each a user with one session on its own
keep-alive connection and its own client IP (X-Forwarded-For through TRUSTED_PROXIES). Every
tick (SOAK_TICK_MS, default 300 ms) a browser calls GET /api/v1/me; every second tick it
refreshes (a real rotation; 1.7/s per session, under the per-session limit); every ~60 s it
signs out and signs in again (Argon2id); every ~10 min it lists its sessions and signs out
everywhere. One more thread signs up a new user every second (who signs out at once). Browsers start over the first 30 s. That is about 400 /me, 200
refreshes, 2 logins, 2 logouts and 1 signup per second.

Per minute: RSS; the allocator's live and free bytes (every arena, from the server's
`latchkey::memory` debug line) and SQLite's live bytes, which tell a growing structure from
a fragmenting heap; open fds, threads, database size, requests, p50/p99 latency (all requests,
measured by the client, so it includes the client's own scheduling), refresh p99, 429s, and
errors (any 5xx, connection error or unexpected status). Fails (exit 1) on any error, when
the RSS peak of the last SOAK_WINDOW minutes (default: the last third of the run, at most
10) exceeds the peak before them by more than SOAK_MAX_GROWTH_MIB (default 2), or on fd
growth beyond 16.
"""
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/latchkey")
MINUTES = float(sys.argv[1]) if len(sys.argv) > 1 else 10
BROWSERS = int(os.environ.get("SOAK_BROWSERS", "120"))
TICK = int(os.environ.get("SOAK_TICK_MS", "300")) / 1000
MAX_GROWTH_MIB = float(os.environ.get("SOAK_MAX_GROWTH_MIB", "2"))
WINDOW = int(os.environ.get("SOAK_WINDOW", str(max(1, min(10, int(MINUTES) // 3)))))
PASSWORD = "soak password 123"
KEY = "zpMxY6ELREkcE3Drna0VwrpJxQsHuMm8p8IYx3MDrs8="


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Stats:
    """One minute's counters; swapped out by the reporter."""

    def __init__(self):
        self.lat = []
        self.refresh_lat = []
        self.limited = 0
        self.errors = 0
        self.samples = []


STATS = Stats()
LOCK = threading.Lock()
STOP = threading.Event()


def record(kind, ms, status, ok):
    with LOCK:
        STATS.lat.append(ms)
        if kind == "refresh":
            STATS.refresh_lat.append(ms)
        if status == 429:
            STATS.limited += 1
        elif not ok:
            STATS.errors += 1
            if len(STATS.samples) < 5:
                STATS.samples.append(f"{kind} -> {status}")


class Browser:
    def __init__(self, port, ip):
        self.port, self.ip = port, ip
        self.conn = None
        self.cookies = {}
        self.origin = f"http://127.0.0.1:{port}"

    def call(self, kind, method, path, body=None, expect=(200,)):
        headers = {"X-Forwarded-For": self.ip, "Origin": self.origin}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        t0 = time.perf_counter()
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.conn.request(method, path, data, headers)
            r = self.conn.getresponse()
            r.read()
        except (OSError, http.client.HTTPException) as e:
            self.conn = None
            record(kind, (time.perf_counter() - t0) * 1000, type(e).__name__, False)
            return None
        ms = (time.perf_counter() - t0) * 1000
        for k, v in r.getheaders():
            if k.lower() == "set-cookie":
                name, _, rest = v.partition("=")
                value = rest.split(";")[0]
                if "Max-Age=0" in v or value == "":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = value
        record(kind, ms, r.status, r.status in expect)
        return r.status


def browser_loop(port, n):
    ip = f"10.{n // 250}.{n % 250}.{random.randint(1, 250)}"
    b = Browser(port, ip)
    # Ramp up over 30 s: 120 signups at once would fill the bounded hashing queue (SPEC 8:
    # 503 overloaded, the intended answer to a flood, not what a soak measures).
    if STOP.wait(n * 30 / BROWSERS):
        return
    email = f"soak-{uuid.uuid4().hex[:12]}@soak.example"
    if b.call("signup", "POST", "/api/v1/auth/signup", {"email": email, "password": PASSWORD}, (201,)) != 201:
        return
    rng = random.Random(n)
    tick = 0
    next_relogin = time.monotonic() + rng.uniform(30, 90)
    next_everywhere = time.monotonic() + rng.uniform(300, 900)
    time.sleep(rng.uniform(0, TICK))
    while not STOP.is_set():
        t0 = time.monotonic()
        tick += 1
        b.call("me", "GET", "/api/v1/me")
        if tick % 2 == 0:
            b.call("refresh", "POST", "/api/v1/auth/refresh")
        if t0 >= next_everywhere:
            b.call("sessions", "GET", "/api/v1/auth/sessions")
            b.call("logout-all", "POST", "/api/v1/auth/logout-all", None, (200, 204))
            next_everywhere = t0 + rng.uniform(300, 900)
            next_relogin = t0
        if t0 >= next_relogin:
            b.call("logout", "POST", "/api/v1/auth/logout", None, (200, 204))
            b.call("login", "POST", "/api/v1/auth/login", {"email": email, "password": PASSWORD})
            next_relogin = t0 + rng.uniform(30, 90)
        STOP.wait(max(0.0, TICK - (time.monotonic() - t0)))


def signup_loop(port):
    n = 0
    while not STOP.is_set():
        n += 1
        b = Browser(port, f"10.250.{(n // 250) % 250}.{n % 250 + 1}")
        if b.call("signup", "POST", "/api/v1/auth/signup",
                  {"email": f"new-{uuid.uuid4().hex[:12]}@soak.example", "password": PASSWORD}, (201,)) == 201:
            # A new user leaves again: their session is revoked, then pruned; the users table
            # is what grows.
            b.call("logout", "POST", "/api/v1/auth/logout", None, (200, 204))
        STOP.wait(1.0)


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def last_memory_line(path):
    """The fields of the server's latest `latchkey::memory` line (one a minute; the allocator's
    live and free bytes, SQLite's live bytes), or {} when there is none yet."""
    found = {}
    try:
        with open(path) as f:
            for line in f:
                if '"latchkey::memory"' in line:
                    try:
                        found = json.loads(line).get("fields", {})
                    except ValueError:
                        pass
    except OSError:
        pass
    return found


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def main():
    if not os.path.exists(BIN):
        raise SystemExit(f"{BIN} missing: run scripts/soak.sh")
    work = tempfile.mkdtemp(prefix="latchkey-soak-")
    port = free_port()
    db_url = os.environ.get("SOAK_DATABASE_URL", f"sqlite://{work}/soak.db")
    env = dict(os.environ, DATABASE_URL=db_url, LISTEN_ADDR=f"127.0.0.1:{port}",
               PUBLIC_URL=f"http://127.0.0.1:{port}", TRUSTED_PROXIES="127.0.0.1",
               LOG_FORMAT="json", RUST_LOG=os.environ.get("RUST_LOG", "warn,latchkey::memory=debug"),
               SECRETS_KEY=KEY)
    log = open(os.path.join(work, "server.log"), "w")
    proc = subprocess.Popen([BIN], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(300):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                break
        except OSError:
            time.sleep(0.1)
    else:
        raise SystemExit("server did not start")
    print(f"soak: {MINUTES:g} min, {BROWSERS} browsers, tick {TICK * 1000:.0f} ms, database {db_url}, "
          f"pid {proc.pid}, logs {work}/server.log", flush=True)
    threads = [threading.Thread(target=browser_loop, args=(port, i), daemon=True) for i in range(BROWSERS)]
    threads.append(threading.Thread(target=signup_loop, args=(port,), daemon=True))
    for t in threads:
        t.start()

    global STATS
    rows, failed = [], []
    print("| min | RSS MiB | heap live MiB | heap free MiB | SQLite MiB | fds | threads | DB MiB | requests "
          "| p50 ms | p99 ms | refresh p99 ms | 429 | errors |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    start = time.monotonic()
    minute = 0
    while minute < MINUTES:
        minute += 1
        time.sleep(max(0.0, start + minute * 60 - time.monotonic()))
        with LOCK:
            s, STATS = STATS, Stats()
        if proc.poll() is not None:
            failed.append(f"server exited with {proc.returncode}")
            break
        st = proc_status(proc.pid)
        rss = int(st["VmRSS"].split()[0]) / 1024
        fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
        db = sum(os.path.getsize(os.path.join(work, f)) for f in os.listdir(work) if f.startswith("soak.db")) / 2**20
        mem = last_memory_line(os.path.join(work, "server.log"))
        row = dict(min=minute, rss=rss, fds=fds, threads=int(st["Threads"]), db=db, n=len(s.lat),
                   p50=pct(s.lat, 50), p99=pct(s.lat, 99), rp99=pct(s.refresh_lat, 99),
                   limited=s.limited, errors=s.errors)
        rows.append(row)
        print(f"| {minute} | {rss:.1f} | {mem.get('heap_in_use', 0) / 2**20:.1f} | "
              f"{mem.get('heap_free', 0) / 2**20:.1f} | {mem.get('sqlite_in_use', 0) / 2**20:.1f} | {fds} | {row['threads']} | {db:.1f} | {row['n']} | {row['p50']:.1f} | "
              f"{row['p99']:.1f} | {row['rp99']:.1f} | {s.limited} | {s.errors} |", flush=True)
        if s.errors:
            failed.append(f"minute {minute}: {s.errors} errors, e.g. {s.samples}")
            print(f"  errors, e.g.: {s.samples}", flush=True)
    STOP.set()
    proc.terminate()
    proc.wait(10)

    if len(rows) > WINDOW:
        # Growth is judged on peaks, not on the last sample: RSS saw-tooths (caches cleared,
        # memory returned), and a drop in the last minute must not hide a rising trend. The
        # peak of the last WINDOW minutes against the peak of everything before them.
        last, before = rows[-WINDOW:], rows[:-WINDOW]
        grew = max(r["rss"] for r in last) - max(r["rss"] for r in before)
        end = rows[-1]["rss"] - rows[-1 - WINDOW]["rss"]
        print(f"RSS over the last {WINDOW} min: peak {grew:+.1f} MiB above the earlier peak "
              f"(limit {MAX_GROWTH_MIB:g}); end-to-end {end:+.1f} MiB")
        if grew > MAX_GROWTH_MIB:
            failed.append(f"RSS peak grew {grew:.1f} MiB in the last {WINDOW} min")
    fd_growth = rows[-1]["fds"] - min(r["fds"] for r in rows) if rows else 0
    if fd_growth > 16:
        failed.append(f"open fds grew by {fd_growth}")
    if failed:
        print("SOAK FAILED: " + "; ".join(failed))
        sys.exit(1)
    print("soak passed")


if __name__ == "__main__":
    main()

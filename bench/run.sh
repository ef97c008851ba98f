#!/usr/bin/env bash
# latchkey benchmark: builds in release mode, starts latchkey on a fresh database, drives it
# with wrk, prints one table, writes bench/results.json and bench/RESULTS.md.
# Not part of the test command or CI. Usage: bash bench/run.sh [seconds-per-run]
# Scale (issue 14): bash bench/run.sh --scale [seconds-per-run] seeds 10k/100k/1M-user
# databases (SQLite and PostgreSQL; kept in target/scale and reused), runs bench/scale.py and
# rewrites the Scale section of bench/RESULTS.md and bench/scale-results.json.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null 2>&1; then
  echo "installing wrk (apt)"
  (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null
fi
echo "building (release)…"
cargo build --release -p latchkey-server --bins
cargo build --release -p latchkey --example argon2_capacity
if [ ! -d client/node_modules ]; then (cd client && npm ci --no-audit --no-fund --loglevel=error); fi
if [ "${1:-}" = "--scale" ]; then
  shift
  command -v sqlite3 >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq sqlite3) >/dev/null
  cargo build --release -p latchkey --example scale_seed --example refresh_open_loop
  exec python3 bench/scale.py "$@"
fi
exec python3 bench/bench.py "$@"

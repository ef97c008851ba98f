#!/usr/bin/env bash
# Soak test (not in CI, takes minutes by design): builds latchkey in release mode and runs
# scripts/soak.py — realistic mixed load for N minutes (default 10), one row per minute with
# RSS, open fds, threads, database size, p50/p99 and errors; exits non-zero on any 5xx or
# unexpected answer, on RSS growth over the run's last third (at most 10 minutes) beyond
# SOAK_MAX_GROWTH_MIB (default 2), or on fd growth. Knobs: SOAK_BROWSERS, SOAK_TICK_MS,
# SOAK_WINDOW, SOAK_DATABASE_URL (e.g. a PostgreSQL database).
# Usage: bash scripts/soak.sh [minutes]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p latchkey-server --bins
exec python3 scripts/soak.py "${1:-10}"

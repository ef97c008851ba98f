#!/usr/bin/env bash
# The one command that runs every test latchkey has (README, .ci/run).
#
# Idempotent: installs what it needs (Debian chromium, npm packages, aiosmtpd), makes sure the local
# PostgreSQL answers, then runs formatting and lint checks, the spin model of the refresh
# protocol (scripts/model-check.sh), the Rust tests on SQLite, the
# Rust integration suite again on PostgreSQL plus the multi-instance tests, a short run of
# every fuzz target (nightly + cargo-fuzz, installed if missing), the browser client's unit
# tests, the end-to-end tests in Chromium, the offline token verifier examples (Rust, Node,
# Python), the systemd units of docs/, and OpenAPI fuzzing (schemathesis).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

step() { printf '\n==> %s\n' "$*"; }

# --- PostgreSQL: required (CI requires it). ---------------------------------------------
PG_ADMIN_URL=${LATCHKEY_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}
pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || psql "$PG_ADMIN_URL" -qtAc 'select 1' >/dev/null 2>&1; }
if ! pg_ready; then
  step "starting PostgreSQL"
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  for _ in $(seq 1 30); do pg_ready && break; sleep 1; done
fi
if ! psql "$PG_ADMIN_URL" -qtAc 'select 1' >/dev/null 2>&1; then
  echo "FATAL: PostgreSQL is not reachable at $PG_ADMIN_URL; the PostgreSQL tests are required." >&2
  exit 1
fi

# Each test makes its own database (latchkey_t_*); drop those of earlier runs.
drop_test_databases() {
  psql "$PG_ADMIN_URL" -qtAc "SELECT datname FROM pg_database WHERE datname LIKE 'latchkey\_t\_%' OR datname LIKE 'latchkey\_mi\_%'" 2>/dev/null |
    while read -r db; do [ -n "$db" ] && psql "$PG_ADMIN_URL" -qtAc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true; done
}
drop_test_databases
trap drop_test_databases EXIT

# --- A real SMTP server for the mail tests (scripts/smtp_sink.py) ------------------------
if ! python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
  step "installing aiosmtpd (SMTP server for the mail tests)"
  python3 -m pip install -q --disable-pip-version-check aiosmtpd==1.4.6 </dev/null
fi

# --- Checks ----------------------------------------------------------------------------
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# --- The refresh protocol's model (spin; installs the Debian package if missing) ----------
step "refresh protocol model (spin: models/refresh.pml)"
bash scripts/model-check.sh

# --- Rust: unit + integration tests on SQLite ---------------------------------------------
step "Rust tests (SQLite; multi-instance tests on PostgreSQL)"
LATCHKEY_TEST_POSTGRES= cargo test --workspace -- --test-threads=4

# --- Rust: the integration suite again, on PostgreSQL -------------------------------------
step "Rust integration suite on PostgreSQL ($PG_ADMIN_URL)"
LATCHKEY_TEST_POSTGRES=$PG_ADMIN_URL cargo test -p latchkey --tests -- --test-threads=4

# --- Fuzz smoke: every fuzz target briefly (fuzz/, cargo-fuzz + libFuzzer, nightly) ---------
# Installs nightly and cargo-fuzz when missing; replays the committed seeds and regression
# inputs, then fuzzes each target FUZZ_SMOKE_SECONDS (default 10), unoptimised (FUZZ_PROFILE=dev:
# half the cold build's CPU time; README, "Fuzzing"). The same inputs are also
# replayed on stable by `cargo test` above (crates/latchkey/tests/fuzz_inputs.rs).
# FUZZ_SMOKE_SECONDS=0 skips this step (its cold cost: README, "Fuzzing").
FUZZ_SMOKE_SECONDS=${FUZZ_SMOKE_SECONDS:-10}
if [ "$FUZZ_SMOKE_SECONDS" != 0 ]; then
  step "fuzz smoke: ${FUZZ_SMOKE_SECONDS} s per target (scripts/fuzz.sh)"
  FUZZ_PROFILE=${FUZZ_PROFILE:-dev} bash scripts/fuzz.sh "$FUZZ_SMOKE_SECONDS"
fi

# --- Browser client unit tests -------------------------------------------------------------
step "client unit tests (node --test)"
(cd client && npm ci --no-audit --no-fund --loglevel=error && npm test)
step "login page's next rule against the shared table (node --test)"
node --test crates/latchkey-server/pages/test/

# --- End-to-end in Chromium --------------------------------------------------------------
step "end-to-end tests in Chromium"
bash e2e/run.sh

# --- Offline verifiers for other services (README, "Verifying access tokens in other services")
# The Rust, Node (jose) and Python (PyJWT) examples against a running server: a valid token
# is accepted, tampered/expired/other-audience/alg-none/HS256 tokens are refused. Installs
# jose (npm ci) and PyJWT + cryptography (pip) when missing; reuses the e2e step's binary.
step "offline verifier examples (scripts/verifier-examples.sh)"
LATCHKEY_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/latchkey" bash scripts/verifier-examples.sh

# --- The systemd units of docs/deploy.md (installs systemd with apt if systemd-analyze is missing)
step "systemd units (systemd-analyze verify, security)"
bash scripts/check-systemd-units.sh

# --- OpenAPI fuzzing: schemathesis against a running server (issue 11) ------------------
# Reuses the debug binary the end-to-end step built. Nothing is excluded: logout-all and a
# deleted own session end the run's session, and the run signs in again (see the script).
step "OpenAPI fuzzing (schemathesis)"
LATCHKEY_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/latchkey" bash scripts/schemathesis.sh

step "all test suites passed"

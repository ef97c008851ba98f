#!/usr/bin/env bash
# End-to-end tests of the pages and the browser client in Debian's Chromium (issue 4).
# Idempotent and non-interactive (CI=true, no stdin): installs Chromium with apt if missing,
# the npm packages with `npm ci`, aiosmtpd with pip if missing (the mail tests' SMTP server),
# builds the server (debug) unless LATCHKEY_BIN names a binary, then runs `node --test` on
# e2e/tests. Screenshots and server logs go to e2e/artifacts/.
set -euo pipefail
E2E="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$E2E")"
export CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"

if [ ! -x "$CHROMIUM_PATH" ]; then
  echo "e2e: installing chromium with apt" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo -n"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq </dev/null
  $SUDO apt-get install -y -qq --no-install-recommends chromium </dev/null
fi

# e2e needs only playwright-core (the client is served by the server, no build step).
(cd "$E2E" && npm ci --no-audit --no-fund --prefer-offline </dev/null)

# The mail tests receive mail with a real SMTP server, scripts/smtp_sink.py (aiosmtpd).
if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
  echo "e2e: installing aiosmtpd with pip" >&2
  python3 -m pip install -q aiosmtpd==1.4.6 </dev/null
fi

if [ -z "${LATCHKEY_BIN:-}" ]; then
  (cd "$ROOT" && cargo build -p latchkey-server </dev/null)
  export LATCHKEY_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/latchkey"
fi

cd "$E2E"
mkdir -p artifacts
# One file at a time: a browser and a server each, and timing-sensitive tests (2 s token TTL)
# on a 2-core machine.
exec node --test --test-concurrency=1 tests/

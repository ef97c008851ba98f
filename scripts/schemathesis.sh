#!/usr/bin/env bash
# OpenAPI fuzzing (issue 11, item 2): schemathesis against /api/v1/openapi.json of a running
# latchkey — the real binary, development mode, a fresh SQLite database in a temp dir, mail
# kept in the development outbox.
#
#   bash scripts/schemathesis.sh            # what scripts/test-all.sh runs
#   MAX_EXAMPLES=200 bash scripts/schemathesis.sh   # a longer search
#   SCHEMATHESIS_REPORT_DIR=DIR ...   # also write JUnit and HAR reports (every request) to DIR
#
# Every operation of the document, every check (`--checks all`: no 5xx, status codes,
# content types, headers and bodies as documented, schema-violating requests refused,
# schema-valid requests accepted, auth enforced, 405 + Allow for undeclared methods, …),
# all phases (examples, coverage, fuzzing, stateful links). Two passes: the signed-in
# operations get the access token as the `access_token` cookie, then as
# `Authorization: Bearer`. How the run signs in (and re-signs in after logout-all or deleting
# its own session), the per-request client addresses, and the one extra check live in
# scripts/schemathesis_hooks.py. Nothing is excluded.
#
# Idempotent and non-interactive: installs schemathesis with pip if missing, builds the
# debug binary unless LATCHKEY_BIN names one. Exits non-zero on any failure or error.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES=${MAX_EXAMPLES:-25}

if ! python3 -m schemathesis.cli --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
  echo "schemathesis: installing schemathesis==$SCHEMATHESIS_VERSION with pip" >&2
  python3 -m pip install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" </dev/null
fi

if [ -z "${LATCHKEY_BIN:-}" ]; then
  (cd "$ROOT" && cargo build -p latchkey-server </dev/null)
  LATCHKEY_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/latchkey"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/latchkey-schemathesis.XXXXXX")
SERVER_PID= OIDC_PID=
cleanup() {
  for pid in $SERVER_PID $OIDC_PID; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# Google sign-in is on, against a stub OpenID Provider (discovery only), so its two routes
# are fuzzed for real (see scripts/schemathesis_oidc_stub.py).
python3 "$ROOT/scripts/schemathesis_oidc_stub.py" "$WORK/oidc.port" &
OIDC_PID=$!
for _ in $(seq 1 50); do [ -s "$WORK/oidc.port" ] && break; sleep 0.1; done
[ -s "$WORK/oidc.port" ] || { echo "schemathesis: the OpenID Provider stub did not start" >&2; exit 1; }

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export LATCHKEY_URL="http://127.0.0.1:$PORT"
# The working directory is the temp dir, so no .env of the repository is read. TRUSTED_PROXIES:
# see "Client addresses" in scripts/schemathesis_hooks.py.
(
  cd "$WORK"
  exec env -u ENV -u SMTP_URL -u DATABASE_URL -u SECRETS_KEY -u SECRETS_KEY_FILE \
    -u GOOGLE_ISSUER -u OIDC_PROVIDERS -u REQUIRE_EMAIL_VERIFICATION \
    LISTEN_ADDR="127.0.0.1:$PORT" PUBLIC_URL="$LATCHKEY_URL" DATABASE_URL="sqlite://$WORK/latchkey.db" \
    TRUSTED_PROXIES=127.0.0.1 RUST_LOG=warn \
    GOOGLE_CLIENT_ID=schemathesis GOOGLE_CLIENT_SECRET=schemathesis GOOGLE_ISSUER="http://127.0.0.1:$(cat "$WORK/oidc.port")" \
    "$LATCHKEY_BIN" serve
) >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
  curl -fsS "$LATCHKEY_URL/readyz" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; echo "schemathesis: the server did not start" >&2; exit 1; }
  sleep 0.1
done

# The account the run signs in with: signup (its session serves every signed-in operation
# and refresh), then one more sign-in (the session that logout ends).
cookie() { awk -v n="$2" '$6 == n { print $7 }' "$1"; }
EMAIL="schemathesis@example.com" PASSWORD="schemathesis password"
BODY="{\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\"}"
curl -fsS -o /dev/null -c "$WORK/signup.jar" -H 'content-type: application/json' -d "$BODY" "$LATCHKEY_URL/api/v1/auth/signup"
curl -fsS -o /dev/null -c "$WORK/login.jar" -H 'content-type: application/json' -d "$BODY" "$LATCHKEY_URL/api/v1/auth/login"
LK_ACCESS=$(cookie "$WORK/signup.jar" access_token)
LK_REFRESH=$(cookie "$WORK/signup.jar" refresh_token)
LK_LOGOUT_REFRESH=$(cookie "$WORK/login.jar" refresh_token)
export LK_ACCESS LK_REFRESH LK_LOGOUT_REFRESH
[ -n "$LK_ACCESS" ] && [ -n "$LK_REFRESH" ] && [ -n "$LK_LOGOUT_REFRESH" ] || { echo "schemathesis: sign-up gave no cookies" >&2; exit 1; }

# The operations that redeem a mailed token answer a schema-valid but unknown token with
# 400 `token_invalid` (the token is 256 random bits: no generated one is ever known).
# positive_data_acceptance accepts that 400 there and only there, and the hook check
# `only_token_invalid_refuses_valid_tokens` fails any other 400 code.
cat >"$WORK/schemathesis.toml" <<EOF
hooks = "$ROOT/scripts/schemathesis_hooks.py"
max-redirects = 0
continue-on-failure = true

[generation]
max-examples = $MAX_EXAMPLES
# Credentials come from the hooks (valid ones) and from ignored_auth's probes (missing and
# invalid ones), not from random generation, so a credential already on a case is a link's.
with-security-parameters = false

[[operations]]
include-path-regex = "^/api/v1/auth/(email/verify|email/change/confirm|password/reset)\$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]
EOF

status=0
for mode in cookie bearer; do
  echo "==> schemathesis: signed-in operations with the access token as $mode"
  report=()
  if [ -n "${SCHEMATHESIS_REPORT_DIR:-}" ]; then
    report=(--report "${SCHEMATHESIS_REPORTS:-junit,har}" --report-dir "$SCHEMATHESIS_REPORT_DIR/$mode")
  fi
  LATCHKEY_AUTH=$mode python3 -m schemathesis.cli --config-file "$WORK/schemathesis.toml" run \
    "$LATCHKEY_URL/api/v1/openapi.json" --checks all --no-color "${report[@]}" </dev/null || status=1
done

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "schemathesis: the server died during the run" >&2
  status=1
fi
if grep -qiE 'panicked|internal error' "$WORK/server.log"; then
  echo "schemathesis: the server logged a panic or an internal error:" >&2
  grep -iE 'panicked|internal error' "$WORK/server.log" | head -20 >&2
  status=1
fi
exit $status

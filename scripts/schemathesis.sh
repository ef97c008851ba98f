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
MAX_EXAMPLES=${MAX_EXAMPLES:-50}

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

# Google sign-in and a named provider (`corp`, the document's example name; SPEC 13) are
# on, against a stub OpenID Provider (discovery only), so their routes are fuzzed for real
# (see scripts/schemathesis_oidc_stub.py).
python3 "$ROOT/scripts/schemathesis_oidc_stub.py" "$WORK/oidc.port" &
OIDC_PID=$!
for _ in $(seq 1 50); do [ -s "$WORK/oidc.port" ] && break; sleep 0.1; done
[ -s "$WORK/oidc.port" ] || { echo "schemathesis: the OpenID Provider stub did not start" >&2; exit 1; }

# One pass: a fresh server (fresh database, fresh rate-limit state: the fuzzer repeats its
# favourite emails, and per-address limits must not carry over from the other pass), the run's
# account signed up, schemathesis with the access token presented as $1, the server stopped.
run_pass() {
  local mode=$1 dir="$WORK/$1"
  mkdir -p "$dir"
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  export LATCHKEY_URL="http://127.0.0.1:$port"
  # The working directory is the temp dir, so no .env of the repository is read.
  # TRUSTED_PROXIES: see "Client addresses" in scripts/schemathesis_hooks.py.
  (
    cd "$dir"
    exec env -u ENV -u SMTP_URL -u DATABASE_URL -u SECRETS_KEY -u SECRETS_KEY_FILE \
      -u REQUIRE_EMAIL_VERIFICATION \
      LISTEN_ADDR="127.0.0.1:$port" PUBLIC_URL="$LATCHKEY_URL" DATABASE_URL="sqlite://$dir/latchkey.db" \
      TRUSTED_PROXIES=127.0.0.1 RUST_LOG=warn \
      GOOGLE_CLIENT_ID=schemathesis GOOGLE_CLIENT_SECRET=schemathesis GOOGLE_ISSUER="http://127.0.0.1:$(cat "$WORK/oidc.port")" \
      OIDC_PROVIDERS=corp OIDC_CORP_CLIENT_ID=schemathesis OIDC_CORP_CLIENT_SECRET=schemathesis \
      OIDC_CORP_ISSUER="http://127.0.0.1:$(cat "$WORK/oidc.port")/corp" \
      "$LATCHKEY_BIN" serve
  ) >"$dir/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    curl -fsS "$LATCHKEY_URL/readyz" >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$dir/server.log" >&2; echo "schemathesis: the server did not start" >&2; return 1; }
    sleep 0.1
  done

  # The account the run signs in with: signup (its session serves every signed-in operation
  # and refresh), then one more sign-in (the session the first logout ends).
  local email="schemathesis@example.com" password="schemathesis password"
  local body="{\"email\":\"$email\",\"password\":\"$password\"}"
  curl -fsS -o /dev/null -c "$dir/signup.jar" -H 'content-type: application/json' -d "$body" "$LATCHKEY_URL/api/v1/auth/signup"
  curl -fsS -o /dev/null -c "$dir/login.jar" -H 'content-type: application/json' -d "$body" "$LATCHKEY_URL/api/v1/auth/login"
  cookie() { awk -v n="$2" '$6 == n { print $7 }' "$1"; }
  LK_ACCESS=$(cookie "$dir/signup.jar" access_token)
  LK_REFRESH=$(cookie "$dir/signup.jar" refresh_token)
  LK_LOGOUT_REFRESH=$(cookie "$dir/login.jar" refresh_token)
  LK_PASSWORD=$password
  export LK_ACCESS LK_REFRESH LK_LOGOUT_REFRESH LK_PASSWORD
  if [ -z "$LK_ACCESS" ] || [ -z "$LK_REFRESH" ] || [ -z "$LK_LOGOUT_REFRESH" ]; then
    echo "schemathesis: sign-up gave no cookies" >&2
    return 1
  fi

  echo "==> schemathesis: signed-in operations with the access token as $mode"
  local report=() rc=0
  if [ -n "${SCHEMATHESIS_REPORT_DIR:-}" ]; then
    report=(--report "${SCHEMATHESIS_REPORTS:-junit,har}" --report-dir "$SCHEMATHESIS_REPORT_DIR/$mode")
  fi
  # From the pass's directory: schemathesis keeps its caches in the working directory.
  # The passkey operations are excluded, for two reasons. This server's PUBLIC_URL is an IP
  # address, which WebAuthn cannot use as a relying party, so they all answer 404
  # `passkeys_not_configured`. Every ceremony also needs an authenticator's signature, which
  # a fuzzer cannot produce. tests/passkeys.rs drives each of them over HTTP with a software
  # authenticator (hostile inputs included), on SQLite and PostgreSQL.
  (cd "$dir" && LATCHKEY_AUTH=$mode python3 -m schemathesis.cli --config-file "$WORK/schemathesis.toml" \
    run "$LATCHKEY_URL/api/v1/openapi.json" --checks all --no-color "${report[@]}" \
    --exclude-path-regex '^/api/v1/auth/(passkeys|mfa/passkey|reauthenticate/passkey)' </dev/null) || rc=1

  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "schemathesis: the server died during the run" >&2
    rc=1
  fi
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
  if grep -qiE 'panicked|internal error' "$dir/server.log"; then
    echo "schemathesis: the server logged a panic or an internal error:" >&2
    grep -iE 'panicked|internal error' "$dir/server.log" | head -20 >&2
    rc=1
  fi
  return $rc
}

# The operations that redeem a mailed token answer a schema-valid but unknown token with
# 400 `token_invalid` (the token is 256 random bits: no generated one is ever known).
# positive_data_acceptance accepts that 400 there and only there, and the hook check
# `only_token_invalid_refuses_valid_tokens` fails any other 400 code. (For the same reason
# schemathesis prints a "Schema validation mismatch" warning naming these three operations:
# expected, and not a failure.)
cat >"$WORK/schemathesis.toml" <<EOF
hooks = "$ROOT/scripts/schemathesis_hooks.py"
max-redirects = 0
continue-on-failure = true

[generation]
max-examples = $MAX_EXAMPLES
# No example database: each run searches afresh (and writes nothing outside the temp dir).
database = "none"
# Credentials come from the hooks (valid ones) and from ignored_auth's probes (missing and
# invalid ones), not from random generation, so a credential already on a case is a link's.
with-security-parameters = false

# Warnings that mean the run did not test what it should (every signed-in operation answered
# 401, an operation never got past 404, a pattern or reference it could not use) fail it.
[warnings]
fail-on = ["missing_auth", "missing_test_data", "unused_openapi_auth", "unsupported_regex", "unresolvable_reference", "missing_deserializer"]

[[operations]]
include-path-regex = "^/api/v1/auth/(email/verify|email/change/confirm|password/reset)\$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]

# The same for the operations that check a second-factor code (SPEC 11): a schema-valid code
# is almost always wrong (400 `invalid_code`, which the hook check
# `only_expected_codes_refuse_valid_codes_and_ceremonies` keeps as the only 400), and wrong
# codes spend the account's second-factor budget (429).
[[operations]]
include-path-regex = "^/api/v1/auth/(mfa/verify|mfa/totp/confirm|reauthenticate)\$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]

# The passkey ceremonies' finish (SPEC 11): a generated ceremony id is never a live one and a
# generated credential is never signed, so a schema-valid request gets 400
# `passkey_challenge_expired`/`passkey_invalid`/`passkey_unknown` (the same hook check).
[[operations]]
include-path-regex = "^/api/v1/auth/passkeys/(register|login)/finish\$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]
EOF

status=0
run_pass cookie || status=1
run_pass bearer || status=1
exit $status

#!/usr/bin/env bash
# Runs the offline verifier examples (README, "Verifying access tokens in other services")
# against a real latchkey: crates/latchkey/examples/verify_offline.rs (Rust, jsonwebtoken),
# examples/node/verify.mjs (jose) and examples/python/verify.py (PyJWT + cryptography).
#
# Idempotent and non-interactive: installs jose with `npm ci` and PyJWT/cryptography with pip
# (pinned in examples/python/requirements.txt) when missing; builds the server (debug) unless
# LATCHKEY_BIN names a binary, and the Rust example. Starts latchkey on a temp SQLite database
# and a free loopback port, gets real access tokens, and checks that every verifier accepts a
# valid token and rejects a tampered, an expired, an other-audience, an `alg: none` and an
# HS256 (key confusion) token. Exits non-zero on any mismatch.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"

# --- What the examples need ---------------------------------------------------------------
(cd examples/node && npm ci --no-audit --no-fund --loglevel=error </dev/null)
REQ=examples/python/requirements.txt
if ! python3 - "$REQ" <<'EOF' 2>/dev/null; then
import sys
from importlib.metadata import version
for line in open(sys.argv[1]):
    name, _, want = line.strip().partition("==")
    if name and version(name) != want:
        sys.exit(1)
EOF
  echo "verifier-examples: installing $(tr '\n' ' ' <"$REQ")with pip" >&2
  python3 -m pip install -q --disable-pip-version-check -r "$REQ" </dev/null
fi
if [ -z "${LATCHKEY_BIN:-}" ]; then
  cargo build -q -p latchkey-server </dev/null
  LATCHKEY_BIN="$TARGET/debug/latchkey"
fi
cargo build -q -p latchkey --example verify_offline </dev/null
RUST_VERIFIER="$TARGET/debug/examples/verify_offline"

# --- A server on a temp database -------------------------------------------------------------
DIR="$(mktemp -d)"
PID=""
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$DIR"
}
trap cleanup EXIT
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"

# start PUBLIC_URL ACCESS_TOKEN_TTL: one server on the same database (so the same signing key).
start() {
  (cd "$DIR" && exec env -i PATH="$PATH" HOME="$DIR" DATABASE_URL="sqlite://$DIR/db.sqlite" \
    LISTEN_ADDR="127.0.0.1:$PORT" PUBLIC_URL="$1" ACCESS_TOKEN_TTL="$2" LOG_FORMAT=text \
    "$LATCHKEY_BIN" serve >>"$DIR/server.log" 2>&1) &
  PID=$!
  for _ in $(seq 1 150); do
    if curl -fsS -o /dev/null "$BASE/healthz" 2>/dev/null; then return 0; fi
    if ! kill -0 "$PID" 2>/dev/null; then break; fi
    sleep 0.2
  done
  echo "latchkey did not start:" >&2
  cat "$DIR/server.log" >&2
  exit 1
}
stop() {
  kill "$PID"
  wait "$PID" 2>/dev/null || true
  PID=""
}
EMAIL="verifier-$$@example.test"
PASSWORD="correct horse battery staple"
# access_token ENDPOINT: signs up or logs in, prints the access token from its cookie.
access_token() {
  curl -fsS -D - -o /dev/null -X POST -H 'content-type: application/json' \
    --data "{\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\"}" "$BASE/api/v1/auth/$1" |
    tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: access_token=\([^;]*\).*/\1/p'
}

start "$BASE" 15m
VALID="$(access_token signup)"
stop
# The same key, another PUBLIC_URL: a token for another audience (and issuer).
start "http://other.example:$PORT" 15m
OTHER="$(access_token login)"
stop
# The server the verifiers talk to; its tokens live 1 s.
start "$BASE" 1s
SHORT="$(access_token login)"
for t in "$VALID" "$OTHER" "$SHORT"; do
  [ -n "$t" ] || { echo "no access token from latchkey" >&2; cat "$DIR/server.log" >&2; exit 1; }
done

# Forged variants of the valid token (the verifiers must not care how they were made).
read -r TAMPERED NONE HS256 < <(python3 - "$VALID" "$BASE" <<'EOF'
import base64, hashlib, hmac, json, sys, urllib.request
token, base = sys.argv[1], sys.argv[2]
h, p, s = token.split(".")
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
unb64 = lambda t: base64.urlsafe_b64decode(t + "=" * (-len(t) % 4))
claims = json.loads(unb64(p))
header = json.loads(unb64(h))
# Another user's id in the claims, the original signature.
claims["sub"] = "00000000-0000-4000-8000-000000000000"
tampered = f"{h}.{b64(json.dumps(claims).encode())}.{s}"
# No signature at all.
none = f"{b64(json.dumps({**header, 'alg': 'none'}).encode())}.{p}."
# HS256 keyed with the public key (algorithm confusion).
x = json.load(urllib.request.urlopen(base + "/.well-known/jwks.json"))["keys"][0]["x"]
signing_input = f"{b64(json.dumps({**header, 'alg': 'HS256'}).encode())}.{p}"
hs = f"{signing_input}.{b64(hmac.new(unb64(x), signing_input.encode(), hashlib.sha256).digest())}"
print(tampered, none, hs)
EOF
)

# The short token expires 1 s after it was issued; the verifiers allow 5 s of clock skew.
sleep 7
EXPIRED="$SHORT"

# --- Every verifier on every token ------------------------------------------------------------
passed=0
failed=0
# check NAME EXPECT(accept|reject) TOKEN
check() {
  local name=$1 expect=$2 token=$3 verifier out rc
  for verifier in rust node python; do
    case $verifier in
      rust) cmd=("$RUST_VERIFIER" "$BASE") ;;
      node) cmd=(node examples/node/verify.mjs "$BASE") ;;
      python) cmd=(python3 examples/python/verify.py "$BASE") ;;
    esac
    if out="$(printf '%s' "$token" | "${cmd[@]}" 2>&1)"; then rc=accept; else rc=reject; fi
    if [ "$rc" = "$expect" ]; then
      passed=$((passed + 1))
      printf 'ok     %-6s %-13s %s: %s\n' "$verifier" "$name" "$rc" "$out"
    else
      failed=$((failed + 1))
      printf 'FAILED %-6s %-13s expected %s, got %s: %s\n' "$verifier" "$name" "$expect" "$rc" "$out"
    fi
  done
}
check valid accept "$VALID"
check tampered reject "$TAMPERED"
check expired reject "$EXPIRED"
check other-aud reject "$OTHER"
check alg-none reject "$NONE"
check hs256 reject "$HS256"
check garbage reject "not.a.token"

echo "verifier examples: $passed passed, $failed failed"
[ "$failed" = 0 ]

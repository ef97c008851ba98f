#!/usr/bin/env bash
# Checks the systemd units of docs/ (docs/deploy.md): `systemd-analyze verify` on each, failing
# on any message (systemd only warns about unknown keys and unparsable values, and exits 0),
# and `systemd-analyze security --offline` on latchkey.service, failing above an exposure
# of 2.0 (it is about 1.2). Installs Debian's systemd when systemd-analyze is missing.
# The units name /usr/local/bin/latchkey, where an installation puts the binary; verify
# insists that it exists, so the checked copies name `true` instead.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "check-systemd-units: installing systemd with apt (for systemd-analyze)" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo -n"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq </dev/null
  $SUDO apt-get install -y -qq --no-install-recommends systemd </dev/null
fi

DIR="$(mktemp -d)"
trap 'rm -rf "$DIR"' EXIT
TRUE="$(command -v true)"
for unit in "$ROOT"/docs/*.service "$ROOT"/docs/*.timer; do
  sed "s|/usr/local/bin/latchkey|$TRUE|g" "$unit" >"$DIR/$(basename "$unit")"
done

status=0
for unit in "$DIR"/*; do
  name="$(basename "$unit")"
  # SYSTEMD_LOG_COLOR=0: plain messages; any message at all is a finding.
  if out="$(cd "$DIR" && SYSTEMD_LOG_COLOR=0 systemd-analyze verify "$name" 2>&1)" && [ -z "$out" ]; then
    echo "ok     systemd-analyze verify docs/$name"
  else
    echo "FAILED systemd-analyze verify docs/$name"
    printf '%s\n' "$out" | sed 's/^/    /'
    status=1
  fi
done

if out="$(cd "$DIR" && systemd-analyze security --offline=true --threshold=20 latchkey.service 2>&1)"; then
  echo "ok     $(printf '%s\n' "$out" | grep -i 'overall exposure' | sed 's/→ *//') (at most 2.0)"
else
  echo "FAILED systemd-analyze security docs/latchkey.service (exposure above 2.0, or an error)"
  printf '%s\n' "$out" | grep -v '^✓' | sed 's/^/    /'
  status=1
fi
exit "$status"

#!/usr/bin/env bash
# Checks the Promela model of the refresh protocol (models/refresh.pml) with spin:
# exhaustive verification of every property in every configuration below. Each line states
# what must come out: "holds" (no violation in the whole state space) or "violated" (spin
# must find the counterexample: a known limit of the protocol, documented in ARCHITECTURE.md,
# "The refresh model"). Either surprise fails the script. Prints the states explored.
#
# Usage: scripts/model-check.sh [-v]   (-v: print the counterexample trails)
# gcc -O0: compiling pan.c at -O2 costs more than it saves on these state spaces.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VERBOSE=${1:-}

if ! command -v spin >/dev/null 2>&1; then
  echo "installing spin (Debian package)"
  apt-get update -qq </dev/null >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq spin </dev/null >/dev/null
fi
command -v gcc >/dev/null || { echo "FATAL: gcc is needed to compile spin's verifier" >&2; exit 1; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cp "$ROOT/models/refresh.pml" "$WORK/"
cd "$WORK"

failures=0
total_states=0
started=$(date +%s.%N)

# check NAME "SPIN FLAGS" EXPECT CLAIM...
check() {
  local name=$1 flags=$2 expect=$3
  shift 3
  local dir="$WORK/$name"
  mkdir -p "$dir" && cp refresh.pml "$dir/" && cd "$dir"
  # shellcheck disable=SC2086
  spin $flags -a refresh.pml >/dev/null
  local built_safe=0 built_full=0 claim out result states depth t0 secs
  for claim in "$@"; do
    t0=$(date +%s.%N)
    case $claim in
      final | no_shared_chain) # liveness/LTL: acceptance cycles
        if [ $built_full = 0 ]; then gcc -O0 -w -o pan_full pan.c; built_full=1; fi
        out=$(./pan_full -a -m2000000 -N "$claim" 2>&1 || true) ;;
      *) # safety: [] p
        if [ $built_safe = 0 ]; then gcc -O0 -w -DSAFETY -o pan_safe pan.c; built_safe=1; fi
        out=$(./pan_safe -m2000000 -N "$claim" 2>&1 || true) ;;
    esac
    if grep -q "max search depth too small" <<<"$out"; then
      echo "FAIL $name/$claim: search depth limit reached"; failures=$((failures + 1)); continue
    fi
    states=$(sed -nE 's/^ *([0-9e.+]+) states, stored.*/\1/p' <<<"$out" | head -n1)
    depth=$(sed -nE 's/.*depth reached ([0-9]+).*/\1/p' <<<"$out" | head -n1)
    if grep -qE "errors: 0$" <<<"$out"; then result=holds; else result=violated; fi
    secs=$(echo "$(date +%s.%N) - $t0" | bc)
    if [ "$result" = "$expect" ]; then
      printf 'ok   %-18s %-20s %-8s states %-9s depth %-7s %5.2f s\n' "$name" "$claim" "$result" "$states" "$depth" "$secs"
    else
      printf 'FAIL %-18s %-20s %-8s (expected %s) states %s\n' "$name" "$claim" "$result" "$expect" "$states"
      failures=$((failures + 1))
    fi
    [ "$result" = holds ] && total_states=$((total_states + ${states%.*}))
    if [ "$result" = violated ] && { [ -n "$VERBOSE" ] || [ "$expect" = holds ]; }; then
      echo "     counterexample ($flags, $claim):"
      # shellcheck disable=SC2086
      spin $flags -t refresh.pml 2>/dev/null | grep -E 'MSC|CYCLE' | sed 's/^ */       /'
    fi
    rm -f ./*.trail
  done
  cd "$WORK"
}

echo "== the protocol as implemented (grace window only)"
# Tabs racing on one jar, lost CAS retries, logout; every round trip within the grace window
# and no refresh sent while an older one is in flight:
check base-tabs "-DNT=3 -DPROMPT -DCALM -DLOGOUT" holds safety final
# A thief with a copy of the cookie (taken at any moment), two tabs; one tab, lost responses
# and logout:
check base-thief "-DNT=2 -DTHIEF" holds detection
check base-thief-loss "-DNT=1 -DTHIEF -DLOSS=1 -DLOGOUT" holds detection
# The thief and the browser cannot both go on refreshing forever once their presentations
# are further apart than the grace window:
check base-thief-sparse "-DNT=2 -DTHIEF -DSPARSE -DCHAIN" holds no_shared_chain
echo "-- its known limits: refresh_reused for an honest browser"
# a rotation committed, its response lost, the client back after the grace window:
check base-lost "-DNT=1 -DLOSS=1" violated no_false_alarm
# a request delayed past the grace window behind another tab's rotation:
check base-delayed "-DNT=2 -DCALM" violated no_false_alarm
# one tab rotates twice while another tab's request (same old token) is in flight:
check base-overtaken "-DNT=2 -DPROMPT" violated no_false_alarm

echo "== variant UNPRESENTED: previous token also accepted after grace while token g is unpresented"
check unp-tabs "-DNT=3 -DCALM -DLOSS=2 -DLOGOUT -DUNPRESENTED" holds no_false_alarm revoked_stays_dead
check unp-overtaken "-DNT=2 -DPROMPT -DUNPRESENTED" violated no_false_alarm
# what it costs: a token used again long after its rotation succeeds, and a thief and the
# browser can both refresh forever, every presentation after grace, never detected:
check unp-thief "-DNT=2 -DTHIEF -DUNPRESENTED" violated reuse_detected
check unp-thief-sparse "-DNT=1 -DTHIEF -DSPARSE -DUNPRESENTED -DCHAIN" violated no_shared_chain

echo "== variant FORGIVE: a late previous token accepted unless the last one was one rotation ago"
check fg-lost "-DNT=3 -DPROMPT -DCALM -DLOSS=1 -DLOGOUT -DFORGIVE" holds no_false_alarm revoked_stays_dead
check fg-thief-sparse "-DNT=2 -DTHIEF -DSPARSE -DFORGIVE -DCHAIN" holds no_shared_chain
# what it costs: two late previous tokens in consecutive generations still log out, and a
# stolen previous token gets one answer after grace before the theft is detected:
check fg-lost-twice "-DNT=1 -DLOSS=2 -DFORGIVE" violated no_false_alarm
check fg-thief "-DNT=1 -DTHIEF -DFORGIVE" violated reuse_detected

elapsed=$(echo "$(date +%s.%N) - $started" | bc)
printf '\nspin: %s states explored in the configurations that hold; %.1f s\n' "$total_states" "$elapsed"
if [ $failures -gt 0 ]; then
  echo "model check FAILED: $failures unexpected result(s)" >&2
  exit 1
fi
echo "model check passed"

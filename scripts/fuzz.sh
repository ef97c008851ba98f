#!/usr/bin/env bash
# Runs every fuzz target (fuzz/, cargo-fuzz + libFuzzer) for SECONDS each (default 60) and
# prints executions per target. README, "Fuzzing".
#
#   bash scripts/fuzz.sh [SECONDS]         all targets
#   FUZZ_TARGETS="next_rule email_parse" bash scripts/fuzz.sh 300
#
# Idempotent and non-interactive: installs the nightly toolchain and cargo-fuzz 0.13 when
# missing, builds every target once, then runs each on a working corpus
# (fuzz/corpus-work/<target>, git-ignored) seeded from the committed seeds
# (fuzz/corpus/<target>) and regression inputs (fuzz/regressions/<target>), which are
# therefore replayed first. A crash or failed property stops that target and leaves its
# input in fuzz/artifacts/<target>/; the script goes on with the others and fails at the end.
# Commit such an input under fuzz/regressions/<target>/ once fixed (with a unit test).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_EACH=${1:-60}
# Safe Rust gets no findings from AddressSanitizer that rustc's own checks (bounds, overflow,
# debug assertions: all on) do not make, and the build without it is faster to make and run.
SANITIZER=${FUZZ_SANITIZER:-none}
# FUZZ_PROFILE=dev builds without optimisation: about half the CPU time of a cold build
# (the test command's smoke uses it), at a tenth to a twentieth of the executions per
# second. FUZZ_TARGET_DIR puts the build elsewhere than fuzz/target (e.g. a CI cache).
PROFILE=${FUZZ_PROFILE:-release}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
unset CARGO_TARGET_DIR # cargo-fuzz builds into fuzz/target

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "==> installing the nightly toolchain (cargo-fuzz needs it)"
  rustup toolchain install nightly --profile minimal </dev/null
fi
if ! cargo fuzz --version 2>/dev/null | grep -q '^cargo-fuzz 0\.13\.'; then
  echo "==> installing cargo-fuzz 0.13"
  cargo install cargo-fuzz --version '^0.13' --locked </dev/null
fi

cd fuzz
FLAGS=(--sanitizer "$SANITIZER")
[ "$PROFILE" = dev ] && FLAGS+=(--dev)
[ -n "${FUZZ_TARGET_DIR:-}" ] && FLAGS+=(--target-dir "$FUZZ_TARGET_DIR")
start=$(date +%s)
cargo +nightly fuzz build "${FLAGS[@]}"
echo "==> fuzz targets built ($PROFILE) in $(($(date +%s) - start)) s"

targets=${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}
logs=$ROOT/fuzz/corpus-work/logs
mkdir -p "$logs"
failed=()
summary=()
for t in $targets; do
  work=corpus-work/$t
  mkdir -p "$work" "artifacts/$t"
  dirs=("$work" "corpus/$t")
  [ -d "regressions/$t" ] && dirs+=("regressions/$t")
  echo "==> $t: ${SECONDS_EACH} s"
  if cargo +nightly fuzz run "${FLAGS[@]}" "$t" "${dirs[@]}" -- \
    -max_total_time="$SECONDS_EACH" -max_len=4096 -timeout=10 -print_final_stats=1 \
    >"$logs/$t.log" 2>&1; then
    status=ok
  else
    status=FAILED
    failed+=("$t")
    grep -E 'panicked|assertion|ERROR|Test unit written|artifact' "$logs/$t.log" | head -n 20 || true
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -n1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logs/$t.log" | tail -n1)
  cov=$(sed -n 's/.* cov: \([0-9]*\) .*/\1/p' "$logs/$t.log" | tail -n1)
  summary+=("$(printf '%-22s %-7s %12s execs %9s exec/s  cov %s' "$t" "$status" "${execs:-?}" "${rate:-?}" "${cov:-?}")")
done

echo
echo "==> fuzzing summary (${SECONDS_EACH} s per target, $PROFILE build; logs in fuzz/corpus-work/logs/)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]} (inputs in fuzz/artifacts/<target>/; replay one with" >&2
  echo "  cd fuzz && cargo +nightly fuzz run ${FLAGS[*]} <target> <file>)" >&2
  exit 1
fi

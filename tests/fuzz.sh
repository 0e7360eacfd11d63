#!/usr/bin/env bash
# Fuzz the parsers, the spec handling, the recording and the planner with
# libFuzzer: `make fuzz` (FUZZ_SECONDS per target, default 60; TARGETS to pick).
# Needs a nightly toolchain and cargo-fuzz:
#   rustup toolchain install nightly && cargo install cargo-fuzz
# The corpus is kept outside the clone so runs build on each other. A failing
# input is left in the artifacts directory; copy it into
# operator/fuzz/regressions/<target>/ so `make test` checks it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
targets=${TARGETS:-strings spec timeline cluster}
cache=${FIREDRILL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/firedrill}

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain; install it with: rustup toolchain install nightly" >&2
  exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz is not installed; install it with: cargo install cargo-fuzz" >&2
  exit 2
fi

export CARGO_TARGET_DIR="$cache/cargo/fuzz-$(cargo +nightly --version | cut -d' ' -f2)"
cd operator
cargo +nightly fuzz build --fuzz-dir fuzz
status=0
for t in $targets; do
  corpus="$cache/fuzz/corpus/$t"
  artifacts="$cache/fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  if [ -d "fuzz/regressions/$t" ]; then
    cp -n fuzz/regressions/"$t"/* "$corpus"/ 2>/dev/null || true
  fi
  echo "== $t: ${seconds}s (corpus $corpus)"
  log=$(mktemp)
  if cargo +nightly fuzz run --fuzz-dir fuzz "$t" "$corpus" -- \
      -max_total_time="$seconds" -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1; then
    grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb|^#[0-9]+ +DONE" "$log" | sed "s/^/   /"
    echo "   corpus: $(find "$corpus" -type f | wc -l) inputs"
  else
    status=1
    grep -A4 "panicked at" "$log" | head -20
    grep -E "^(SUMMARY|artifact_prefix|Base64)" "$log"
    echo "== $t FAILED: the input is in $artifacts; copy it into operator/fuzz/regressions/$t/" >&2
  fi
  rm -f "$log"
done
exit $status

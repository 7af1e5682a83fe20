#!/usr/bin/env bash
# Builds every cargo-fuzz target (libFuzzer) and runs each for a bounded time over its checked-in
# seeds (fuzz/seeds/<target>). New inputs go to a scratch corpus, so the tree stays clean; a
# crash fails the run and leaves its input under fuzz/artifacts/<target>/ (turn it into a
# regression test, then a seed). Usage: scripts/test/fuzz.sh [seconds per target, default 30]
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_PER_TARGET="${1:-${FUZZ_SECONDS:-30}}"

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2

# No sanitizer: the code fuzzed is safe Rust, and `none` builds on the stable toolchain.
fuzz() { (cd fuzz && cargo fuzz "$@"); }
fuzz build -s none -O

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in $(fuzz list); do
  mkdir -p "$scratch/$target"
  printf '%-14s ' "$target"
  if ! fuzz run -s none -O "$target" "$scratch/$target" "seeds/$target" -- \
      -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 >"$scratch/$target.log" 2>&1; then
    echo "FAILED"
    tail -40 "$scratch/$target.log"
    exit 1
  fi
  grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$scratch/$target.log" | tail -1
done

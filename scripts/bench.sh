#!/usr/bin/env bash
# Benchmarks piper against a raw AF_UNIX SOCK_DGRAM baseline, in one run, and
# prints the report (BENCHMARKS.md's format) on stdout.
#
#   scripts/bench.sh             # the full run (a few minutes), medians of 5
#   scripts/bench.sh --update    # the same, and rewrite the tracked BENCHMARKS.md
#   scripts/bench.sh --smoke     # tiny counts, to prove the harness works (CI)
#   scripts/bench.sh --reps 9 --count 500000 --out FILE ...   # piper-bench flags
#
# The binaries are built the way scripts/install.sh ships them: release,
# statically linked (see the README's performance section for why).
set -euo pipefail
cd "$(dirname "$0")/.."

host="$(rustc -vV | sed -n 's/^host: //p')"
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --quiet --target "$host" -p piper-node -p piper-launch -p piper-bench
bin="target/$host/release"

case "${1:-}" in
  --smoke)
    shift
    exec "$bin/piper-bench" --bin "$bin" --reps 1 --count 2000 --ring 20 --ring-count 5 --launch 10,20 \
      --placement-count 2000 --placement-laps 5 "$@" ;;
  --update)
    shift
    exec "$bin/piper-bench" --bin "$bin" --out BENCHMARKS.md "$@" ;;
  *)
    exec "$bin/piper-bench" --bin "$bin" "$@" ;;
esac

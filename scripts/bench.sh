#!/usr/bin/env bash
# Benchmarks piper against a raw AF_UNIX SOCK_DGRAM baseline, in one run, and
# prints the report (BENCHMARKS.md's format) on stdout.
#
#   scripts/bench.sh             # the full run (a few minutes), medians of 5
#   scripts/bench.sh --update    # the same, and rewrite the tracked BENCHMARKS.md
#   scripts/bench.sh --smoke     # tiny counts, to prove the harness works (CI)
#   scripts/bench.sh --scraped   # only the hop rate with and without a 100 ms metrics scraper
#   scripts/bench.sh --reps 9 --count 500000 --out FILE ...   # piper-bench flags
#
# The binaries are built the way scripts/install.sh ships them: release,
# statically linked (see the README's performance section for why); the
# launch figures are also measured with the quick start's dynamic build.
set -euo pipefail
cd "$(dirname "$0")/.."

host="$(rustc -vV | sed -n 's/^host: //p')"
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --quiet --target "$host" -p piper-node -p piper-launch -p piper-bench
# The quick start's build (dynamic), for the launch figures of that build.
cargo build --release --quiet -p piper-node -p piper-launch -p piper-bench
# The bridge and its benchmark (its own dependencies, an MQTT client).
cargo build --release --quiet -p piper-bridge -p piper-bridge-bench
bridge_bin="target/release"
bin="target/$host/release"

# The cross-host section comes after piper-bench's report, from the same
# run: into the chosen --out file, else on stdout.
out=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  [[ ${args[i]} == --out ]] && out="${args[i + 1]:-}"
done
bridge() {
  if [[ -n $out ]]; then
    "$bridge_bin/piper-bridge-bench" --bin "$bridge_bin" --node-bin "$bin" "$@" >>"$out"
  else
    "$bridge_bin/piper-bridge-bench" --bin "$bridge_bin" --node-bin "$bin" "$@"
  fi
}

case "${1:-}" in
  --smoke)
    shift
    "$bin/piper-bench" --bin "$bin" --dyn-bin target/release --reps 1 --count 2000 --ring 20 --ring-count 5 --launch 10,20 \
      --placement-count 2000 --placement-laps 5 "$@"
    out=""
    bridge --reps 1 --count 200 ;;
  --scraped)
    "$bin/piper-bench" --bin "$bin" "$@" ;;
  --update)
    shift
    out=BENCHMARKS.md
    "$bin/piper-bench" --bin "$bin" --dyn-bin target/release --out BENCHMARKS.md "$@"
    bridge ;;
  *)
    "$bin/piper-bench" --bin "$bin" --dyn-bin target/release "$@"
    bridge ;;
esac

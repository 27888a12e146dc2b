#!/usr/bin/env bash
# The seed's ping-pong, as separate processes: builds piper, runs
# `piper-launch --nodes ping,pong` slowly enough to watch, and after Ctrl-C
# shows that no socket file is left behind.
#
#   scripts/demo.sh [INTERVAL_MS] [extra piper-launch flags...]
#   DEMO_SECONDS=N scripts/demo.sh   # stop by itself after N seconds
set -euo pipefail
cd "$(dirname "$0")/.."

interval="${1:-300}"
shift || true
cargo build --release --quiet
dir="$(mktemp -d "${TMPDIR:-/tmp}/piper-demo.XXXXXX")"

echo "piper demo: ping and pong in $dir; Ctrl-C to stop" >&2
# A handler, not an ignore: bash waits for the launcher, which tears the ring
# down, and then this script goes on to the check below.
trap 'true' INT TERM
status=0
if [[ -n "${DEMO_SECONDS:-}" ]]; then
  ./target/release/piper-launch --nodes ping,pong --dir "$dir" --interval "$interval" "$@" &
  launcher=$!
  sleep "$DEMO_SECONDS"
  kill -INT "$launcher"
  wait "$launcher" || status=$?
else
  ./target/release/piper-launch --nodes ping,pong --dir "$dir" --interval "$interval" "$@" || status=$?
fi

left="$(find "$dir" -mindepth 1)"
if [[ -z "$left" ]]; then
  echo "piper demo: launcher exited with status $status; no socket file left in $dir" >&2
  rmdir "$dir"
else
  echo "piper demo: left behind in $dir:" >&2
  echo "$left" >&2
  exit 1
fi

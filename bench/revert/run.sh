#!/usr/bin/env bash
# Revert benchmark: how long from the first bad response reaching the
# router to the router no longer sending traffic to the bad version, with
# window_secs 1 and router statistics every 100 ms. See docs/BENCHMARKS.md
# ("Detection and revert") and bench/revert/measure.rs for what is measured.
#
# Usage (from anywhere):
#
#   bench/revert/run.sh            RUNS=20 by default
#
# Environment:
#   RUNS=20          canaries of a failing version, one after the other
#   ROUTERS=1        routers (1 to 10), the client's load spread over them
#   DEFAULTS=0       1: router statistics interval and thresholds as `mt up`
#                    gives them (1 s; window 10 s), instead of 100 ms and 1 s
#   PROFILE=release  cargo profile of the binaries and the driver (or dev)
#   NATS_SERVER_BIN  nats-server 2.10+ (the pinned one is installed when unset)
#
# Prints the per-run JSON lines, then a markdown summary on stdout.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
RUNS="${RUNS:-20}"
PROFILE="${PROFILE:-release}"
cd "$ROOT"
if [[ -z "${NATS_SERVER_BIN:-}" ]]; then
    . "$ROOT/scripts/nats-server.sh"
fi
export NATS_SERVER_BIN
flag=(); [[ "$PROFILE" == release ]] && flag=(--release)
cargo build "${flag[@]}" --workspace --bins >&2
OUT="$(mktemp "${TMPDIR:-/tmp}/mentat-revert.XXXXXX.jsonl")"
RUNS="$RUNS" REVERT_BENCH_OUT="$OUT" ROUTERS="${ROUTERS:-1}" DEFAULTS="${DEFAULTS:-0}" \
    cargo test "${flag[@]}" -p mentat-e2e --test thresholds -- \
    --ignored --exact revert_benchmark --nocapture >&2
cat "$OUT"
echo
echo "## Revert benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, profile $PROFILE, $RUNS runs, ${ROUTERS:-1} routers, defaults ${DEFAULTS:-0})"
echo
python3 "$HERE/summarize.py" "$OUT"

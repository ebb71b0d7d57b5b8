#!/usr/bin/env bash
# Takeover benchmark: SIGKILL the leading planner of an idle cluster on
# PostgreSQL, RUNS times, and time how long until `mt status` names the
# standby as the leader of the next epoch. See docs/RELIABILITY.md.
#
# Usage (from anywhere):
#
#   bench/takeover/run.sh          RUNS=20 by default
#
# Environment:
#   RUNS=20          takeovers
#   PROFILE=release  cargo profile of the binaries (or dev)
#   MENTAT_TEST_PG_URL=postgres://postgres@127.0.0.1:5432/test
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PROFILE="${PROFILE:-release}"
cd "$ROOT"
. "$ROOT/scripts/nats-server.sh"
export MENTAT_TEST_PG_URL="${MENTAT_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
export RUNS="${RUNS:-20}"
flag=(); [[ "$PROFILE" == release ]] && flag=(--release)
cargo build "${flag[@]}" --workspace --bins >&2
echo "takeover benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, profile $PROFILE"
cargo test "${flag[@]}" -p mentat-e2e --test leadership -- \
    --ignored --exact takeover_benchmark --nocapture 2>&1 | grep -E '^(run [0-9]+|takeover over)'

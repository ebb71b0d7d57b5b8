# Sourced by run.sh and instructions.sh (after HERE is set): the paths
# (ROOT, BIN, NATS), a check of the tools a script needs, a temporary
# directory, the processes started (stopped on exit), port helpers, the
# common set-up (nats-server, the two mentat-demo-app backends and the
# route `web` to both) and nginx's configuration as the router's
# equivalent.

ROOT="$(cd "$HERE/../.." && pwd)"
BIN="${BIN:-$ROOT/target/release}"
NATS="${NATS_SERVER_BIN:-$(command -v nats-server || true)}"
HOST=web.localhost

# require TOOL...: stop unless every tool (name or path) is there; the
# release binaries and nats-server are always required.
require() {
    for tool in "$@" "$NATS" "$BIN/mentat-router" "$BIN/mentat-demo-app" "$BIN/mentat-bench-router"; do
        command -v "$tool" >/dev/null || { echo "missing: ${tool:-nats-server}" >&2; exit 1; }
    done
}

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

# nginx_conf FILE PORT CONNECTIONS [TOP]: nginx as the router's equivalent,
# a 50/50 weighted upstream to the two backends with keep-alive and the
# same forwarding headers, on 127.0.0.1:PORT with room for CONNECTIONS
# connections; TOP goes first (for instance `master_process off;`).
nginx_conf() {
cat >"$1" <<CONF
${4:-}
worker_processes 1;
# No worker_cpu_affinity: "auto" would bind the worker to CPU 0 whatever
# taskset said; the worker inherits the caller's CPU mask.
daemon off;
pid $1.pid;
error_log $TMP/nginx.err warn;
worker_rlimit_nofile 20000;
events { worker_connections $3; }
http {
    access_log off;
    keepalive_timeout 60s;
    keepalive_requests 1000000;
    upstream web {
        server 127.0.0.1:$A_PORT weight=50;
        server 127.0.0.1:$B_PORT weight=50;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$2;
        client_header_timeout 10s;
        client_max_body_size 10m;
        location / {
            proxy_pass http://web;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Request-Id \$request_id;
            proxy_next_upstream error timeout http_502 http_503;
        }
    }
}
CONF
}

#!/usr/bin/env bash
# The router's HTTP/1.1 conformance corpus (services/router/tests/conformance),
# replayed against mentat-router (through its test, tests/conformance.rs) and,
# when `nginx` is installed, against nginx in front of a recording backend;
# prints both outcomes side by side with what the corpus expects.
#
# Usage (from anywhere): bench/router/conformance.sh
# Needs: cargo, python3; nginx for its column (apt-get install -y nginx).
# Environment: NATS_SERVER_BIN or scripts/nats-server.sh (nats-server 2.10+).
#
# An outcome is the answer's status when nothing reached the backend, or
# `forward METHOD TARGET BODY` when the backend received one well-framed
# request (its body decoded, `-` for none).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CORPUS="$ROOT/services/router/tests/conformance"
TMP="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
log() { echo "[$(date +%T)] $*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

log "mentat-router: tests/conformance.rs"
(
    cd "$ROOT"
    # shellcheck disable=SC1091
    . scripts/nats-server.sh >/dev/null
    CONFORMANCE_REPORT="$TMP/router.tsv" cargo test -q -p mentat-router --test conformance >&2 || true
)
[ -s "$TMP/router.tsv" ] || { echo "the router's test wrote no report" >&2; exit 1; }

if command -v nginx >/dev/null; then
    BACKEND_PORT=$(free_port)
    NGINX_PORT=$(free_port)
    log "nginx on $NGINX_PORT, recording backend on $BACKEND_PORT"
    python3 "$HERE/conformance.py" backend "$BACKEND_PORT" "$TMP/backend.log" & PIDS+=($!)
    cat >"$TMP/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/nginx.err warn;
events { worker_connections 256; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        server_name web.localhost;
        client_header_timeout 10s;
        location / {
            proxy_pass http://127.0.0.1:$BACKEND_PORT;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
        }
    }
}
CONF
    nginx -c "$TMP/nginx.conf" -p "$TMP" & PIDS+=($!)
    sleep 1
    python3 "$HERE/conformance.py" replay "$NGINX_PORT" "$TMP/backend.log" "$CORPUS" >"$TMP/nginx.tsv"
else
    log "nginx is not installed: its column says so"
    : >"$TMP/nginx.tsv"
fi

python3 - "$TMP/router.tsv" "$TMP/nginx.tsv" <<'PY'
import sys
router = {l.split("\t")[0]: l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()}
nginx = {l.split("\t")[0]: l.rstrip("\n").split("\t")[1] for l in open(sys.argv[2]) if l.strip()}
print("| case | expected | mentat-router | nginx |")
print("|---|---|---|---|")
for name, (_, expected, got) in router.items():
    mark = "" if got == expected else " (!)"
    print(f"| {name} | {expected} | {got}{mark} | {nginx.get(name, 'not run')} |")
PY

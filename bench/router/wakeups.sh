#!/usr/bin/env bash
# Where the fixed-rate tail comes from: at RATE requests/s (oha, corrected
# for coordinated omission), for mentat-router, nginx (setup.sh's
# nginx_conf) and direct, each run's p50/p99/p99.9 next to how often each
# vCPU halted per request (the cpuidle "usage" counters: every halt needs
# the hypervisor to wake the vCPU again), the proxy's context switches per
# request and the machine's CPU steal. The load generator and the
# backends run on CPU 0, the proxy on PROXY_CPU: 1 puts it on the other
# vCPU as run.sh does (every hop a wake-up across vCPUs), 0 puts it beside
# them (no such wake-up).
#
# Usage (from anywhere):
#   cargo build --release -p mentat-router -p mentat-demo-app -p mentat-bench-router
#   apt-get install -y nginx ; cargo install oha
#   bench/router/wakeups.sh
#   PROXY_CPU=0 bench/router/wakeups.sh
#
# Environment: PROXY_CPU=1, RATE=2000, DURATION=5 (seconds per run),
# REPEAT=3 (rounds), ROUTER_ARGS (more mentat-router flags),
# NATS_SERVER_BIN, BIN=<repo>/target/release
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROXY_CPU="${PROXY_CPU:-1}"
RATE="${RATE:-2000}"
DURATION="${DURATION:-5}"
REPEAT="${REPEAT:-3}"

. "$HERE/setup.sh"
require oha nginx taskset
[[ -r /sys/devices/system/cpu/cpu0/cpuidle/state1/usage ]] || { echo "no cpuidle counters on this machine" >&2; exit 1; }
start_backends 0
ROUTER_PORT=$(free_port); ADMIN_PORT=$(free_port); NGINX_PORT=$(free_port)
# shellcheck disable=SC2086 # ROUTER_ARGS is a list of flags
RUST_LOG=warn taskset -c "$PROXY_CPU" "$BIN/mentat-router" --workers 1 \
    --nats "nats://127.0.0.1:$NATS_PORT" --listen "127.0.0.1:$ROUTER_PORT" \
    --admin-listen "127.0.0.1:$ADMIN_PORT" --router-id wakeups ${ROUTER_ARGS:-} \
    >"$TMP/router.log" 2>&1 & ROUTER_PID=$!; PIDS+=($ROUTER_PID)
wait_port "$ROUTER_PORT"
nginx_conf "$TMP/nginx.conf" "$NGINX_PORT" 1024
taskset -c "$PROXY_CPU" nginx -c "$TMP/nginx.conf" -p "$TMP" & PIDS+=($!)
wait_port "$NGINX_PORT"
sleep 1
NGINX_WORKER=$(pgrep -P "${PIDS[-1]}" | head -1)

# Halts of CPU 0 and CPU 1 so far (every idle state but polling).
halts() {
    for cpu in 0 1; do
        cat /sys/devices/system/cpu/cpu$cpu/cpuidle/state[1-9]/usage 2>/dev/null | awk '{n += $1} END {printf "%d ", n}'
    done
}
# Voluntary and involuntary context switches of every thread of PID.
switches() { cat /proc/"$1"/task/*/status | awk '/ctxt_switches/ {n += $2} END {print n}'; }
# Steal and total time of all CPUs so far, in ticks.
ticks() { awk '/^cpu / {print $9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }

echo "## Wake-ups at $RATE requests/s ($(date -u +%F), $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'); load generator and backends on CPU 0, proxy on CPU $PROXY_CPU${ROUTER_ARGS:+; router flags: $ROUTER_ARGS})"
echo
echo "\`taskset -c 0 oha -z ${DURATION}s -q $RATE -c 20 --latency-correction\`, $REPEAT rounds"
echo
echo "| round | target | requests | p50 | p99 | p99.9 | CPU 0 halts / request | CPU 1 halts / request | proxy context switches / request | steal |"
echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for r in $(seq "$REPEAT"); do
    for target in "mentat-router $ROUTER_PORT $ROUTER_PID" "nginx $NGINX_PORT $NGINX_WORKER" "direct $A_PORT -"; do
        read -r name port pid <<<"$target"
        log "round $r/$REPEAT: $name"
        h0=$(halts); s0=$(ticks); c0=$([[ $pid != - ]] && switches "$pid" || echo 0)
        taskset -c 0 oha -z "${DURATION}s" -q "$RATE" -c 20 --latency-correction --no-tui \
            --output-format json -H "Host: $HOST" "http://127.0.0.1:$port/" >"$TMP/oha.json"
        h1=$(halts); s1=$(ticks); c1=$([[ $pid != - ]] && switches "$pid" || echo 0)
        python3 - "$r" "$name" "$h0" "$h1" "$s0" "$s1" "$c0" "$c1" "$pid" "$TMP/oha.json" <<'PY'
import json, sys
r, name, h0, h1, s0, s1, c0, c1, pid, path = sys.argv[1:]
run = json.load(open(path))
n = sum(run["statusCodeDistribution"].values())
(a0, a1), (b0, b1) = map(int, h0.split()), map(int, h1.split())
(st0, t0), (st1, t1) = map(int, s0.split()), map(int, s1.split())
p = run["latencyPercentiles"]
switches = "" if pid == "-" else f"{(int(c1) - int(c0)) / n:.2f}"
print(f"| {r} | {name} | {n} | {p['p50'] * 1e3:.3f} ms | {p['p99'] * 1e3:.3f} ms | {p['p99.9'] * 1e3:.3f} ms "
      f"| {(b0 - a0) / n:.2f} | {(b1 - a1) / n:.2f} | {switches} | {100 * (st1 - st0) / max(1, t1 - t0):.1f}% |")
PY
    done
done

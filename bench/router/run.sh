#!/usr/bin/env bash
# Router benchmark: the same two backends (mentat-demo-app, release) and
# the same load generators, side by side in one run: direct to a backend,
# through mentat-router, through nginx and through HAProxy, each proxy
# configured as a 50/50 weighted upstream with keep-alive to the backends.
# Then the memory each proxy holds per 10,000 idle keep-alive client
# connections, and the router's route-change apply latency.
# See docs/BENCHMARKS.md (Router) for results and how to read them.
#
# Usage (from anywhere):
#   cargo build --release -p mentat-router -p mentat-demo-app -p mentat-bench-router
#   apt-get install -y wrk nginx haproxy ; cargo install oha
#   bench/router/run.sh
#
# Environment:
#   DURATION=10        seconds per load run
#   REPEAT=5           rounds of load runs (targets interleaved within a
#                      round, each round starting one target later); the
#                      tables give each target's median run
#   CONNS=50           client connections for the max-throughput runs
#   RATE=2000          requests/s of the fixed-rate runs (oha -q)
#   RATE_CONNS=20      client connections of the fixed-rate runs
#   IDLE=10000         idle keep-alive connections for the memory runs
#   APPLY=1000         route changes timed for the apply latency
#   PROXY_CPU=1        CPU the proxy under test is pinned to (taskset)
#   LOAD_CPU=0         CPU the load generator and the backends share
#   STALL="5 100"      optional: take CPU PROXY_CPU away for 5 ms of every
#                      100 ms during the load runs (stall.py at real-time
#                      priority), the same for every proxy; unset: no stall
#   NATS_SERVER_BIN    nats-server 2.10+ (default: nats-server on PATH)
#   BIN=<repo>/target/release
#
# Prints a markdown report on stdout; progress on stderr.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DURATION="${DURATION:-10}"
REPEAT="${REPEAT:-5}"
CONNS="${CONNS:-50}"
RATE="${RATE:-2000}"
RATE_CONNS="${RATE_CONNS:-20}"
IDLE="${IDLE:-10000}"
APPLY="${APPLY:-1000}"
PROXY_CPU="${PROXY_CPU:-1}"
LOAD_CPU="${LOAD_CPU:-0}"

. "$HERE/setup.sh"
require wrk oha nginx haproxy taskset
ulimit -n "$(ulimit -Hn)"  # 10,000 idle connections need more than the usual 1024
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# CPU time (all threads) a process has used, in clock ticks: user, system.
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
# per_request "BEFORE" "AFTER" N: the user and system µs per request
# between two cpu_ticks readings, N requests apart.
per_request() {
    awk -v b="$1" -v a="$2" -v n="$3" -v hz="$(getconf CLK_TCK)" 'BEGIN {
        split(b, x, " "); split(a, y, " ")
        printf "%.2f\t%.2f", (y[1] - x[1]) / hz / n * 1e6, (y[2] - x[2]) / hz / n * 1e6 }'
}
# CPU time stolen by the hypervisor, in % of all CPUs' time, between two
# snapshots of /proc/stat: a virtual machine's noise, shown per run.
cpu_snap() { awk '/^cpu / {print $2+$3+$4+$5+$6+$7+$8+$9, $9}' /proc/stat; }
steal_since() { cpu_snap | awk -v b="$1" 'BEGIN {split(b, s, " ")} {t = $1 - s[1]; printf "%.1f", (t > 0 ? 100 * ($2 - s[2]) / t : 0)}'; }
# How busy LOAD_CPU and PROXY_CPU were (user, system, interrupts), in % of
# their time, between two snapshots: which side bounds a run.
busy_snap() {
    for c in "$LOAD_CPU" "$PROXY_CPU"; do
        awk -v c="cpu$c" '$1 == c {printf "%d %d ", $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat
    done
}
busy_since() { busy_snap | awk -v b="$1" 'BEGIN {split(b, s, " ")} {printf "%.0f\t%.0f", 100 * ($1 - s[1]) / ($2 - s[2]), 100 * ($3 - s[3]) / ($4 - s[4])}'; }

start_backends "$LOAD_CPU"
ROUTER_PORT=$(free_port); ADMIN_PORT=$(free_port); NGINX_PORT=$(free_port); HAPROXY_PORT=$(free_port)

log "mentat-router on $ROUTER_PORT (CPU $PROXY_CPU, 1 worker)"
RUST_LOG=warn taskset -c "$PROXY_CPU" "$BIN/mentat-router" --workers 1 \
    --nats "nats://127.0.0.1:$NATS_PORT" --listen "127.0.0.1:$ROUTER_PORT" \
    --admin-listen "127.0.0.1:$ADMIN_PORT" --router-id bench --max-connections 20000 \
    >"$TMP/router.log" 2>&1 & ROUTER_PID=$!; PIDS+=($ROUTER_PID)
wait_port "$ROUTER_PORT"

# start_nginx CONNECTIONS PORT: nginx with room for CONNECTIONS connections.
# The load runs get 1,024 (nginx preallocates every connection slot, and a
# 30,000-slot worker measured about 8% slower); the idle-connection memory
# run gets 30,000. Sets NGINX_PID (master) and NGINX_WORKER.
start_nginx() {
log "nginx on $2 (CPU $PROXY_CPU, 1 worker, $1 connections)"
nginx_conf "$TMP/nginx-$1.conf" "$2" "$1"
taskset -c "$PROXY_CPU" nginx -c "$TMP/nginx-$1.conf" -p "$TMP" & NGINX_PID=$!; PIDS+=($NGINX_PID)
wait_port "$2"
NGINX_WORKER=$(pgrep -P "$NGINX_PID" | head -1)
}
start_nginx 1024 "$NGINX_PORT"

log "haproxy on $HAPROXY_PORT (CPU $PROXY_CPU, 1 thread)"
cat >"$TMP/haproxy.cfg" <<CONF
global
    nbthread 1
    # HAProxy reserves two descriptors per connection: 9,900 is what a
    # 20,000 descriptor limit allows.
    maxconn 9900
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 60s
    option http-keep-alive
    http-reuse always
frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Request-Id %[uuid]
    default_backend be
backend be
    balance roundrobin
    retry-on conn-failure 503
    server a 127.0.0.1:$A_PORT weight 50
    server b 127.0.0.1:$B_PORT weight 50
CONF
taskset -c "$PROXY_CPU" haproxy -f "$TMP/haproxy.cfg" -db >"$TMP/haproxy.log" 2>&1 & HAPROXY_PID=$!; PIDS+=($HAPROXY_PID)
wait_port "$HAPROXY_PORT"

declare -A TARGET=(
    [direct]="127.0.0.1:$A_PORT"
    [mentat-router]="127.0.0.1:$ROUTER_PORT"
    [nginx]="127.0.0.1:$NGINX_PORT"
    [haproxy]="127.0.0.1:$HAPROXY_PORT"
)
ORDER=(direct mentat-router nginx haproxy)
# The targets of round R, ORDER rotated by R - 1: steal comes in bursts,
# and a fixed order would give one target the same slot in every round.
rotated() { for i in "${!ORDER[@]}"; do echo "${ORDER[(i + $1 - 1) % ${#ORDER[@]}]}"; done; }

# Every proxy's threads must be on PROXY_CPU only (checked, and shown).
affinity() { for t in /proc/"$1"/task/*; do taskset -pc "${t##*/}" | awk '{print $NF}'; done | sort -u | paste -sd' '; }
for name in mentat-router nginx haproxy; do
    pid=$ROUTER_PID
    [[ $name == nginx ]] && pid=$NGINX_WORKER
    [[ $name == haproxy ]] && pid=$HAPROXY_PID
    cpus=$(affinity "$pid")
    log "$name runs on CPU $cpus"
    [[ $cpus == "$PROXY_CPU" ]] || { echo "$name is not pinned to CPU $PROXY_CPU alone (CPUs: $cpus)" >&2; exit 1; }
done

for name in "${ORDER[@]}"; do
    curl -sf -H "Host: $HOST" "http://${TARGET[$name]}/" >/dev/null || { echo "$name does not answer" >&2; exit 1; }
done

if [[ -n ${STALL:-} ]]; then
    # shellcheck disable=SC2086 # two numbers
    chrt -f 50 taskset -c "$PROXY_CPU" python3 "$HERE/stall.py" $STALL & STALLER=$!; PIDS+=($STALLER)
    log "stalling CPU $PROXY_CPU: $STALL (busy ms, period ms)"
fi

echo "## Router benchmark ($(date -u +%F), $(nproc) CPUs, $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))"
echo
echo "Max throughput: \`taskset -c $LOAD_CPU wrk -t1 -c$CONNS -d${DURATION}s --latency -H 'Host: $HOST'\`, $REPEAT rounds, targets interleaved (order rotated each round); median of the rounds (by requests/s), then every round's requests/s and p99"
echo
declare -A PROC=([mentat-router]=$ROUTER_PID [nginx]=$NGINX_WORKER [haproxy]=$HAPROXY_PID)
for r in $(seq "$REPEAT"); do
    for name in $(rotated "$r"); do
        log "round $r/$REPEAT, wrk: $name ($(cut -d' ' -f1-3 /proc/loadavg))"
        before=$(cpu_snap); busy_before=$(busy_snap)
        # The proxy's own CPU time over the run (none for direct).
        ticks=$( [[ -n ${PROC[$name]:-} ]] && cpu_ticks "${PROC[$name]}" || echo)
        # The router's own request-duration histogram around its run.
        [[ $name == mentat-router ]] && curl -sf "http://127.0.0.1:$ADMIN_PORT/metrics" >"$TMP/metrics-$r-before"
        out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -H "Host: $HOST" "http://${TARGET[$name]}/")
        steal=$(steal_since "$before"); busy=$(busy_since "$busy_before")
        cpu_us=$( [[ -n $ticks ]] && per_request "$ticks" "$(cpu_ticks "${PROC[$name]}")" "$(awk '/requests in/ {print $1}' <<<"$out")" || printf -- '-\t-')
        [[ $name == mentat-router ]] && curl -sf "http://127.0.0.1:$ADMIN_PORT/metrics" >"$TMP/metrics-$r-after"
        echo "$out" >"$TMP/wrk-$name-$r.txt"
        rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
        p50=$(awk '$1=="50%" {print $2}' <<<"$out")
        p99=$(awk '$1=="99%" {print $2}' <<<"$out")
        errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$rps" "$p50" "$p99" "${errs:-0}" "$steal" "$cpu_us" "$busy" >>"$TMP/wrk.tsv"
    done
done
python3 - "$TMP/wrk.tsv" "$LOAD_CPU" "$PROXY_CPU" "${ORDER[@]}" <<'PY'
import sys
load_cpu, proxy_cpu = sys.argv[2:4]
del sys.argv[2:4]
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
median = lambda xs: sorted(xs)[len(xs) // 2]
def ms(v):
    return float(v[:-2]) if v.endswith("ms") else float(v[:-2]) / 1000 if v.endswith("us") else float(v[:-1]) * 1000
print("| target | requests/s | p50 | p99 | median p99 of the rounds | errors | requests/s / p99 of each round (CPU steal %) |")
print("|---|---:|---:|---:|---:|---:|---|")
for name in sys.argv[2:]:
    runs = [r for r in rows if r[0] == name]
    med = sorted(runs, key=lambda r: float(r[1]))[len(runs) // 2]
    each = ", ".join(f"{float(r[1]):,.0f} / {ms(r[3]):.2f}ms ({r[5]})" for r in runs)
    print(f"| {name} | {float(med[1]):,.0f} | {med[2]} | {med[3]} | {median([ms(r[3]) for r in runs]):.2f}ms | {med[4]} | {each} |")
# Paired within each round (the runs a few seconds apart share the noise):
# the router's VALUES(name) over nginx's and HAProxy's.
def against_router(what, values, lead):
    for other in ("nginx", "haproxy"):
        ratios = [a / b for a, b in zip(values("mentat-router"), values(other))]
        if ratios:
            each = ", ".join(f"{x:.2f}" for x in ratios)
            print(f"{lead}mentat-router ÷ {other}, {what} of the same round: {each}; median {median(ratios):.2f}")
rps = lambda name: [float(r[1]) for r in rows if r[0] == name]
# What the router itself measured in each of its runs: from choosing a
# backend to the answer's last byte (mentat_router_request_duration_seconds,
# all instances), as the upper bound of the bucket holding the p99.
import os, re
def buckets(path):
    counts = {}
    for line in open(path):
        m = re.match(r'mentat_router_request_duration_seconds_bucket\{.*le="([^"]+)"\} (\S+)', line)
        if m:
            le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            counts[le] = counts.get(le, 0) + float(m.group(2))
    return counts
own = []
tmp = os.path.dirname(sys.argv[1])
for r in range(1, len(rps("mentat-router")) + 1):
    try:
        a, b = buckets(f"{tmp}/metrics-{r}-before"), buckets(f"{tmp}/metrics-{r}-after")
    except OSError:
        continue
    delta = sorted((le, b[le] - a.get(le, 0)) for le in b)
    if delta and delta[-1][1] > 0:
        own.append(next(f"{le * 1000:.2f}ms" for le, n in delta if n >= 0.99 * delta[-1][1]))
if own:
    print(f"\nmentat-router's own p99 in each round (its request-duration histogram, bucket upper bound; wrk's p99 above adds the time before the router routes a request and the load generator's side): {', '.join(own)}")
against_router("requests/s", rps, "\n")
# The proxy's CPU time (user + system, from /proc/PID/stat) per request
# served: what a request costs the proxy, whichever CPU bounds the run.
measured = lambda name: [r for r in rows if r[0] == name and r[6] != "-"]
cpu = lambda name: [float(r[6]) + float(r[7]) for r in measured(name)]
print("\nProxy CPU time per request (µs; median of the rounds: user + system = total, then each round's total):")
for name in sys.argv[2:]:
    if cpu(name):
        user, system = (median([float(r[i]) for r in measured(name)]) for i in (6, 7))
        each = ", ".join(f"{x:.2f}" for x in cpu(name))
        print(f"- {name}: {user:.2f} + {system:.2f} = {median(cpu(name)):.2f} µs ({each})")
against_router("CPU per request", cpu, "- ")
# A run is bounded by whichever CPU is full: the proxy's, or the one the
# load generator and the backends share.
print(f"\nBusy share of CPU {load_cpu} (load generator, backends) / CPU {proxy_cpu} (proxy) during the wrk runs, median of the rounds:")
for name in sys.argv[2:]:
    load, proxy = (median([float(r[i]) for r in rows if r[0] == name]) for i in (8, 9))
    print(f"- {name}: {load:.0f}% / {proxy:.0f}%")
PY
echo
echo "Fixed rate: \`taskset -c $LOAD_CPU oha -z ${DURATION}s -q $RATE -c $RATE_CONNS --latency-correction --no-tui -H 'Host: $HOST'\`, $REPEAT rounds, targets interleaved (order rotated each round); each column is the median of the rounds"
echo
for r in $(seq "$REPEAT"); do
    for name in $(rotated "$r"); do
        log "round $r/$REPEAT, oha -q $RATE: $name ($(cut -d' ' -f1-3 /proc/loadavg))"
        before=$(cpu_snap)
        taskset -c "$LOAD_CPU" oha -z "${DURATION}s" -q "$RATE" -c "$RATE_CONNS" --latency-correction --no-tui \
            --output-format json -H "Host: $HOST" "http://${TARGET[$name]}/" >"$TMP/oha-$name-$r.json"
        steal_since "$before" >"$TMP/steal-$name-$r"
    done
done
python3 - "$TMP" "$REPEAT" "${ORDER[@]}" <<'PY'
import json, statistics, sys
tmp, repeat, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
ms = lambda v: f"{v * 1000:.3f} ms"
print("| target | requests/s | p50 | p90 | p99 | p99.9 | success | p99 of each round (CPU steal %) |")
print("|---|---:|---:|---:|---:|---:|---:|---|")
p99 = {}
for name in names:
    runs = [json.load(open(f"{tmp}/oha-{name}-{r}.json")) for r in range(1, repeat + 1)]
    steal = [open(f"{tmp}/steal-{name}-{r}").read().strip() for r in range(1, repeat + 1)]
    med = lambda f: statistics.median(f(d) for d in runs)
    p = lambda k: med(lambda d: d["latencyPercentiles"][k])
    p99[name] = [d["latencyPercentiles"]["p99"] for d in runs]
    each = ", ".join(f"{ms(d['latencyPercentiles']['p99'])} ({s})" for d, s in zip(runs, steal))
    print(f"| {name} | {med(lambda d: d['summary']['requestsPerSec']):.0f} | {ms(p('p50'))} | {ms(p('p90'))} | {ms(p('p99'))} | {ms(p('p99.9'))} | {med(lambda d: d['summary']['successRate']) * 100:.2f}% | {each} |")
# Paired within each round, as above; then only the rounds in which the
# hypervisor stole at most 1% of the CPU time during both runs compared.
steal = {n: [float(open(f"{tmp}/steal-{n}-{r}").read().strip() or 0) for r in range(1, repeat + 1)] for n in names}
for name in names[1:]:
    added = [a - b for a, b in zip(p99[name], p99["direct"])]
    each = ", ".join(ms(x) for x in added)
    quiet = [x for x, s, d in zip(added, steal[name], steal["direct"]) if s <= 1 and d <= 1]
    calm = f"; rounds with no steal: {', '.join(ms(x) for x in quiet)}" if quiet else "; no round without steal"
    print(f"\n{name}: p99 added to direct's p99 of the same round: {each}; median {ms(statistics.median(added))}{calm}")
PY
echo
if [[ -n ${STALL:-} ]]; then
    kill "$STALLER"
    echo
    echo "The load runs above had CPU $PROXY_CPU taken away by \`bench/router/stall.py $STALL\` (busy ms, period ms) at real-time priority."
fi
echo
echo "Memory of idle keep-alive client connections (VmRSS of the proxy process; each connection has served one request and stays open; HAProxy gets at most 9,000 as its maxconn must fit the 20,000 descriptor limit):"
echo
echo "| proxy | idle connections | RSS before | RSS with them | per connection | per 10,000 |"
echo "|---|---:|---:|---:|---:|---:|"
kill "$NGINX_PID"; wait "$NGINX_PID" 2>/dev/null || true
NGINX_PORT=$(free_port)
start_nginx 30000 "$NGINX_PORT"
TARGET[nginx]="127.0.0.1:$NGINX_PORT"
PROC[nginx]=$NGINX_WORKER
for name in mentat-router nginx haproxy; do
    n=$IDLE
    [[ $name == haproxy && $n -gt 9000 ]] && n=9000
    log "$n idle connections: $name"
    pid=${PROC[$name]}
    before=$(rss_kb "$pid")
    "$BIN/mentat-bench-router" idle "${TARGET[$name]}" "$HOST" "$n" 8 >"$TMP/idle-$name.txt" &
    helper=$!
    for _ in $(seq 300); do grep -q ready "$TMP/idle-$name.txt" 2>/dev/null && break; sleep 0.1; done
    sleep 1
    during=$(rss_kb "$pid")
    wait "$helper" || true
    per=$(( (during - before) * 1024 / n ))
    echo "| $name | $n | $((before / 1024)) MiB | $((during / 1024)) MiB | $per bytes | $(python3 -c "print(f'{$per * 10000 / 2**20:.1f} MiB')") |"
done
echo
log "route-change apply latency: $APPLY changes"
echo "Route-change apply latency (\`mentat-bench-router apply\`, $APPLY RouteChanged published 10 ms apart through nats-server, read from the router's /metrics):"
echo
echo '```'
before=$(cpu_snap)
"$BIN/mentat-bench-router" apply "nats://127.0.0.1:$NATS_PORT" "127.0.0.1:$ADMIN_PORT" web-apply "127.0.0.1:$A_PORT" "$APPLY"
echo "CPU steal during the changes: $(steal_since "$before")%"
echo '```'

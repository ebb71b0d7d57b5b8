#!/usr/bin/env python3
"""Helper of bench/deploy/run.sh: free ports, process discovery, RSS
sampling, the event breakdown of a deployment and the markdown report.

Only the standard library; Linux only (/proc).

  helper.py spawn LOG CMD...              run CMD in a new session, output to LOG; print its pid
  helper.py hosts STATUSJSON              exit 0 when `mt status --json` output lists a live host
  helper.py freeport                      print a free TCP port on 127.0.0.1
  helper.py services MTPID                print "name pid" of the children of `mt up`
  helper.py snapshot PID                  print "pid starttime" of PID and all its descendants
  helper.py reap SNAPSHOT                 SIGKILL the processes of SNAPSHOT that are still alive
  helper.py rss MTPID OUT                 write VmRSS (kB) of each child of `mt up` as JSON
  helper.py sample MTPID OUT [MS]         sample VmRSS every MS ms (50) until SIGTERM; write the peaks
  helper.py breakdown HISTORY IMAGES OUT  per-step times of the deployments of IMAGES (a file, one per
                                          line), from `mt history --events --json`
  helper.py compose DIR BACKEND           gather DIR's pieces into DIR/result.json
  helper.py report DIR...                 print the markdown report of one or more backend runs
"""

import json
import os
import signal
import socket
import statistics
import sys
import time

SERVICES = ["mentat-planner", "mentat-executor", "mentat-health-watcher", "mentat-router"]
OTHERS = ["nats-server", "mt"]


def _find(obj, key):
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        for v in obj.values():
            found = _find(v, key)
            if found is not None:
                return found
    return None


def hosts(path):
    """Exit 0 when the `mt status --json` reply in PATH lists a live host."""
    try:
        with open(path) as f:
            reply = json.load(f)
    except (OSError, ValueError):
        sys.exit(1)
    sys.exit(0 if _find(reply, "hosts") else 1)


def freeport():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def spawn(log, cmd):
    """Fork, start a new session (so a Ctrl-C at the terminal reaches the
    benchmark only, which then stops `mt up` in order), exec CMD."""
    pid = os.fork()
    if pid == 0:
        os.setsid()
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        try:
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
    print(pid)


def _stat(pid):
    """(ppid, starttime) of PID, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2:].split()
    return int(rest[1]), int(rest[19])


def _argv0(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return os.path.basename(f.read().split(b"\0")[0].decode(errors="replace"))
    except OSError:
        return None


def _children(pid):
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.extend(int(k) for k in f.read().split())
    except OSError:
        pass
    return kids


def services_of(mtpid):
    """{name: pid} of the service processes (and nats-server) under `mt up`."""
    found = {"mt": mtpid} if _stat(mtpid) else {}
    for kid in _children(mtpid):
        name = _argv0(kid)
        if name in SERVICES or name in OTHERS:
            found[name] = kid
    return found


def snapshot(pid):
    todo, seen = [int(pid)], []
    while todo:
        p = todo.pop()
        st = _stat(p)
        if st is None:
            continue
        seen.append((p, st[1]))
        todo.extend(_children(p))
    for p, start in seen:
        print(p, start)


def reap(path):
    killed = []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            pid, start = map(int, line.split())
            st = _stat(pid)
            if st is not None and st[1] == start:  # same process, not a reused pid
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(f"{pid}({_argv0(pid)})")
                except OSError:
                    pass
    if killed:
        print("killed leftovers: " + " ".join(killed))


def vmrss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss(mtpid, out):
    procs = services_of(int(mtpid))
    data = {name: {"pid": pid, "kb": vmrss_kb(pid)} for name, pid in procs.items()}
    with open(out, "w") as f:
        json.dump(data, f)


def sample(mtpid, out, ms=50):
    mtpid = int(mtpid)
    period = int(ms) / 1000.0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    peaks, pids, samples = {}, {}, 0
    procs = services_of(mtpid)
    next_rescan = 0
    while not stop:
        now = time.monotonic()
        if now >= next_rescan:  # a service restarted by `mt up` gets a new pid
            procs = services_of(mtpid)
            next_rescan = now + 1.0
        for name, pid in procs.items():
            kb = vmrss_kb(pid)
            if kb is None:
                next_rescan = 0
                continue
            pids.setdefault(name, set()).add(pid)
            peaks[name] = max(peaks.get(name, 0), kb)
        samples += 1
        time.sleep(max(0.0, period - (time.monotonic() - now)))
    data = {name: {"kb": kb, "pids": sorted(pids[name])} for name, kb in peaks.items()}
    with open(out, "w") as f:
        json.dump({"samples": samples, "interval_ms": int(ms), "peaks": data}, f)


def _replica(ev):
    return ev.get("replica")


def breakdown(history_path, ids_path, out):
    """For the last deployment of each image of IDS_PATH, the time of every step,
    from the `recorded_at_ms` of the events of the service's stream."""
    with open(history_path) as f:
        reply = json.load(f)
    # `mt history --events --json` prints the planner's HistoryReply; the
    # events are envelopes {id, position, recorded_at_ms, meta, event:{type,...}}.
    body = reply.get("Ok", reply) if isinstance(reply, dict) else reply
    envs = body["events"]
    with open(ids_path) as f:
        images = [line.strip() for line in f if line.strip()]
    result = {}
    for image in images:  # the last deployment of each image
        deps = [e["event"]["deployment_id"] for e in envs
                if e["event"]["type"] == "DeploymentStarted" and e["event"]["image"] == image]
        if deps:
            result[image] = _one_deployment(envs, deps[-1])
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


def _one_deployment(envs, dep):
    envs = sorted(envs, key=lambda e: e["position"])
    start = next(i for i, e in enumerate(envs)
                 if e["event"]["type"] == "DeploymentStarted" and e["event"]["deployment_id"] == dep)
    end = next(i for i, e in enumerate(envs)
               if i > start and e["event"]["type"] in ("DeploymentCompleted", "DeploymentFailed", "DeploymentReverted")
               and e["event"].get("deployment_id") == dep)
    span = envs[start:end + 1]
    t0 = span[0]["recorded_at_ms"]
    t_end = span[-1]["recorded_at_ms"]

    def first(pred, after=0):
        for e in span:
            if e["recorded_at_ms"] >= after and pred(e["event"]):
                return e
        return None

    batches = []
    for b in [e for e in span if e["event"]["type"] == "BatchStarted"]:
        bev = b["event"]
        new, old = set(bev["start"]), set(bev["replace"])
        pos = b["position"]
        after = [e for e in span if e["position"] >= pos]

        def at(pred, src=after):
            for e in src:
                if pred(e["event"]):
                    return e["recorded_at_ms"], e["position"]
            return None, None

        t_batch = b["recorded_at_ms"]
        t_req, _ = at(lambda ev: ev["type"] == "ReplicaStartRequested" and ev["replica"] in new)
        # the last new replica of the batch to start / become healthy
        started = [e for e in after if e["event"]["type"] == "ReplicaStarted" and e["event"]["replica"] in new]
        healthy = [e for e in after if e["event"]["type"] == "ReplicaHealthy" and e["event"]["replica"] in new]
        t_started = max((e["recorded_at_ms"] for e in started), default=None)
        t_healthy = max((e["recorded_at_ms"] for e in healthy), default=None)
        p_healthy = max((e["position"] for e in healthy), default=pos)

        def routes_new(ev):
            if ev["type"] != "RouteChanged":
                return False
            names = {b["replica"] for b in ev["backends"]}
            return new <= names and not (old & names)

        t_route, p_route = at(routes_new, [e for e in after if e["position"] > p_healthy])
        t_drained = max((e["recorded_at_ms"] for e in after
                         if e["event"]["type"] == "ReplicaDrained" and e["event"]["replica"] in old), default=None)
        t_stopreq = max((e["recorded_at_ms"] for e in after
                         if e["event"]["type"] == "ReplicaStopRequested" and e["event"]["replica"] in old), default=None)
        t_exited = max((e["recorded_at_ms"] for e in after
                        if e["event"]["type"] == "ReplicaExited" and e["event"]["replica"] in old), default=None)
        t_done, _ = at(lambda ev: ev["type"] == "BatchCompleted" and ev["batch"] == bev["batch"])
        batches.append({
            "batch": bev["batch"], "start": sorted(new), "replace": sorted(old),
            "batch_started": t_batch, "start_requested": t_req, "started": t_started,
            "healthy": t_healthy, "route_changed": t_route, "drained": t_drained,
            "stop_requested": t_stopreq, "exited": t_exited, "batch_completed": t_done,
        })

    def d(a, b):
        return None if a is None or b is None else b - a

    steps = {
        "DeploymentStarted -> first ReplicaStarted": d(t0, min((x["started"] for x in batches if x["started"]), default=None)),
    }
    per = {
        "BatchStarted -> ReplicaStartRequested": [d(x["batch_started"], x["start_requested"]) for x in batches],
        "ReplicaStartRequested -> ReplicaStarted": [d(x["start_requested"], x["started"]) for x in batches],
        "ReplicaStarted -> ReplicaHealthy": [d(x["started"], x["healthy"]) for x in batches],
        "ReplicaHealthy -> RouteChanged": [d(x["healthy"], x["route_changed"]) for x in batches],
        "RouteChanged -> ReplicaDrained (old)": [d(x["route_changed"], x["drained"]) for x in batches],
        "ReplicaDrained -> ReplicaStopRequested (old)": [d(x["drained"], x["stop_requested"]) for x in batches],
        "ReplicaStopRequested -> ReplicaExited (old)": [d(x["stop_requested"], x["exited"]) for x in batches],
        "ReplicaDrained -> ReplicaExited (old)": [d(x["drained"], x["exited"]) for x in batches],
        "ReplicaExited -> BatchCompleted": [d(x["exited"], x["batch_completed"]) for x in batches],
        "BatchStarted -> BatchCompleted (whole batch)": [d(x["batch_started"], x["batch_completed"]) for x in batches],
    }
    gaps = [d(batches[i]["batch_completed"], batches[i + 1]["batch_started"]) for i in range(len(batches) - 1)]
    per["BatchCompleted -> next BatchStarted"] = gaps
    return {
        "deployment_id": dep,
        "events": len(span),
        "batches": len(batches),
        "logged_ms": t_end - t0,
        "steps": steps,
        "per_batch": {k: [v for v in vals if v is not None] for k, vals in per.items()},
        "detail": batches,
        "event_types": [e["event"]["type"] for e in span],
    }


def _load(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def compose(d, backend, interval_ms="50", healthy_after="1"):
    times = []
    try:
        with open(os.path.join(d, "times.txt")) as f:
            times = [float(x) for x in f.read().split()]
    except OSError:
        pass
    ids = []
    try:
        with open(os.path.join(d, "images.txt")) as f:
            ids = [x.strip() for x in f if x.strip()]
    except OSError:
        pass
    bd = _load(os.path.join(d, "breakdown.json"), {})
    alls = [bd[i] for i in ids if i in bd]
    batches = alls[-1]["batches"] if alls else 10
    result = {
        "backend": backend, "times_ms": times, "images": ids,
        "batches": batches, "interval_ms": int(interval_ms), "healthy_after": int(healthy_after),
        "rss_idle": _load(os.path.join(d, "rss_idle.json")),
        "rss_peak": _load(os.path.join(d, "rss_peak.json")),
        "rss_after": _load(os.path.join(d, "rss_after.json")),
        "breakdown_last": alls[-1] if alls else None,
        "breakdown_all": alls,
    }
    with open(os.path.join(d, "result.json"), "w") as f:
        json.dump(result, f, indent=1)


def _mean(xs):
    return statistics.fmean(xs) if xs else float("nan")


def demanded_wait(r):
    """Health waiting the config makes unavoidable, per deploy: the
    health-watcher probes a replica as soon as it learns it started (the
    first tick of its `tokio::time::interval` is immediate), then every
    interval_ms; a replica is healthy after `healthy_after` passes in a row.
    So a batch must wait (healthy_after - 1) x interval_ms, 0 when
    healthy_after is 1."""
    return r["batches"] * (r["healthy_after"] - 1) * r["interval_ms"]


def report(dirs):
    runs = []
    for d in dirs:
        with open(os.path.join(d, "result.json")) as f:
            runs.append(json.load(f))
    out = []
    out.append("### Rolling deploy of 10 replicas (`mt deploy web --image vN`, wall clock)\n")
    out.append("| backend | runs | batches | `mt deploy` wall clock: mean / min / max (ms) "
               "| health waits demanded (ms) | control-plane time: mean / min / max (ms) | per batch (ms) "
               "| health checks as logged, sum per deploy (ms) |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        t = r["times_ms"]
        if not t:
            out.append(f"| {r['backend']} | 0 | - | failed | - | - | - | - |")
            continue
        wait = demanded_wait(r)
        cp = [x - wait for x in t]
        checks = [sum(b["per_batch"].get("ReplicaStarted -> ReplicaHealthy", [])) for b in r.get("breakdown_all", [])]
        out.append(
            f"| {r['backend']} | {len(t)} | {r['batches']} | {_mean(t):.0f} / {min(t):.0f} / {max(t):.0f} | {wait} "
            f"| {_mean(cp):.0f} / {min(cp):.0f} / {max(cp):.0f} | {_mean(cp) / r['batches']:.1f} "
            f"| {_mean(checks):.0f} |")
    out.append("")
    out.append("Runs (ms, in order): " + "; ".join(
        f"{r['backend']}: " + ", ".join(f"{x:.0f}" for x in r["times_ms"]) for r in runs))
    out.append("")
    out.append("### Where a batch's time goes (event `recorded_at_ms`, mean over the batches, ms)\n")
    keys = None
    for r in runs:
        if r.get("breakdown_last"):
            keys = list(r["breakdown_last"]["per_batch"].keys())
            break
    if keys:
        hdr = "| step | " + " | ".join(f"{r['backend']}: last run | {r['backend']}: all runs" for r in runs) + " |"
        out.append(hdr)
        out.append("|---|" + "---:|" * (2 * len(runs)))
        first = "| DeploymentStarted -> first ReplicaStarted (once) |"
        for r in runs:
            last = r.get("breakdown_last") or {}
            v = last.get("steps", {}).get("DeploymentStarted -> first ReplicaStarted")
            alls = [b["steps"]["DeploymentStarted -> first ReplicaStarted"] for b in r.get("breakdown_all", [])
                    if b["steps"]["DeploymentStarted -> first ReplicaStarted"] is not None]
            first += f" {v} | {_mean(alls):.1f} |"
        out.append(first)
        for k in keys:
            row = f"| {k} |"
            for r in runs:
                last = (r.get("breakdown_last") or {}).get("per_batch", {}).get(k, [])
                alls = [x for b in r.get("breakdown_all", []) for x in b["per_batch"].get(k, [])]
                row += f" {_mean(last):.1f} | {_mean(alls):.1f} |"
            out.append(row)
        row = "| whole deployment in the log (DeploymentStarted -> DeploymentCompleted) |"
        for r in runs:
            last = r.get("breakdown_last") or {}
            alls = [b["logged_ms"] for b in r.get("breakdown_all", [])]
            row += f" {last.get('logged_ms')} | {_mean(alls):.0f} |"
        out.append(row)
        out.append("")
    out.append("### Resident memory (VmRSS, MiB): idle (v1 deployed, 2 s settled) / peak while deploying / 2 s after\n")
    names = SERVICES + OTHERS
    label = {"mt": "mt up (supervisor)"}
    out.append("| process | " + " | ".join(f"{r['backend']} idle | {r['backend']} peak | {r['backend']} after" for r in runs) + " |")
    out.append("|---|" + "---:|---:|---:|" * len(runs))
    mib = lambda kb: "-" if kb is None else f"{kb / 1024:.1f}"
    for n in names:
        row = f"| {label.get(n, n)} |"
        for r in runs:
            idle = (r.get("rss_idle") or {}).get(n, {}).get("kb")
            peak = ((r.get("rss_peak") or {}).get("peaks") or {}).get(n, {}).get("kb")
            after = (r.get("rss_after") or {}).get(n, {}).get("kb")
            row += f" {mib(idle)} | {mib(peak)} | {mib(after)} |"
        out.append(row)
    row = "| **the four services** |"
    for r in runs:
        tot = []
        for key in ("rss_idle", "rss_peak", "rss_after"):
            src = r.get(key) or {}
            src = src.get("peaks", src) if key == "rss_peak" else src
            kbs = [src.get(n, {}).get("kb") for n in SERVICES]
            tot.append(None if None in kbs else sum(kbs))
        row += " " + " | ".join(f"**{mib(x)}**" for x in tot) + " |"
    out.append(row)
    out.append("")
    for r in runs:
        p = r.get("rss_peak") or {}
        restarted = [n for n, v in (p.get("peaks") or {}).items() if len(v.get("pids", [])) > 1]
        out.append(f"- {r['backend']}: {p.get('samples', 0)} samples every {p.get('interval_ms', '-')} ms during the measured deploys"
                   + (f"; restarted during the runs: {', '.join(restarted)}" if restarted else ""))
    print("\n".join(out))


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "freeport":
        freeport()
    elif cmd == "hosts":
        hosts(args[0])
    elif cmd == "spawn":
        spawn(args[0], args[1:])
    elif cmd == "services":
        for name, pid in sorted(services_of(int(args[0])).items()):
            print(name, pid)
    elif cmd == "snapshot":
        snapshot(args[0])
    elif cmd == "reap":
        reap(args[0])
    elif cmd == "rss":
        rss(*args)
    elif cmd == "sample":
        sample(*args)
    elif cmd == "breakdown":
        breakdown(*args)
    elif cmd == "compose":
        compose(*args)
    elif cmd == "report":
        report(args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)

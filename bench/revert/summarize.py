#!/usr/bin/env python3
"""Summarise bench/revert runs (JSON lines from measure.rs) as a markdown
table: p50, p90, p99 and max of each phase, in milliseconds. With 20 runs
the p99 is the slowest run (nearest-rank).

  summarize.py RUNS.jsonl
"""

import json
import math
import sys

COLUMNS = [
    ("detection_ms", "detection (first 500 at the client -> ThresholdBreached judged)"),
    ("breach_event_ms", "breach event (judged -> appended to the log)"),
    ("decision_ms", "planner decision (breach appended -> DeploymentReverting)"),
    ("routing_ms", "routing change (DeploymentReverting -> RouteChanged relayed to routers)"),
    ("first_bad_to_route_ms", "first bad response -> routing change relayed"),
    ("end_to_end_ms", "end to end (first -> last 500 of the bad version at the client)"),
    ("bad_answers", "requests answered by the bad version with 500 before the revert"),
]


def rank(values, q):
    """Nearest-rank percentile."""
    values = sorted(values)
    return values[max(0, math.ceil(q * len(values)) - 1)]


def main(path):
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    print(f"{len(rows)} runs; reverted because of a breach in "
          f"{sum(1 for r in rows if 'threshold breached' in (r.get('reverted_because') or ''))}.")
    print()
    print("| phase | p50 | p90 | p99 | max |")
    print("|---|---:|---:|---:|---:|")
    for key, label in COLUMNS:
        values = [r[key] for r in rows if r.get(key) is not None]
        if not values:
            print(f"| {label} | - | - | - | - |")
            continue
        cells = [rank(values, q) for q in (0.5, 0.9, 0.99)] + [max(values)]
        print(f"| {label} | " + " | ".join(str(c) for c in cells) + " |")
    missing = [r["image"] for r in rows if r.get("end_to_end_ms") is None]
    if missing:
        print()
        print(f"runs without a complete timeline: {', '.join(missing)}")


if __name__ == "__main__":
    main(sys.argv[1])

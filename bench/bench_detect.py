"""Behavioural detection throughput: `egide detect run` against the parse floor.

What is measured (issue 6, "Must show"): the simulator (`egide.detect.simulate`) writes about
1 M events (`--quick`: about 200,000) into a temporary directory, once; then, in the same run and
on the same file, in turns:

- **parse floor**: read the file and `orjson.loads` every line, nothing else;
- **detect run**: what `egide detect run` does in-process, without the progress bar: load the
  context, read, check every line and fold into the aggregates (`Detector.feed_file`: two
  processes on a file this large, `features.ingest_file`), score, group into cases and write
  the alerts;
- **detect run, one process**: the same with the file read by this process alone
  (`ingest_file(parallel=False)`), to show what the second core brings.

Printed: events per second of each, the ratio detect/floor (goal: within 3x) and the time
spent scoring (after the last event). Goal: >= 300,000 events/s in batch on a 2-core machine.
The live p99 latency (ledger append to alert) is not measured here.

Run: `.venv/bin/python bench/bench_detect.py [--quick] [--rounds N]`.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from _common import environment_line, fmt_rate, parse_args, print_table, temp_dir
from egide.detect.engine import Detector
from egide.detect.events import load_context, write_alerts
from egide.detect.features import ingest_file
from egide.detect.simulate import simulate, write_simulation

GOAL_RATE = 300_000
GOAL_RATIO = 3.0


def floor(events: Path) -> tuple[float, int]:
    start = time.perf_counter()
    n = 0
    loads = orjson.loads
    with events.open("rb") as handle:
        for line in handle:
            loads(line)
            n += 1
    return time.perf_counter() - start, n


def detect_run(
    events: Path, context: Path, out: Path, *, parallel: bool = True
) -> tuple[float, float, int, int]:
    start = time.perf_counter()
    detector = Detector(load_context(context))
    if parallel:
        detector.feed_file(events)
    else:
        ingest_file(detector.state, events, parallel=False)
    fed = time.perf_counter()
    alerts = detector.finish()
    write_alerts(out, alerts)
    end = time.perf_counter()
    return end - start, end - fed, detector.summary().events, len(alerts)


def main() -> None:
    args = parse_args("egide detect run throughput against the read-and-parse floor.")
    users, days = (300, 8) if args.quick else (400, 30)
    rounds = args.rounds or 2
    print(environment_line())
    with temp_dir("egide-bench-detect-") as root:
        start = time.perf_counter()
        summary = write_simulation(
            simulate(users=users, patients=users * 20, days=days, seed=1), root
        )
        print(
            f"simulated {summary.events:,} events ({users} users, {days} days) in "
            f"{time.perf_counter() - start:.1f} s; rounds: {rounds} (best shown)"
        )
        print()
        best_floor = best_detect = best_score = best_single = float("inf")
        alerts = 0
        for r in range(rounds):
            order = (0, 1, 2) if r % 2 == 0 else (2, 1, 0)
            for which in order:
                if which == 0:
                    seconds, n = floor(summary.events_path)
                    best_floor = min(best_floor, seconds)
                elif which == 1:
                    seconds, score, n, alerts = detect_run(
                        summary.events_path, summary.context_path, root / "alerts.jsonl"
                    )
                    if seconds < best_detect:
                        best_detect, best_score = seconds, score
                else:
                    seconds, _, n, _ = detect_run(
                        summary.events_path,
                        summary.context_path,
                        root / "alerts.jsonl",
                        parallel=False,
                    )
                    best_single = min(best_single, seconds)
    rate_floor, rate_detect, rate_single = n / best_floor, n / best_detect, n / best_single
    print_table(
        ["measure", "events/s", "seconds"],
        [
            ["parse floor (read + orjson.loads)", fmt_rate(rate_floor), f"{best_floor:.2f}"],
            ["detect run (check, detect, write)", fmt_rate(rate_detect), f"{best_detect:.2f}"],
            ["detect run, one process", fmt_rate(rate_single), f"{best_single:.2f}"],
        ],
    )
    print()
    ratio = best_detect / best_floor
    print(
        f"ratio detect/floor: {ratio:.2f}x (goal <= {GOAL_RATIO:.0f}x: "
        f"{'met' if ratio <= GOAL_RATIO else 'missed'}); "
        f"{fmt_rate(rate_detect)} events/s (goal >= {fmt_rate(GOAL_RATE)}: "
        f"{'met' if rate_detect >= GOAL_RATE else 'missed'}); scoring after the last event: "
        f"{best_score:.2f} s ({best_score / best_detect:.0%} of the run); {alerts} alerts"
    )


if __name__ == "__main__":
    main()

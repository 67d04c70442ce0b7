"""Behavioural detection throughput: `egide detect run` against the parse floor.

What is measured (issue 6, "Must show"): the simulator (`egide.detect.simulate`) writes about
1 M events (`--quick`: about 200,000) into a temporary directory, once; then, in the same run and
on the same file, in turns (each round in the reverse order of the last):

- **parse floor**: read the file and `orjson.loads` every line, nothing else;
- **detect run**: what `egide detect run` does in-process, without the progress bar: load the
  context, read, check every line and fold into the aggregates, score, group into cases and
  write the alerts (`Detector.run_file`: on a file this large, two processes read it and
  then each judges half of the accounts, `parallel.score_split`);
- **two read, one judges**: the same with the second process reading only
  (`Detector.feed_file` then `finish`), to show what judging on both cores brings;
- **one process**: the file read and judged by this process alone.

Printed: events per second of each (the best round and the median), the ratio detect/floor
(medians; goal: within 3x), the time after the last byte is read (scoring), and a bar of each
run's time split into reading and judging. Goal: >= 300,000 events/s in batch on a 2-core
machine. The live p99 latency (ledger append to alert) is `bench_detect_live.py`.

Run: `.venv/bin/python bench/bench_detect.py [--quick] [--rounds N]`.
"""

from __future__ import annotations

import statistics
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


def detect_run(events: Path, context: Path, out: Path, how: str) -> tuple[float, float, int]:
    """One batch run: (seconds, seconds after the file was read, alerts)."""
    start = time.perf_counter()
    detector = Detector(load_context(context))
    fed = [0.0]

    def read() -> None:
        fed[0] = time.perf_counter()

    if how == "run_file":
        alerts = detector.run_file(events, on_read=read)
    elif how == "feed_file":
        detector.feed_file(events)
        read()
        alerts = detector.finish()
    else:
        ingest_file(detector.state, events, parallel=False)
        read()
        alerts = detector.finish()
    write_alerts(out, alerts)
    end = time.perf_counter()
    return end - start, end - fed[0], len(alerts)


MEASURES = {
    "floor": "parse floor (read + orjson.loads)",
    "run_file": "detect run (two read, two judge)",
    "feed_file": "two read, one judges",
    "one": "one process",
}


def main() -> None:
    args = parse_args("egide detect run throughput against the read-and-parse floor.")
    users, days = (300, 8) if args.quick else (400, 30)
    rounds = args.rounds or 3
    print(environment_line())
    with temp_dir("egide-bench-detect-") as root:
        start = time.perf_counter()
        summary = write_simulation(
            simulate(users=users, patients=users * 20, days=days, seed=1), root
        )
        n = summary.events
        print(
            f"simulated {n:,} events ({users} users, {days} days) in "
            f"{time.perf_counter() - start:.1f} s; rounds: {rounds}"
        )
        print()
        times: dict[str, list[float]] = {key: [] for key in MEASURES}
        scoring: dict[str, list[float]] = {key: [] for key in MEASURES}
        alerts = set()
        for r in range(rounds):
            order = list(MEASURES) if r % 2 == 0 else list(reversed(MEASURES))
            for how in order:
                if how == "floor":
                    seconds, _ = floor(summary.events_path)
                    after = 0.0
                else:
                    seconds, after, found = detect_run(
                        summary.events_path, summary.context_path, root / "alerts.jsonl", how
                    )
                    alerts.add(found)
                times[how].append(seconds)
                scoring[how].append(after)
    med = {how: statistics.median(values) for how, values in times.items()}
    print_table(
        ["measure", "events/s (best)", "events/s (median)", "seconds (median)", "after reading"],
        [
            [
                label,
                fmt_rate(n / min(times[how])),
                fmt_rate(n / med[how]),
                f"{med[how]:.2f}",
                "" if how == "floor" else f"{statistics.median(scoring[how]):.2f} s",
            ]
            for how, label in MEASURES.items()
        ],
    )
    print()
    width = 50
    longest = max(med.values())
    for how, label in MEASURES.items():
        judged = 0.0 if how == "floor" else statistics.median(scoring[how])
        cells = round(width * med[how] / longest)
        judging = round(width * judged / longest)
        print(f"{label:34s} {'#' * (cells - judging)}{'=' * judging}")
    print(f"{'':34s} # reading and folding   = after the last byte (judging)")
    print()
    ratio = med["run_file"] / med["floor"]
    rate = n / med["run_file"]
    print(
        f"ratio detect/floor (medians): {ratio:.2f}x (goal <= {GOAL_RATIO:.0f}x: "
        f"{'met' if ratio <= GOAL_RATIO else 'missed'}); {fmt_rate(rate)} events/s "
        f"(goal >= {fmt_rate(GOAL_RATE)}: {'met' if rate >= GOAL_RATE else 'missed'}); "
        f"two judges against one: {med['feed_file'] / med['run_file']:.2f}x faster; "
        f"alerts: {', '.join(str(a) for a in sorted(alerts))} (every way the same count)"
    )


if __name__ == "__main__":
    main()

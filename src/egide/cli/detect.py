"""`egide detect ...`: behavioural detection of misuse over access-event files.

`run` reads events (`.jsonl` or `.jsonl.gz`, DESIGN.md "Access event") and a context, writes
alerts (one JSON object per line), shows a progress bar and ends with a table of alerts by kind
and severity. Bad lines are never skipped silently: each is reported on stderr with its line
number and counted; with `--strict` the first one refuses the whole file (exit 1). `evaluate`
scores alerts against the simulator's labels.

Security role: this is how a security officer runs detection over an exported audit trail; its
errors are one line (no trace with paths or data), and its output is the alert file only.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer
from rich.table import Table

from egide.cli.console import cli_errors, err, fail, out, progress
from egide.detect.clock import UnknownZoneError
from egide.detect.engine import Detector
from egide.detect.events import SEVERITIES, Alert, BadLine, load_context, write_alerts
from egide.detect.settings import DetectSettings

detect_app = typer.Typer(no_args_is_help=True, help="Behavioural detection of misuse.")

MAX_REPORTED_BAD_LINES = 50


@detect_app.command("run")
@cli_errors
def run(
    events: Path = typer.Option(..., help="access events, .jsonl or .jsonl.gz"),
    context: Path = typer.Option(..., help="detection context (JSON)"),
    out_path: Path = typer.Option(..., "--out", help="where to write the alerts (.jsonl)"),
    strict: bool = typer.Option(False, help="refuse the file at the first bad line"),
    timezone: str | None = typer.Option(
        None,
        help="the hospital's time zone (IANA name, e.g. Europe/Paris) for judging hours; "
        "default: the context's, else UTC",
    ),
) -> None:
    """Detect misuse in an events file; write alerts; print a summary."""
    settings = DetectSettings()
    if timezone is not None:
        try:
            settings = DetectSettings(timezone=timezone)
        except UnknownZoneError as exc:
            fail(f"--timezone: {exc}")
    ctx = load_context(context)
    if not events.is_file():
        fail(f"no such events file: {events}")
    detector = Detector(ctx, settings)
    size = events.stat().st_size
    bad = 0
    with progress() as bar:
        # A compressed file's progress is counted in uncompressed bytes: no total then.
        task = bar.add_task("reading events", total=None if events.suffix == ".gz" else size)

        def advance(n: int) -> None:
            bar.advance(task, n)

        def on_bad(item: BadLine) -> None:
            nonlocal bad
            bad += 1
            if strict:
                bar.stop()
                fail(f"{events}: line {item.line_no}: {item.message} (--strict)")
            if bad <= MAX_REPORTED_BAD_LINES:
                err.print(
                    f"egide: {events}: line {item.line_no}: {item.message}; skipped",
                    markup=False,
                )

        def scoring() -> None:
            bar.update(task, description="scoring")

        alerts = detector.run_file(events, on_bytes=advance, on_bad=on_bad, on_read=scoring)
    write_alerts(out_path, alerts)
    summary = detector.summary()
    if bad > MAX_REPORTED_BAD_LINES:
        err.print(f"egide: ... {bad - MAX_REPORTED_BAD_LINES} more bad lines not shown")
    err.print(
        f"egide: {summary.events:,} events, {summary.user_days:,} user-days, "
        f"{bad:,} bad line{'s' if bad != 1 else ''} skipped, {len(alerts):,} alerts "
        f"written to {out_path}",
        markup=False,
    )
    if summary.unknown_actions:
        err.print(f"egide: {summary.unknown_actions:,} events with unknown actions kept, unused")
    out.print(summary_table(alerts))


def summary_table(alerts: list[Alert]) -> Table:
    """Alerts by kind (rows) and severity (columns)."""
    counts = Counter((a.kind, a.severity) for a in alerts)
    table = Table(title="alerts by kind and severity")
    table.add_column("kind")
    for severity in SEVERITIES:
        table.add_column(severity, justify="right")
    table.add_column("total", justify="right")
    kinds = sorted({a.kind for a in alerts})
    for kind in kinds:
        row = [counts.get((kind, s), 0) for s in SEVERITIES]
        table.add_row(kind, *(str(n) if n else "-" for n in row), str(sum(row)))
    totals = [sum(counts.get((k, s), 0) for k in kinds) for s in SEVERITIES]
    table.add_row("all", *(str(n) for n in totals), str(len(alerts)), style="bold")
    return table


@detect_app.command("evaluate")
@cli_errors
def evaluate(
    labels: Path = typer.Option(..., help="labels.jsonl written by egide simulate"),
    alerts: Path = typer.Option(..., help="alerts written by egide detect run"),
    events: Path | None = typer.Option(None, help="the events file (for alerts per user-day)"),
) -> None:
    """Per-kind recall, precision, precision@100, average precision, alerts per 1000
    user-days."""
    from egide.detect.evaluate import (  # noqa: PLC0415 - written alongside; optional at import
        evaluate_files,
        format_evaluation,
    )

    for path in (labels, alerts, *([events] if events else [])):
        if not path.is_file():
            fail(f"no such file: {path}")
    result = evaluate_files(labels, alerts, events=events)
    out.print(format_evaluation(result), markup=False)

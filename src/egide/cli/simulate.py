"""`egide simulate`: write a simulated hospital's access events, context and labelled attacks.

For demos, tests and tuning of behavioural detection (`egide detect run`, `egide detect
evaluate`). Nothing here touches an installation: no settings, no database, no real patient
data; the output is invented from a seed (see `egide.detect.simulate`).
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from egide.cli.console import cli_errors, err, fail, progress
from egide.detect.simulate import ATTACK_KINDS, check_arguments, simulate, write_simulation


@cli_errors
def simulate_command(
    *,
    users: int = typer.Option(200, help="staff accounts"),
    patients: int = typer.Option(5000, help="patients"),
    days: int = typer.Option(30, help="days of activity"),
    seed: int = typer.Option(1, help="same seed, same files, byte for byte"),
    out_dir: Path = typer.Option(..., "--out", help="directory to write into (created)"),
    compress: bool = typer.Option(
        False, "--gzip/--no-gzip", help="write events.jsonl.gz instead of events.jsonl"
    ),
) -> None:
    """Simulate a hospital: events.jsonl, context.json, labels.jsonl and meta.json in --out."""
    try:
        check_arguments(users=users, patients=patients, days=days)
    except ValueError as exc:
        fail(str(exc))
    if out_dir.exists() and not out_dir.is_dir():
        fail(f"--out {out_dir} exists and is not a directory")
    began = time.perf_counter()
    sim = simulate(users=users, patients=patients, days=days, seed=seed)
    with progress() as bar:
        task = bar.add_task("simulating days", total=days)

        def on_day(done: int) -> None:
            bar.update(task, completed=done)

        summary = write_simulation(sim, out_dir, compress=compress, progress=on_day)
    elapsed = time.perf_counter() - began
    rate = summary.events / elapsed if elapsed > 0 else 0.0
    err.print(
        f"egide: {summary.events} events ({summary.user_days} user-days) in {elapsed:.1f} s "
        f"({rate:,.0f} events/s) written to {out_dir}",
        markup=False,
    )
    attacks = sum(summary.attacks_by_kind.values())
    by_kind = ", ".join(
        f"{kind} {summary.attacks_by_kind[kind]}"
        for kind in ATTACK_KINDS
        if kind in summary.attacks_by_kind
    )
    err.print(f"egide: {attacks} labelled attacks: {by_kind}", markup=False)

"""`egide ledger ...`: checkpoints, verification, the public key, and export.

`verify` is the verifier apart from the writer: it needs only read access to the database and
the ledger's public key (`--key`, as printed by `egide ledger public-key`), and it exits
non-zero on any fault, naming the first bad entry it finds.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import typer

from egide.cli.console import cli_errors, err, out, progress
from egide.cli.runtime import open_services, sequence_ledger
from egide.core.errors import BadRequest
from egide.core.settings import load_settings
from egide.db.engine import transaction
from egide.ledger.checkpoint import CheckpointVerifier
from egide.ledger.service import iter_events
from egide.ledger.verify import verify_ledger

ledger_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit ledger.")


def _time(value: str | None, name: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        msg = f"{name} must be a date or an RFC 3339 time, e.g. 2026-03-01T00:00:00Z"
        raise BadRequest(msg) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@ledger_app.command("checkpoint")
@cli_errors
def checkpoint() -> None:
    """Sequence every pending entry and sign a checkpoint now (also written to the
    witness directory)."""
    services = open_services(load_settings())
    try:
        done = sequence_ledger(services, force=True)
    finally:
        services.close()
    if done.checkpoint is None:
        err.print(f"egide: no new entries; the ledger holds {done.size} leaves")
        return
    sys.stdout.write(done.note.decode() if done.note else "")


@ledger_app.command("public-key")
@cli_errors
def public_key() -> None:
    """Print the ledger's verifier key (C2SP vkey), for anyone who will verify it."""
    services = open_services(load_settings())
    try:
        sys.stdout.write(services.signer.verifier_key() + "\n")
    finally:
        services.close()


@ledger_app.command("verify")
@cli_errors
def verify(
    witness: Path | None = typer.Option(None, help="directory of witnessed checkpoints"),
    key: str | None = typer.Option(None, help="verifier key (default: this keyring's)"),
) -> None:
    """Recompute the tree from the entries; check every checkpoint and witness note."""
    services = open_services(load_settings())
    try:
        vkey = key or services.signer.verifier_key()
        try:
            verifier = CheckpointVerifier(vkey)
        except ValueError as exc:
            msg = f"invalid verifier key: {exc}"
            raise BadRequest(msg) from None
        with progress() as bar, transaction(services.session_factory) as session:
            task = bar.add_task("verifying the ledger", total=None)
            report = verify_ledger(
                session,
                verifier=verifier,
                witness=witness,
                on_progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    finally:
        services.close()
    out.print(
        f"leaves {report.leaves}, signed checkpoints {report.checkpoints}, "
        f"witnessed checkpoints {report.witnessed}, entries pending "
        f"{report.pending}"
    )
    if report.ok:
        out.print("ledger verified: no fault")
        return
    for fault in report.faults:
        err.print(f"egide: fault: {fault}", markup=False)
    raise typer.Exit(1)


@ledger_app.command("export")
@cli_errors
def export(
    since: str | None = typer.Option(None, help="first time included (RFC 3339)"),
    until: str | None = typer.Option(None, help="first time excluded (RFC 3339)"),
    out_file: Path | None = typer.Option(None, "--out", help="file (default: stdout)"),
) -> None:
    """Entries as JSON lines in the access-event format of DESIGN.md."""
    start, end = _time(since, "--since"), _time(until, "--until")
    services = open_services(load_settings())
    fh = out_file.open("w", encoding="utf-8") if out_file else sys.stdout
    count = 0
    try:
        with transaction(services.session_factory) as session:
            for event in iter_events(session, since=start, until=end):
                fh.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")))
                fh.write("\n")
                count += 1
    finally:
        services.close()
        if out_file:
            fh.close()
    err.print(f"egide: exported {count} entries")

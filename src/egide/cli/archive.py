"""`egide ledger archive` and `egide ledger read-archive`: ledger retention.

Archiving moves the entries up to a signed checkpoint into an encrypted file (ledger.retention)
and removes them from the live database; the live tree stays verifiable. Reading an archive
checks it against its signed checkpoint and prints its entries as access-event JSON lines.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from egide.cli.console import cli_errors, err
from egide.cli.ledger import audit_export, ledger_app
from egide.cli.runtime import OPERATOR, open_services
from egide.core.settings import load_settings
from egide.db.engine import transaction
from egide.ledger.checkpoint import CheckpointVerifier
from egide.ledger.retention import archive_prefix, open_archive
from egide.ledger.service import Act, Action, append


@ledger_app.command("archive")
@cli_errors
def archive(
    through: int = typer.Option(..., min=1, help="size of the signed checkpoint to archive up to"),
    directory: Path | None = typer.Option(None, "--dir", help="default: $EGIDE_DATA_DIR/archive"),
) -> None:
    """Move the ledger's entries up to a checkpoint into an encrypted archive file."""
    settings = load_settings()
    services = open_services(settings)
    target = directory or settings.data_dir / "archive"
    try:
        with transaction(services.session_factory) as session:
            done = archive_prefix(
                session,
                envelope=services.records.envelope,
                through_size=through,
                directory=target,
                clock=services.records.clock,
                verifier=CheckpointVerifier(services.signer.verifier_key()),
            )
            append(
                session,
                principal=OPERATOR,
                clock=services.records.clock,
                act=Act(
                    Action.LEDGER_ARCHIVE,
                    count=done.entries,
                    reasons=(
                        f"leaves {done.from_size} to {done.through_size - 1}",
                        f"file {done.path.name}",
                    ),
                ),
            )
    finally:
        services.close()
    err.print(
        f"egide: archived {done.entries} entries (leaves {done.from_size} to "
        f"{done.through_size - 1}) to {done.path}"
    )


@ledger_app.command("read-archive")
@cli_errors
def read_archive(path: Path = typer.Argument(..., exists=True, dir_okay=False)) -> None:
    """Check an archive against its signed checkpoint and print its entries (JSON lines)."""
    services = open_services(load_settings())
    try:
        verifier = CheckpointVerifier(services.signer.verifier_key())
        # Reading archived entries back is an export of the audit trail: audited first.
        audit_export(services, 0, f"read of archive {path.name}", started=True)
        with transaction(services.session_factory) as session:
            events = open_archive(
                path, session=session, envelope=services.records.envelope, verifier=verifier
            )
    finally:
        services.close()
    for event in events:
        sys.stdout.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")
    err.print(f"egide: {path.name} verified: {len(events)} entries")

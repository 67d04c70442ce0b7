"""`egide ledger ...`: checkpoints, verification, proofs, the public key, and export.

`verify` is the verifier apart from the writer: it needs only read access to the database and
the ledger's public key (`--key`, as printed by `egide ledger public-key`), and it exits
non-zero on any fault, naming the first bad entry it finds.

`prove` prints an inclusion proof (RFC 9162 section 2.1.3) of one entry, or a consistency proof
(RFC 9162 section 2.1.4) between two signed checkpoints, as the JSON `/api/ledger/proof/...`
serves. `check-proof` verifies such a file end to end with nothing but the verifier key: the
checkpoint's C2SP signed-note signature, then the proof against its root. It opens no database
and no keyring, so anyone can run it on a copy (DESIGN.md, contract 5).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path

import typer

from egide.cli.console import cli_errors, err, out, progress
from egide.cli.runtime import (
    OPERATOR,
    Services,
    open_services,
    push_to_witnesses,
    sequence_ledger,
    witness_pusher,
)
from egide.core.errors import BadRequest
from egide.core.settings import load_settings
from egide.db.engine import transaction
from egide.ledger.checkpoint import CheckpointError, CheckpointVerifier
from egide.ledger.merkle import ProofError
from egide.ledger.proofs import (
    check_consistency,
    check_inclusion,
    consistency_proof_for,
    inclusion_for_seq,
    parse_consistency,
    parse_inclusion,
)
from egide.ledger.retention import segment_reader
from egide.ledger.service import Act, Action, append, iter_events
from egide.ledger.syslog import SyslogTlsSender, local_hostname
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


@ledger_app.command("witness-key")
@cli_errors
def witness_key() -> None:
    """Print this instance's witness verifier key (C2SP tlog-cosignature vkey), for the logs
    that push their checkpoints here to check its cosignatures."""
    services = open_services(load_settings())
    try:
        sys.stdout.write(services.witness_signer.verifier_key() + "\n")
    finally:
        services.close()


@ledger_app.command("witness-push")
@cli_errors
def witness_push() -> None:
    """Push the latest signed checkpoint to every configured witness now (EGIDE_WITNESS_URLS)
    and print each one's answer; exit 1 if any witness did not cosign it."""
    services = open_services(load_settings())
    try:
        pusher = witness_pusher(services)
        if pusher is None:
            msg = "no witness is configured: set EGIDE_WITNESS_URLS and EGIDE_WITNESS_KEYS"
            raise BadRequest(msg)
        results = push_to_witnesses(services, pusher, force=True, log_failures=False)
    finally:
        services.close()
    failed = False
    for result in results:
        if result.ok:
            out.print(f"{result.url}: ok: {result.message}", markup=False)
        else:
            failed = True
            err.print(f"egide: witness {result.url}: {result.message}", markup=False)
    if failed:
        raise typer.Exit(1)


@ledger_app.command("verify")
@cli_errors
def verify(
    witness: Path | None = typer.Option(None, help="directory of witnessed checkpoints"),
    key: str | None = typer.Option(None, help="verifier key (default: this keyring's)"),
    archives: Path | None = typer.Option(
        None, help="directory of archive files (default: $EGIDE_DATA_DIR/archive)"
    ),
) -> None:
    """Recompute the tree from the entries; check every checkpoint, witness note and archive
    file."""
    settings = load_settings()
    services = open_services(settings)
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
                archives=archives or settings.data_dir / "archive",
                origin=settings.ledger_origin,
                read_segment=segment_reader(
                    session, envelope=services.records.envelope, verifier=verifier
                ),
                on_progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    finally:
        services.close()
    out.print(
        f"leaves {report.leaves} ({report.archived} archived), signed checkpoints "
        f"{report.checkpoints}, witnessed checkpoints {report.witnessed}, leaves after the "
        f"last checkpoint {report.uncovered}, entries not yet sequenced {report.pending}"
    )
    if report.ok:
        out.print("ledger verified: no fault")
        return
    for fault in report.faults:
        err.print(f"egide: fault: {fault}", markup=False)
    raise typer.Exit(1)


def _collector(value: str) -> tuple[str, int]:
    """`HOST:PORT` (or `[IPv6]:PORT`) of a syslog collector."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        msg = "--syslog must be HOST:PORT, e.g. siem.example.org:6514"
        raise BadRequest(msg)
    return host, int(port)


def audit_export(services: Services, count: int, where: str, *, started: bool = False) -> None:
    # An export of the audit trail is itself an audited act (DESIGN.md, contract 2): once,
    # committed, before any entry leaves (fail closed), and again with the count at the end.
    with transaction(services.session_factory) as session:
        append(
            session,
            principal=OPERATOR,
            clock=services.records.clock,
            act=Act(
                Action.EXPORT,
                count=count,
                resource_type="AuditEvent",
                purpose=f"ledger export to {where}",
                reasons=("started",) if started else ("finished",),
            ),
        )


@ledger_app.command("export")
@cli_errors
def export(  # noqa: PLR0917 - Typer passes options as parameters
    since: str | None = typer.Option(None, help="first time included (RFC 3339)"),
    until: str | None = typer.Option(None, help="first time excluded (RFC 3339)"),
    out_file: Path | None = typer.Option(None, "--out", help="file (default: stdout)"),
    syslog: str | None = typer.Option(
        None, "--syslog", help="send to this syslog collector over TLS (RFC 5425), HOST:PORT"
    ),
    ca: Path | None = typer.Option(None, "--ca", help="CA file of the collector's certificate"),
    cert: Path | None = typer.Option(None, "--cert", help="client certificate (mutual TLS)"),
    key: Path | None = typer.Option(None, "--key", help="private key of --cert"),
) -> None:
    """Entries as JSON lines in the access-event format of DESIGN.md, or as RFC 5424 syslog
    messages sent over TLS to a collector (--syslog)."""
    start, end = _time(since, "--since"), _time(until, "--until")
    if syslog is None:
        if ca or cert or key:
            msg = "--ca, --cert and --key go with --syslog"
            raise BadRequest(msg)
    else:
        if out_file is not None:
            msg = "--syslog and --out are exclusive"
            raise BadRequest(msg)
        if ca is None:
            msg = "--syslog needs --ca FILE: the collector's certificate is always verified"
            raise BadRequest(msg)
        if (cert is None) != (key is None):
            msg = "--cert and --key go together"
            raise BadRequest(msg)
        host, port = _collector(syslog)
        # Settings checked (CA and client files loaded) before the database is opened.
        sender = SyslogTlsSender(host, port, cafile=ca, certfile=cert, keyfile=key)
        services = open_services(load_settings())
        try:
            audit_export(services, 0, f"syslog {host}:{port}", started=True)
            with transaction(services.session_factory) as session, sender:
                count = sender.send_events(
                    iter_events(session, since=start, until=end),
                    hostname=local_hostname(),
                    procid=str(os.getpid()),
                )
            audit_export(services, count, f"syslog {host}:{port}")
        finally:
            services.close()
        err.print(f"egide: sent {count} entries to {host}:{port} (confirmed by the collector)")
        return
    services = open_services(load_settings())
    where = str(out_file) if out_file else "standard output"
    try:
        audit_export(services, 0, where, started=True)
    except BaseException:
        services.close()
        raise
    fh = out_file.open("w", encoding="utf-8") if out_file else sys.stdout
    count = 0
    try:
        with transaction(services.session_factory) as session:
            for event in iter_events(session, since=start, until=end):
                fh.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")))
                fh.write("\n")
                count += 1
        audit_export(services, count, where)
    finally:
        services.close()
        if out_file:
            fh.close()
    err.print(f"egide: exported {count} entries")


@ledger_app.command("prove")
@cli_errors
def prove(
    seq: int | None = typer.Option(None, help="entry sequence number: inclusion proof"),
    size: int | None = typer.Option(None, help="checkpoint size for --seq (default: latest)"),
    old: int | None = typer.Option(None, help="older checkpoint size: consistency proof"),
    new: int | None = typer.Option(None, help="newer checkpoint size (default: latest)"),
) -> None:
    """Print an inclusion proof (--seq N [--size S]) or a consistency proof (--old A
    [--new B]) against signed checkpoints, as JSON (the API's format)."""
    if (seq is None) == (old is None):
        msg = "give either --seq N [--size S] or --old A [--new B]"
        raise BadRequest(msg)
    if seq is not None and new is not None:
        msg = "--new goes with --old; with --seq use --size"
        raise BadRequest(msg)
    if old is not None and size is not None:
        msg = "--size goes with --seq; with --old use --new"
        raise BadRequest(msg)
    services = open_services(load_settings())
    try:
        verifier = CheckpointVerifier(services.signer.verifier_key())
        with transaction(services.session_factory) as session:
            if seq is not None:
                body = inclusion_for_seq(session, seq=seq, size=size, verifier=verifier).to_json()
            else:
                assert old is not None
                body = consistency_proof_for(
                    session, old_size=old, new_size=new, verifier=verifier
                ).to_json()
    finally:
        services.close()
    sys.stdout.write(json.dumps(body, indent=2, ensure_ascii=False) + "\n")


def _fail_check(message: str) -> None:
    err.print(f"egide: proof rejected: {message}", markup=False)
    raise typer.Exit(1)


@ledger_app.command("check-proof")
@cli_errors
def check_proof(
    file: Path = typer.Option(..., "--file", help="proof JSON from `prove` or the API (- = stdin)"),
    key: str = typer.Option(..., "--key", help="the ledger's verifier key (C2SP vkey)"),
    entry: Path | None = typer.Option(
        None, help="the entry's canonical JSON bytes, to check they hash to the proven leaf"
    ),
) -> None:
    """Verify a saved proof end to end with the verifier key alone (no database): the
    checkpoint signature, then the proof against its root. Exit 1 with one line if it fails."""
    try:
        verifier = CheckpointVerifier(key)
    except ValueError as exc:
        _fail_check(f"invalid verifier key: {exc}")
        return
    raw = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        _fail_check(f"{file} is not JSON")
        return
    if not isinstance(data, dict):
        _fail_check(f"{file} is not a JSON object")
        return
    try:
        if "old_size" in data:
            old_cp, new_cp = check_consistency(parse_consistency(data), verifier)
            summary = (
                f"consistency proof verified: {new_cp.origin} at {new_cp.size} leaves extends "
                f"{old_cp.size} leaves"
            )
        else:
            proof = parse_inclusion(data)
            checkpoint = check_inclusion(
                proof, verifier, entry=entry.read_bytes() if entry else None
            )
            summary = (
                f"inclusion proof verified: leaf {proof.leaf_index} of {checkpoint.size} "
                f"under {checkpoint.origin}, root {checkpoint.root.hex()}"
            )
    except (ValueError, CheckpointError, ProofError) as exc:
        _fail_check(str(exc))
        return
    out.print(summary, markup=False)

"""Ledger retention: move an old prefix of the ledger to an encrypted archive file.

A hospital keeps audit trails for years but need not keep them in the live database. An
archive covers the leaves `[from_size, through_size)`, where `through_size` is the size of a
signed checkpoint. Before anything is removed, the archived leaves are checked to rebuild that
checkpoint's root exactly; the compact tree at `through_size` (RFC 6962 frontier) stays in the
database, so the live tree remains verifiable against every later checkpoint, and the archive
file carries the signed checkpoint and the frontier it starts from, so it verifies on its own.

What leaves the database is the archived *entries* (`ledger_entry`: who did what to which
patient). Their `ledger_leaf` rows (leaf index, sequence number, leaf hash) and the stored
tree nodes (`ledger_node`) stay: they hold no personal data, only positions and SHA-256
digests, and with them inclusion and consistency proofs (`ledger.proofs`) keep working for
every leaf and every old checkpoint, archived or not.

The file is sealed with AES-256-GCM under a data key of the reserved owner `_ledger-archive`,
kept like any patient's data key (wrapped by the current KEK, re-wrapped on rotation), with
the clear header as associated data. Removing rows is the one place that lifts the ledger's
append-only triggers, inside the same transaction, and it is itself appended to the ledger.

File format (`egide-ledger-archive/1`, JSON): {"format", "from_size", "through_size",
"start_frontier" (base64 CompactTree bytes at from_size), "checkpoint" (the signed note),
"sealed" (base64)}; the sealed payload is gzip of JSON lines {"leaf_index", "seq",
"leaf_hash", "canonical"} (base64 bytes).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from egide.core.clock import Clock
from egide.core.errors import BadRequest, Conflict
from egide.crypto.envelope import Envelope
from egide.crypto.errors import CryptoError
from egide.ledger.canonical import canonical_json
from egide.ledger.checkpoint import CheckpointVerifier
from egide.ledger.merkle import CompactTree
from egide.ledger.models import LedgerArchive, LedgerCheckpoint, LedgerEntry, LedgerLeaf
from egide.ledger.verify import CheckedSegment, SegmentReader

ARCHIVE_OWNER = "_ledger-archive"
FORMAT = "egide-ledger-archive/1"

# The append-only trigger of migration 0001 on ledger_entry, lifted for the archive's
# deletions only and put back in the same transaction. Leaves and nodes are never deleted.
_SQLITE_ENTRY_DELETE_TRIGGER = """CREATE TRIGGER ledger_entry_no_delete BEFORE DELETE ON
       ledger_entry BEGIN SELECT RAISE(ABORT, 'ledger_entry is append-only'); END"""


@dataclass(frozen=True)
class Archived:
    path: Path
    from_size: int
    through_size: int
    entries: int


def _header(from_size: int, through_size: int, start: CompactTree, note: bytes) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "from_size": from_size,
        "through_size": through_size,
        "start_frontier": base64.b64encode(start.to_bytes()).decode(),
        "checkpoint": note.decode("utf-8"),
    }


def archived_through(session: Session) -> LedgerArchive | None:
    return session.scalar(select(LedgerArchive).order_by(LedgerArchive.through_size.desc()))


def _set_entry_delete_trigger(session: Session, *, enabled: bool) -> None:
    if session.get_bind().dialect.name == "postgresql":
        verb = "ENABLE" if enabled else "DISABLE"
        session.execute(text(f"ALTER TABLE ledger_entry {verb} TRIGGER ledger_entry_append_only"))
    elif enabled:
        session.execute(text(_SQLITE_ENTRY_DELETE_TRIGGER))
    else:
        session.execute(text("DROP TRIGGER IF EXISTS ledger_entry_no_delete"))


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".archive-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).chmod(0o600)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def archive_prefix(
    session: Session,
    *,
    envelope: Envelope,
    through_size: int,
    directory: Path,
    clock: Clock,
    verifier: CheckpointVerifier,
) -> Archived:
    """Archive the leaves up to the checkpoint of size `through_size`, then remove their
    entries from the live database, keeping their leaf rows (hashes only) for proofs. Never
    commits; the caller's transaction does (the file is written first and is harmless if that
    transaction fails: a later run overwrites it)."""
    previous = archived_through(session)
    from_size = previous.through_size if previous else 0
    checkpoint = session.get(LedgerCheckpoint, through_size)
    if checkpoint is None:
        msg = f"{through_size} is not the size of a signed checkpoint"
        raise BadRequest(msg)
    try:
        signed = verifier.verify(checkpoint.note)
    except ValueError:
        signed = None
    if signed is None or signed.size != through_size or signed.root != checkpoint.root:
        # Never delete evidence on the word of an unsigned or altered checkpoint row.
        msg = f"the checkpoint at {through_size} does not verify; run `egide ledger verify`"
        raise Conflict(msg)
    if through_size <= from_size:
        msg = f"the ledger is already archived through {from_size}"
        raise Conflict(msg)
    start = CompactTree.from_bytes(previous.frontier) if previous else CompactTree()
    tree = start.copy()
    lines: list[bytes] = []
    seqs: list[int] = []
    rows = session.execute(
        select(LedgerLeaf.leaf_index, LedgerLeaf.seq, LedgerLeaf.leaf_hash, LedgerEntry.canonical)
        .join(LedgerEntry, LedgerEntry.seq == LedgerLeaf.seq)
        .where(LedgerLeaf.leaf_index >= from_size, LedgerLeaf.leaf_index < through_size)
        .order_by(LedgerLeaf.leaf_index)
    )
    for leaf_index, seq, leaf_hash, canonical in rows:
        recomputed = hashlib.sha256(b"\x00" + canonical).digest()
        if leaf_index != tree.size or recomputed != leaf_hash:
            msg = f"leaf {leaf_index} does not verify; run `egide ledger verify` first"
            raise Conflict(msg)
        tree.append(leaf_hash)
        seqs.append(seq)
        lines.append(
            json.dumps(
                {
                    "leaf_index": leaf_index,
                    "seq": seq,
                    "leaf_hash": base64.b64encode(leaf_hash).decode(),
                    "canonical": base64.b64encode(canonical).decode(),
                }
            ).encode()
        )
    if tree.size != through_size or tree.root() != checkpoint.root:
        msg = "the leaves to archive do not rebuild their signed checkpoint; nothing archived"
        raise Conflict(msg)
    header = _header(from_size, through_size, start, checkpoint.note)
    sealed = envelope.seal(
        session,
        owner=ARCHIVE_OWNER,
        plaintext=gzip.compress(b"\n".join(lines) + b"\n"),
        aad=canonical_json(header),
    )
    data = json.dumps({**header, "sealed": base64.b64encode(sealed).decode()}).encode()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"ledger-{from_size:012d}-{through_size:012d}.json"
    _write_atomic(path, data)
    session.add(
        LedgerArchive(
            through_size=through_size,
            from_size=from_size,
            frontier=tree.to_bytes(),
            file_name=path.name,
            file_sha256=hashlib.sha256(data).digest(),
            time=clock.now(),
        )
    )
    _set_entry_delete_trigger(session, enabled=False)
    for start_at in range(0, len(seqs), 500):
        chunk = seqs[start_at : start_at + 500]
        session.execute(delete(LedgerEntry).where(LedgerEntry.seq.in_(chunk)))
    # The leaf rows stay: position, seq and hash, no personal data; proofs need them.
    _set_entry_delete_trigger(session, enabled=True)
    session.flush()
    return Archived(path, from_size, through_size, len(seqs))


@dataclass(frozen=True)
class Segment:
    """What a checked archive file proves: its leaves take the tree from `start` to `end`."""

    from_size: int
    through_size: int
    start: CompactTree
    end: CompactTree
    events: tuple[dict[str, Any], ...]


def open_archive(
    path: Path, *, session: Session, envelope: Envelope, verifier: CheckpointVerifier
) -> list[dict[str, Any]]:
    """Decrypt and check an archive; its entries (access events) in leaf order."""
    return list(read_segment(path, session=session, envelope=envelope, verifier=verifier).events)


def read_segment(
    path: Path, *, session: Session, envelope: Envelope, verifier: CheckpointVerifier
) -> Segment:
    """Decrypt an archive and check it: the signed checkpoint verifies, and its leaves, from
    the stored start frontier, rebuild that checkpoint's root. Raises BadRequest on any
    fault."""
    try:
        document = json.loads(path.read_bytes())
        header = {
            k: document[k]
            for k in ("format", "from_size", "through_size", "start_frontier", "checkpoint")
        }
        sealed = base64.b64decode(document["sealed"], validate=True)
        start = CompactTree.from_bytes(base64.b64decode(header["start_frontier"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        msg = f"{path.name} is not a ledger archive ({type(exc).__name__})"
        raise BadRequest(msg) from None
    if header["format"] != FORMAT:
        msg = f"{path.name}: unknown archive format"
        raise BadRequest(msg)
    try:
        checkpoint = verifier.verify(header["checkpoint"].encode())
        payload = gzip.decompress(
            envelope.open(session, owner=ARCHIVE_OWNER, sealed=sealed, aad=canonical_json(header))
        )
    except (ValueError, OSError, CryptoError) as exc:
        # A tampered or foreign file fails here, whichever layer notices first.
        msg = f"{path.name} failed its integrity check ({type(exc).__name__})"
        raise BadRequest(msg) from None
    tree, events = start.copy(), []
    for raw in payload.splitlines():
        line = json.loads(raw)
        canonical = base64.b64decode(line["canonical"])
        leaf_hash = hashlib.sha256(b"\x00" + canonical).digest()
        if line["leaf_index"] != tree.size or base64.b64decode(line["leaf_hash"]) != leaf_hash:
            msg = f"{path.name}: leaf {line['leaf_index']} does not verify"
            raise BadRequest(msg)
        tree.append(leaf_hash)
        events.append({**json.loads(canonical), "seq": line["seq"]})
    if (
        checkpoint.size != header["through_size"]
        or tree.size != checkpoint.size
        or tree.root() != checkpoint.root
    ):
        msg = f"{path.name}: its leaves do not rebuild its signed checkpoint"
        raise BadRequest(msg)
    return Segment(header["from_size"], header["through_size"], start, tree, tuple(events))


def segment_reader(
    session: Session, *, envelope: Envelope, verifier: CheckpointVerifier
) -> SegmentReader:
    """A reader of archive files for `ledger.verify.verify_ledger`."""

    def read(path: Path) -> CheckedSegment:
        segment = read_segment(path, session=session, envelope=envelope, verifier=verifier)
        return CheckedSegment(
            segment.from_size,
            segment.through_size,
            segment.start.to_bytes(),
            segment.end.to_bytes(),
        )

    return read

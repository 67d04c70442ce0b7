"""The ledger verifier, apart from the writer.

It trusts nothing the writer keeps for itself (the sequencer's tree state): it reads the
entries and the leaf table, recomputes every leaf hash from the entry's canonical bytes
(RFC 6962 section 2.1: SHA-256(0x00 || entry)), rebuilds the tree, checks each signed
checkpoint's signature with the ledger's public key and its root at its size, and checks that
the database still extends every checkpoint a witness kept outside it. It names the first bad
entry it can, and reports every fault; any fault means the ledger was tampered with.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from egide.ledger.checkpoint import Checkpoint, CheckpointError, CheckpointVerifier
from egide.ledger.merkle import CompactTree
from egide.ledger.models import LedgerArchive, LedgerCheckpoint, LedgerEntry, LedgerLeaf


@dataclass
class Report:
    """What the verifier found. `ok` only when there is no fault at all."""

    leaves: int = 0
    checkpoints: int = 0
    witnessed: int = 0
    pending: int = 0  # committed entries not yet covered by the tree (not a fault)
    archived: int = 0  # leaves moved to archive files (ledger.retention)
    faults: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.faults


def _checkpoints(
    session: Session, verifier: CheckpointVerifier, report: Report
) -> dict[int, Checkpoint]:
    signed: dict[int, Checkpoint] = {}
    for row in session.scalars(select(LedgerCheckpoint).order_by(LedgerCheckpoint.size)):
        try:
            checkpoint = verifier.verify(row.note)
        except CheckpointError as exc:
            report.faults.append(f"checkpoint at size {row.size}: bad signed note ({exc})")
            continue
        if checkpoint.size != row.size or checkpoint.root != row.root:
            report.faults.append(
                f"checkpoint at size {row.size}: its columns differ from its signed note"
            )
            continue
        signed[checkpoint.size] = checkpoint
    report.checkpoints = len(signed)
    return signed


def _witness_notes(
    directory: Path, verifier: CheckpointVerifier, report: Report
) -> dict[int, Checkpoint]:
    seen: dict[int, Checkpoint] = {}
    if not directory.is_dir():
        report.faults.append(f"witness directory {directory} does not exist")
        return seen
    for path in sorted(directory.glob("checkpoint-*.txt")):
        try:
            checkpoint = verifier.verify(path.read_bytes())
        except CheckpointError as exc:
            report.faults.append(f"witness {path.name}: bad signed note ({exc})")
            continue
        seen[checkpoint.size] = checkpoint
    report.witnessed = len(seen)
    return seen


def _resume_after_archive(
    archive: LedgerArchive, expected: dict[int, Checkpoint], report: Report
) -> CompactTree:
    """The prefix lives in an archive file now (ledger.retention): go on from the tree's
    frontier at that size, which must match the signed checkpoint there."""
    try:
        tree = CompactTree.from_bytes(archive.frontier)
    except ValueError:
        report.faults.append("the archived tree frontier is corrupt")
        return CompactTree()
    if tree.size != archive.through_size:
        report.faults.append("the archived tree frontier does not match its size")
    anchor = expected.get(archive.through_size)
    if anchor is None:
        report.faults.append(f"no signed checkpoint at the archive boundary {archive.through_size}")
    elif anchor.root != tree.root():
        report.faults.append(
            f"the archived prefix does not match the checkpoint at {archive.through_size}"
        )
    report.archived = archive.through_size
    return tree


def verify_ledger(
    session: Session,
    *,
    verifier: CheckpointVerifier,
    witness: Path | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Recompute the ledger's tree and check it against every checkpoint and witness note."""
    report = Report()
    expected = _checkpoints(session, verifier, report)
    if witness is not None:
        for size, seen in _witness_notes(witness, verifier, report).items():
            mine = expected.get(size)
            if mine is not None and mine.root != seen.root:
                report.faults.append(
                    f"witness checkpoint at size {size} differs from the database's: "
                    "history was rewritten"
                )
            expected.setdefault(size, seen)
    total = session.scalar(select(func.count()).select_from(LedgerLeaf)) or 0
    tree = CompactTree()
    archive = session.scalar(select(LedgerArchive).order_by(LedgerArchive.through_size.desc()))
    if archive is not None:
        tree = _resume_after_archive(archive, expected, report)
        total += archive.through_size
    rows: Iterable[Any] = session.execute(
        select(
            LedgerLeaf.leaf_index,
            LedgerLeaf.seq,
            LedgerLeaf.leaf_hash,
            LedgerEntry.canonical,
            LedgerEntry.entry_hash,
        )
        .outerjoin(LedgerEntry, LedgerEntry.seq == LedgerLeaf.seq)
        .order_by(LedgerLeaf.leaf_index)
        .execution_options(yield_per=5000)
    )
    first_bad: str | None = None
    for leaf_index, seq, leaf_hash, canonical, entry_hash in rows:
        if leaf_index != tree.size:
            report.faults.append(f"leaf {tree.size} is missing (leaves jump to {leaf_index})")
            break
        if canonical is None:
            problem = f"entry seq {seq} (leaf {leaf_index}) was deleted"
        else:
            recomputed = hashlib.sha256(b"\x00" + canonical).digest()
            problem = None
            if recomputed != entry_hash or recomputed != leaf_hash:
                problem = f"entry seq {seq} (leaf {leaf_index}) was changed"
        if problem and first_bad is None:
            first_bad = problem
            report.faults.append(problem)
        tree.append(leaf_hash)
        checkpoint = expected.get(tree.size)
        if checkpoint is not None and checkpoint.root != tree.root():
            report.faults.append(
                f"the tree of size {tree.size} does not match its signed checkpoint: "
                "entries were changed, inserted, removed or reordered before leaf "
                f"{tree.size}"
            )
        if on_progress is not None and tree.size % 10_000 == 0:
            on_progress(tree.size, total)
    report.leaves = tree.size
    beyond = [size for size in expected if size > tree.size]
    if beyond:
        report.faults.append(
            f"the ledger was truncated: a checkpoint covers {max(beyond)} leaves, "
            f"only {tree.size} remain"
        )
    live_entries = session.scalar(select(func.count()).select_from(LedgerEntry)) or 0
    report.pending = live_entries - (total - report.archived)
    if report.pending < 0:
        report.faults.append("the leaf table names entries that are not in the ledger")
    if on_progress is not None:
        on_progress(tree.size, total)
    return report

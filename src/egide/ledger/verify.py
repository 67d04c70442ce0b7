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

from egide.core.errors import EgideError
from egide.ledger.checkpoint import Checkpoint, CheckpointError, CheckpointVerifier
from egide.ledger.merkle import CompactTree
from egide.ledger.models import (
    LedgerArchive,
    LedgerCheckpoint,
    LedgerEntry,
    LedgerLeaf,
    LedgerTreeState,
)


@dataclass
class Report:
    """What the verifier found. `ok` only when there is no fault at all."""

    leaves: int = 0
    checkpoints: int = 0
    witnessed: int = 0
    pending: int = 0  # committed entries not yet covered by the tree (not a fault)
    archived: int = 0  # leaves moved to archive files (ledger.retention)
    uncovered: int = 0  # leaves after the last signed checkpoint (not a fault, a window)
    faults: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.faults


def _checkpoints(
    session: Session, verifier: CheckpointVerifier, report: Report, origin: str | None
) -> dict[int, Checkpoint]:
    signed: dict[int, Checkpoint] = {}
    for row in session.scalars(select(LedgerCheckpoint).order_by(LedgerCheckpoint.size)):
        try:
            # Pinning the origin stops a note of another log signed with the same key.
            checkpoint = verifier.verify(row.note, expected_origin=origin)
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


@dataclass(frozen=True)
class CheckedSegment:
    """What an archive file was checked to prove (see ledger.retention.read_segment)."""

    from_size: int
    through_size: int
    start: bytes  # CompactTree bytes at from_size
    end: bytes  # CompactTree bytes at through_size


SegmentReader = Callable[[Path], CheckedSegment]


def _check_archives(
    session: Session,
    expected: dict[int, Checkpoint],
    report: Report,
    read_segment: SegmentReader | None,
    directory: Path | None,
) -> CompactTree:
    """The archived prefix (ledger.retention): every archive row must chain from leaf 0, its
    file must be present, unchanged and decrypt to leaves that rebuild its signed checkpoint
    from the previous frontier; the live tree then goes on from the last frontier. Without
    the files, archived leaves cannot be vouched for, and that is a fault, not a pass."""
    archives = list(session.scalars(select(LedgerArchive).order_by(LedgerArchive.through_size)))
    if not archives:
        return CompactTree()
    previous = CompactTree()
    for archive in archives:
        if archive.from_size != previous.size:
            report.faults.append(
                f"archived segments do not chain: one starts at {archive.from_size}, "
                f"the previous ended at {previous.size}"
            )
        if read_segment is None or directory is None:
            report.faults.append(
                f"leaves {archive.from_size} to {archive.through_size - 1} are archived and "
                "were not checked (give the archive directory)"
            )
        else:
            path = directory / archive.file_name
            try:
                data = path.read_bytes()
            except OSError:
                report.faults.append(f"archive file {archive.file_name} is missing")
            else:
                if hashlib.sha256(data).digest() != archive.file_sha256:
                    report.faults.append(f"archive file {archive.file_name} was changed")
                try:
                    segment = read_segment(path)
                except EgideError as exc:
                    report.faults.append(f"archive file {archive.file_name}: {exc.message}")
                else:
                    if segment.start != previous.to_bytes() or segment.end != archive.frontier:
                        report.faults.append(
                            f"archive file {archive.file_name} does not continue the tree"
                        )
        try:
            previous = CompactTree.from_bytes(archive.frontier)
        except ValueError:
            report.faults.append("an archived tree frontier is corrupt")
            return CompactTree()
        if previous.size != archive.through_size:
            report.faults.append("an archived tree frontier does not match its size")
        anchor = expected.get(archive.through_size)
        if anchor is None:
            report.faults.append(
                f"no signed checkpoint at the archive boundary {archive.through_size}"
            )
        elif anchor.root != previous.root():
            report.faults.append(
                f"the archived prefix does not match the checkpoint at {archive.through_size}"
            )
    report.archived = previous.size
    return previous


def verify_ledger(
    session: Session,
    *,
    verifier: CheckpointVerifier,
    witness: Path | None = None,
    archives: Path | None = None,
    read_segment: SegmentReader | None = None,
    origin: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Recompute the ledger's tree and check it against every checkpoint and witness note."""
    report = Report()
    expected = _checkpoints(session, verifier, report, origin)
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
    tree = _check_archives(session, expected, report, read_segment, archives)
    total += tree.size
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
    report.uncovered = tree.size - max(expected, default=0)
    state = session.get(LedgerTreeState, 1)
    if state is not None and state.size > tree.size:
        # The sequencer counted more leaves than remain: the uncovered tail was cut.
        report.faults.append(
            f"the sequencer integrated {state.size} leaves, only {tree.size} remain"
        )
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

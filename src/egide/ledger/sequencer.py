"""The sequencer: turns committed ledger entries into Merkle-tree leaves and signed checkpoints.

Writers append entries in their own transactions (`ledger.service.append`), numbered by the
database as they insert, but committed in another order. The sequencer, serialised by a lock
on the single tree-state row, gives every committed entry that is not yet a leaf the next leaf
index, extends the compact tree (RFC 6962 section 2.1) in O(log n) per entry, stores the hash
of every subtree that completes at a level that is a multiple of 4 (`ledger_node`, the tile
roots proofs are built from: `ledger.tiles`), and signs a checkpoint (C2SP signed note) every
`every` leaves or when asked. A checkpoint commits the ledger to its first `size` leaves:
from then on a change, deletion, insertion or reordering among them is caught by
`ledger.verify`, which shares no code with this module beyond the pure hash functions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from egide.core.clock import Clock
from egide.ledger.checkpoint import Checkpoint, CheckpointSigner
from egide.ledger.merkle import CompactTree, leaf_hash
from egide.ledger.models import (
    LedgerCheckpoint,
    LedgerEntry,
    LedgerLeaf,
    LedgerNode,
    LedgerTreeState,
)
from egide.ledger.tiles import TILE_HEIGHT

_STATE_ID = 1
DEFAULT_ORIGIN = "egide.local/ledger"


@dataclass(frozen=True)
class Integrated:
    """What one sequencer pass did."""

    added: int
    size: int
    checkpoint: Checkpoint | None
    note: bytes | None


def _locked_state(session: Session) -> tuple[LedgerTreeState, CompactTree]:
    # FOR UPDATE serialises sequencers on PostgreSQL; SQLite's BEGIN IMMEDIATE already has.
    row = session.scalar(
        select(LedgerTreeState).where(LedgerTreeState.id == _STATE_ID).with_for_update()
    )
    if row is None:
        tree = CompactTree()
        row = LedgerTreeState(id=_STATE_ID, size=0, state=tree.to_bytes())
        session.add(row)
        session.flush()
        return row, tree
    return row, CompactTree.from_bytes(row.state)


def integrate(
    session: Session,
    *,
    signer: CheckpointSigner,
    clock: Clock,
    origin: str = DEFAULT_ORIGIN,
    every: int = 1000,
    force: bool = False,
    limit: int = 100_000,
) -> Integrated:
    """Sequence pending entries (at most `limit`) and sign a checkpoint when `every` new leaves
    have accumulated since the last one, or when `force` is set and the tree grew (or has no
    checkpoint yet). Never commits: the caller's transaction does."""
    state, tree = _locked_state(session)
    rows = session.execute(
        select(LedgerEntry.seq, LedgerEntry.canonical)
        .outerjoin(LedgerLeaf, LedgerLeaf.seq == LedgerEntry.seq)
        .where(LedgerLeaf.seq.is_(None))
        .order_by(LedgerEntry.seq)
        .limit(limit)
    ).all()
    # RFC 6962 section 2.1 leaf hashes of the committed entries' bytes, computed here rather
    # than stored beside them: the bytes are the one copy to trust.
    pending = [(seq, leaf_hash(bytes(body))) for seq, body in rows]
    first = tree.size
    session.add_all(
        LedgerLeaf(leaf_index=first + offset, seq=seq, leaf_hash=entry_hash)
        for offset, (seq, entry_hash) in enumerate(pending)
    )
    # The merges of the compact tree compute the hash of each subtree that completes; those
    # at levels 4, 8, 12, ... are kept, so a proof needs O(log n) rows (ledger.tiles). Nodes
    # of leaves that existed before this table were written by migration 0004.
    completed = tree.extend((entry_hash for _, entry_hash in pending), node_stride=TILE_HEIGHT)
    session.add_all(LedgerNode(level=level, index=index, hash=h) for level, index, h in completed)
    state.size, state.state = tree.size, tree.to_bytes()
    last = session.scalar(select(LedgerCheckpoint.size).order_by(LedgerCheckpoint.size.desc()))
    due = tree.size - (last or 0) >= every or (force and (last is None or tree.size > last))
    checkpoint = note = None
    if due:
        checkpoint = Checkpoint(origin=origin, size=tree.size, root=tree.root())
        note = signer.sign(checkpoint)
        session.add(
            LedgerCheckpoint(size=tree.size, root=checkpoint.root, note=note, time=clock.now())
        )
    session.flush()
    return Integrated(len(pending), tree.size, checkpoint, note)


def latest_checkpoint(session: Session) -> LedgerCheckpoint | None:
    return session.scalar(select(LedgerCheckpoint).order_by(LedgerCheckpoint.size.desc()))


def write_witness(directory: Path, note: bytes, *, size: int) -> Path:
    """Copy a checkpoint outside the database, append-only: one file per checkpoint, never
    overwritten (O_EXCL), fsynced. Backups copy this directory; `egide ledger verify
    --witness` proves the database still extends every checkpoint it holds."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"checkpoint-{size:012d}.txt"
    if path.exists():
        return path
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(note)
        fh.flush()
        os.fsync(fh.fileno())
    return path

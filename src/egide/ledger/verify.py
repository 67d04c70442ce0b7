"""The ledger verifier, apart from the writer.

It trusts nothing the writer keeps for itself (the sequencer's tree state): it reads the
entries and the leaf table, recomputes every leaf hash from the entry's canonical bytes
(RFC 6962 section 2.1: SHA-256(0x00 || entry)), rebuilds the tree, checks each signed
checkpoint's signature with the ledger's public key and its root at its size, and checks that
the database still extends every checkpoint a witness kept outside it. It names the first bad
entry it can, and reports every fault; any fault means the ledger was tampered with.
"""

from __future__ import annotations

import bisect
import gc
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from egide.core.errors import EgideError
from egide.ledger.checkpoint import Checkpoint, CheckpointError, CheckpointVerifier
from egide.ledger.merkle import HASH_SIZE, CompactTree
from egide.ledger.models import (
    LedgerArchive,
    LedgerCheckpoint,
    LedgerEntry,
    LedgerLeaf,
    LedgerTreeState,
)
from egide.ledger.tiles import TILE_HEIGHT as NODE_STRIDE


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


# Leaves are hashed into perfect subtrees a chunk at a time: 2**14 leaves, aligned on their
# size, so every node is computed once by a list comprehension instead of a per-leaf loop.
_CHUNK_HEIGHT = 14
_FETCH = 8192


def _node(left: bytes, right: bytes) -> bytes:
    # RFC 6962 section 2.1: an interior node is SHA-256(0x01 || left || right).
    return hashlib.sha256(b"\x01" + left + right).digest()


# RFC 6962 section 2.1 prefixes, hashed once: copying a hash state that has already taken
# the prefix is cheaper than concatenating it to every input.
_LEAF_STATE = hashlib.sha256(b"\x00")
_NODE_STATE = hashlib.sha256(b"\x01")


def _leaf_hashes(bodies: tuple[bytes, ...]) -> list[bytes]:
    """SHA-256(0x00 || entry) of each entry (RFC 6962 section 2.1)."""
    out: list[bytes] = []
    append, copy = out.append, _LEAF_STATE.copy
    for body in bodies:
        state = copy()
        state.update(body)
        append(state.digest())
    return out


def _nodes(level: list[bytes]) -> list[bytes]:
    """The parents of each pair of perfect subtrees, SHA-256(0x01 || left || right)."""
    out: list[bytes] = []
    append, copy = out.append, _NODE_STATE.copy
    for left, right in zip(level[::2], level[1::2], strict=False):
        state = copy()
        state.update(left)
        state.update(right)
        append(state.digest())
    return out


def _fold(blocks: list[bytes]) -> bytes:
    """The root of a tree given as its perfect subtrees left to right, largest first (RFC 9162
    section 2.1.1: MTH splits at the largest power of two, so the right side folds first)."""
    root = blocks[-1]
    for block in reversed(blocks[:-1]):
        root = _node(block, root)
    return root


class TreeCheck:
    """Rebuilds the tree from leaf hashes and checks the root at every expected size.

    Until the tree's size is a multiple of the chunk, leaves go one by one through a compact
    tree (only after an archived prefix of another size); then a whole chunk at a time: its
    levels of perfect subtrees by list comprehensions, the root at each checkpoint inside it
    from those levels and the perfect subtrees before it.
    """

    def __init__(
        self,
        start: CompactTree,
        expected: dict[int, Checkpoint],
        report: Report,
        *,
        height: int = _CHUNK_HEIGHT,
    ) -> None:
        self.expected, self.report = expected, report
        self.height, self.capacity = height, 1 << height
        self.sizes = sorted(expected)
        self.head: CompactTree | None = start if start.size % self.capacity else None
        # The perfect subtrees before `base`, left to right: (height, hash).
        self.before: list[tuple[int, bytes]] = []
        if self.head is None:
            self._adopt(start)
        self.base = start.size
        self.chunk: list[bytes] = []
        # The tree's stored interior nodes as they should be (level, index) -> hash: the
        # levels that are multiples of 4 (see ledger.models.LedgerNode), to check the cache.
        self.nodes: dict[tuple[int, int], bytes] = {}

    def _adopt(self, tree: CompactTree) -> None:
        heights = [h for h in range(64, -1, -1) if tree.size >> h & 1]
        self.before = list(zip(heights, tree.frontier, strict=True))

    def _check(self, size: int, root: bytes) -> None:
        checkpoint = self.expected.get(size)
        if checkpoint is not None and checkpoint.root != root:
            self.report.faults.append(
                f"the tree of size {size} does not match its signed checkpoint: entries were "
                f"changed, inserted, removed or reordered before leaf {size}"
            )

    def add(self, leaf: bytes) -> None:
        if self.head is not None:
            for level, index, node in self.head.extend([leaf], node_stride=NODE_STRIDE):
                self.nodes[level, index] = node
            if self.head.size in self.expected:
                self._check(self.head.size, self.head.root())
            if self.head.size % self.capacity == 0:
                self._adopt(self.head)
                self.base, self.head = self.head.size, None
            return
        self.chunk.append(leaf)
        if len(self.chunk) == self.capacity:
            self._flush()

    def extend(self, leaves: list[bytes]) -> None:
        taken = 0
        while self.head is not None and taken < len(leaves):  # until aligned on a chunk
            self.add(leaves[taken])
            taken += 1
        leaves = leaves[taken:]
        while leaves:
            room = self.capacity - len(self.chunk)
            self.chunk.extend(leaves[:room])
            leaves = leaves[room:]
            if len(self.chunk) == self.capacity:
                self._flush()

    def _flush(self) -> None:
        chunk = self.chunk
        if not chunk:
            return
        levels = [chunk]
        level = chunk
        while len(level) > 1:
            level = _nodes(level)
            levels.append(level)
        for height in range(NODE_STRIDE, len(levels), NODE_STRIDE):
            offset = self.base >> height
            for i, node in enumerate(levels[height]):
                self.nodes[height, offset + i] = node
        end = self.base + len(chunk)
        first = bisect.bisect_right(self.sizes, self.base)
        for size in self.sizes[first : bisect.bisect_right(self.sizes, end)]:
            self._check(
                size, _fold([h for _, h in self.before] + _blocks(levels, size - self.base))
            )
        if len(chunk) == self.capacity:
            self._push(self.height, levels[self.height][0])
        else:
            for height, block in _decompose(levels, len(chunk)):
                self._push(height, block)
        self.base, self.chunk = end, []

    def _push(self, height: int, block: bytes) -> None:
        # Binary-counter carry: equal perfect subtrees on the right merge into their parent.
        while self.before and self.before[-1][0] == height:
            _, left = self.before.pop()
            block, height = _node(left, block), height + 1
            if height % NODE_STRIDE == 0:
                start = sum(1 << h for h, _ in self.before)
                self.nodes[height, start >> height] = block
        self.before.append((height, block))

    def finish(self) -> int:
        """Hash what is left; return the tree's size."""
        if self.head is not None:
            return self.head.size
        self._flush()
        return self.base


def _decompose(levels: list[list[bytes]], count: int) -> list[tuple[int, bytes]]:
    """The first `count` leaves of a chunk as perfect subtrees, largest first."""
    blocks: list[tuple[int, bytes]] = []
    offset = 0
    for height in range(len(levels) - 1, -1, -1):
        if count >> height & 1:
            blocks.append((height, levels[height][offset >> height]))
            offset += 1 << height
    return blocks


def _blocks(levels: list[list[bytes]], count: int) -> list[bytes]:
    return [block for _, block in _decompose(levels, count)]


# Two columns only: the read is the larger part of verifying, and leaf indexes are checked for
# gaps once, by count, before it (they are the primary key, so count = max - min + 1 means
# none is missing).
_LEAVES_SQL = (
    "SELECT l.leaf_hash, e.canonical FROM ledger_leaf l LEFT JOIN ledger_entry e "
    "ON e.seq = l.seq WHERE l.leaf_index >= ? ORDER BY l.leaf_index LIMIT ?"
)
_INDEXES_SQL = "SELECT leaf_index FROM ledger_leaf WHERE leaf_index >= ? ORDER BY leaf_index"
_KEPT_LEAVES_SQL = (
    "SELECT leaf_index, leaf_hash FROM ledger_leaf WHERE leaf_index >= ? AND leaf_index < ? "
    "ORDER BY leaf_index"
)


def _stream(session: Session, sql: str, *params: int) -> Iterator[list[Any]]:
    """Rows of `sql` in batches, straight from the driver (no per-row objects), in the
    session's transaction; a server-side cursor on PostgreSQL so memory stays O(batch)."""
    connection = session.connection()
    dbapi = connection.connection.dbapi_connection
    assert dbapi is not None
    if connection.dialect.name == "postgresql":
        cursor = dbapi.cursor(name="egide_ledger_verify")
        sql = sql.replace("?", "%s")
    else:
        cursor = dbapi.cursor()
    try:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(_FETCH):
            yield list(rows)
    finally:
        cursor.close()


def _check_kept_leaves(
    session: Session, frontier: CompactTree, report: Report, nodes: dict[tuple[int, int], bytes]
) -> None:
    """The leaf hashes kept for an archived prefix (proofs use them) must rebuild its tree.

    Archives made before leaf hashes were kept deleted theirs: the kept ones then start at
    the end of such an archive, from its frontier."""
    first = session.scalar(select(func.min(LedgerLeaf.leaf_index)))
    if first is None or first >= frontier.size:
        return
    if first == 0:
        tree = CompactTree()
    else:
        anchor = session.get(LedgerArchive, first)
        if anchor is None:
            report.faults.append(f"the kept leaf hashes start at {first}, not at an archive end")
            return
        tree = CompactTree.from_bytes(anchor.frontier)
    for rows in _stream(session, _KEPT_LEAVES_SQL, first, frontier.size):
        for leaf_index, leaf_hash in rows:
            if leaf_index != tree.size or len(leaf_hash) != HASH_SIZE:
                report.faults.append(
                    f"the kept leaf hashes of the archived prefix jump at {tree.size}"
                )
                return
            for level, index, node in tree.extend([bytes(leaf_hash)], node_stride=NODE_STRIDE):
                nodes[level, index] = node
    if tree.size != frontier.size or tree.root() != frontier.root():
        report.faults.append(
            "the leaf hashes kept for the archived prefix do not match its archived tree"
        )


_NODES_SQL = 'SELECT level, "index", hash FROM ledger_node WHERE level >= ? ORDER BY level, "index"'


def _check_nodes(
    session: Session, nodes: dict[tuple[int, int], bytes], size: int, report: Report
) -> None:
    """Stored tree nodes (the proofs' cache) must be the hashes the leaves give. A node this
    run could not recompute (under leaves an old archive deleted) is left unjudged."""
    for rows in _stream(session, _NODES_SQL, 0):
        for level, index, stored in rows:
            expected = nodes.get((level, index))
            beyond = (index + 1) << level > size
            if (expected is None and beyond) or (expected is not None and expected != stored):
                report.faults.append(
                    f"the stored tree node at level {level}, index {index} does not match the "
                    "leaves: proofs through it are refused until it is repaired"
                )
                return


# The searchable columns must say what the hashed bytes say: a changed `patient` would hide an
# access from that patient's report without touching the tree. The database compares them
# itself (its JSON functions, in C), in one pass.
_COLUMNS_SQL = {
    "sqlite": """SELECT seq FROM (SELECT seq, id, time, "user", patient, action,
                    CAST(canonical AS TEXT) AS j FROM ledger_entry)
                 WHERE id IS NOT json_extract(j, '$.id')
                    OR "user" IS NOT json_extract(j, '$.user')
                    OR patient IS NOT json_extract(j, '$.patient')
                    OR action IS NOT json_extract(j, '$.action')
                    OR time IS NOT replace(substr(json_extract(j, '$.time'), 1, 26), 'T', ' ')
                 ORDER BY seq LIMIT 1""",
    "postgresql": """SELECT seq FROM (SELECT seq, id, time, "user", patient, action,
                    convert_from(canonical, 'UTF8')::jsonb AS j FROM ledger_entry) AS e
                 WHERE id IS DISTINCT FROM j->>'id'
                    OR "user" IS DISTINCT FROM j->>'user'
                    OR patient IS DISTINCT FROM j->>'patient'
                    OR action IS DISTINCT FROM j->>'action'
                    OR time IS DISTINCT FROM (j->>'time')::timestamptz
                 ORDER BY seq LIMIT 1""",
}


def _check_columns(session: Session, report: Report) -> None:
    sql = _COLUMNS_SQL.get(session.connection().dialect.name)
    if sql is None:
        return
    try:
        seq = session.execute(text(sql)).scalar()
    except SQLAlchemyError:
        # Bytes that are not JSON (or not UTF-8) at all: the tree check names the entry.
        report.faults.append("an entry's bytes are not the JSON of an access event")
        return
    if seq is not None:
        report.faults.append(
            f"entry seq {seq}: its searchable columns (id, time, user, patient, action) differ "
            "from its hashed bytes"
        )


def _contiguous(session: Session, start: int) -> tuple[int, str | None]:
    """How many leaves from `start` on have no gap in their indexes, and the fault if one has."""
    count, low, high = session.execute(
        select(
            func.count(), func.min(LedgerLeaf.leaf_index), func.max(LedgerLeaf.leaf_index)
        ).where(LedgerLeaf.leaf_index >= start)
    ).one()
    if not count or (low == start and high - low + 1 == count):
        return count, None
    expected = start
    for rows in _stream(session, _INDEXES_SQL, start):
        for (index,) in rows:
            if index != expected:
                return expected - start, f"leaf {expected} is missing (leaves jump to {index})"
            expected += 1
    return count, None  # pragma: no cover - count and the scan disagree only mid-write


def _name_entry(session: Session, leaf_index: int, deleted: bool) -> str:
    seq = session.scalar(select(LedgerLeaf.seq).where(LedgerLeaf.leaf_index == leaf_index))
    what = "was deleted" if deleted else "was changed"
    return f"entry seq {seq} (leaf {leaf_index}) {what}"


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector over the leaf pass: it creates millions of
    short-lived tuples and bytes but no reference cycle, and the collector's passes over the
    growing heap were a measurable share of verifying."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _check_leaves(
    session: Session,
    start: int,
    check: TreeCheck,
    report: Report,
    progress: Callable[[int], object],
) -> None:
    """Every live leaf in order: its entry must still hash to it (the first that does not is
    named), and it goes into the rebuilt tree."""
    count, gap = _contiguous(session, start)
    position = start
    named = False
    for rows in _stream(session, _LEAVES_SQL, start, count):
        stored_hashes, bodies = zip(*rows, strict=True)
        stored = list(stored_hashes)
        if not named:
            # RFC 6962 section 2.1 leaf hashes, recomputed from the entries' bytes; an entry
            # gone from under its leaf (LEFT JOIN: None) is named as deleted.
            deleted = None in bodies
            recomputed: list[bytes | None] = (
                [None if b is None else _leaf_hashes((b,))[0] for b in bodies]
                if deleted
                else list(_leaf_hashes(bodies))
            )
            if recomputed != stored:
                bad = next(i for i, h in enumerate(recomputed) if h != stored[i])
                report.faults.append(
                    _name_entry(session, position + bad, deleted=recomputed[bad] is None)
                )
                named = True
        check.extend(stored)
        position += len(rows)
        progress(position)
    if gap is not None:
        report.faults.append(gap)


def verify_ledger(
    session: Session,
    *,
    verifier: CheckpointVerifier,
    witness: Path | None = None,
    archives: Path | None = None,
    read_segment: SegmentReader | None = None,
    origin: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    columns: bool = True,
) -> Report:
    """Recompute the ledger's tree and check it against every checkpoint and witness note;
    with `columns`, also that the searchable columns of every entry match its bytes."""
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
    start = _check_archives(session, expected, report, read_segment, archives)
    check = TreeCheck(start, expected, report)
    if start.size:
        _check_kept_leaves(session, start, report, check.nodes)
    live = (
        session.scalar(
            select(func.count()).select_from(LedgerLeaf).where(LedgerLeaf.leaf_index >= start.size)
        )
        or 0
    )
    total = start.size + live

    def progress(done: int) -> None:
        if on_progress is not None:
            on_progress(done, total)

    with _collector_paused():
        _check_leaves(session, start.size, check, report, progress)
    size = check.finish()
    report.leaves = size
    report.uncovered = size - max(expected, default=0)
    state = session.get(LedgerTreeState, 1)
    if state is not None and state.size > size:
        # The sequencer counted more leaves than remain: the uncovered tail was cut.
        report.faults.append(f"the sequencer integrated {state.size} leaves, only {size} remain")
    beyond = [s for s in expected if s > size]
    if beyond:
        report.faults.append(
            f"the ledger was truncated: a checkpoint covers {max(beyond)} leaves, "
            f"only {size} remain"
        )
    live_entries = session.scalar(select(func.count()).select_from(LedgerEntry)) or 0
    report.pending = live_entries - (size - report.archived)
    if report.pending < 0:
        report.faults.append("the leaf table names entries that are not in the ledger")
    _check_nodes(session, check.nodes, size, report)
    if columns:
        _check_columns(session, report)
    if on_progress is not None:
        on_progress(size, total)
    return report

"""Ledger node cache: stored hashes of complete subtrees, so proofs cost O(log n) lookups.

`ledger_node(level, index, hash)` holds MTH of the 2**level leaves from index * 2**level
(RFC 9162 section 2.1.1) for every complete subtree aligned on its size at a level that is a
positive multiple of 4 (the tile roots of C2SP tlog-tiles, tiles of height 4). The sequencer
writes them as subtrees complete; this migration writes them once for the leaves that exist
already (an installation upgraded from 0003), in the same transaction as the table.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Append-only like the other ledger tables: the sequencer only inserts.
_SQLITE_TRIGGERS = tuple(
    f"""CREATE TRIGGER ledger_node_no_{verb} BEFORE {verb.upper()} ON ledger_node
       BEGIN SELECT RAISE(ABORT, 'ledger_node is append-only'); END"""
    for verb in ("update", "delete")
)
_PG_TRIGGER = """CREATE TRIGGER ledger_node_append_only BEFORE UPDATE OR DELETE OR TRUNCATE
       ON ledger_node FOR EACH STATEMENT EXECUTE FUNCTION ledger_entry_append_only()"""

# The migration's own copy of the few lines of RFC 6962 hashing it needs: migrations never
# import the application (egide.db sits below egide.ledger), and must not change with it.
_TILE_HEIGHT = 4
_HASH_SIZE = 32
_PAGE = 10_000

_leaf = sa.table("ledger_leaf", sa.column("leaf_index"), sa.column("leaf_hash"))
_node = sa.table("ledger_node", sa.column("level"), sa.column("index"), sa.column("hash"))
_archive = sa.table("ledger_archive", sa.column("through_size"), sa.column("frontier"))


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()  # RFC 6962 section 2.1


def _start(conn: sa.Connection, first: int) -> tuple[int, list[bytes], list[dict[str, object]]]:
    """The compact tree the backfill starts from: empty at leaf 0; for leaves removed by an
    archive of an earlier version (0003 deleted archived leaf rows), the frontier that archive
    kept, whose perfect subtrees at stored levels are nodes too. Subtrees inside that removed
    prefix cannot be rebuilt; proofs that need them are refused (`egide.ledger.proofs`)."""
    if first == 0:
        return 0, [], []
    data = conn.execute(
        sa.select(_archive.c.frontier).where(_archive.c.through_size == first)
    ).scalar()
    if data is None:
        return -1, [], []  # leaves are missing with no archive: not ours to guess
    data = bytes(data)
    size = int.from_bytes(data[:8], "big")
    frontier = [data[8 + i : 8 + i + _HASH_SIZE] for i in range(0, len(data) - 8, _HASH_SIZE)]
    if size != first or len(frontier) != size.bit_count():
        return -1, [], []
    nodes: list[dict[str, object]] = []
    levels = [level for level in reversed(range(size.bit_length())) if size >> level & 1]
    for level, value in zip(levels, frontier, strict=True):
        if level and level % _TILE_HEIGHT == 0:
            nodes.append({"level": level, "index": (size >> level) - 1, "hash": value})
    return size, frontier, nodes


def _backfill(conn: sa.Connection) -> None:
    """Replay the existing leaves through a compact tree (RFC 6962 frontier) and store every
    complete subtree its merges produce at a level that is a multiple of 4."""
    first = conn.execute(sa.select(sa.func.min(_leaf.c.leaf_index))).scalar()
    if first is None:
        return
    size, frontier, nodes = _start(conn, int(first))
    if size < 0:
        return
    while True:
        rows = conn.execute(
            sa.select(_leaf.c.leaf_index, _leaf.c.leaf_hash)
            .where(_leaf.c.leaf_index >= size)
            .order_by(_leaf.c.leaf_index)
            .limit(_PAGE)
        ).all()
        for leaf_index, leaf_hash in rows:
            if leaf_index != size or len(leaf_hash) != _HASH_SIZE:
                rows = []  # a gap or a bad hash: stop here; `egide ledger verify` reports it
                break
            h, carry, level = bytes(leaf_hash), size, 0
            while carry & 1:
                h = _node_hash(frontier.pop(), h)
                carry >>= 1
                level += 1
                if level % _TILE_HEIGHT == 0:
                    nodes.append({"level": level, "index": size >> level, "hash": h})
            frontier.append(h)
            size += 1
        if len(nodes) >= _PAGE or (nodes and len(rows) < _PAGE):
            conn.execute(sa.insert(_node), nodes)
            nodes = []
        if len(rows) < _PAGE:
            return


def upgrade() -> None:
    op.create_table(
        "ledger_node",
        sa.Column("level", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("level", "index", name=op.f("pk_ledger_node")),
    )
    _backfill(op.get_bind())
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_TRIGGER)
    else:
        for statement in _SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS ledger_node_append_only ON ledger_node")
    op.drop_table("ledger_node")

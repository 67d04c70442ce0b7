"""The ledger entry keeps its canonical bytes and only the columns it is searched by.

Role, outcome, resource, address, device, purpose, request id and reasons were copies of what
the canonical JSON already holds: two copies of one fact, only one of them hashed into the
Merkle tree. They are dropped; readers take them from the canonical bytes, and appending
writes less than half as many values per entry. So is `entry_hash`, the leaf hash, which the
sequencer now computes from the bytes (it was also copied into ledger_leaf).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_DROPPED = (
    ("outcome", sa.String(length=16)),
    ("resource_type", sa.String(length=64)),
    ("resource_id", sa.String(length=64)),
    ("count", sa.Integer()),
    ("ip", sa.String(length=64)),
    ("device", sa.String(length=128)),
    ("purpose", sa.Text()),
    ("request_id", sa.String(length=64)),
    ("role", sa.String(length=32)),
    ("reasons", sa.Text()),
    # The leaf hash: computed by the sequencer from the bytes and kept in ledger_leaf.
    ("entry_hash", sa.LargeBinary(length=32)),
)


def upgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN on both databases (SQLite >= 3.35): the append-only
    # triggers fire on UPDATE and DELETE of rows, not on a change of the table's shape, and no
    # dropped column is indexed.
    for name, _type in _DROPPED:
        op.drop_column("ledger_entry", name)


def downgrade() -> None:
    # The columns come back empty (nullable): the canonical bytes still hold every value, and
    # ledger_leaf every leaf hash.
    for name, column_type in _DROPPED:
        op.add_column("ledger_entry", sa.Column(name, column_type, nullable=True))

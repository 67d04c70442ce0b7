"""Ledger Merkle tree: leaves in tree order, signed checkpoints, the sequencer's tree state.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# Leaves and checkpoints are append-only like the entries themselves (the sequencer only
# inserts); a rewrite is still possible for a database owner, which is what the verifier and
# the witness copies of checkpoints catch.
_SQLITE_TRIGGERS = tuple(
    f"""CREATE TRIGGER {table}_no_{verb} BEFORE {verb.upper()} ON {table}
       BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"""
    for table in ("ledger_leaf", "ledger_checkpoint")
    for verb in ("update", "delete")
)
_PG_TRIGGERS = tuple(
    f"""CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE OR TRUNCATE
       ON {table} FOR EACH STATEMENT EXECUTE FUNCTION ledger_entry_append_only()"""
    for table in ("ledger_leaf", "ledger_checkpoint")
)


def upgrade() -> None:
    op.create_table(
        "ledger_checkpoint",
        sa.Column("size", _BIG_ID, autoincrement=False, nullable=False),
        sa.Column("root", sa.LargeBinary(length=32), nullable=False),
        sa.Column("note", sa.LargeBinary(), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("size", name=op.f("pk_ledger_checkpoint")),
    )
    op.create_table(
        "ledger_leaf",
        sa.Column("leaf_index", _BIG_ID, autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("leaf_index", name=op.f("pk_ledger_leaf")),
        sa.UniqueConstraint("seq", name=op.f("uq_ledger_leaf_seq")),
    )
    op.create_table(
        "ledger_tree_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_tree_state")),
    )
    triggers = _PG_TRIGGERS if op.get_bind().dialect.name == "postgresql" else _SQLITE_TRIGGERS
    for statement in triggers:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in ("ledger_leaf", "ledger_checkpoint"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
    op.drop_table("ledger_tree_state")
    op.drop_table("ledger_leaf")
    op.drop_table("ledger_checkpoint")

"""Ledger retention: archived prefixes of the ledger and the tree frontier kept for them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


# Archive rows anchor the verifier for the archived prefix: append-only like the ledger.
_SQLITE_TRIGGERS = tuple(
    f"""CREATE TRIGGER ledger_archive_no_{verb} BEFORE {verb.upper()} ON ledger_archive
       BEGIN SELECT RAISE(ABORT, 'ledger_archive is append-only'); END"""
    for verb in ("update", "delete")
)
_PG_TRIGGER = """CREATE TRIGGER ledger_archive_append_only BEFORE UPDATE OR DELETE OR TRUNCATE
       ON ledger_archive FOR EACH STATEMENT EXECUTE FUNCTION ledger_entry_append_only()"""


def upgrade() -> None:
    op.create_table(
        "ledger_archive",
        sa.Column(
            "through_size",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("from_size", sa.BigInteger(), nullable=False),
        sa.Column("frontier", sa.LargeBinary(), nullable=False),
        sa.Column("file_name", sa.String(length=255), nullable=False),
        sa.Column("file_sha256", sa.LargeBinary(length=32), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("through_size", name=op.f("pk_ledger_archive")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_TRIGGER)
    else:
        for statement in _SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS ledger_archive_append_only ON ledger_archive")
    op.drop_table("ledger_archive")

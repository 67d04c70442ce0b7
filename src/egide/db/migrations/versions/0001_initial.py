"""Initial schema: data keys, API tokens, the append-only ledger and the FHIR record store.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The ledger is append-only for the application (DESIGN.md, contract 2). These triggers stop an
# UPDATE or DELETE issued through ordinary SQL; they do not stop a database owner, which is what
# the Merkle tree and external checkpoints of the ledger issue are for.
_SQLITE_TRIGGERS = (
    """CREATE TRIGGER ledger_entry_no_update BEFORE UPDATE ON ledger_entry
       BEGIN SELECT RAISE(ABORT, 'ledger_entry is append-only'); END""",
    """CREATE TRIGGER ledger_entry_no_delete BEFORE DELETE ON ledger_entry
       BEGIN SELECT RAISE(ABORT, 'ledger_entry is append-only'); END""",
)
_PG_TRIGGERS = (
    """CREATE FUNCTION ledger_entry_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN RAISE EXCEPTION 'ledger_entry is append-only'; END $$""",
    """CREATE TRIGGER ledger_entry_append_only BEFORE UPDATE OR DELETE OR TRUNCATE
       ON ledger_entry FOR EACH STATEMENT EXECUTE FUNCTION ledger_entry_append_only()""",
)


def upgrade() -> None:
    op.create_table(
        "crypto_data_key",
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("kek_id", sa.String(length=40), nullable=True),
        sa.Column("wrapped", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rewrapped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("shredded_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("owner", name=op.f("pk_crypto_data_key")),
        sa.UniqueConstraint("key_id", name=op.f("uq_crypto_data_key_key_id")),
    )
    op.create_index(op.f("ix_crypto_data_key_kek_id"), "crypto_data_key", ["kek_id"], unique=False)
    op.create_table(
        "identity_api_token",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_api_token")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_identity_api_token_token_hash")),
    )
    op.create_table(
        "ledger_entry",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user", sa.String(length=64), nullable=True),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("patient", sa.String(length=64), nullable=True),
        sa.Column("resource_type", sa.String(length=64), nullable=True),
        sa.Column("resource_id", sa.String(length=64), nullable=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("device", sa.String(length=128), nullable=True),
        sa.Column("purpose", sa.Text(), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("role", sa.String(length=32), nullable=True),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.Column("canonical", sa.LargeBinary(), nullable=False),
        sa.Column("entry_hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_ledger_entry")),
        sa.UniqueConstraint("id", name=op.f("uq_ledger_entry_id")),
    )
    op.create_index(
        "ix_ledger_entry_patient_time", "ledger_entry", ["patient", "time"], unique=False
    )
    op.create_index("ix_ledger_entry_user_time", "ledger_entry", ["user", "time"], unique=False)
    op.create_table(
        "records_resource",
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("resource_type", "id", name=op.f("pk_records_resource")),
    )
    op.create_index("ix_records_resource_patient", "records_resource", ["patient_id"], unique=False)
    op.create_index(
        "ix_records_resource_type_updated",
        "records_resource",
        ["resource_type", "last_updated"],
        unique=False,
    )
    op.create_table(
        "records_search_date",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("low", sa.DateTime(timezone=True), nullable=False),
        sa.Column("high", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_records_search_date")),
    )
    op.create_index(
        "ix_records_search_date_lookup",
        "records_search_date",
        ["resource_type", "param", "low"],
        unique=False,
    )
    op.create_index(
        "ix_records_search_date_owner",
        "records_search_date",
        ["resource_type", "resource_id"],
        unique=False,
    )
    op.create_table(
        "records_search_reference",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("ref_type", sa.String(length=64), nullable=False),
        sa.Column("ref_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_records_search_reference")),
    )
    op.create_index(
        "ix_records_search_reference_lookup",
        "records_search_reference",
        ["resource_type", "param", "ref_id"],
        unique=False,
    )
    op.create_index(
        "ix_records_search_reference_owner",
        "records_search_reference",
        ["resource_type", "resource_id"],
        unique=False,
    )
    op.create_table(
        "records_search_token",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("value", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_records_search_token")),
    )
    op.create_index(
        "ix_records_search_token_lookup",
        "records_search_token",
        ["resource_type", "param", "value"],
        unique=False,
    )
    op.create_index(
        "ix_records_search_token_owner",
        "records_search_token",
        ["resource_type", "resource_id"],
        unique=False,
    )
    op.create_table(
        "records_version",
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("key_owner", sa.String(length=64), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("resource_type", "id", "version", name=op.f("pk_records_version")),
    )
    op.create_index(
        "ix_records_version_type_updated",
        "records_version",
        ["resource_type", "last_updated"],
        unique=False,
    )
    triggers = _PG_TRIGGERS if op.get_bind().dialect.name == "postgresql" else _SQLITE_TRIGGERS
    for statement in triggers:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS ledger_entry_append_only ON ledger_entry")
        op.execute("DROP FUNCTION IF EXISTS ledger_entry_append_only()")
    op.drop_index("ix_records_version_type_updated", table_name="records_version")
    op.drop_table("records_version")
    op.drop_index("ix_records_search_token_owner", table_name="records_search_token")
    op.drop_index("ix_records_search_token_lookup", table_name="records_search_token")
    op.drop_table("records_search_token")
    op.drop_index("ix_records_search_reference_owner", table_name="records_search_reference")
    op.drop_index("ix_records_search_reference_lookup", table_name="records_search_reference")
    op.drop_table("records_search_reference")
    op.drop_index("ix_records_search_date_owner", table_name="records_search_date")
    op.drop_index("ix_records_search_date_lookup", table_name="records_search_date")
    op.drop_table("records_search_date")
    op.drop_index("ix_records_resource_type_updated", table_name="records_resource")
    op.drop_index("ix_records_resource_patient", table_name="records_resource")
    op.drop_table("records_resource")
    op.drop_index("ix_ledger_entry_user_time", table_name="ledger_entry")
    op.drop_index("ix_ledger_entry_patient_time", table_name="ledger_entry")
    op.drop_table("ledger_entry")
    op.drop_table("identity_api_token")
    op.drop_index(op.f("ix_crypto_data_key_kek_id"), table_name="crypto_data_key")
    op.drop_table("crypto_data_key")

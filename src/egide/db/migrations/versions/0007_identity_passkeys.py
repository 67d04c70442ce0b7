"""Identity: WebAuthn passkeys and their single-use ceremony challenges.

A passkey row holds the credential's id, its COSE public key and its signature counter (none of
them secret: the private key stays in the authenticator). Challenges are kept as SHA-256
hashes, bound to an account or a pending sign-in, single use, 5 minutes.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "identity_passkey",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("credential_id", sa.LargeBinary(length=1023), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("sign_count", sa.BigInteger(), nullable=False),
        sa.Column("transports", sa.String(length=200), nullable=True),
        sa.Column("aaguid", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["identity_account.id"],
            name=op.f("fk_identity_passkey_account_id_identity_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_passkey")),
        sa.UniqueConstraint("credential_id", name=op.f("uq_identity_passkey_credential_id")),
    )
    op.create_index(op.f("ix_identity_passkey_account_id"), "identity_passkey", ["account_id"])
    op.create_table(
        "identity_webauthn_challenge",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("challenge_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=True),
        sa.Column("login_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["identity_account.id"],
            name=op.f("fk_identity_webauthn_challenge_account_id_identity_account"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["login_id"],
            ["identity_login_pending.id"],
            name=op.f("fk_identity_webauthn_challenge_login_id_identity_login_pending"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_webauthn_challenge")),
        sa.UniqueConstraint(
            "challenge_hash", name=op.f("uq_identity_webauthn_challenge_challenge_hash")
        ),
    )
    op.create_index(
        op.f("ix_identity_webauthn_challenge_account_id"),
        "identity_webauthn_challenge",
        ["account_id"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_identity_webauthn_challenge_account_id"), "identity_webauthn_challenge")
    op.drop_table("identity_webauthn_challenge")
    op.drop_index(op.f("ix_identity_passkey_account_id"), "identity_passkey")
    op.drop_table("identity_passkey")

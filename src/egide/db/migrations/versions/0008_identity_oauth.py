"""Identity: OAuth 2.0 clients, authorization codes, access tokens and client-assertion ids.

SMART App Launch 2 (authorization code with PKCE) and SMART Backend Services (client
credentials with a signed client assertion). Codes and tokens are stored as SHA-256 hashes
(DESIGN.md contract 4); client JWKS hold public keys only.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _fk(table: str, column: str, target: str, target_column: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column],
        [f"{target}.{target_column}"],
        name=op.f(f"fk_{table}_{column}_{target}"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "identity_oauth_client",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("redirect_uris", sa.JSON(), nullable=False),
        sa.Column("jwks", sa.JSON(), nullable=True),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("client_id", name=op.f("pk_identity_oauth_client")),
    )
    op.create_table(
        "identity_oauth_code",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("code_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("code_challenge", sa.String(length=128), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        _fk("identity_oauth_code", "client_id", "identity_oauth_client", "client_id"),
        _fk("identity_oauth_code", "account_id", "identity_account", "id"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_oauth_code")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_identity_oauth_code_code_hash")),
    )
    op.create_index(op.f("ix_identity_oauth_code_client_id"), "identity_oauth_code", ["client_id"])
    op.create_index(
        op.f("ix_identity_oauth_code_account_id"), "identity_oauth_code", ["account_id"]
    )
    op.create_table(
        "identity_oauth_token",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=True),
        sa.Column("code_id", sa.String(length=36), nullable=True),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        _fk("identity_oauth_token", "client_id", "identity_oauth_client", "client_id"),
        _fk("identity_oauth_token", "account_id", "identity_account", "id"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_oauth_token")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_identity_oauth_token_token_hash")),
    )
    for column in ("client_id", "account_id", "code_id"):
        op.create_index(op.f(f"ix_identity_oauth_token_{column}"), "identity_oauth_token", [column])
    op.create_table(
        "identity_oauth_jti",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("jti", sa.String(length=256), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "jti", name=op.f("pk_identity_oauth_jti")),
    )
    op.create_index(op.f("ix_identity_oauth_jti_expires_at"), "identity_oauth_jti", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_identity_oauth_jti_expires_at"), "identity_oauth_jti")
    op.drop_table("identity_oauth_jti")
    for column in ("client_id", "account_id", "code_id"):
        op.drop_index(op.f(f"ix_identity_oauth_token_{column}"), "identity_oauth_token")
    op.drop_table("identity_oauth_token")
    op.drop_index(op.f("ix_identity_oauth_code_account_id"), "identity_oauth_code")
    op.drop_index(op.f("ix_identity_oauth_code_client_id"), "identity_oauth_code")
    op.drop_table("identity_oauth_code")
    op.drop_table("identity_oauth_client")

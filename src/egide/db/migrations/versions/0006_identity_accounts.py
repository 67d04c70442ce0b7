"""Identity: accounts, recovery codes, invitations, web sessions, pending sign-ins, throttle.

Secrets are stored only as hashes (passwords: Argon2id; codes and tokens: SHA-256) or sealed
(TOTP seeds, with crypto.envelope): DESIGN.md contract 4.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _account_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["account_id"],
        ["identity_account.id"],
        name=op.f(f"fk_{table}_account_id_identity_account"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "identity_account",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("practitioner_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=True),
        sa.Column("password_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("totp_seed_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("totp_pending_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("totp_last_step", sa.BigInteger(), nullable=True),
        sa.Column("mfa_enrolled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_count", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_account")),
        sa.UniqueConstraint("email", name=op.f("uq_identity_account_email")),
    )
    op.create_table(
        "identity_recovery_code",
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        _account_fk("identity_recovery_code"),
        sa.PrimaryKeyConstraint("account_id", "slot", name=op.f("pk_identity_recovery_code")),
    )
    op.create_table(
        "identity_invitation",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        _account_fk("identity_invitation"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_invitation")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_identity_invitation_token_hash")),
    )
    op.create_index(
        op.f("ix_identity_invitation_account_id"), "identity_invitation", ["account_id"]
    )
    op.create_table(
        "identity_web_session",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("csrf_secret", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("mfa_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("device", sa.String(length=128), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_reason", sa.String(length=64), nullable=True),
        _account_fk("identity_web_session"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_web_session")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_identity_web_session_token_hash")),
    )
    op.create_index(
        op.f("ix_identity_web_session_account_id"), "identity_web_session", ["account_id"]
    )
    op.create_table(
        "identity_login_pending",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        _account_fk("identity_login_pending"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_login_pending")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_identity_login_pending_token_hash")),
    )
    op.create_index(
        op.f("ix_identity_login_pending_account_id"), "identity_login_pending", ["account_id"]
    )
    op.create_table(
        "identity_address_throttle",
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("ip", name=op.f("pk_identity_address_throttle")),
    )


def downgrade() -> None:
    op.drop_table("identity_address_throttle")
    op.drop_index(op.f("ix_identity_login_pending_account_id"), "identity_login_pending")
    op.drop_table("identity_login_pending")
    op.drop_index(op.f("ix_identity_web_session_account_id"), "identity_web_session")
    op.drop_table("identity_web_session")
    op.drop_index(op.f("ix_identity_invitation_account_id"), "identity_invitation")
    op.drop_table("identity_invitation")
    op.drop_table("identity_recovery_code")
    op.drop_table("identity_account")

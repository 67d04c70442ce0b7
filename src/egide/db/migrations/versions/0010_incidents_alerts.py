"""Incidents: the security officer's alerts (break-the-glass now, detectors next).

Issue 5, item 5: a break-the-glass grant raises an immediate alert for the security officer.
`incidents_alert` keeps alerts in the DESIGN.md Alert format (the detectors of issue 6 store
theirs here too) with their triage state: open, acknowledged, false_positive, confirmed.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incidents_alert",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("user_id", sa.String(length=160), nullable=True),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_by", sa.String(length=160), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incidents_alert")),
    )
    op.create_index("ix_incidents_alert_status", "incidents_alert", ["status", "created_at"])
    op.create_index("ix_incidents_alert_patient", "incidents_alert", ["patient_id"])
    op.create_index("ix_incidents_alert_user", "incidents_alert", ["user_id"])


def downgrade() -> None:
    op.drop_table("incidents_alert")

"""Access control: care links, memberships and consent rules; practitioner on API tokens.

Issue 5: access follows care. `records_access_link` holds who is linked to which patient (from
Encounter, EpisodeOfCare, Appointment, CareTeam, orders, guardians' RelatedPerson, and explicit
grants: assignment, break-the-glass, investigation); `records_access_membership` who acts for
which group (a practitioner in their department); `records_consent_rule` the rules of active
FHIR R4 Consents, labels as blind-index tokens. Existing resources are linked by
`egide access rebuild`, which needs the keys a migration does not hold.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _pk() -> sa.Column[int]:
    return sa.Column(
        "pk",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    )


def _period() -> list[sa.Column[object]]:
    return [
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("valid_to", sa.DateTime(timezone=True), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "records_access_link",
        _pk(),
        sa.Column("source_type", sa.String(length=64), nullable=False),
        sa.Column("source_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=160), nullable=False),
        *_period(),
        sa.Column("granted_by", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=600), nullable=True),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_records_access_link")),
    )
    op.create_index(
        "ix_records_access_link_patient", "records_access_link", ["patient_id", "actor"]
    )
    op.create_index(
        "ix_records_access_link_source", "records_access_link", ["source_type", "source_id"]
    )
    op.create_table(
        "records_access_membership",
        _pk(),
        sa.Column("source_type", sa.String(length=64), nullable=False),
        sa.Column("source_id", sa.String(length=64), nullable=False),
        sa.Column("member", sa.String(length=160), nullable=False),
        sa.Column("group", sa.String(length=160), nullable=False),
        *_period(),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_records_access_membership")),
    )
    op.create_index("ix_records_access_membership_member", "records_access_membership", ["member"])
    op.create_index(
        "ix_records_access_membership_source",
        "records_access_membership",
        ["source_type", "source_id"],
    )
    op.create_table(
        "records_consent_rule",
        _pk(),
        sa.Column("consent_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=160), nullable=True),
        sa.Column("label", sa.LargeBinary(length=32), nullable=True),
        *_period(),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_records_consent_rule")),
    )
    op.create_index("ix_records_consent_rule_patient", "records_consent_rule", ["patient_id"])
    op.create_index("ix_records_consent_rule_consent", "records_consent_rule", ["consent_id"])
    with op.batch_alter_table("identity_api_token") as batch:
        batch.add_column(sa.Column("practitioner_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("identity_api_token") as batch:
        batch.drop_column("practitioner_id")
    op.drop_table("records_consent_rule")
    op.drop_table("records_access_membership")
    op.drop_table("records_access_link")

"""The records room's tables.

Columns in clear are only ids, resource types, versions, timestamps and search-index keys that
are themselves ids or keyed hashes (see `CLEAR_COLUMNS`, tested by scanning the database file).
Resource bodies are AES-256-GCM ciphertext under their patient's data key.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Boolean, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from egide.db.base import Base
from egide.db.types import UTCDateTime

_AUTO_PK = BigInteger().with_variant(Integer(), "sqlite")


class ResourceHead(Base):
    """The current version of each resource: what reads and searches start from."""

    __tablename__ = "records_resource"

    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    patient_id: Mapped[str | None] = mapped_column(String(64))
    last_updated: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (
        Index("ix_records_resource_type_updated", "resource_type", "last_updated"),
        Index("ix_records_resource_patient", "patient_id"),
    )


class ResourceVersion(Base):
    """Every version ever written (FHIR R4 versioned update); deletions are tombstones."""

    __tablename__ = "records_version"

    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str | None] = mapped_column(String(64))
    # The data key that sealed `body`: the patient id, or "_org" for directory resources.
    key_owner: Mapped[str] = mapped_column(String(64))
    last_updated: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    method: Mapped[str] = mapped_column(String(8))  # POST, PUT or DELETE
    body: Mapped[bytes | None] = mapped_column(LargeBinary)  # sealed; None for a deletion

    __table_args__ = (Index("ix_records_version_type_updated", "resource_type", "last_updated"),)


class SearchToken(Base):
    """A keyed blind index entry: HMAC-SHA256 of a normalised value, never the value itself."""

    __tablename__ = "records_search_token"

    pk: Mapped[int] = mapped_column(_AUTO_PK, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(64))
    value: Mapped[bytes] = mapped_column(LargeBinary(32))

    __table_args__ = (
        Index("ix_records_search_token_lookup", "resource_type", "param", "value"),
        Index("ix_records_search_token_owner", "resource_type", "resource_id"),
    )


class SearchReference(Base):
    """A reference search index entry: the referenced type and id (ids are clear columns)."""

    __tablename__ = "records_search_reference"

    pk: Mapped[int] = mapped_column(_AUTO_PK, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(64))
    ref_type: Mapped[str] = mapped_column(String(64))
    ref_id: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_records_search_reference_lookup", "resource_type", "param", "ref_id"),
        Index("ix_records_search_reference_owner", "resource_type", "resource_id"),
    )


class SearchDate(Base):
    """A clinical date range index entry, [low, high) in UTC. Birth dates never come here:
    they are patient-identifying and go to the blind index instead."""

    __tablename__ = "records_search_date"

    pk: Mapped[int] = mapped_column(_AUTO_PK, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(64))
    low: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    high: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_records_search_date_lookup", "resource_type", "param", "low"),
        Index("ix_records_search_date_owner", "resource_type", "resource_id"),
    )


class AccessLink(Base):
    """A link between an actor and a patient that may give a care relationship (issue 5).

    Derived from the stored FHIR resources that say who treats whom (Encounter, EpisodeOfCare,
    Appointment, CareTeam, active orders, a guardian's RelatedPerson), rebuilt whenever one of
    them is written; or an explicit grant (assignment, break-the-glass, investigation). The
    access policy (`access.relationships`) decides which links hold now and what they give.
    """

    __tablename__ = "records_access_link"

    pk: Mapped[int] = mapped_column(_AUTO_PK, primary_key=True, autoincrement=True)
    # What made the link: a resource ("Encounter", its id) or a grant ("grant", grant id).
    source_type: Mapped[str] = mapped_column(String(64))
    source_id: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    # `Practitioner/<id>`, `Organization/<id>`, `RelatedPerson/<id>`, `user:<account>` or `*`.
    actor: Mapped[str] = mapped_column(String(160))
    valid_from: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    valid_to: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # For grants only: who granted and the stated reason (coded, plus the clinician's words),
    # also in the ledger entry that opened the grant.
    granted_by: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(String(600))

    __table_args__ = (
        Index("ix_records_access_link_patient", "patient_id", "actor"),
        Index("ix_records_access_link_source", "source_type", "source_id"),
    )


class AccessMembership(Base):
    """`member` acts as `group` too: a practitioner in their department (PractitionerRole),
    a patient who is also a guardian's RelatedPerson (Patient.link)."""

    __tablename__ = "records_access_membership"

    pk: Mapped[int] = mapped_column(_AUTO_PK, primary_key=True, autoincrement=True)
    source_type: Mapped[str] = mapped_column(String(64))
    source_id: Mapped[str] = mapped_column(String(64))
    member: Mapped[str] = mapped_column(String(160))
    group: Mapped[str] = mapped_column(String(160))
    valid_from: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    valid_to: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_records_access_membership_member", "member"),
        Index("ix_records_access_membership_source", "source_type", "source_id"),
    )


class ConsentRule(Base):
    """One rule of a patient's active FHIR R4 Consent, as the access filter needs it.

    `kind` "deny": `actor` (when set) may not reach the patient's data, or only not the
    resources carrying `label`; with no actor, resources carrying `label` are restricted to
    the treating team (`label` b"*": all of them). `kind` "research": the patient opted out
    of research use. `label` is the blind-index token of the security label code, never the
    code itself (a clear "HIV" next to a patient id would be patient data).
    """

    __tablename__ = "records_consent_rule"

    pk: Mapped[int] = mapped_column(_AUTO_PK, primary_key=True, autoincrement=True)
    consent_id: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str | None] = mapped_column(String(160))
    label: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    valid_from: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    valid_to: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_records_consent_rule_patient", "patient_id"),
        Index("ix_records_consent_rule_consent", "consent_id"),
    )


# Every column of this room that is stored in clear, with why it may be. The at-rest test
# writes distinctive values and scans the whole database for them; this list is the review aid.
CLEAR_COLUMNS: dict[str, str] = {
    "records_resource.*": "random ids, type, version number, patient id (random), timestamps",
    "records_version.*": "same, plus the key owner (a patient id) and the HTTP method",
    "records_search_token.value": "HMAC-SHA256 under the blind-index key, never the value",
    "records_search_reference.*": "referenced resource type and random id",
    "records_search_date.low/high": "clinical event dates (not birth dates), for range search",
    "records_access_link.*": "who treats whom: random ids, link kind, validity period; a "
    "grant's coded reason and words (also in the ledger entry that opened it)",
    "records_access_membership.*": "random ids of a practitioner and their department",
    "records_consent_rule.*": "random ids, rule kind, period; labels as blind-index tokens",
}

"""The ledger's table: one row per audited act, never updated or deleted by the application."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from egide.db.base import Base
from egide.db.types import UTCDateTime


class LedgerEntry(Base):
    """An audited act, in the access-event format of DESIGN.md plus ledger bookkeeping."""

    __tablename__ = "ledger_entry"

    # SQLite needs INTEGER (not BIGINT) for an auto-incrementing rowid primary key.
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    id: Mapped[str] = mapped_column(String(36), unique=True)
    time: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    user: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(16))
    patient: Mapped[str | None] = mapped_column(String(64))
    resource_type: Mapped[str | None] = mapped_column(String(64))
    resource_id: Mapped[str | None] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(Integer, default=1)
    ip: Mapped[str | None] = mapped_column(String(64))
    device: Mapped[str | None] = mapped_column(String(128))
    purpose: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(64))
    role: Mapped[str | None] = mapped_column(String(32))
    reasons: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of strings
    # The canonical JSON of the entry (see ledger.canonical) and its SHA-256: what the Merkle
    # tree will hash. Stored so a verifier needs nothing but this table.
    canonical: Mapped[bytes] = mapped_column(LargeBinary)
    entry_hash: Mapped[bytes] = mapped_column(LargeBinary(32))

    __table_args__ = (
        Index("ix_ledger_entry_patient_time", "patient", "time"),
        Index("ix_ledger_entry_user_time", "user", "time"),
    )

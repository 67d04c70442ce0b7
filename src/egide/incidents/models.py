"""The incidents room's tables: the security officer's alerts.

An alert is stored in the DESIGN.md "Alert" format (id, kind, severity, score, user, patient,
start, end, events, reasons) plus its triage state. Columns in clear: random ids (the account
and the patient an alert is about, the ledger entry ids that are its evidence), the alert's
kind, severity, score, times and status, and its reasons: plain sentences written by Égide
(a coded break-the-glass reason, "no care link existed"), never a clinician's free text nor a
clinical value, which stay in the ledger entries the alert points to.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Float, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from egide.db.base import Base
from egide.db.types import UTCDateTime


class AlertRow(Base):
    """One alert for the security officer, from a break-the-glass grant or a detector."""

    __tablename__ = "incidents_alert"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))  # low | medium | high | critical
    score: Mapped[float] = mapped_column(Float())  # 0 to 1; alerts sort by it
    user_id: Mapped[str | None] = mapped_column(String(160))
    patient_id: Mapped[str | None] = mapped_column(String(64))
    start_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    end_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    events: Mapped[list[Any]] = mapped_column(JSON())  # ledger entry ids, the evidence
    reasons: Mapped[list[Any]] = mapped_column(JSON())  # plain sentences
    status: Mapped[str] = mapped_column(String(16))  # open | acknowledged | ...
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    updated_by: Mapped[str | None] = mapped_column(String(160))

    __table_args__ = (
        Index("ix_incidents_alert_status", "status", "created_at"),
        Index("ix_incidents_alert_patient", "patient_id"),
        Index("ix_incidents_alert_user", "user_id"),
    )


CLEAR_COLUMNS: dict[str, str] = {
    "incidents_alert.*": "random ids (alert, account, patient, ledger entries), kind, "
    "severity, score, times, status; reasons written by Égide, never free text",
}

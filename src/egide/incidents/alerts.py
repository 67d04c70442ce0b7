"""The security officer's alerts: stored, listed, triaged.

Security role: an alert is how misuse reaches a person. A break-the-glass grant raises one at
once, in the transaction that opens the grant (issue 5, item 5: "raises an immediate alert for
the security officer"), so there is no grant without its alert; the detectors of issue 6 store
theirs here too. The format is DESIGN.md's "Alert" (id, kind, severity, score, user, patient,
start, end, events, reasons) plus its triage state (`status`: open, acknowledged,
false_positive, confirmed), when it was stored and who last changed it.

Only the security officer reads and triages alerts (issue 5, item 2: "security_officer:
ledger, alerts, incidents"); every change of status is appended to the ledger (ALERT_UPDATE)
in the same transaction (DESIGN.md contract 2). Functions take keyword arguments and never
commit.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from egide.access.permissions import Role
from egide.access.relationships import Windows
from egide.core.clock import Clock
from egide.core.errors import BadRequest, Forbidden, NotFound
from egide.core.ids import new_id
from egide.core.principal import Principal
from egide.core.settings import Settings
from egide.incidents.models import AlertRow
from egide.ledger.service import Act, Action, append
from egide.records.grants import (
    NO_CARE_LINK,
    REASON_DISPLAY,
    Granted,
    ReasonCode,
    open_break_glass,
)

__all__ = [
    "BREAK_GLASS_KIND",
    "Alert",
    "Severity",
    "Status",
    "get_alert",
    "list_alerts",
    "may_manage_alerts",
    "note_response",
    "open_break_glass_with_alert",
    "raise_alert",
    "record_detected",
    "set_status",
    "store_document",
]


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    LOW = "low"
    MEDIUM = "medium"


class Status(StrEnum):
    ACKNOWLEDGED = "acknowledged"  # seen; being looked into
    CONFIRMED = "confirmed"  # real misuse: becomes an incident
    FALSE_POSITIVE = "false_positive"  # looked into; nothing wrong
    OPEN = "open"  # not looked at yet


BREAK_GLASS_KIND = "break_glass"
BREAK_GLASS_SCORE = 0.7  # high, below what detectors give proven abuse
ALERT_ROLES = frozenset({Role.SECURITY_OFFICER})
MAX_LISTED = 1000
_KIND_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_ID_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
_REF_RE = re.compile(r"[A-Za-z0-9_.:/\-]{1,160}")
MAX_EVENTS = 10_000
MAX_REASONS = 50
MAX_REASON_LENGTH = 1000


@dataclass(frozen=True)
class Alert:
    """One stored alert."""

    id: str
    kind: str
    severity: str
    score: float
    user: str | None
    patient: str | None
    start: dt.datetime
    end: dt.datetime
    events: tuple[str, ...]
    reasons: tuple[str, ...]
    status: str
    created_at: dt.datetime
    updated_at: dt.datetime | None
    updated_by: str | None

    def document(self) -> dict[str, Any]:
        """The DESIGN.md Alert object, plus `status`, `created_at` and `updated_by`."""
        return {
            "id": self.id,
            "kind": self.kind,
            "severity": self.severity,
            "score": self.score,
            "user": self.user,
            "patient": self.patient,
            "start": _rfc3339(self.start),
            "end": _rfc3339(self.end),
            "events": list(self.events),
            "reasons": list(self.reasons),
            "status": self.status,
            "created_at": _rfc3339(self.created_at),
            "updated_at": _rfc3339(self.updated_at) if self.updated_at else None,
            "updated_by": self.updated_by,
        }


def _rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _alert_of(row: AlertRow) -> Alert:
    return Alert(
        id=row.id,
        kind=row.kind,
        severity=row.severity,
        score=row.score,
        user=row.user_id,
        patient=row.patient_id,
        start=row.start_at,
        end=row.end_at,
        events=tuple(str(e) for e in row.events),
        reasons=tuple(str(r) for r in row.reasons),
        status=row.status,
        created_at=row.created_at,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


def may_manage_alerts(principal: Principal) -> bool:
    """Whether `principal` reads and triages alerts (depends on the role only: a refusal may
    answer 403)."""
    return principal.role in {r.value for r in ALERT_ROLES}


def _bad(message: str) -> BadRequest:
    return BadRequest(f"alert: {message}")


def _optional_ref(value: object, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or _REF_RE.fullmatch(value) is None:
        raise _bad(f"{what} must be an id")
    return value


def _check_evidence(
    severity: object, score: object, events: Sequence[object], reasons: Sequence[object]
) -> None:
    """The checks a new alert and a grown one share (BadRequest on the first that fails)."""
    if severity not in {s.value for s in Severity}:
        raise _bad("severity must be low, medium, high or critical")
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        raise _bad("score must be a number from 0 to 1")
    if math.isnan(score):
        raise _bad("score must be a number from 0 to 1")
    if len(events) > MAX_EVENTS or any(
        not isinstance(e, str) or _ID_RE.fullmatch(e) is None for e in events
    ):
        raise _bad("events must be ledger entry ids")
    if len(reasons) > MAX_REASONS or any(
        not isinstance(r, str) or not r or len(r) > MAX_REASON_LENGTH for r in reasons
    ):
        raise _bad(f"reasons must be at most {MAX_REASONS} sentences")


def raise_alert(
    session: Session,
    *,
    kind: str,
    severity: str,
    score: float,
    user: str | None,
    patient: str | None,
    start: dt.datetime,
    end: dt.datetime,
    events: Sequence[str],
    reasons: Sequence[str],
    clock: Clock,
    alert_id: str | None = None,
) -> Alert:
    """Store a new open alert and return it. A detector's alert ids are deterministic (the
    same evidence gives the same id): storing one that exists returns the stored one
    unchanged, so a rerun does not reopen an alert the officer closed."""
    if not isinstance(kind, str) or _KIND_RE.fullmatch(kind) is None:
        raise _bad("kind must be lower-case letters, digits and '_'")
    _check_evidence(severity, score, events, reasons)
    if start.tzinfo is None or end.tzinfo is None or end < start:
        raise _bad("start and end must be aware times, start first")
    identifier = alert_id or new_id()
    if _ID_RE.fullmatch(identifier) is None:
        raise _bad("id must be letters, digits, '_', '.', ':' or '-'")
    existing = session.get(AlertRow, identifier)
    if existing is not None:
        return _alert_of(existing)
    row = AlertRow(
        id=identifier,
        kind=kind,
        severity=severity,
        score=float(score),
        user_id=_optional_ref(user, "user"),
        patient_id=_optional_ref(patient, "patient"),
        start_at=start,
        end_at=end,
        events=list(events),
        reasons=list(reasons),
        status=Status.OPEN.value,
        created_at=clock.now(),
        updated_at=None,
        updated_by=None,
    )
    session.add(row)
    session.flush()
    return _alert_of(row)


def _time(value: object, what: str) -> dt.datetime:
    if not isinstance(value, str):
        raise _bad(f"{what} must be an RFC 3339 time")
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(f"{what} must be an RFC 3339 time") from None
    if when.tzinfo is None:
        raise _bad(f"{what} must carry its offset")
    return when


def store_document(session: Session, doc: Mapping[str, Any], *, clock: Clock) -> Alert:
    """Store an alert given in the DESIGN.md format (a detector's output line)."""
    events = doc.get("events", [])
    reasons = doc.get("reasons", [])
    if not isinstance(events, list) or not isinstance(reasons, list):
        raise _bad("events and reasons must be lists")
    score = doc.get("score")
    if not isinstance(score, int | float):
        raise _bad("score must be a number from 0 to 1")
    return raise_alert(
        session,
        alert_id=str(doc.get("id") or "") or None,
        kind=str(doc.get("kind", "")),
        severity=str(doc.get("severity", "")),
        score=score,
        user=doc.get("user"),
        patient=doc.get("patient"),
        start=_time(doc.get("start"), "start"),
        end=_time(doc.get("end"), "end"),
        events=events,
        reasons=reasons,
        clock=clock,
    )


@dataclass(frozen=True)
class Recorded:
    """What storing a detector's alert did: the alert as stored, whether it is new, and
    whether it became critical now (new and critical, or escalated to critical)."""

    alert: Alert
    created: bool
    became_critical: bool


_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}
RESPONSE_PREFIX = "automatic response: "
ESCALATED = "escalated to "
# Who acts when live detection stores, escalates or responds (incidents.live).
DETECTOR = Principal(id="system:detect", role=Role.SERVICE.value, name="behavioural detection")


def _bounded(events: Sequence[str], reasons: Sequence[str]) -> tuple[list[str], list[str]]:
    """A live case can outgrow the store's bounds (a mass deletion of 50,000 records): the
    first MAX_EVENTS ids are kept, and a reason says how many more there were."""
    kept = list(reasons[: MAX_REASONS - 1])
    if len(events) > MAX_EVENTS:
        kept.append(f"... and {len(events) - MAX_EVENTS} more events (not listed)")
        return list(events[:MAX_EVENTS]), kept
    return list(events), list(reasons[:MAX_REASONS])


def record_detected(session: Session, doc: Mapping[str, Any], *, clock: Clock) -> Recorded:
    """Store a live detector's alert (DESIGN.md format). A case keeps its id while its
    evidence grows, so an alert that exists is updated in place: its evidence, reasons, end
    and score follow the detector, its severity only ever rises, and the officer's triage
    (status, who, when) is kept: new evidence never reopens a case the officer closed."""
    events, reasons = doc.get("events", []), doc.get("reasons", [])
    if not isinstance(events, list) or not isinstance(reasons, list):
        raise _bad("events and reasons must be lists")
    events, reasons = _bounded(events, reasons)
    alert_id = str(doc.get("id") or "")
    row = session.get(AlertRow, alert_id) if _ID_RE.fullmatch(alert_id) else None
    if row is None:
        stored = store_document(session, {**doc, "events": events, "reasons": reasons}, clock=clock)
        return Recorded(stored, created=True, became_critical=stored.severity == "critical")
    severity = str(doc.get("severity", ""))
    score = doc.get("score")
    end = _time(doc.get("end"), "end")
    _check_evidence(severity, score, events, reasons)
    assert isinstance(score, int | float)
    before = row.severity
    raised = _RANK[severity] > _RANK[before]
    # What was done about the alert stays written on it, whatever the detector says now.
    responses = [r for r in row.reasons if str(r).startswith((RESPONSE_PREFIX, ESCALATED))]
    row.events = events
    row.reasons = [*reasons, *(r for r in responses if r not in reasons)]
    row.end_at = max(row.end_at, end)
    row.score = float(score)
    if raised:
        row.severity = severity
        if row.status == Status.FALSE_POSITIVE.value:
            # A dismissed case that grew worse is not the case the officer dismissed: it
            # goes back to the queue, and the ledger says why.
            row.status = Status.OPEN.value
            row.updated_at = clock.now()
            row.updated_by = DETECTOR.id
            row.reasons = [
                *row.reasons,
                f"{ESCALATED}{severity} after being marked a false positive",
            ]
            append(
                session,
                principal=DETECTOR,
                clock=clock,
                act=Act(
                    Action.ALERT_UPDATE,
                    resource_id=row.id,
                    reasons=(f"alert {row.id} ({row.kind}): false_positive -> open, escalated",),
                ),
            )
    session.flush()
    return Recorded(
        _alert_of(row), created=False, became_critical=raised and severity == "critical"
    )


def note_response(session: Session, *, alert_id: str, done: Sequence[str]) -> None:
    """Write on the alert what the automatic response did (kept across updates)."""
    row = session.get(AlertRow, alert_id)
    if row is None:
        return
    row.reasons = [*row.reasons, *(f"{RESPONSE_PREFIX}{d}" for d in done)]
    session.flush()


def list_alerts(
    session: Session,
    *,
    status: str | None = None,
    kind: str | None = None,
    severity: str | None = None,
    user: str | None = None,
    patient: str | None = None,
    limit: int = MAX_LISTED,
) -> list[Alert]:
    """Alerts matching every filter given, most suspicious first, then newest."""
    stmt = select(AlertRow)
    if status is not None:
        if status not in {s.value for s in Status}:
            raise _bad("status must be open, acknowledged, false_positive or confirmed")
        stmt = stmt.where(AlertRow.status == status)
    if severity is not None:
        if severity not in {s.value for s in Severity}:
            raise _bad("severity must be low, medium, high or critical")
        stmt = stmt.where(AlertRow.severity == severity)
    if kind is not None:
        stmt = stmt.where(AlertRow.kind == kind[:64])
    if user is not None:
        stmt = stmt.where(AlertRow.user_id == user[:160])
    if patient is not None:
        stmt = stmt.where(AlertRow.patient_id == patient[:64])
    rows = session.scalars(
        stmt.order_by(AlertRow.score.desc(), AlertRow.created_at.desc(), AlertRow.id).limit(
            max(1, min(limit, MAX_LISTED))
        )
    )
    return [_alert_of(row) for row in rows]


def get_alert(session: Session, *, alert_id: str) -> Alert:
    row = session.get(AlertRow, alert_id) if _ID_RE.fullmatch(alert_id) else None
    if row is None:
        msg = "no such alert"
        raise NotFound(msg)
    return _alert_of(row)


def set_status(
    session: Session, principal: Principal, *, alert_id: str, status: object, clock: Clock
) -> Alert:
    """The security officer triages an alert; the change is ledgered (ALERT_UPDATE)."""
    if not may_manage_alerts(principal):
        msg = f"role {principal.role} may not triage alerts"
        raise Forbidden(msg)
    if not isinstance(status, str) or status not in {s.value for s in Status}:
        raise _bad("status must be open, acknowledged, false_positive or confirmed")
    row = (
        session.get(AlertRow, alert_id, with_for_update=True)
        if _ID_RE.fullmatch(alert_id)
        else None
    )
    if row is None:
        msg = "no such alert"
        raise NotFound(msg)
    if row.user_id is not None and row.user_id == principal.id:
        # Nobody triages an alert about themselves (four eyes): another officer, or the DPO
        # through an investigation, looks at it.
        msg = "an alert about your own account is triaged by someone else"
        raise Forbidden(msg)
    before = row.status
    if before == status:
        return _alert_of(row)
    row.status = status
    row.updated_at = clock.now()
    row.updated_by = principal.id[:160]
    session.flush()
    append(
        session,
        principal=principal,
        clock=clock,
        act=Act(
            Action.ALERT_UPDATE,
            resource_id=row.id,
            count=1,
            reasons=(f"alert {row.id} ({row.kind}): {before} -> {status}",),
        ),
    )
    return _alert_of(row)


def open_break_glass_with_alert(
    session: Session,
    principal: Principal,
    *,
    patient_id: object,
    reason_code: object,
    reason_text: object,
    clock: Clock,
    settings: Settings,
    mfa_at: dt.datetime | None,
) -> tuple[Granted, Alert]:
    """Break the glass (`records.grants.open_break_glass`, with the settings' duration,
    step-up window and care windows) and raise its alert in the same transaction: a grant
    without its alert cannot commit."""
    granted = open_break_glass(
        session,
        principal,
        patient_id=patient_id,
        reason_code=reason_code,
        reason_text=reason_text,
        clock=clock,
        hours=settings.break_glass_hours,
        mfa_at=mfa_at,
        step_up_minutes=settings.step_up_minutes,
        windows=Windows(
            care_grace=dt.timedelta(days=settings.care_grace_days),
            appointment_lead=dt.timedelta(days=settings.appointment_lead_days),
        ),
    )
    grant = granted.grant
    code = ReasonCode(grant.reason)
    assert grant.valid_from is not None
    assert grant.valid_to is not None
    alert = raise_alert(
        session,
        kind=BREAK_GLASS_KIND,
        severity=Severity.HIGH.value,
        score=BREAK_GLASS_SCORE,
        user=principal.id,
        patient=grant.patient_id,
        start=grant.valid_from,
        end=grant.valid_to,
        events=(granted.entry_id,),
        reasons=(
            (
                f"{principal.role} {principal.name or principal.id} broke the glass to open "
                f"this patient's record: reason {code.value} ({REASON_DISPLAY[code]}); their "
                "own words are in the ledger entry"
            ),
            NO_CARE_LINK,
            f"emergency access until {_rfc3339(grant.valid_to)}",
        ),
        clock=clock,
    )
    return granted, alert

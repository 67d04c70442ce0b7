"""An alert's evidence, and the security officer's audited reads of alerts.

Security role: an alert names the ledger entries that are its evidence (DESIGN.md "Alert",
`events`); the officer judges it by reading those entries, which are patients' audit data.
This module looks them up (`evidence_of`) and gives the API and the pages one way to read
alerts (`read_alert`, `list_page`) and triage them (`triage`), so both check the same role and
leave the same trail:

- Only the security officer reads and triages alerts (issue 5, item 2); any other role is
  refused with 403 (a refusal that depends on the role only reveals nothing about a patient)
  and the refusal is ledgered even though its transaction rolls back (`defer_audit`).
- Reading an alert's detail is an access to patients' audit data, so it is ledgered in the
  same transaction as the read (DESIGN.md contract 2), the way `/fhir/AuditEvent` reads are:
  action `read`, resource type `AuditEvent`, one entry per patient whose entries were shown
  (count = that patient's entries shown), so each patient's access report lists the look. A
  page of the alert list is one `search` entry (count = alerts listed, the patient filter as
  its patient).
- Evidence ids the ledger does not hold (an alert imported from another system's audit
  trail, or entries archived away) are listed as missing, never an error.

Functions take keyword arguments and never commit (the caller's unit of work does).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from egide.core.clock import Clock
from egide.core.errors import BadRequest, Forbidden
from egide.core.principal import Principal
from egide.incidents import alerts
from egide.incidents.alerts import Alert
from egide.ledger.models import LedgerEntry
from egide.ledger.service import Act, Action, Outcome, append, flush_pending
from egide.records.repository import defer_audit

__all__ = [
    "EVENT_FIELDS",
    "MAX_EVIDENCE",
    "MAX_PAGE",
    "AlertDetail",
    "AlertPage",
    "Evidence",
    "evidence_of",
    "list_page",
    "officer_refusal",
    "read_alert",
    "triage",
]

MAX_EVIDENCE = 200  # entries shown with an alert; the rest are counted
MAX_MISSING = 200  # missing ids listed; the rest are counted
MAX_PAGE = 200  # alerts in one page of the list
_ALERT_ID_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")  # the ids `incidents.alerts` accepts
_CHUNK = 500  # ids per IN (...) query: well under SQLite's and PostgreSQL's parameter limits
# The access-event fields of an evidence entry (DESIGN.md "Access event", plus the ledger's
# role, resource id and reasons); not the request id, an internal correlation handle.
EVENT_FIELDS = (
    "id",
    "time",
    "user",
    "role",
    "action",
    "outcome",
    "patient",
    "resource_type",
    "resource_id",
    "count",
    "ip",
    "device",
    "purpose",
    "reasons",
)
# What the officer reads through an alert: entries of the audit ledger (served elsewhere as
# FHIR AuditEvents), so the ledger names it as `/fhir/AuditEvent` reads do.
AUDITED_TYPE = "AuditEvent"


@dataclass(frozen=True)
class Evidence:
    """The ledger entries an alert names: the first `limit` found, in time order."""

    entries: tuple[dict[str, Any], ...]
    total: int  # entries found in the ledger (shown or not)
    missing: tuple[str, ...]  # ids the ledger does not hold, in the alert's order (capped)
    missing_total: int

    def document(self) -> dict[str, Any]:
        return {
            "entries": list(self.entries),
            "total": self.total,
            "shown": len(self.entries),
            "missing": list(self.missing),
            "missing_total": self.missing_total,
        }


@dataclass(frozen=True)
class AlertDetail:
    alert: Alert
    evidence: Evidence

    def document(self) -> dict[str, Any]:
        """The alert (DESIGN.md format plus triage fields) with its `evidence`."""
        return {**self.alert.document(), "evidence": self.evidence.document()}


@dataclass(frozen=True)
class AlertPage:
    alerts: tuple[Alert, ...]
    offset: int
    limit: int
    more: bool  # whether a next page exists (within `alerts.MAX_LISTED`)


def _event(canonical: bytes) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(canonical)
    return {name: parsed.get(name) for name in EVENT_FIELDS}


def evidence_of(
    session: Session, *, event_ids: Sequence[str], limit: int = MAX_EVIDENCE
) -> Evidence:
    """The ledger entries with these ids, as access-event dicts, oldest first (then in ledger
    order), at most `limit` of them; ids not in the ledger are listed as missing."""
    flush_pending(session)  # entries appended earlier in this transaction are evidence too
    wanted = list(dict.fromkeys(event_ids))  # without repeats, in the alert's order
    # First the clear columns of every entry found (cheap), then the canonical bytes of the
    # ones shown only: an alert may name up to `alerts.MAX_EVENTS` entries.
    found: list[tuple[Any, int, str]] = []
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        found.extend(
            (row.time, row.seq, row.id)
            for row in session.execute(
                select(LedgerEntry.time, LedgerEntry.seq, LedgerEntry.id).where(
                    LedgerEntry.id.in_(chunk)
                )
            )
        )
    found.sort(key=lambda item: (item[0], item[1]))
    shown_seqs = [seq for _, seq, _ in found[: max(0, limit)]]
    canonical: dict[int, bytes] = {}
    for start in range(0, len(shown_seqs), _CHUNK):
        chunk_seqs = shown_seqs[start : start + _CHUNK]
        canonical.update(
            (row.seq, row.canonical)
            for row in session.execute(
                select(LedgerEntry.seq, LedgerEntry.canonical).where(
                    LedgerEntry.seq.in_(chunk_seqs)
                )
            )
        )
    present = {entry_id for _, _, entry_id in found}
    missing = [entry_id for entry_id in wanted if entry_id not in present]
    return Evidence(
        entries=tuple(_event(canonical[seq]) for seq in shown_seqs),
        total=len(found),
        missing=tuple(missing[:MAX_MISSING]),
        missing_total=len(missing),
    )


# --- the officer's reads and triage ------------------------------------------------------------


def _grants(principal: Principal) -> str:
    return f"role {principal.role} reads and triages the alerts"


def officer_refusal(
    principal: Principal, *, clock: Clock, action: Action, alert_id: str | None = None
) -> Forbidden:
    """403 for a caller whose role may not read or triage alerts, with its ledger entry (a
    denied `action`) written even though the request's transaction rolls back."""
    message = f"role {principal.role} may not read or triage alerts"
    act = Act(
        action,
        Outcome.DENIED,
        # Only a well-formed id goes to the ledger: the path is the caller's, any text.
        resource_id=alert_id if alert_id and _ALERT_ID_RE.fullmatch(alert_id) else None,
        count=0,
        reasons=(message,),
    )
    error = defer_audit(
        Forbidden(message), lambda s: append(s, principal=principal, act=act, clock=clock)
    )
    assert isinstance(error, Forbidden)
    return error


def _require_officer(
    principal: Principal, *, clock: Clock, action: Action, alert_id: str | None = None
) -> None:
    if not alerts.may_manage_alerts(principal):
        raise officer_refusal(principal, clock=clock, action=action, alert_id=alert_id)


def read_alert(
    session: Session,
    principal: Principal,
    *,
    alert_id: str,
    clock: Clock,
    limit: int = MAX_EVIDENCE,
) -> AlertDetail:
    """One alert with its evidence, for the security officer; the read is ledgered."""
    _require_officer(principal, clock=clock, action=Action.READ, alert_id=alert_id)
    alert = alerts.get_alert(session, alert_id=alert_id)
    evidence = evidence_of(session, event_ids=alert.events, limit=limit)
    shown: Counter[str] = Counter(e["patient"] for e in evidence.entries if e["patient"])
    if alert.patient and len(alert.patient) <= 64 and alert.patient not in shown:
        # The alert itself names the patient (an id longer than the ledger's column is not a
        # patient id of this system; the reasons name the alert).
        shown[alert.patient] = 0
    reasons = (_grants(principal), f"evidence of alert {alert.id} ({alert.kind})")
    looked: list[tuple[str | None, int]] = [*sorted(shown.items())] or [(None, 0)]
    for patient, count in looked:
        act = Act(
            Action.READ,
            patient=patient,
            resource_type=AUDITED_TYPE,
            count=count,
            reasons=reasons,
        )
        append(session, principal=principal, act=act, clock=clock)
    return AlertDetail(alert, evidence)


def _filters_text(filters: dict[str, str | None]) -> str:
    given = [f"{name}={value}" for name, value in filters.items() if value is not None]
    return "alert list" + (f" ({', '.join(given)})" if given else "")


def list_page(
    session: Session,
    principal: Principal,
    *,
    status: str | None = None,
    kind: str | None = None,
    severity: str | None = None,
    user: str | None = None,
    patient: str | None = None,
    offset: int = 0,
    limit: int = 50,
    clock: Clock,
) -> AlertPage:
    """One page of the alerts matching every filter, most suspicious first, then newest (the
    order of `alerts.list_alerts`, which lists at most `alerts.MAX_LISTED`); ledgered."""
    _require_officer(principal, clock=clock, action=Action.SEARCH)
    if isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
        msg = f"limit must be from 1 to {MAX_PAGE}"
        raise BadRequest(msg)
    if isinstance(offset, bool) or offset < 0 or offset + limit > alerts.MAX_LISTED:
        msg = f"offset must be from 0, and offset + limit at most {alerts.MAX_LISTED}"
        raise BadRequest(msg)
    # One more than the page, to know whether another page follows.
    found = alerts.list_alerts(
        session,
        status=status,
        kind=kind,
        severity=severity,
        user=user,
        patient=patient,
        limit=offset + limit + 1,
    )
    page = tuple(found[offset : offset + limit])
    filters = {"status": status, "kind": kind, "severity": severity, "user": user}
    act = Act(
        Action.SEARCH,
        patient=patient[:64] if patient else None,
        resource_type=AUDITED_TYPE,
        count=len(page),
        reasons=(_grants(principal), _filters_text(filters)[:500]),
    )
    append(session, principal=principal, act=act, clock=clock)
    return AlertPage(page, offset, limit, more=len(found) > offset + limit)


def triage(
    session: Session, principal: Principal, *, alert_id: str, status: object, clock: Clock
) -> Alert:
    """The officer sets an alert's status (`alerts.set_status`, which ledgers the change);
    another role's attempt is refused and ledgered."""
    _require_officer(principal, clock=clock, action=Action.ALERT_UPDATE, alert_id=alert_id)
    return alerts.set_status(session, principal, alert_id=alert_id, status=status, clock=clock)

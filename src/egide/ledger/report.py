"""The patient's access report: every access to one patient's record, read from the ledger.

GDPR article 15 gives patients the right to know who processed their data; French law (Code
de la santé publique L.1110-4) expects traceability of every access to a medical record. The
report says, for each access: who (name, role, department), when, what (resource types and
action), why (the access decision's reasons, the stated purpose or break-the-glass reason) and
from where (coarse: on the server, inside the clinic's network, outside). Addresses are never
shown in full: the patient learns enough to recognise an abnormal access, not staff's devices.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from egide.core.clock import Clock
from egide.core.principal import Principal
from egide.ledger.auditevent import audit_event
from egide.ledger.models import LedgerEntry
from egide.ledger.service import Act, Action, append


@dataclass(frozen=True)
class Person:
    """How an acting account is shown to the patient."""

    name: str
    role: str
    department: str | None = None


@dataclass(frozen=True)
class AccessLine:
    entry_id: str
    time: dt.datetime
    who: str
    role: str
    department: str
    action: str
    what: str
    count: int
    why: str
    where: str
    outcome: str
    # Opened in an emergency: the break-the-glass grant itself, or an act it alone allowed
    # (issue 5, item 5: it "shows in the patient's access report").
    emergency: bool = False


@dataclass(frozen=True)
class AccessReport:
    patient_id: str
    generated: dt.datetime
    lines: tuple[AccessLine, ...]

    @property
    def people(self) -> int:
        return len({(line.who, line.role) for line in self.lines})


PeopleLookup = Callable[[str | None, str | None], Person]
MAX_REPORT_LINES = 5000  # the most recent accesses shown; `egide ledger export` has them all

_ACTIONS = {
    "break_glass": "opened in an emergency (break-the-glass)",
    "create": "added",
    "delete": "deleted",
    "export": "exported",
    "read": "read",
    "search": "found in a search",
    "update": "changed",
}
_ROLES = {
    "admin": "administrator",
    "dpo": "data-protection officer",
    "lab": "laboratory",
    "nurse": "nurse",
    "patient": "patient",
    "pharmacist": "pharmacist",
    "physician": "physician",
    "radiology": "radiology",
    "researcher": "researcher",
    "resident": "resident physician",
    "secretary": "medical secretary",
    "security_officer": "security officer",
    "service": "connected system",
}
_OUTCOMES = {"success": "done", "denied": "refused", "error": "failed"}
_EMERGENCY_ACTIONS = frozenset({"break_glass", "break_glass_end"})
# An act allowed only by an emergency grant has that grant's reason as its purpose, which the
# access policy words "a break-the-glass grant (grant/<id>) links them to this patient: ..."
# (access.relationships; this room may not import that one). A test holds the two together.
EMERGENCY_PURPOSE_MARK = "break-the-glass grant"


def coarse_location(ip: str | None) -> str:
    """Where an access came from, coarsely (never the address itself)."""
    if not ip:
        return "not recorded"
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return "not recorded"
    if address.is_loopback:
        return "on the server itself"
    if address.is_private or address.is_link_local:
        return "inside the clinic's network"
    return "from outside the clinic's network"


def role_label(role: str | None) -> str:
    return _ROLES.get(role or "", role or "unknown")


def default_person(user: str | None, role: str | None) -> Person:
    if user and user.startswith("system:"):
        return Person(f"automatic job ({user.removeprefix('system:')})", "system")
    return Person(user or "unknown", role_label(role))


def _why(reasons: list[str], purpose: str | None) -> str:
    parts = [purpose] if purpose else []
    parts.extend(r for r in reasons if r != purpose)
    return "; ".join(parts) or "no reason recorded"


def is_emergency(action: str, purpose: str | None) -> bool:
    """Whether an entry is a break-the-glass grant or an act only such a grant allowed."""
    return action in _EMERGENCY_ACTIONS or EMERGENCY_PURPOSE_MARK in (purpose or "")


def build_report(
    session: Session,
    *,
    patient_id: str,
    now: dt.datetime,
    people: PeopleLookup | None = None,
    limit: int = 0,
) -> AccessReport:
    """Every ledger entry about `patient_id`, oldest first, in words a patient understands."""
    lookup = people or default_person
    limit = limit or MAX_REPORT_LINES
    lines: list[AccessLine] = []
    # The most recent `limit` accesses: a report must stay cheap to make however busy the
    # record (each request for it is itself an access that the next report lists).
    rows = session.scalars(
        select(LedgerEntry)
        .where(LedgerEntry.patient == patient_id)
        .order_by(LedgerEntry.seq.desc())
        .limit(limit)
    ).all()
    for row in reversed(rows):
        person = lookup(row.user, row.role)
        lines.append(
            AccessLine(
                entry_id=row.id,
                time=row.time,
                who=person.name,
                role=person.role,
                department=person.department or "—",
                action=_ACTIONS.get(row.action, row.action.replace("_", " ")),
                what=row.resource_type or "record",
                count=row.count,
                why=_why(row.reasons, row.purpose),
                where=coarse_location(row.ip),
                outcome=_OUTCOMES.get(row.outcome, row.outcome),
                emergency=is_emergency(row.action, row.purpose),
            )
        )
    return AccessReport(patient_id=patient_id, generated=now, lines=tuple(lines))


def _redacted(event: dict[str, Any], lookup: PeopleLookup) -> dict[str, Any]:
    """An entry as the patient may see it: the acting person's name and role instead of their
    account id, the coarse location instead of the address, no workstation, no request id."""
    person = lookup(event.get("user"), event.get("role"))
    return {
        **event,
        "user": person.name,
        "role": person.role,
        "ip": None,
        "device": None,
        "request_id": None,
        "purpose": "; ".join(
            p for p in (event.get("purpose"), coarse_location(event.get("ip"))) if p
        ),
    }


def report_bundle(
    session: Session,
    *,
    patient_id: str,
    now: dt.datetime,
    people: PeopleLookup | None = None,
    limit: int = MAX_REPORT_LINES,
) -> dict[str, Any]:
    """The same report as a FHIR R4 Bundle (type collection) of IHE BALP AuditEvents, redacted
    the same way as the other formats (no address, workstation or account id)."""
    lookup = people or default_person
    rows = session.scalars(
        select(LedgerEntry)
        .where(LedgerEntry.patient == patient_id)
        .order_by(LedgerEntry.seq.desc())
        .limit(limit)
    ).all()
    events = [
        _redacted({**json.loads(row.canonical), "seq": row.seq}, lookup) for row in reversed(rows)
    ]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": now.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "entry": [
            {"fullUrl": f"urn:uuid:{event['id']}", "resource": audit_event(event)}
            for event in events
        ],
    }


def produce_report(
    session: Session,
    *,
    principal: Principal,
    patient_id: str,
    fmt: str,
    clock: Clock,
    people: PeopleLookup | None = None,
    reasons: tuple[str, ...] = (),
) -> tuple[AccessReport, dict[str, Any] | None]:
    """Build the report (and its FHIR Bundle when `fmt` is "fhir") and audit the request in the
    same transaction: asking who accessed a record is itself an access to it (contract 2)."""
    now = clock.now()
    report = build_report(session, patient_id=patient_id, now=now, people=people)
    bundle = None
    if fmt == "fhir":
        bundle = report_bundle(session, patient_id=patient_id, now=now, people=people)
    append(
        session,
        principal=principal,
        clock=clock,
        act=Act(
            Action.EXPORT,
            patient=patient_id,
            count=len(report.lines),
            purpose="patient access report",
            reasons=(*reasons, f"format {fmt}"),
        ),
    )
    return report, bundle


def report_document(report: AccessReport) -> dict[str, Any]:
    """The report as plain JSON (the `json` format of the API and the CLI)."""
    return {
        "patient": report.patient_id,
        "generated": report.generated.isoformat().replace("+00:00", "Z"),
        "accesses": [
            {**dataclasses.asdict(line), "time": line.time.isoformat().replace("+00:00", "Z")}
            for line in report.lines
        ],
    }

"""Who the patients and the staff are, for behavioural detection: names, addresses and flags.

Security role: the detectors match a user's family name and address against the patient's
(a relative, a neighbour), and treat VIPs and coworkers apart. That needs the clear text of
Patient and Practitioner resources, which are sealed at rest. This is the privileged path that
opens them for detection and nothing else: it returns only the few fields detection compares,
keeps nothing, and appends one ledger entry per call saying how many records it opened and why
(DESIGN.md, contract 2: no read without its audit), so the patients' access reports show it.

Flags come from FHIR R4 security labels (`meta.security`, HL7 v3 ActCode,
ActInformationSensitivityPolicy): `CEL` (celebrity) or a `VIP` code marks a public figure,
`EMP` (employee) a coworker's record.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from egide.core.clock import Clock
from egide.core.principal import Principal
from egide.crypto.errors import CryptoError
from egide.ledger.service import Act, Action, append
from egide.records.links import security_codes
from egide.records.models import ResourceHead, ResourceVersion
from egide.records.repository import RecordServices, _aad

VIP_CODES = frozenset({"CEL", "VIP"})
EMPLOYEE_CODES = frozenset({"EMP"})
PURPOSE = "behavioural detection (names and addresses compared, nothing kept)"


@dataclass(frozen=True, slots=True)
class Person:
    """The fields detection compares, of one Patient or Practitioner."""

    resource_type: str
    id: str
    family_name: str | None
    given_names: str | None
    postal_code: str | None
    address: str | None
    vip: bool = False
    employee: bool = False
    deceased: bool = False


def _first(items: object, prefer: str) -> dict[str, Any] | None:
    """The entry of a FHIR list whose `use` is `prefer`, else the first."""
    if not isinstance(items, list):
        return None
    found = [i for i in items if isinstance(i, dict)]
    for item in found:
        if item.get("use") == prefer:
            return item
    return found[0] if found else None


def person_of(resource: dict[str, Any], resource_type: str, resource_id: str) -> Person:
    """The compared fields of a Patient or Practitioner resource (FHIR R4 HumanName,
    Address)."""
    name = _first(resource.get("name"), "official") or {}
    family = name.get("family")
    given = name.get("given")
    address = _first(resource.get("address"), "home") or {}
    lines = [str(x) for x in address.get("line", []) if isinstance(x, str)]
    city = address.get("city")
    text = ", ".join([*lines, *([city] if isinstance(city, str) else [])]) or None
    postal = address.get("postalCode")
    codes = set(security_codes(resource))
    deceased = resource.get("deceasedBoolean") is True or "deceasedDateTime" in resource
    return Person(
        resource_type=resource_type,
        id=resource_id,
        family_name=family if isinstance(family, str) else None,
        given_names=" ".join(g for g in given if isinstance(g, str))
        if isinstance(given, list)
        else None,
        postal_code=postal if isinstance(postal, str) else None,
        address=text,
        vip=bool(codes & VIP_CODES),
        employee=bool(codes & EMPLOYEE_CODES),
        deceased=deceased,
    )


def _current(
    session: Session, resource_type: str, ids: Iterable[str] | None
) -> Iterator[ResourceVersion]:
    stmt = (
        select(ResourceVersion)
        .join(
            ResourceHead,
            and_(
                ResourceHead.resource_type == ResourceVersion.resource_type,
                ResourceHead.id == ResourceVersion.id,
                ResourceHead.version == ResourceVersion.version,
            ),
        )
        .where(ResourceHead.resource_type == resource_type, ResourceHead.deleted.is_(False))
    )
    if ids is not None:
        wanted = sorted(set(ids))
        if not wanted:
            return
        stmt = stmt.where(ResourceHead.id.in_(wanted))
    yield from session.scalars(stmt.order_by(ResourceVersion.id)).yield_per(500)


def people_for_detection(
    session: Session,
    services: RecordServices,
    *,
    principal: Principal,
    clock: Clock,
    resource_type: str,
    ids: Iterable[str] | None = None,
) -> list[Person]:
    """The current Patient (or Practitioner) resources, all or those in `ids`, as Persons;
    erased or unreadable ones are left out (a shredded key means the data no longer exists).
    One ledger entry records the read: how many, by whom, for what."""
    people: list[Person] = []
    for row in _current(session, resource_type, ids):
        if row.body is None:
            continue
        try:
            clear = services.envelope.open(
                session,
                owner=row.key_owner,
                sealed=row.body,
                aad=_aad(row.resource_type, row.id, row.version, row.patient_id),
            )
        except CryptoError:
            continue  # erased (key shredded) or failing its integrity check: not used
        people.append(person_of(json.loads(clear), resource_type, row.id))
    if people:
        append(
            session,
            principal=principal,
            clock=clock,
            act=Act(
                Action.READ,
                resource_type=resource_type,
                count=len(people),
                purpose=PURPOSE,
                reasons=(f"{len(people)} {resource_type} names and addresses for detection",),
            ),
        )
    return people

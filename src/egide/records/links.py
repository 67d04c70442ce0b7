"""Care links, memberships and consent rules, read from the FHIR resources as they are written.

Security role: this is how access follows the clinical data (issue 5, item 3). When an
Encounter, EpisodeOfCare, Appointment, CareTeam, order (ServiceRequest, MedicationRequest),
guardian's RelatedPerson, PractitionerRole, Patient or Consent is written, its links are
rebuilt in the same transaction, so admitting, discharging, booking, adding to a care team,
completing an order or withdrawing consent changes who may read the record at once. The
access policy (`access.relationships`, `access.policy`) decides what the links give.

Statuses follow FHIR R4 value sets: an entered-in-error or cancelled resource links nobody.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from egide.access.relationships import LinkKind
from egide.fhir.references import parse_reference

# FHIR R4 status codes under which a resource still says "this person treats this patient".
_ENCOUNTER_LIVE = frozenset({"planned", "arrived", "triaged", "in-progress", "onleave", "finished"})
_EPISODE_LIVE = frozenset({"planned", "waitlist", "active", "onhold", "finished"})
_APPOINTMENT_LIVE = frozenset(
    {"proposed", "pending", "booked", "arrived", "fulfilled", "checked-in", "waitlist"}
)
_CARE_TEAM_LIVE = frozenset({"proposed", "active"})
_ORDER_LIVE = frozenset({"active", "on-hold"})
# HL7 v3 RoleCode: parents and guardians, who act for a minor (issue 5, item 2).
GUARDIAN_CODES = frozenset(
    {
        "ADOPTF",
        "ADOPTM",
        "ADOPTP",
        "FTH",
        "GUARD",
        "MTH",
        "NFTH",
        "NMTH",
        "NPRN",
        "PRN",
        "STPFTH",
        "STPMTH",
        "STPPRN",
    }
)
# ServiceRequest.category: SNOMED CT 108252007 "Laboratory procedure", 363679005 "Imaging".
_LAB_CATEGORIES = frozenset({"108252007", "laboratory", "LAB"})
_IMAGING_CATEGORIES = frozenset({"363679005", "imaging", "RAD"})
_PEOPLE = ("Practitioner", "PractitionerRole")
_ALL_LABELS = b"*"

# The resource types whose writes rebuild links (anything else has none).
LINKED_TYPES = frozenset(
    {
        "Appointment",
        "CareTeam",
        "Consent",
        "Encounter",
        "EpisodeOfCare",
        "MedicationRequest",
        "Patient",
        "PractitionerRole",
        "RelatedPerson",
        "ServiceRequest",
    }
)


@dataclass(frozen=True)
class LinkRow:
    kind: LinkKind
    actor: str
    valid_from: dt.datetime | None
    valid_to: dt.datetime | None


@dataclass(frozen=True)
class MemberRow:
    member: str
    group: str
    valid_from: dt.datetime | None
    valid_to: dt.datetime | None


@dataclass(frozen=True)
class RuleRow:
    kind: str  # "deny" or "research"
    actor: str | None
    label: bytes | None
    valid_from: dt.datetime | None
    valid_to: dt.datetime | None


@dataclass(frozen=True)
class Extracted:
    links: tuple[LinkRow, ...] = ()
    members: tuple[MemberRow, ...] = ()
    rules: tuple[RuleRow, ...] = ()


def _time(value: object) -> dt.datetime | None:
    """A FHIR dateTime or instant as an aware UTC datetime; a bare date is its midnight UTC."""
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    try:
        if len(text) == 4:
            parsed = dt.datetime(int(text), 1, 1, tzinfo=dt.UTC)
        elif len(text) == 7:
            parsed = dt.datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=dt.UTC)
        else:
            parsed = dt.datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        # 9999-12-31T23:59:59-05:00 is a valid FHIR dateTime past datetime.max in UTC.
        return parsed.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        return None


def _period(value: object) -> tuple[dt.datetime | None, dt.datetime | None]:
    if not isinstance(value, dict):
        return None, None
    return _time(value.get("start")), _time(value.get("end"))


def _ref(value: object, types: Iterable[str]) -> str | None:
    """`Type/id` of a local reference whose type is one of `types`."""
    if not isinstance(value, dict):
        return None
    reference = value.get("reference")
    if not isinstance(reference, str) or "://" in reference:
        return None
    parsed = parse_reference(reference)
    if parsed is None or parsed[0] not in types:
        return None
    return f"{parsed[0]}/{parsed[1]}"


def _live(resource: dict[str, Any], statuses: frozenset[str]) -> bool:
    # A status that is not a string (a list, an object) is no status: it links nobody.
    status = resource.get("status")
    return isinstance(status, str) and status in statuses


def _items(value: object) -> Iterator[dict[str, Any]]:
    if isinstance(value, list):
        yield from (item for item in value if isinstance(item, dict))


def _codes(concepts: object) -> set[str]:
    codes: set[str] = set()
    for concept in _items(concepts):
        codes.update(str(c.get("code")) for c in _items(concept.get("coding")) if c.get("code"))
    return codes


def _care(
    kind: LinkKind, actors: Iterable[str | None], start: dt.datetime | None, end: dt.datetime | None
) -> tuple[LinkRow, ...]:
    return tuple(
        LinkRow(kind, actor, start, end) for actor in dict.fromkeys(a for a in actors if a)
    )


def _encounter(resource: dict[str, Any], now: dt.datetime) -> Extracted:
    status = resource.get("status")
    if not _live(resource, _ENCOUNTER_LIVE):
        return Extracted()
    start, end = _period(resource.get("period"))
    if status == "finished" and end is None:
        # Discharged without an end time: the grace period runs from the start. Never from
        # "now", which every re-save would move forward and so renew the link.
        if start is None:
            return Extracted()
        end = start
    del now
    actors = [_ref(p.get("individual"), _PEOPLE) for p in _items(resource.get("participant"))]
    actors.append(_ref(resource.get("serviceProvider"), ("Organization",)))
    return Extracted(links=_care(LinkKind.ENCOUNTER, actors, start, end))


def _episode(resource: dict[str, Any], now: dt.datetime) -> Extracted:
    status = resource.get("status")
    if not _live(resource, _EPISODE_LIVE):
        return Extracted()
    start, end = _period(resource.get("period"))
    if status == "finished" and end is None:
        if start is None:  # see _encounter: never from "now"
            return Extracted()
        end = start
    del now
    actors = [
        _ref(resource.get("careManager"), _PEOPLE),
        _ref(resource.get("managingOrganization"), ("Organization",)),
    ]
    return Extracted(links=_care(LinkKind.EPISODE, actors, start, end))


def _appointment(resource: dict[str, Any], now: dt.datetime) -> Extracted:
    del now
    if not _live(resource, _APPOINTMENT_LIVE):
        return Extracted()
    start, end = _time(resource.get("start")), _time(resource.get("end"))
    if start is None:
        # A proposal with no date yet links nobody: it would otherwise hold for ever.
        return Extracted()
    actors = [
        _ref(p.get("actor"), (*_PEOPLE, "Organization"))
        for p in _items(resource.get("participant"))
        if p.get("status") != "declined"
    ]
    return Extracted(links=_care(LinkKind.APPOINTMENT, actors, start, end or start))


def _care_team(resource: dict[str, Any], now: dt.datetime) -> Extracted:
    del now
    if not _live(resource, _CARE_TEAM_LIVE):
        return Extracted()
    start, end = _period(resource.get("period"))
    rows: list[LinkRow] = []
    for participant in _items(resource.get("participant")):
        actor = _ref(participant.get("member"), (*_PEOPLE, "Organization"))
        if actor is None:
            continue
        own_start, own_end = _period(participant.get("period"))
        rows.append(LinkRow(LinkKind.CARE_TEAM, actor, own_start or start, own_end or end))
    for organisation in _items(resource.get("managingOrganization")):
        actor = _ref(organisation, ("Organization",))
        if actor is not None:
            rows.append(LinkRow(LinkKind.CARE_TEAM, actor, start, end))
    return Extracted(links=tuple(dict.fromkeys(rows)))


def _order_actors(performers: Iterable[object]) -> list[str]:
    actors = [a for a in (_ref(p, (*_PEOPLE, "Organization")) for p in performers) if a]
    # No named performer: whoever works in the service the order is for (its role).
    return actors or ["*"]


def _service_request(resource: dict[str, Any], now: dt.datetime) -> Extracted:
    del now
    if not _live(resource, _ORDER_LIVE):
        return Extracted()
    categories = _codes(resource.get("category"))
    kinds = []
    if categories & _LAB_CATEGORIES:
        kinds.append(LinkKind.ORDER_LAB)
    if categories & _IMAGING_CATEGORIES:
        kinds.append(LinkKind.ORDER_IMAGING)
    actors = _order_actors(_items(resource.get("performer")))
    return Extracted(
        links=tuple(LinkRow(kind, actor, None, None) for kind in kinds for actor in actors)
    )


def _medication_request(resource: dict[str, Any], now: dt.datetime) -> Extracted:
    del now
    if not _live(resource, _ORDER_LIVE):
        return Extracted()
    performers: list[object] = [resource.get("performer")]
    dispense = resource.get("dispenseRequest")
    if isinstance(dispense, dict):
        performers.append(dispense.get("performer"))
    actors = _order_actors(p for p in performers if p is not None)
    return Extracted(links=tuple(LinkRow(LinkKind.ORDER_MEDICATION, a, None, None) for a in actors))


def _related_person(
    resource: dict[str, Any], resource_id: str, *, trusted: bool, majority: dt.datetime | None
) -> Extracted:
    """A parent or guardian acting for a minor (issue 5, item 2). Only a trusted writer (the
    identity-verified registry feeding Égide as a `service`) can make one: a desk that could
    name anyone a guardian could open anyone's record. The link ends at the ward's majority
    (18 years after their birth date; no known birth date, no link) or the period's end."""
    if not trusted or majority is None or resource.get("active") is False:
        return Extracted()
    if not _codes(resource.get("relationship")) & GUARDIAN_CODES:
        return Extracted()
    start, end = _period(resource.get("period"))
    end = majority if end is None else min(end, majority)
    actor = f"RelatedPerson/{resource_id}"
    return Extracted(links=(LinkRow(LinkKind.GUARDIAN, actor, start, end),))


def _practitioner_role(resource: dict[str, Any], resource_id: str) -> Extracted:
    if resource.get("active") is False:
        return Extracted()
    member = _ref(resource.get("practitioner"), ("Practitioner",))
    if member is None:
        return Extracted()
    start, end = _period(resource.get("period"))
    groups = [f"PractitionerRole/{resource_id}"]
    organisation = _ref(resource.get("organization"), ("Organization",))
    if organisation is not None:
        groups.append(organisation)
    return Extracted(members=tuple(MemberRow(member, g, start, end) for g in groups))


def _patient(resource: dict[str, Any], resource_id: str, *, trusted: bool) -> Extracted:
    # Patient.link.other may name the RelatedPerson this patient also is (R4 Patient.link,
    # "seealso"): a patient account then acts as that guardian too. Trusted writers only, as
    # for the guardian link itself.
    if not trusted:
        return Extracted()
    members = [
        MemberRow(f"Patient/{resource_id}", group, None, None)
        for link in _items(resource.get("link"))
        if (group := _ref(link.get("other"), ("RelatedPerson",))) is not None
    ]
    return Extracted(members=tuple(members))


def _consent(resource: dict[str, Any], label_token: Callable[[str], bytes]) -> Extracted:
    """FHIR R4 Consent (issue 5, item 4): deny provisions naming actors, security labels or
    the research purpose. Only `active` consents bind; a later `inactive` version withdraws."""
    if resource.get("status") != "active":
        return Extracted()
    scope = _codes([resource.get("scope")] if resource.get("scope") else [])
    research_scope = "research" in scope
    rules: list[RuleRow] = []

    def walk(provision: object, inherited: tuple[dt.datetime | None, dt.datetime | None]) -> None:
        if not isinstance(provision, dict):
            return
        start, end = _period(provision.get("period"))
        period = (start or inherited[0], end or inherited[1])
        if provision.get("type") == "deny":
            purposes = {str(p.get("code")) for p in _items(provision.get("purpose"))}
            labels = [
                str(c["code"]) for c in _items(provision.get("securityLabel")) if c.get("code")
            ]
            actors = [_consent_actor(a) for a in _items(provision.get("actor"))]
            named = [a for a in actors if a]
            tokens: list[bytes | None] = [label_token(code) for code in labels if code]
            if research_scope or purposes & {"HRESCH", "CLINTRCH"}:
                rules.append(RuleRow("research", None, None, *period))
            elif named:
                for actor in named:
                    rules.extend(RuleRow("deny", actor, t, *period) for t in tokens or [None])
            else:
                # No actor: restricted to the treating team; no label either: all of it.
                rules.extend(RuleRow("deny", None, t, *period) for t in tokens or [_ALL_LABELS])
        for child in _items(provision.get("provision")):
            walk(child, period)

    walk(resource.get("provision"), (None, None))
    return Extracted(rules=tuple(dict.fromkeys(rules)))


_CONSENT_ACTORS = (*_PEOPLE, "Organization", "RelatedPerson")


def _consent_actor(actor: dict[str, Any]) -> str | None:
    """A Consent actor's `Type/id`. An absolute URL is read by its last two segments: a
    refusal is the safe side to err on (a foreign Practitioner/x taken for ours refuses ours
    too), unlike a care link, where the same reading would grant."""
    value = actor.get("reference")
    if not isinstance(value, dict):
        return None
    reference = value.get("reference")
    if isinstance(reference, str) and "://" in reference:
        parts = reference.rstrip("/").split("/")
        if "_history" in parts:
            parts = parts[: parts.index("_history")]
        if len(parts) >= 2 and parts[-2] in _CONSENT_ACTORS and parts[-1]:
            return f"{parts[-2]}/{parts[-1]}"
        return None
    return _ref(value, _CONSENT_ACTORS)


def consent_problems(resource: dict[str, Any]) -> list[str]:
    """Why a Consent cannot be enforced as written (422): a deny naming someone Égide cannot
    identify would otherwise silently mean something else."""
    problems: list[str] = []

    def walk(provision: object, path: str) -> None:
        if not isinstance(provision, dict):
            return
        if provision.get("type") == "deny":
            for i, actor in enumerate(_items(provision.get("actor"))):
                if _consent_actor(actor) is None:
                    problems.append(
                        f"{path}.actor[{i}].reference must be a literal reference to a "
                        "Practitioner, PractitionerRole, Organization or RelatedPerson"
                    )
        for i, child in enumerate(_items(provision.get("provision"))):
            walk(child, f"{path}.provision[{i}]")

    walk(resource.get("provision"), "Consent.provision")
    return problems


def extract(
    resource_type: str,
    resource_id: str,
    resource: dict[str, Any] | None,
    *,
    now: dt.datetime,
    label_token: Callable[[str], bytes],
    trusted: bool = False,
    majority: dt.datetime | None = None,
) -> Extracted:
    """The links, memberships and consent rules `resource` states (None: it was deleted).

    `trusted`: written by a `service` (the registry), which alone may state guardianship;
    `majority`: for a RelatedPerson, when its ward comes of age."""
    if resource is None:
        return Extracted()
    by_time = {
        "Appointment": _appointment,
        "CareTeam": _care_team,
        "Encounter": _encounter,
        "EpisodeOfCare": _episode,
        "MedicationRequest": _medication_request,
        "ServiceRequest": _service_request,
    }
    if resource_type in by_time:
        return by_time[resource_type](resource, now)
    if resource_type == "RelatedPerson":
        return _related_person(resource, resource_id, trusted=trusted, majority=majority)
    if resource_type == "PractitionerRole":
        return _practitioner_role(resource, resource_id)
    if resource_type == "Patient":
        return _patient(resource, resource_id, trusted=trusted)
    if resource_type == "Consent":
        return _consent(resource, label_token)
    return Extracted()


def security_codes(resource: dict[str, Any]) -> list[str]:
    """The codes of `meta.security` (FHIR R4 security labels: confidentiality, sensitivity)."""
    meta = resource.get("meta")
    if not isinstance(meta, dict):
        return []
    return [str(c["code"]) for c in _items(meta.get("security")) if c.get("code")]

"""Care relationships: which links between a person and a patient count, and when.

Pure (no I/O). The records room extracts *links* from the FHIR resources it stores (an
Encounter's participants and service provider, an EpisodeOfCare's care manager and managing
organisation, an Appointment's participants, a CareTeam's members, an active order's
performer, a guardian's RelatedPerson) and from explicit grants (an assignment,
break-the-glass, an investigation); this module says which of those links are active at a given
time and what *relationship* each gives a principal of a given role. So access follows the
clinical data itself (issue 5, item 3): admit a patient and their ward reaches the record;
discharge them and, after the grace period, it no longer does.

Actors are FHIR references (`Practitioner/p1`, `Organization/cardio`, `RelatedPerson/r1`) or
`user:<account id>` for grants made to an account; `*` on an order link means "whoever holds
the role the order is for" (an order with no named performer).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from egide.access.permissions import Role


class LinkKind(StrEnum):
    """Where a link comes from, alphabetised."""

    APPOINTMENT = "appointment"
    ASSIGNMENT = "assignment"  # an explicit assignment by an administrator
    BREAK_GLASS = "break_glass"
    CARE_TEAM = "care_team"
    ENCOUNTER = "encounter"
    EPISODE = "episode"
    GUARDIAN = "guardian"  # RelatedPerson with a parent or guardian relationship
    INVESTIGATION = "investigation"  # a security officer's grant for one incident
    ORDER_IMAGING = "order_imaging"
    ORDER_LAB = "order_lab"
    ORDER_MEDICATION = "order_medication"


class Relationship(StrEnum):
    """What ties a principal to a patient, as the policy sees it, alphabetised."""

    ANY = "any"  # no relationship needed (a rule that applies to every patient)
    BREAK_GLASS = "break_glass"
    DEPARTMENT = "department"  # an active stay or care team of the principal's department
    GUARDIAN = "guardian"
    INVESTIGATION = "investigation"
    ORDER = "order"  # an active order for the principal's service (lab, imaging, pharmacy)
    OWN = "own"  # the patient themself
    PERSONAL = "personal"  # named on the Encounter, Appointment, CareTeam, or assigned


# The relationships a treating team holds: consent restricting a sensitive category "to the
# treating team" (issue 5, item 4) lets these through, and not a department-wide link.
TREATING_TEAM = frozenset({Relationship.PERSONAL, Relationship.OWN, Relationship.GUARDIAN})

_CARE_KINDS = frozenset(
    {
        LinkKind.APPOINTMENT,
        LinkKind.ASSIGNMENT,
        LinkKind.CARE_TEAM,
        LinkKind.ENCOUNTER,
        LinkKind.EPISODE,
    }
)
_ORDER_KIND_OF_ROLE = {
    Role.LAB: LinkKind.ORDER_LAB,
    Role.PHARMACIST: LinkKind.ORDER_MEDICATION,
    Role.RADIOLOGY: LinkKind.ORDER_IMAGING,
}
# The roles care links give relationships to (and whose writes could hand them one).
CLINICIANS = frozenset({Role.NURSE, Role.PHYSICIAN, Role.RESIDENT})
# Links that end with the stay and then hold for the grace period.
_GRACED = frozenset(
    {LinkKind.APPOINTMENT, LinkKind.CARE_TEAM, LinkKind.ENCOUNTER, LinkKind.EPISODE}
)


@dataclass(frozen=True)
class Windows:
    """How long links hold around their period (issue 5, item 3)."""

    care_grace: dt.timedelta = dt.timedelta(days=30)  # after discharge or the end of care
    appointment_lead: dt.timedelta = dt.timedelta(days=7)  # to prepare a planned visit

    def lead(self, kind: LinkKind) -> dt.timedelta:
        return self.appointment_lead if kind is LinkKind.APPOINTMENT else dt.timedelta(0)

    def grace(self, kind: LinkKind) -> dt.timedelta:
        return self.care_grace if kind in _GRACED else dt.timedelta(0)


@dataclass(frozen=True)
class Link:
    """One link between an actor and a patient, as the records room stored it."""

    kind: LinkKind
    actor: str
    valid_from: dt.datetime | None  # None: since always
    valid_to: dt.datetime | None  # None: ongoing
    source: str  # what made it: "Encounter/123", "grant/<id>"
    reason: str = ""  # for grants: the stated reason (break-the-glass, investigation)


@dataclass(frozen=True)
class CareFact:
    """A relationship that holds now, and the plain sentence that says why."""

    relationship: Relationship
    reason: str
    source: str = ""


def is_active(link: Link, now: dt.datetime, windows: Windows) -> bool:
    # The windows move `now`, not the link's bounds: an open-ended end such as 9999-12-31
    # plus the grace would overflow (and this is the SQL filter's form in records.visibility).
    if link.valid_from is not None and link.valid_from > now + windows.lead(link.kind):
        return False
    return link.valid_to is None or link.valid_to >= now - windows.grace(link.kind)


def relationship_of(role: Role, link: Link, actors: frozenset[str]) -> Relationship | None:
    """The relationship `link` gives a principal of `role` whose actors are `actors`, if any."""
    if link.kind in _CARE_KINDS:
        if role not in CLINICIANS or link.actor not in actors:
            return None
        return (
            Relationship.DEPARTMENT
            if link.actor.startswith("Organization/")
            else Relationship.PERSONAL
        )
    if link.kind is LinkKind.GUARDIAN:
        return Relationship.GUARDIAN if role is Role.PATIENT and link.actor in actors else None
    if link.kind is LinkKind.BREAK_GLASS:
        return Relationship.BREAK_GLASS if link.actor in actors else None
    if link.kind is LinkKind.INVESTIGATION:
        ok = role is Role.SECURITY_OFFICER and link.actor in actors
        return Relationship.INVESTIGATION if ok else None
    if _ORDER_KIND_OF_ROLE.get(role) is link.kind and (link.actor == "*" or link.actor in actors):
        return Relationship.ORDER
    return None


def link_kinds_for(role: Role) -> frozenset[LinkKind]:
    """The link kinds that can ever give `role` a relationship (the SQL filter's shortlist)."""
    kinds: set[LinkKind] = {LinkKind.BREAK_GLASS}
    if role in CLINICIANS:
        kinds |= _CARE_KINDS
    if role is Role.PATIENT:
        kinds.add(LinkKind.GUARDIAN)
    if role is Role.SECURITY_OFFICER:
        kinds.add(LinkKind.INVESTIGATION)
    if role in _ORDER_KIND_OF_ROLE:
        kinds.add(_ORDER_KIND_OF_ROLE[role])
    return frozenset(kinds)


_DESCRIBE = {
    LinkKind.APPOINTMENT: "an appointment",
    LinkKind.ASSIGNMENT: "an explicit assignment",
    LinkKind.BREAK_GLASS: "a break-the-glass grant",
    LinkKind.CARE_TEAM: "care-team membership",
    LinkKind.ENCOUNTER: "an encounter",
    LinkKind.EPISODE: "an episode of care",
    LinkKind.GUARDIAN: "a guardian relationship",
    LinkKind.INVESTIGATION: "an investigation grant",
    LinkKind.ORDER_IMAGING: "an active imaging order",
    LinkKind.ORDER_LAB: "an active laboratory order",
    LinkKind.ORDER_MEDICATION: "an active medication order",
}


def care_facts(
    role: Role,
    links: Iterable[Link],
    *,
    actors: frozenset[str],
    now: dt.datetime,
    windows: Windows,
) -> tuple[CareFact, ...]:
    """The relationships `links` give now, each with its reason (for the ledger entry)."""
    facts: list[CareFact] = []
    for link in links:
        if not is_active(link, now, windows):
            continue
        relationship = relationship_of(role, link, actors)
        if relationship is None:
            continue
        via = "their department" if relationship is Relationship.DEPARTMENT else "them"
        reason = f"{_DESCRIBE[link.kind]} ({link.source}) links {via} to this patient"
        if link.reason:
            reason += f": {link.reason}"
        facts.append(CareFact(relationship, reason, link.source))
    return tuple(facts)


@dataclass(frozen=True)
class LinkRequirement:
    """Links of these kinds whose actor is one of these give the relationship (for SQL)."""

    kinds: frozenset[LinkKind]
    actors: frozenset[str]


def requirements(
    role: Role, relationship: Relationship, actors: frozenset[str]
) -> tuple[LinkRequirement, ...]:
    """The links that give `role` (acting as `actors`) `relationship`: the same rule as
    `relationship_of`, in the form the records room's SQL filter needs (a test holds them
    equal for random links)."""
    people = frozenset(a for a in actors if not a.startswith("Organization/"))
    departments = actors - people
    if relationship is Relationship.PERSONAL and role in CLINICIANS:
        return (LinkRequirement(_CARE_KINDS, people),)
    if relationship is Relationship.DEPARTMENT and role in CLINICIANS:
        return (LinkRequirement(_CARE_KINDS, departments),)
    if relationship is Relationship.GUARDIAN and role is Role.PATIENT:
        return (LinkRequirement(frozenset({LinkKind.GUARDIAN}), actors),)
    if relationship is Relationship.BREAK_GLASS:
        return (LinkRequirement(frozenset({LinkKind.BREAK_GLASS}), actors),)
    if relationship is Relationship.INVESTIGATION and role is Role.SECURITY_OFFICER:
        return (LinkRequirement(frozenset({LinkKind.INVESTIGATION}), actors),)
    if relationship is Relationship.ORDER and role in _ORDER_KIND_OF_ROLE:
        return (LinkRequirement(frozenset({_ORDER_KIND_OF_ROLE[role]}), actors | {"*"}),)
    return ()

"""Care relationships (access.relationships): which links count, for whom, and when.

`relationship_of` decides one link for `decide`; `requirements` says the same thing as a
shortlist of link kinds and actors for the records room's SQL filter (records.visibility), and
`is_active` has an SQL twin there too. If they drift apart, a search returns rows a read would
refuse (or hides rows a read allows): the Hypothesis tests below hold them equal for random
links, actors and roles, and the window edges are tested to the microsecond.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from egide.access.permissions import Role
from egide.access.relationships import (
    TREATING_TEAM,
    Link,
    LinkKind,
    Relationship,
    Windows,
    care_facts,
    is_active,
    link_kinds_for,
    relationship_of,
    requirements,
)

NOW = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)
TICK = dt.timedelta(microseconds=1)
WINDOWS = Windows()
CLINICIANS = {Role.NURSE, Role.PHYSICIAN, Role.RESIDENT}
CARE = {
    LinkKind.APPOINTMENT,
    LinkKind.ASSIGNMENT,
    LinkKind.CARE_TEAM,
    LinkKind.ENCOUNTER,
    LinkKind.EPISODE,
}
ORDER_OF = {
    Role.LAB: LinkKind.ORDER_LAB,
    Role.RADIOLOGY: LinkKind.ORDER_IMAGING,
    Role.PHARMACIST: LinkKind.ORDER_MEDICATION,
}

ACTOR_POOL = [
    "Practitioner/d1",
    "Practitioner/d2",
    "PractitionerRole/r1",
    "Organization/cardio",
    "Organization/psy",
    "RelatedPerson/rp1",
    "Patient/p1",
    "user:u1",
    "user:u2",
    "*",
]
actor_sets = st.frozensets(st.sampled_from([a for a in ACTOR_POOL if a != "*"]), max_size=6)
# Hypothesis bounds are naive; the instants it draws are UTC.
instants = st.datetimes(
    min_value=dt.datetime(2025, 1, 1),  # noqa: DTZ001
    max_value=dt.datetime(2027, 1, 1),  # noqa: DTZ001
    timezones=st.just(dt.UTC),
)
times = st.none() | instants
links = st.builds(
    Link,
    kind=st.sampled_from(list(LinkKind)),
    actor=st.sampled_from(ACTOR_POOL),
    valid_from=times,
    valid_to=times,
    source=st.just("Encounter/e1"),
    reason=st.sampled_from(["", "unconscious patient"]),
)


def _sql_match(role: Role, relationship: Relationship, link: Link, actors: frozenset[str]) -> bool:
    """What records.visibility's EXISTS clause matches: a link of a required kind whose
    actor is among the required actors."""
    return any(
        link.kind in requirement.kinds and link.actor in requirement.actors
        for requirement in requirements(role, relationship, actors)
    )


@settings(max_examples=1000, deadline=None)
@given(role=st.sampled_from(list(Role)), link=links, actors=actor_sets)
def test_relationship_of_and_requirements_agree(
    role: Role, link: Link, actors: frozenset[str]
) -> None:
    given_relationship = relationship_of(role, link, actors)
    for relationship in Relationship:
        assert _sql_match(role, relationship, link, actors) is (
            given_relationship is relationship
        ), (role, relationship, link, actors)
    if given_relationship is not None:
        # The records room only loads links of these kinds for this role.
        assert link.kind in link_kinds_for(role)


def test_the_agreement_test_sees_every_relationship() -> None:
    """The random links above do produce each relationship (else the test proves little)."""
    me = frozenset({"Practitioner/d1", "Organization/cardio", "user:u1", "RelatedPerson/rp1"})
    cases = {
        Relationship.PERSONAL: (
            Role.NURSE,
            Link(LinkKind.ENCOUNTER, "Practitioner/d1", None, None, "s"),
        ),
        Relationship.DEPARTMENT: (
            Role.PHYSICIAN,
            Link(LinkKind.EPISODE, "Organization/cardio", None, None, "s"),
        ),
        Relationship.GUARDIAN: (
            Role.PATIENT,
            Link(LinkKind.GUARDIAN, "RelatedPerson/rp1", None, None, "s"),
        ),
        Relationship.ORDER: (Role.LAB, Link(LinkKind.ORDER_LAB, "*", None, None, "s")),
        Relationship.INVESTIGATION: (
            Role.SECURITY_OFFICER,
            Link(LinkKind.INVESTIGATION, "user:u1", None, None, "s"),
        ),
        Relationship.BREAK_GLASS: (
            Role.SECRETARY,
            Link(LinkKind.BREAK_GLASS, "user:u1", None, None, "s"),
        ),
    }
    for relationship, (role, link) in cases.items():
        assert relationship_of(role, link, me) is relationship
        assert _sql_match(role, relationship, link, me)


@pytest.mark.parametrize("role", list(Role), ids=str)
def test_who_holds_what(role: Role) -> None:
    """Care links give clinicians only; guardians patients only; orders the service they
    are for; investigations security officers only; a break-the-glass grant anyone it names
    (the rules then decide whether it allows anything)."""
    me = frozenset({"Practitioner/d1", "Organization/cardio", "RelatedPerson/rp1", "user:u1"})
    for kind in LinkKind:
        for actor in (
            "Practitioner/d1",
            "Organization/cardio",
            "RelatedPerson/rp1",
            "user:u1",
            "*",
        ):
            got = relationship_of(role, Link(kind, actor, None, None, "s"), me)
            if kind in CARE:
                want = None
                if role in CLINICIANS and actor in me:
                    organisation = actor.startswith("Organization/")
                    want = Relationship.DEPARTMENT if organisation else Relationship.PERSONAL
            elif kind is LinkKind.GUARDIAN:
                want = Relationship.GUARDIAN if role is Role.PATIENT and actor in me else None
            elif kind is LinkKind.BREAK_GLASS:
                want = Relationship.BREAK_GLASS if actor in me else None
            elif kind is LinkKind.INVESTIGATION:
                ok = role is Role.SECURITY_OFFICER and actor in me
                want = Relationship.INVESTIGATION if ok else None
            else:
                ok = ORDER_OF.get(role) is kind and (actor == "*" or actor in me)
                want = Relationship.ORDER if ok else None
            assert got is want, (kind, actor)


def test_someone_elses_links_give_nothing() -> None:
    me = frozenset({"Practitioner/d1", "user:u1"})
    for kind in LinkKind:
        link = Link(kind, "Practitioner/d2", None, None, "s")
        for role in Role:
            assert relationship_of(role, link, me) is None
    # Nor does a wildcard on anything but an order.
    for kind in set(LinkKind) - set(ORDER_OF.values()):
        for role in Role:
            assert relationship_of(role, Link(kind, "*", None, None, "s"), me) is None


def test_treating_team_is_people_not_departments() -> None:
    assert {Relationship.PERSONAL, Relationship.OWN, Relationship.GUARDIAN} == TREATING_TEAM


# --- windows --------------------------------------------------------------------------------

GRACED = {LinkKind.APPOINTMENT, LinkKind.CARE_TEAM, LinkKind.ENCOUNTER, LinkKind.EPISODE}


@pytest.mark.parametrize("kind", list(LinkKind), ids=str)
def test_the_end_holds_exactly_to_end_plus_grace(kind: LinkKind) -> None:
    grace = dt.timedelta(days=30) if kind in GRACED else dt.timedelta(0)
    end = NOW - grace
    assert is_active(Link(kind, "a", None, end, "s"), NOW, WINDOWS)
    assert not is_active(Link(kind, "a", None, end - TICK, "s"), NOW, WINDOWS)


@pytest.mark.parametrize("kind", list(LinkKind), ids=str)
def test_the_start_holds_from_start_minus_lead(kind: LinkKind) -> None:
    lead = dt.timedelta(days=7) if kind is LinkKind.APPOINTMENT else dt.timedelta(0)
    start = NOW + lead
    assert is_active(Link(kind, "a", start, None, "s"), NOW, WINDOWS)
    assert not is_active(Link(kind, "a", start + TICK, None, "s"), NOW, WINDOWS)


def test_windows_are_configurable() -> None:
    windows = Windows(care_grace=dt.timedelta(hours=1), appointment_lead=dt.timedelta(0))
    discharged = Link(LinkKind.ENCOUNTER, "a", None, NOW - dt.timedelta(hours=1), "s")
    assert is_active(discharged, NOW, windows)
    assert not is_active(discharged, NOW + TICK, windows)
    tomorrow = Link(LinkKind.APPOINTMENT, "a", NOW + dt.timedelta(days=1), None, "s")
    assert not is_active(tomorrow, NOW, windows)
    assert is_active(tomorrow, NOW, WINDOWS)


def test_open_ended_and_extreme_bounds_never_overflow() -> None:
    """An end of 9999-12-31 (a common "no end") plus the grace must not crash decisions."""
    far = dt.datetime.max.replace(tzinfo=dt.UTC)
    early = dt.datetime.min.replace(tzinfo=dt.UTC)
    for kind in LinkKind:
        assert is_active(Link(kind, "a", early, far, "s"), NOW, WINDOWS)
        assert not is_active(Link(kind, "a", far, None, "s"), NOW, WINDOWS)
        assert not is_active(Link(kind, "a", None, early, "s"), NOW, WINDOWS)


@settings(max_examples=1000, deadline=None)
@given(
    link=links,
    now=instants,
)
def test_is_active_is_the_sql_condition(link: Link, now: dt.datetime) -> None:
    """records.visibility filters with `valid_from <= now + lead` and `valid_to >= now - grace`."""
    sql = (link.valid_from is None or link.valid_from <= now + WINDOWS.lead(link.kind)) and (
        link.valid_to is None or link.valid_to >= now - WINDOWS.grace(link.kind)
    )
    assert is_active(link, now, WINDOWS) is sql


# --- care facts -------------------------------------------------------------------------------


def test_care_facts_say_why_and_skip_what_does_not_hold() -> None:
    me = frozenset({"Practitioner/d1", "Organization/cardio", "user:u1"})
    found = care_facts(
        Role.PHYSICIAN,
        [
            Link(
                LinkKind.ENCOUNTER,
                "Practitioner/d1",
                NOW - dt.timedelta(days=2),
                None,
                "Encounter/e1",
            ),
            Link(LinkKind.EPISODE, "Organization/cardio", None, None, "EpisodeOfCare/ep1"),
            Link(
                LinkKind.BREAK_GLASS,
                "user:u1",
                NOW - TICK,
                NOW + TICK,
                "grant/g1",
                "cardiac arrest",
            ),
            # Ended 31 days ago: past the grace period.
            Link(
                LinkKind.CARE_TEAM,
                "Practitioner/d1",
                None,
                NOW - dt.timedelta(days=31),
                "CareTeam/t1",
            ),
            Link(LinkKind.ENCOUNTER, "Practitioner/d2", None, None, "Encounter/e2"),  # not me
            Link(LinkKind.ORDER_LAB, "*", None, None, "ServiceRequest/s1"),  # not a physician's
        ],
        actors=me,
        now=NOW,
        windows=WINDOWS,
    )
    assert [(f.relationship, f.source) for f in found] == [
        (Relationship.PERSONAL, "Encounter/e1"),
        (Relationship.DEPARTMENT, "EpisodeOfCare/ep1"),
        (Relationship.BREAK_GLASS, "grant/g1"),
    ]
    assert found[0].reason == "an encounter (Encounter/e1) links them to this patient"
    assert "their department" in found[1].reason
    assert found[2].reason.endswith(": cardiac arrest")

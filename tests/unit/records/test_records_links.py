"""Care links, memberships and consent rules extracted from FHIR R4 resources (records.links).

This extraction is where access comes from (issue 5, item 3): a status read wrongly keeps a
cancelled appointment's clinician on the record, a performer missed keeps the laboratory off
it. The live statuses are written out here from the FHIR R4 value sets, each status of each
value set tested; garbage shapes (what a client may send in elements the validator does not
type) must never crash a write.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from egide.access.relationships import LinkKind
from egide.records.links import (
    GUARDIAN_CODES,
    LINKED_TYPES,
    Extracted,
    LinkRow,
    MemberRow,
    RuleRow,
    consent_problems,
    extract,
    security_codes,
)

NOW = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)
START = "2026-02-01T09:00:00Z"
END = "2026-02-03T17:30:00+01:00"
T_START = dt.datetime(2026, 2, 1, 9, 0, tzinfo=dt.UTC)
T_END = dt.datetime(2026, 2, 3, 16, 30, tzinfo=dt.UTC)


def token(code: str) -> bytes:
    return b"label:" + code.encode()


MAJORITY = dt.datetime(2031, 5, 1, tzinfo=dt.UTC)  # when the ward of the guardian tests is 18


def run(
    resource: dict[str, Any],
    resource_id: str = "x1",
    *,
    trusted: bool = True,
    majority: dt.datetime | None = MAJORITY,
) -> Extracted:
    return extract(
        resource["resourceType"],
        resource_id,
        resource,
        now=NOW,
        label_token=token,
        trusted=trusted,
        majority=majority,
    )


def ref(reference: str) -> dict[str, str]:
    return {"reference": reference}


def actors(found: Extracted) -> set[str]:
    return {link.actor for link in found.links}


# --- statuses, per FHIR R4 value set -------------------------------------------------------

# (resource type, the whole R4 value set, the statuses under which it still links)
STATUSES = [
    (
        "Encounter",  # encounter-status
        [
            "planned",
            "arrived",
            "triaged",
            "in-progress",
            "onleave",
            "finished",
            "cancelled",
            "entered-in-error",
            "unknown",
        ],
        {"planned", "arrived", "triaged", "in-progress", "onleave", "finished"},
    ),
    (
        "EpisodeOfCare",  # episode-of-care-status
        ["planned", "waitlist", "active", "onhold", "finished", "cancelled", "entered-in-error"],
        {"planned", "waitlist", "active", "onhold", "finished"},
    ),
    (
        "Appointment",  # appointmentstatus
        [
            "proposed",
            "pending",
            "booked",
            "arrived",
            "fulfilled",
            "cancelled",
            "noshow",
            "entered-in-error",
            "checked-in",
            "waitlist",
        ],
        {"proposed", "pending", "booked", "arrived", "fulfilled", "checked-in", "waitlist"},
    ),
    (
        "CareTeam",  # care-team-status
        ["proposed", "active", "suspended", "inactive", "entered-in-error"],
        {"proposed", "active"},
    ),
    (
        "ServiceRequest",  # request-status
        ["draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"],
        {"active", "on-hold"},
    ),
    (
        "MedicationRequest",  # medicationrequest-status
        [
            "active",
            "on-hold",
            "cancelled",
            "completed",
            "entered-in-error",
            "stopped",
            "draft",
            "unknown",
        ],
        {"active", "on-hold"},
    ),
]

LAB_CATEGORY = [{"coding": [{"system": "http://snomed.info/sct", "code": "108252007"}]}]
IMAGING_CATEGORY = [{"coding": [{"system": "http://snomed.info/sct", "code": "363679005"}]}]


def sample(resource_type: str, status: str) -> dict[str, Any]:
    """A resource of `resource_type` naming Practitioner/d1 as the person who treats."""
    body: dict[str, Any] = {"resourceType": resource_type, "status": status}
    who = ref("Practitioner/d1")
    if resource_type == "Encounter":
        body |= {"participant": [{"individual": who}], "period": {"start": START}}
    elif resource_type == "EpisodeOfCare":
        body |= {"careManager": who, "period": {"start": START}}
    elif resource_type == "Appointment":
        body |= {"participant": [{"actor": who, "status": "accepted"}], "start": START}
    elif resource_type == "CareTeam":
        body |= {"participant": [{"member": who}]}
    elif resource_type == "ServiceRequest":
        body |= {"performer": [who], "category": LAB_CATEGORY}
    else:
        body |= {"performer": who}
    return body


@pytest.mark.parametrize(
    ("resource_type", "status", "live"),
    [(t, s, s in live) for t, statuses, live in STATUSES for s in statuses],
)
def test_every_status_of_every_value_set(resource_type: str, status: str, live: bool) -> None:
    found = run(sample(resource_type, status))
    assert actors(found) == ({"Practitioner/d1"} if live else set())


@pytest.mark.parametrize("resource_type", [t for t, _, _ in STATUSES])
def test_no_status_or_a_foreign_one_links_nobody(resource_type: str) -> None:
    body = sample(resource_type, "active")
    del body["status"]
    assert run(body) == Extracted()
    for odd in ("ACTIVE", "in progress", "", 1, None, ["active"]):
        assert run({**body, "status": odd}) == Extracted()


# --- Encounter and EpisodeOfCare: participants, organisations, periods ----------------------


def test_encounter_participants_service_provider_and_period() -> None:
    found = run(
        {
            "resourceType": "Encounter",
            "status": "in-progress",
            "period": {"start": START, "end": END},
            "participant": [
                {"individual": ref("Practitioner/d1")},
                {"individual": ref("PractitionerRole/r1")},
                {"individual": ref("Practitioner/d1")},  # twice: one link
                {"individual": ref("RelatedPerson/rp1")},  # not a clinician
                {"individual": {"reference": "https://other.example/fhir/Practitioner/d9"}},
                {"individual": {"display": "Dr Nobody"}},
                {"type": [{"text": "no individual"}]},
            ],
            "serviceProvider": ref("Organization/cardio"),
        }
    )
    assert found.links == (
        LinkRow(LinkKind.ENCOUNTER, "Practitioner/d1", T_START, T_END),
        LinkRow(LinkKind.ENCOUNTER, "PractitionerRole/r1", T_START, T_END),
        LinkRow(LinkKind.ENCOUNTER, "Organization/cardio", T_START, T_END),
    )


def test_a_service_provider_must_be_an_organization() -> None:
    found = run(
        {
            "resourceType": "Encounter",
            "status": "arrived",
            "serviceProvider": ref("Practitioner/d1"),
        }
    )
    assert found == Extracted()


@pytest.mark.parametrize("resource_type", ["Encounter", "EpisodeOfCare"])
def test_finished_without_an_end_ends_at_its_start(resource_type: str) -> None:
    """Discharged without an end time: the grace period runs from the start. Not from the
    write, which every re-save would move forward (renewing the link), and not for ever."""
    body = sample(resource_type, "finished")
    (link,) = run(body).links
    assert (link.valid_from, link.valid_to) == (T_START, T_START)
    assert run({**body, "period": {}}).links == ()  # no date at all: no link
    body["period"] = {"start": START, "end": END}
    (link,) = run(body).links
    assert link.valid_to == T_END
    (link,) = run(
        {
            **body,
            "status": "in-progress" if resource_type == "Encounter" else "active",
            "period": {"start": START},
        }
    ).links
    assert link.valid_to is None  # still in care: ongoing


def test_episode_of_care_manager_and_managing_organization() -> None:
    found = run(
        {
            "resourceType": "EpisodeOfCare",
            "status": "active",
            "careManager": ref("PractitionerRole/r2"),
            "managingOrganization": ref("Organization/onco"),
            "team": [ref("CareTeam/t1")],  # a CareTeam links through its own resource
        }
    )
    assert found.links == (
        LinkRow(LinkKind.EPISODE, "PractitionerRole/r2", None, None),
        LinkRow(LinkKind.EPISODE, "Organization/onco", None, None),
    )


# --- Appointment ------------------------------------------------------------------------------


def test_appointment_participants_except_declined_and_non_staff() -> None:
    found = run(
        {
            "resourceType": "Appointment",
            "status": "booked",
            "start": START,
            "end": END,
            "participant": [
                {"actor": ref("Practitioner/d1"), "status": "accepted"},
                {"actor": ref("Practitioner/d2"), "status": "declined"},
                {"actor": ref("Practitioner/d3"), "status": "tentative"},
                {"actor": ref("Organization/radio"), "status": "needs-action"},
                {"actor": ref("Patient/p1"), "status": "accepted"},
                {"actor": ref("Location/room1"), "status": "accepted"},
            ],
        }
    )
    assert found.links == (
        LinkRow(LinkKind.APPOINTMENT, "Practitioner/d1", T_START, T_END),
        LinkRow(LinkKind.APPOINTMENT, "Practitioner/d3", T_START, T_END),
        LinkRow(LinkKind.APPOINTMENT, "Organization/radio", T_START, T_END),
    )


def test_an_appointment_without_an_end_ends_when_it_starts() -> None:
    (link,) = run(sample("Appointment", "booked")).links
    assert (link.valid_from, link.valid_to) == (T_START, T_START)
    # Not yet scheduled: no link (it would otherwise hold for ever).
    assert run({**sample("Appointment", "proposed"), "start": None}).links == ()


# --- CareTeam ---------------------------------------------------------------------------------


def test_care_team_members_with_their_own_periods() -> None:
    member_start = "2026-02-10"
    found = run(
        {
            "resourceType": "CareTeam",
            "status": "active",
            "period": {"start": START, "end": END},
            "participant": [
                {"member": ref("Practitioner/d1")},
                {"member": ref("Practitioner/d2"), "period": {"start": member_start}},
                {"member": ref("Organization/ward")},
                {"member": ref("Patient/p1")},  # the patient in their own team: no link
                {"member": ref("RelatedPerson/rp1")},
                {"period": {"start": START}},
            ],
            "managingOrganization": [ref("Organization/home"), ref("Practitioner/d9")],
        }
    )
    assert found.links == (
        LinkRow(LinkKind.CARE_TEAM, "Practitioner/d1", T_START, T_END),
        LinkRow(
            LinkKind.CARE_TEAM, "Practitioner/d2", dt.datetime(2026, 2, 10, tzinfo=dt.UTC), T_END
        ),
        LinkRow(LinkKind.CARE_TEAM, "Organization/ward", T_START, T_END),
        LinkRow(LinkKind.CARE_TEAM, "Organization/home", T_START, T_END),
    )


# --- orders -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("category", "kinds"),
    [
        (LAB_CATEGORY, {LinkKind.ORDER_LAB}),
        ([{"coding": [{"code": "laboratory"}]}], {LinkKind.ORDER_LAB}),
        ([{"coding": [{"code": "LAB"}]}], {LinkKind.ORDER_LAB}),
        (IMAGING_CATEGORY, {LinkKind.ORDER_IMAGING}),
        ([{"coding": [{"code": "imaging"}]}], {LinkKind.ORDER_IMAGING}),
        ([{"coding": [{"code": "RAD"}]}], {LinkKind.ORDER_IMAGING}),
        (LAB_CATEGORY + IMAGING_CATEGORY, {LinkKind.ORDER_LAB, LinkKind.ORDER_IMAGING}),
        ([{"coding": [{"code": "409063005"}]}], set()),  # counselling: no diagnostic service
        ([{"text": "laboratory"}], set()),  # free text is not a code
        (None, set()),
    ],
)
def test_service_request_category_picks_the_service(category: object, kinds: set[LinkKind]) -> None:
    body = {"resourceType": "ServiceRequest", "status": "active", "category": category}
    found = run(body)
    assert {link.kind for link in found.links} == kinds
    assert all(link.actor == "*" for link in found.links)  # no performer named
    assert all(link.valid_from is None and link.valid_to is None for link in found.links)


def test_service_request_named_performers() -> None:
    found = run(
        {
            "resourceType": "ServiceRequest",
            "status": "on-hold",
            "category": LAB_CATEGORY,
            "performer": [
                ref("Organization/biochem"),
                ref("Practitioner/b1"),
                ref("Patient/p1"),
                "Organization/garbage",
            ],
        }
    )
    assert found.links == (
        LinkRow(LinkKind.ORDER_LAB, "Organization/biochem", None, None),
        LinkRow(LinkKind.ORDER_LAB, "Practitioner/b1", None, None),
    )


def test_medication_request_performer_and_dispenser() -> None:
    body: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "performer": ref("Practitioner/nurse1"),
        "dispenseRequest": {"performer": ref("Organization/pharmacy")},
    }
    assert actors(run(body)) == {"Practitioner/nurse1", "Organization/pharmacy"}
    assert {link.kind for link in run(body).links} == {LinkKind.ORDER_MEDICATION}
    for anonymous in (
        {"resourceType": "MedicationRequest", "status": "active"},
        {"resourceType": "MedicationRequest", "status": "active", "dispenseRequest": {}},
        {"resourceType": "MedicationRequest", "status": "active", "performer": ref("Patient/p")},
    ):
        assert run(anonymous).links == (LinkRow(LinkKind.ORDER_MEDICATION, "*", None, None),)


# --- guardians, staff roles, Patient.link ------------------------------------------------------


@pytest.mark.parametrize("code", sorted(GUARDIAN_CODES))
def test_every_guardian_code_makes_a_guardian(code: str) -> None:
    found = run(
        {
            "resourceType": "RelatedPerson",
            "patient": ref("Patient/child"),
            "relationship": [{"coding": [{"code": "FAMMEMB"}, {"code": code}]}],
            "period": {"start": START},
        },
        "rp1",
    )
    assert found.links == (LinkRow(LinkKind.GUARDIAN, "RelatedPerson/rp1", T_START, MAJORITY),)


def test_guardianship_needs_a_trusted_writer_and_ends_at_majority() -> None:
    body = {
        "resourceType": "RelatedPerson",
        "patient": ref("Patient/child"),
        "relationship": [{"coding": [{"code": "MTH"}]}],
        "period": {"start": START, "end": "2040-01-01"},
    }
    # A desk (not the identity-verified registry) cannot make anyone a guardian.
    assert run(body, "rp1", trusted=False).links == ()
    # No known birth date of the ward: no proof of a minor, no link.
    assert run(body, "rp1", majority=None).links == ()
    (link,) = run(body, "rp1").links
    assert link.valid_to == MAJORITY  # the earlier of the period's end and the majority
    (link,) = run({**body, "period": {"start": START, "end": END}}, "rp1").links
    assert link.valid_to == T_END


def test_guardian_codes_are_parents_and_guardians_only() -> None:
    assert {"MTH", "FTH", "PRN", "GUARD"} <= GUARDIAN_CODES
    assert not {"FRND", "SPS", "SIB", "NBOR", "EMC", "ROOM", "FAMMEMB"} & GUARDIAN_CODES


@pytest.mark.parametrize(
    "body",
    [
        {"relationship": [{"coding": [{"code": "FRND"}]}]},
        {"relationship": [{"coding": [{"code": "MTH"}]}], "active": False},
        {"relationship": [{"text": "mother"}]},
        {"relationship": [{"coding": [{"code": "mth"}]}]},  # codes are case-sensitive
        {},
    ],
)
def test_related_people_who_are_not_guardians(body: dict[str, Any]) -> None:
    assert run({"resourceType": "RelatedPerson", **body}, "rp1") == Extracted()


def test_practitioner_role_makes_department_membership() -> None:
    body: dict[str, Any] = {
        "resourceType": "PractitionerRole",
        "practitioner": ref("Practitioner/d1"),
        "organization": ref("Organization/cardio"),
        "period": {"start": START, "end": END},
    }
    assert run(body, "pr1").members == (
        MemberRow("Practitioner/d1", "PractitionerRole/pr1", T_START, T_END),
        MemberRow("Practitioner/d1", "Organization/cardio", T_START, T_END),
    )
    assert run({**body, "active": True}, "pr1").members == run(body, "pr1").members
    assert run({**body, "active": False}, "pr1") == Extracted()
    assert run({**body, "practitioner": ref("Patient/p1")}, "pr1") == Extracted()
    no_org = {k: v for k, v in body.items() if k != "organization"}
    assert run(no_org, "pr1").members == (
        MemberRow("Practitioner/d1", "PractitionerRole/pr1", T_START, T_END),
    )


def test_patient_link_to_the_related_person_they_also_are() -> None:
    body = {
        "resourceType": "Patient",
        "link": [
            {"other": ref("RelatedPerson/rp1"), "type": "seealso"},
            {"other": ref("Patient/p2"), "type": "replaces"},
            {"type": "seealso"},
        ],
    }
    assert run(body, "mum").members == (MemberRow("Patient/mum", "RelatedPerson/rp1", None, None),)
    assert run({"resourceType": "Patient"}, "mum") == Extracted()
    assert run(body, "mum", trusted=False) == Extracted()  # only the registry states it


# --- Consent ----------------------------------------------------------------------------------

PRIVACY = {"coding": [{"code": "patient-privacy"}]}


def consent(provision: object, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": PRIVACY,
        "provision": provision,
        **extra,
    }


@pytest.mark.parametrize(
    ("status", "binds"),
    [
        ("draft", False),
        ("proposed", False),
        ("active", True),
        ("rejected", False),
        ("inactive", False),  # a later version withdraws
        ("entered-in-error", False),
    ],
)
def test_only_active_consents_bind(status: str, binds: bool) -> None:
    body = consent({"type": "deny", "actor": [{"reference": ref("Practitioner/d1")}]})
    body["status"] = status
    assert bool(run(body).rules) is binds


def test_deny_named_actors_for_everything_or_for_labels() -> None:
    everything = consent(
        {
            "type": "deny",
            "actor": [
                {"role": {"text": "prf"}, "reference": ref("Practitioner/d1")},
                {"reference": ref("Organization/psy")},
                {"reference": ref("RelatedPerson/rp1")},
                {"reference": ref("PractitionerRole/r1")},
                {"reference": ref("Patient/p2")},  # not an actor Égide can refuse
                {"reference": {"display": "Dr X"}},
            ],
        }
    )
    assert run(everything).rules == tuple(
        RuleRow("deny", who, None, None, None)
        for who in (
            "Practitioner/d1",
            "Organization/psy",
            "RelatedPerson/rp1",
            "PractitionerRole/r1",
        )
    )
    labelled = consent(
        {
            "type": "deny",
            "actor": [{"reference": ref("Practitioner/d1")}],
            "securityLabel": [{"code": "PSY"}, {"code": "HIV"}, {"system": "no code"}],
        }
    )
    assert run(labelled).rules == (
        RuleRow("deny", "Practitioner/d1", token("PSY"), None, None),
        RuleRow("deny", "Practitioner/d1", token("HIV"), None, None),
    )


def test_no_actor_restricts_labels_to_the_treating_team() -> None:
    labelled = consent({"type": "deny", "securityLabel": [{"code": "ETH"}]})
    assert run(labelled).rules == (RuleRow("deny", None, token("ETH"), None, None),)
    everything = consent({"type": "deny"})
    assert run(everything).rules == (RuleRow("deny", None, b"*", None, None),)


def test_nested_provisions_inherit_and_override_periods() -> None:
    body = consent(
        {
            "type": "permit",  # the base permits; its exceptions deny
            "period": {"start": START, "end": END},
            "actor": [{"reference": ref("Practitioner/ignored")}],
            "provision": [
                {"type": "deny", "actor": [{"reference": ref("Practitioner/d1")}]},
                {
                    "type": "permit",
                    "provision": [
                        {
                            "type": "deny",
                            "period": {"end": "2026-02-02"},
                            "securityLabel": [{"code": "SDV"}],
                        }
                    ],
                },
                "garbage",
            ],
        }
    )
    assert run(body).rules == (
        RuleRow("deny", "Practitioner/d1", None, T_START, T_END),
        RuleRow("deny", None, token("SDV"), T_START, dt.datetime(2026, 2, 2, tzinfo=dt.UTC)),
    )


@pytest.mark.parametrize(
    "body",
    [
        {"scope": {"coding": [{"code": "research"}]}, "provision": {"type": "deny"}},
        {"provision": {"type": "deny", "purpose": [{"code": "HRESCH"}]}},
        {"provision": {"type": "deny", "purpose": [{"code": "CLINTRCH"}]}},
        {
            "provision": {
                "type": "permit",
                "provision": [{"type": "deny", "purpose": [{"code": "HRESCH"}]}],
            }
        },
    ],
)
def test_research_opt_out(body: dict[str, Any]) -> None:
    found = run({**consent(None), **body})
    assert found.rules == (RuleRow("research", None, None, None, None),)


def test_a_permit_or_a_research_permit_refuses_nothing() -> None:
    assert run(consent({"type": "permit"})).rules == ()
    assert run(consent({"type": "permit", "purpose": [{"code": "HRESCH"}]})).rules == ()
    assert run(consent(None)).rules == ()


# --- the rest -------------------------------------------------------------------------------


def test_deleted_and_unlinked_types_state_nothing() -> None:
    assert extract("Encounter", "e1", None, now=NOW, label_token=token) == Extracted()
    for resource_type in ("Observation", "Condition", "Practitioner", "Organization"):
        assert resource_type not in LINKED_TYPES
        assert run({"resourceType": resource_type, "status": "active"}) == Extracted()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026", dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
        ("2026-02", dt.datetime(2026, 2, 1, tzinfo=dt.UTC)),
        ("2026-02-03", dt.datetime(2026, 2, 3, tzinfo=dt.UTC)),
        ("2026-02-03T10:00:00+02:00", dt.datetime(2026, 2, 3, 8, tzinfo=dt.UTC)),
        ("2026-02-03T10:00:00.250Z", dt.datetime(2026, 2, 3, 10, 0, 0, 250000, tzinfo=dt.UTC)),
        ("9999-12-31T23:59:59Z", dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)),
        # Valid FHIR dateTimes beyond what a UTC datetime holds: treated as open-ended.
        ("9999-12-31T23:59:59-05:00", None),
        ("0001-01-01T00:00:00+01:00", None),
        ("2026-13", None),
        ("2026-02-30", None),
        ("yesterday", None),
        ("", None),
    ],
)
def test_period_times(value: str, expected: dt.datetime | None) -> None:
    body = {
        "resourceType": "Encounter",
        "status": "arrived",
        "period": {"end": value},
        "serviceProvider": ref("Organization/o"),
    }
    (link,) = run(body).links
    assert link.valid_to == expected


def test_security_codes() -> None:
    body = {"meta": {"security": [{"code": "R"}, {"code": "PSY"}, {"system": "x"}, "junk"]}}
    assert security_codes(body) == ["R", "PSY"]
    assert security_codes({"meta": "junk"}) == []
    assert security_codes({}) == []


# --- garbage never crashes -------------------------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=12)
    | st.sampled_from(["Practitioner/d1", "Organization/o", "active", "deny", "2026-02-01", "MTH"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "reference",
                    "status",
                    "period",
                    "start",
                    "end",
                    "participant",
                    "individual",
                    "actor",
                    "member",
                    "performer",
                    "category",
                    "coding",
                    "code",
                    "provision",
                    "type",
                    "securityLabel",
                    "purpose",
                    "relationship",
                    "practitioner",
                    "organization",
                    "link",
                    "other",
                    "scope",
                    "dispenseRequest",
                    "active",
                    "careManager",
                    "managingOrganization",
                    "serviceProvider",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(
    resource_type=st.sampled_from(sorted(LINKED_TYPES)),
    body=st.dictionaries(st.text(max_size=20), JSON, max_size=6),
    shaped=JSON,
)
def test_garbage_never_crashes(resource_type: str, body: dict[str, Any], shaped: object) -> None:
    for resource in (body, shaped if isinstance(shaped, dict) else {"provision": shaped}):
        found = extract(resource_type, "x1", resource, now=NOW, label_token=token)
        assert isinstance(found, Extracted)
        for link in found.links:
            assert isinstance(link.kind, LinkKind)
            assert link.actor == "*" or "/" in link.actor
        for rule in found.rules:
            assert rule.kind in {"deny", "research"}


def test_a_consent_actor_by_absolute_url_is_read_by_its_tail() -> None:
    """A refusal naming `https://.../Practitioner/x` refuses Practitioner/x: erring towards
    refusing is safe, unlike care links, where the same reading would grant."""
    found = run(
        consent(
            {
                "type": "deny",
                "actor": [
                    {"reference": ref("https://ehr.example/fhir/Practitioner/x/_history/2")},
                    {"reference": ref("https://ehr.example/fhir/Organization/ward/")},
                ],
            }
        )
    )
    assert {r.actor for r in found.rules} == {"Practitioner/x", "Organization/ward"}
    assert consent_problems(consent({"type": "deny", "actor": []})) == []


def test_a_consent_actor_that_cannot_be_identified_is_a_problem() -> None:
    """An actor by identifier only (or of another type) cannot be enforced as named: the
    repository refuses the Consent (422) instead of enforcing a guess."""
    body = consent(
        {
            "type": "permit",
            "provision": [
                {
                    "type": "deny",
                    "actor": [
                        {"reference": {"identifier": {"value": "RPPS 10001234567"}}},
                        {"reference": ref("Device/d1")},
                        {"reference": ref("Practitioner/ok")},
                    ],
                }
            ],
        }
    )
    problems = consent_problems(body)
    assert len(problems) == 2
    assert problems[0].startswith("Consent.provision.provision[0].actor[0].reference")
    assert "actor[1]" in problems[1]

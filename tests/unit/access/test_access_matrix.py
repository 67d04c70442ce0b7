"""Every cell of the role × relationship × resource type × operation matrix (issue 5).

The expectations are written here in plain terms, per role, without reading `access.rules`:
if the rule table drifts from what the issue asks (a nurse writing prescriptions, a secretary
reading an Observation, a lab reading without an order), a cell fails. Each cell is checked
twice: as `egide.access.matrix` computed it (links -> care facts -> decide, what
`docs/access.md` shows) and by calling `decide` here with the relationship given directly.
The last tests hold `docs/access.md` equal to the generated matrix.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from egide.access.matrix import (
    DIRECTORY_TYPE,
    END,
    START,
    Tie,
    consent_rows,
    matrix_rows,
    render_markdown,
    resource_types,
    splice,
)
from egide.access.permissions import Role
from egide.access.policy import (
    AccessContext,
    Operation,
    Target,
    decide,
    may_search_type,
    may_write_type,
)
from egide.access.relationships import CareFact, Relationship
from egide.core.principal import Principal

READ, SEARCH, WRITE = Operation.READ, Operation.SEARCH, Operation.WRITE
LOOK = frozenset({READ, SEARCH})
ALL_OPS = frozenset(Operation)
NOTHING: frozenset[Operation] = frozenset()
MASKED = ("mask_clinical",)
EMERGENCY = ("break_glass",)

# The kinds of data, as the issue names them (written out, not imported from access.rules).
DEMOGRAPHICS = {"Patient", "RelatedPerson"}
SCHEDULING = {"Appointment", "CareTeam", "Encounter", "EpisodeOfCare"}
ORDERS = {
    "DeviceRequest",
    "MedicationRequest",
    "NutritionOrder",
    "ServiceRequest",
    "VisionPrescription",
}
# What each diagnostic or dispensing service reads (besides demographics) and writes.
SERVICES = {
    Role.LAB: (
        {"DiagnosticReport", "Observation", "ServiceRequest", "Specimen"},
        {"DiagnosticReport", "Observation", "Specimen"},
    ),
    Role.RADIOLOGY: (
        {"DiagnosticReport", "ImagingStudy", "Media", "Observation", "ServiceRequest"},
        {"DiagnosticReport", "ImagingStudy", "Media", "Observation"},
    ),
    Role.PHARMACIST: (
        {
            "AllergyIntolerance",
            "MedicationAdministration",
            "MedicationDispense",
            "MedicationRequest",
            "MedicationStatement",
        },
        {"MedicationDispense"},
    ),
}
CLINICIANS = {Role.NURSE, Role.PHYSICIAN, Role.RESIDENT}
TREATING_TIES = {Tie.PERSONAL, Tie.DEPARTMENT, Tie.BREAK_GLASS}


def expected(
    role: Role, tie: Tie, resource_type: str, op: Operation
) -> tuple[bool, tuple[str, ...]]:
    """(allowed, obligations) for one cell, in the plain terms of issue 5, item 2."""

    def ops(
        allowed: frozenset[Operation], obligations: tuple[str, ...] = ()
    ) -> tuple[bool, tuple[str, ...]]:
        return (op in allowed, obligations if op in allowed else ())

    if resource_type == DIRECTORY_TYPE:
        # Staff and patients look up who their clinicians are; admin and service maintain it.
        if role is Role.RESEARCHER:
            return ops(NOTHING)
        return ops(ALL_OPS if role in {Role.ADMIN, Role.SERVICE} else LOOK)
    if role in {Role.ADMIN, Role.RESEARCHER}:
        return ops(NOTHING)  # no patient data through the FHIR API, whatever the tie
    if role is Role.SERVICE:
        return ops(ALL_OPS)  # SMART system/*.cruds
    if role is Role.DPO:
        if resource_type == "Consent":
            return ops(ALL_OPS)
        return ops(LOOK if resource_type in DEMOGRAPHICS else NOTHING)
    if role is Role.SECRETARY:
        if resource_type in DEMOGRAPHICS:
            return ops(ALL_OPS)
        if resource_type in SCHEDULING:
            return ops(ALL_OPS, MASKED)  # appointments yes, their clinical reason no
        return ops(NOTHING)
    if role is Role.SECURITY_OFFICER:
        return ops(LOOK if tie is Tie.INVESTIGATION else NOTHING)  # never writes
    if role is Role.PATIENT:
        if tie not in {Tie.OWN, Tie.GUARDIAN}:
            return ops(NOTHING)
        return ops(ALL_OPS if resource_type == "Consent" else LOOK)  # they record consent
    if role in SERVICES:
        if tie is not Tie.ORDER:
            return ops(NOTHING)
        reads, writes = SERVICES[role]
        if resource_type in writes:
            return ops(ALL_OPS)
        return ops(LOOK if resource_type in reads | DEMOGRAPHICS else NOTHING)
    assert role in CLINICIANS
    if tie not in TREATING_TIES:
        # Finding a patient needs no relationship; their record does.
        return ops(LOOK if resource_type in DEMOGRAPHICS else NOTHING)
    allowed = ALL_OPS
    if role is Role.NURSE and resource_type in ORDERS:
        allowed = LOOK  # prescriptions and requests are a prescriber's
    if resource_type == "Consent":
        allowed = LOOK  # the patient's (or the DPO's) to write, never a clinician's
    if tie is Tie.BREAK_GLASS:
        if resource_type in DEMOGRAPHICS and op in LOOK:
            return ops(allowed)  # the look-up needed no grant: not marked as one
        return ops(allowed, EMERGENCY)
    return ops(allowed)


# Which roles can hold which relationship at all (access.relationships.relationship_of).
HOLDERS = {
    Tie.NONE: set(Role),
    Tie.OWN: {Role.PATIENT},
    Tie.GUARDIAN: {Role.PATIENT},
    Tie.PERSONAL: CLINICIANS,
    Tie.DEPARTMENT: CLINICIANS,
    Tie.ORDER: set(SERVICES),
    Tie.INVESTIGATION: {Role.SECURITY_OFFICER},
    Tie.BREAK_GLASS: set(Role),
}

CELLS = matrix_rows()
BY_KEY = {(c.role, c.relationship, c.resource_type, c.operation): c for c in CELLS}


def test_the_matrix_covers_every_role_tie_type_and_operation() -> None:
    types = resource_types()
    named = DEMOGRAPHICS | SCHEDULING | ORDERS | {"Consent"}
    for reads, writes in SERVICES.values():
        named |= reads | writes
    assert named <= set(types)
    assert DIRECTORY_TYPE in types
    # Some type no rule names stands for "every type" (a Condition, a Procedure...).
    assert set(types) - named - {DIRECTORY_TYPE}
    assert len(CELLS) == len(BY_KEY) == len(Role) * len(Tie) * len(types) * len(Operation)


def _direct(role: Role, tie: Tie) -> tuple[Principal, AccessContext]:
    """A principal and context with `tie` given directly (not through links)."""
    patient = "p1" if tie is Tie.OWN else ("p9" if role is Role.PATIENT else None)
    principal = Principal(id="u1", role=role.value, patient_id=patient)
    if tie in {Tie.NONE, Tie.OWN}:
        return principal, AccessContext()
    return principal, AccessContext((CareFact(Relationship(tie.value), f"a {tie} link"),))


@pytest.mark.parametrize("tie", list(Tie), ids=str)
@pytest.mark.parametrize("role", list(Role), ids=str)
def test_every_cell(role: Role, tie: Tie) -> None:
    principal, context = _direct(role, tie)
    wrong: list[str] = []
    for resource_type in resource_types():
        target = (
            Target(resource_type, None, patient_data=False)
            if resource_type == DIRECTORY_TYPE
            else Target(resource_type, "p1")
        )
        for op in Operation:
            want = expected(role, tie, resource_type, op)
            cell = BY_KEY[(role, tie, resource_type, op)]
            if (cell.allowed, cell.obligations) != want:
                wrong.append(f"matrix {resource_type} {op}: {cell} != {want}")
            decision = decide(principal, op, target, context)
            got = (decision.allowed, tuple(decision.obligations) if decision.allowed else ())
            if got != want:
                wrong.append(f"decide {resource_type} {op}: {got} != {want} {decision.reasons}")
            assert decision.reasons, "every decision says why"
            assert cell.holds is (role in HOLDERS[tie])
    assert not wrong, "\n".join(wrong)


def test_the_roles_have_something_of_their_own() -> None:
    """A guard against an expectation table that says "refused" everywhere."""
    allowed = {
        (c.role, c.relationship) for c in CELLS if c.allowed and c.resource_type != DIRECTORY_TYPE
    }
    for role, tie in [
        (Role.PHYSICIAN, Tie.PERSONAL),
        (Role.NURSE, Tie.DEPARTMENT),
        (Role.LAB, Tie.ORDER),
        (Role.PATIENT, Tie.OWN),
        (Role.PATIENT, Tie.GUARDIAN),
        (Role.SECURITY_OFFICER, Tie.INVESTIGATION),
        (Role.SECRETARY, Tie.NONE),
        (Role.RESIDENT, Tie.BREAK_GLASS),
    ]:
        assert (role, tie) in allowed
    assert not any(role in {Role.ADMIN, Role.RESEARCHER} for role, _ in allowed)


@pytest.mark.parametrize("role", list(Role), ids=str)
def test_type_level_answers_agree_with_the_cells(role: Role) -> None:
    """`may_write_type` and `may_search_type` (which may answer 403) say yes exactly when
    some relationship allows: a 403 never hides what a relationship would have allowed."""
    principal = Principal(id="u1", role=role.value)
    for resource_type in resource_types():
        directory = resource_type == DIRECTORY_TYPE
        cells = [c for c in CELLS if c.role is role and c.resource_type == resource_type]
        writes = any(c.allowed for c in cells if c.operation is WRITE)
        searches = any(c.allowed for c in cells if c.operation is SEARCH)
        assert may_write_type(principal, resource_type, patient_data=not directory) is writes
        decision = may_search_type(principal, resource_type, patient_data=not directory)
        assert decision.allowed is searches, (resource_type, decision.reasons)


def test_consent_effects() -> None:
    """A deny naming the reader binds everyone but integration services and the patient
    themself, break-the-glass included; a label kept to the treating team lets through only
    a personal, guardian, own or break-the-glass tie (and services)."""
    rows = consent_rows(CELLS)
    assert {(r.role, r.relationship) for r in rows} >= {
        (Role.PHYSICIAN, Tie.PERSONAL),
        (Role.PHYSICIAN, Tie.DEPARTMENT),
        (Role.PHYSICIAN, Tie.BREAK_GLASS),
        (Role.SECRETARY, Tie.NONE),
        (Role.PATIENT, Tie.OWN),
        (Role.LAB, Tie.ORDER),
    }
    for row in rows:
        exempt = row.role is Role.SERVICE or row.relationship is Tie.OWN
        assert row.named_denial_refuses is not exempt, row
        team = {Tie.OWN, Tie.GUARDIAN, Tie.PERSONAL, Tie.BREAK_GLASS}
        assert row.restriction_refuses is not (exempt or row.relationship in team), row


DOC = Path(__file__).resolve().parents[3] / "docs" / "access.md"


def test_docs_access_md_shows_the_generated_matrix() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert text.count(START) == 1
    assert text.count(END) == 1
    shown = text.split(START, 1)[1].split(END, 1)[0]
    assert shown == "\n" + render_markdown(CELLS), "docs/access.md is stale: run `make docs`"
    assert splice(text, render_markdown(CELLS)) == text


def test_splice_replaces_only_between_the_markers() -> None:
    doc = f"intro\n{START}\nold\n{END}\nafter\n"
    assert splice(doc, "new\n") == f"intro\n{START}\nnew\n{END}\nafter\n"
    with pytest.raises(ValueError, match="markers"):
        splice("no markers here", "x")


def test_a_cell_is_what_decide_says_for_that_role() -> None:
    """The rendering reflects the cells: flip one cell and the text changes."""
    cell = BY_KEY[(Role.NURSE, Tie.PERSONAL, "MedicationRequest", WRITE)]
    assert not cell.allowed
    flipped = [dataclasses.replace(c, allowed=True) if c == cell else c for c in CELLS]
    assert render_markdown(flipped) != render_markdown(CELLS)

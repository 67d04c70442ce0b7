"""The decision function (access.policy.decide): properties that hold for every input.

The matrix test (test_access_matrix.py) checks every role × relationship × type × operation
cell; these Hypothesis tests check what must hold whatever the facts: nothing is allowed
unless a rule of the role names the type, the operation and a relationship the principal
holds; a consent denial binds everyone but integration services and the patient themself; a
restricted record opens only to the treating team or an emergency grant, and then the act is
marked; SMART scopes never widen a role.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from egide.access.permissions import ROLE_PERMISSIONS, Permission, Role
from egide.access.policy import (
    AccessContext,
    Operation,
    Target,
    decide,
    decide_access_report,
    has_permission,
    search_plan,
)
from egide.access.relationships import CareFact, Relationship
from egide.access.rules import RULES, Obligation
from egide.core.principal import Principal

TYPES = [
    "Patient",
    "RelatedPerson",
    "Observation",
    "Condition",
    "Consent",
    "Appointment",
    "Encounter",
    "MedicationRequest",
    "MedicationDispense",
    "ServiceRequest",
    "DiagnosticReport",
    "ImagingStudy",
    "Specimen",
    "Practitioner",
    "AuditEvent",
]
# Relationships a context can carry (OWN is the policy's own finding, never a gathered fact).
GATHERED = [r for r in Relationship if r not in {Relationship.ANY, Relationship.OWN}]

roles = st.sampled_from([r.value for r in Role]) | st.text(max_size=12)
facts = st.lists(
    st.builds(
        CareFact,
        relationship=st.sampled_from(GATHERED),
        reason=st.sampled_from(["an encounter (Encounter/e1) links them", "grant: emergency"]),
    ),
    max_size=4,
).map(tuple)
targets = st.builds(
    Target,
    resource_type=st.sampled_from(TYPES),
    patient_id=st.sampled_from([None, "p1", "p2"]),
    patient_data=st.booleans(),
    restricted=st.booleans(),
)
denials = st.lists(st.just("the patient's consent refuses Practitioner/d1"), max_size=1).map(tuple)
scope_sets = st.none() | st.frozensets(
    st.sampled_from(
        [
            "user/*.cruds",
            "user/*.rs",
            "user/Observation.r",
            "user/Patient.cud",
            "patient/*.rs",
            "system/*.s",
            "patient/*.read",  # malformed: allows nothing
            "launch/patient",
        ]
    ),
    max_size=3,
)


@st.composite
def cases(draw: st.DrawFn) -> tuple[Principal, Operation, Target, AccessContext]:
    role = draw(roles)
    principal = Principal(
        id="u1",
        role=role,
        patient_id=draw(st.sampled_from([None, "p1", "p2"])),
        scopes=draw(scope_sets),
    )
    context = AccessContext(draw(facts), draw(denials))
    return principal, draw(st.sampled_from(list(Operation))), draw(targets), context


def _own(principal: Principal, target: Target) -> bool:
    return (
        principal.role == Role.PATIENT.value
        and principal.patient_id is not None
        and principal.patient_id == target.patient_id
    )


def _held(principal: Principal, target: Target, context: AccessContext) -> set[Relationship]:
    held = {f.relationship for f in context.facts} | {Relationship.ANY}
    if _own(principal, target):
        held.add(Relationship.OWN)
    return held


@settings(max_examples=1000, deadline=None)
@given(case=cases())
def test_nothing_is_allowed_unless_a_rule_matches(
    case: tuple[Principal, Operation, Target, AccessContext],
) -> None:
    principal, operation, target, context = case
    decision = decide(principal, operation, target, context)
    assert decision.reasons, "every decision says why"
    if not decision.allowed:
        assert not decision.obligations
        return
    role = Role(principal.role)  # an unknown role is never allowed (it would raise here)
    if not target.patient_data:
        wanted = (
            Permission.DIRECTORY_RESOURCE_WRITE
            if operation is Operation.WRITE
            else Permission.DIRECTORY_RESOURCE_READ
        )
        assert wanted in ROLE_PERMISSIONS[role]
        return
    held = _held(principal, target, context)
    assert any(
        operation in rule.operations
        and target.resource_type in rule.types
        and rule.relationships & held
        for rule in RULES[role]
    ), (role, operation, target, context)


@settings(max_examples=500, deadline=None)
@given(case=cases())
def test_a_consent_denial_binds_all_but_services_and_the_patient(
    case: tuple[Principal, Operation, Target, AccessContext],
) -> None:
    principal, operation, target, context = case
    if not target.patient_data or not context.consent_denials:
        return
    decision = decide(principal, operation, target, context)
    if decision.allowed:
        assert principal.role == Role.SERVICE.value or _own(principal, target)
    else:
        assert decision.reasons  # the consent's own words, or the rule that refused


@settings(max_examples=500, deadline=None)
@given(case=cases())
def test_restricted_records_only_for_the_treating_team_or_an_emergency(
    case: tuple[Principal, Operation, Target, AccessContext],
) -> None:
    principal, operation, target, context = case
    if not target.patient_data or not target.restricted:
        return
    decision = decide(principal, operation, target, context)
    if not decision.allowed or principal.role == Role.SERVICE.value or _own(principal, target):
        return
    held = {f.relationship for f in context.facts}
    team = {Relationship.PERSONAL, Relationship.GUARDIAN}
    assert held & (team | {Relationship.BREAK_GLASS})
    if not held & team:
        # Only the emergency grant opened it: the act is marked as break-the-glass.
        assert Obligation.BREAK_GLASS in decision.obligations
        assert decision.purpose


@settings(max_examples=500, deadline=None)
@given(case=cases())
def test_break_the_glass_is_marked_exactly_when_nothing_else_allows(
    case: tuple[Principal, Operation, Target, AccessContext],
) -> None:
    principal, operation, target, context = case
    decision = decide(principal, operation, target, context)
    without = AccessContext(
        tuple(f for f in context.facts if f.relationship is not Relationship.BREAK_GLASS),
        context.consent_denials,
    )
    alone = decide(principal, operation, target, without)
    if alone.allowed:
        assert decision.allowed
        assert Obligation.BREAK_GLASS not in decision.obligations
    elif decision.allowed:
        assert Obligation.BREAK_GLASS in decision.obligations or not target.patient_data
        if target.patient_data:
            grant = next(f for f in context.facts if f.relationship is Relationship.BREAK_GLASS)
            assert decision.purpose == grant.reason


@settings(max_examples=500, deadline=None)
@given(case=cases())
def test_scopes_never_widen(case: tuple[Principal, Operation, Target, AccessContext]) -> None:
    principal, operation, target, context = case
    scoped = decide(principal, operation, target, context)
    unscoped = decide(
        Principal(id=principal.id, role=principal.role, patient_id=principal.patient_id),
        operation,
        target,
        context,
    )
    if scoped.allowed:
        assert unscoped.allowed
        assert scoped.obligations == unscoped.obligations


@given(st.text(min_size=1, max_size=30).filter(lambda r: r not in {x.value for x in Role}))
def test_unknown_roles_are_denied_everything(role: str) -> None:
    principal = Principal(id="u", role=role, patient_id="p1")
    context = AccessContext((CareFact(Relationship.PERSONAL, "x"),))
    for resource_type in TYPES:
        for patient_data in (True, False):
            for op in Operation:
                target = Target(resource_type, "p1", patient_data=patient_data)
                assert not decide(principal, op, target, context).allowed
    assert search_plan(principal).rules == ()
    assert not has_permission(principal, Permission.DIRECTORY_RESOURCE_READ)


def test_a_patient_never_reaches_another_patient() -> None:
    me = Principal(id="u", role="patient", patient_id="p1")
    for target in (
        Target("Observation", "p2"),
        Target("Patient", "p2"),
        Target("Observation", None),
    ):
        for op in Operation:
            assert not decide(me, op, target).allowed
    assert decide(me, Operation.READ, Target("Observation", "p1")).allowed
    lost = Principal(id="u", role="patient", patient_id=None)
    assert not decide(lost, Operation.READ, Target("Observation", None)).allowed


def test_the_own_record_ignores_the_patients_own_consent() -> None:
    me = Principal(id="u", role="patient", patient_id="p1")
    context = AccessContext(consent_denials=("the patient's consent refuses",))
    target = Target("Observation", "p1", restricted=True)
    assert decide(me, Operation.READ, target, context).allowed


def test_emergency_past_a_restriction_is_marked_even_with_a_department_link() -> None:
    """A department link does not open a restricted record; with a break-the-glass grant it
    opens, and the ledger must say the grant was used (issue 5, item 5)."""
    nurse = Principal(id="u", role="nurse")
    department = CareFact(Relationship.DEPARTMENT, "an encounter links their department")
    grant = CareFact(Relationship.BREAK_GLASS, "a break-the-glass grant: cardiac arrest")
    target = Target("Observation", "p1", restricted=True)
    assert not decide(nurse, Operation.READ, target, AccessContext((department,))).allowed
    decision = decide(nurse, Operation.READ, target, AccessContext((department, grant)))
    assert decision.allowed
    assert Obligation.BREAK_GLASS in decision.obligations
    assert decision.purpose == grant.reason
    # Unrestricted, the department link is enough and the grant is not used.
    plain = decide(
        nurse, Operation.READ, Target("Observation", "p1"), AccessContext((department, grant))
    )
    assert plain.allowed
    assert Obligation.BREAK_GLASS not in plain.obligations
    # A secretary reading a restricted appointment under a grant: masked and marked.
    secretary = Principal(id="s", role="secretary")
    masked = decide(
        secretary,
        Operation.READ,
        Target("Appointment", "p1", restricted=True),
        AccessContext((grant,)),
    )
    assert set(masked.obligations) == {Obligation.MASK_CLINICAL, Obligation.BREAK_GLASS}


def test_the_strongest_relationship_is_named() -> None:
    physician = Principal(id="u", role="physician")
    context = AccessContext(
        (
            CareFact(Relationship.BREAK_GLASS, "grant"),
            CareFact(Relationship.DEPARTMENT, "department"),
            CareFact(Relationship.PERSONAL, "personal"),
        )
    )
    decision = decide(physician, Operation.WRITE, Target("Observation", "p1"), context)
    assert decision.reasons == ("role physician may write Observation", "personal")
    assert decision.obligations == ()
    assert decision.purpose is None


@pytest.mark.parametrize("role", list(Role), ids=str)
def test_search_plan(role: Role) -> None:
    plan = search_plan(Principal(id="u", role=role.value, patient_id="p1"))
    assert plan.role is role
    assert plan.rules == tuple(r for r in RULES[role] if Operation.SEARCH in r.operations)
    assert plan.consent_applies is (role is not Role.SERVICE)
    assert plan.own_patient == ("p1" if role is Role.PATIENT else None)
    assert plan.directory is (Permission.DIRECTORY_RESOURCE_READ in ROLE_PERMISSIONS[role])


def test_access_reports() -> None:
    assert decide_access_report(Principal(id="u", role="patient", patient_id="p1"), "p1").allowed
    assert not decide_access_report(
        Principal(id="u", role="patient", patient_id="p1"), "p2"
    ).allowed
    assert not decide_access_report(Principal(id="u", role="patient"), "p1").allowed
    for role in Role:
        if role is Role.PATIENT:
            continue
        allowed = decide_access_report(Principal(id="u", role=role.value), "p1").allowed
        assert allowed is (role in {Role.DPO, Role.SECURITY_OFFICER}), role


def test_permission_and_role_enums_are_alphabetised() -> None:
    assert [p.value for p in Permission] == sorted(p.value for p in Permission)
    assert [r.value for r in Role] == sorted(r.value for r in Role)
    assert [o.value for o in Obligation] == sorted(o.value for o in Obligation)
    assert set(ROLE_PERMISSIONS) == set(Role)
    assert set(RULES) == set(Role)


def test_admin_and_researcher_have_no_patient_data_rule() -> None:
    assert RULES[Role.ADMIN] == ()
    assert RULES[Role.RESEARCHER] == ()
    assert ROLE_PERMISSIONS[Role.RESEARCHER] == frozenset()


def test_only_a_consent_exempt_role_with_relationship_free_rules_skips_the_facts() -> None:
    """`needs_context` lets the records room skip gathering facts; it may say so only where
    no fact can change the answer, which the decision itself confirms."""
    from egide.access.policy import AccessContext, needs_context  # noqa: PLC0415
    from egide.access.relationships import CareFact, Relationship  # noqa: PLC0415

    service = Principal(id="s", role="service")
    assert not needs_context(service, "Observation", Operation.READ)
    for role in ("physician", "secretary", "patient", "dpo", "lab", "no-such-role"):
        assert needs_context(Principal(id="x", role=role), "Patient", Operation.READ)
    # Where it says "not needed", facts indeed change nothing.
    denied = AccessContext((CareFact(Relationship.PERSONAL, "r"),), ("consent refuses",))
    target = Target("Observation", "p1", restricted=True)
    assert decide(service, Operation.READ, target, denied).allowed
    assert decide(service, Operation.READ, target).allowed

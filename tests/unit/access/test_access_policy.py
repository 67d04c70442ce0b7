"""The access policy, table-driven over every role and every kind of target."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from egide.access.permissions import ROLE_PERMISSIONS, Permission, Role
from egide.access.policy import Operation, Target, decide, search_restriction
from egide.core.principal import Principal

CLINICAL = Target("Observation", "p1")
DEMOGRAPHIC = Target("Patient", "p1")
DIRECTORY = Target("Practitioner", None, patient_data=False)
ORPHAN_CLINICAL = Target("Observation", None)  # patient data with no patient

CLINICAL_ROLES = {
    Role.LAB,
    Role.NURSE,
    Role.PHARMACIST,
    Role.PHYSICIAN,
    Role.RADIOLOGY,
    Role.RESIDENT,
    Role.SERVICE,
}

# (role, target, operation) -> allowed, for every role: the whole matrix, written out.
EXPECTED: dict[tuple[Role, Target, Operation], bool] = {}
for role in Role:
    for op in Operation:
        write = op is Operation.WRITE
        EXPECTED[(role, CLINICAL, op)] = role in CLINICAL_ROLES
        EXPECTED[(role, ORPHAN_CLINICAL, op)] = role in CLINICAL_ROLES
        EXPECTED[(role, DEMOGRAPHIC, op)] = role in CLINICAL_ROLES | {Role.SECRETARY}
        EXPECTED[(role, DIRECTORY, op)] = (
            role in {Role.ADMIN, Role.SERVICE} if write else role not in {Role.RESEARCHER}
        )
# A patient reads their own compartment (p1 is theirs below) and nothing else.
for target in (CLINICAL, DEMOGRAPHIC):
    EXPECTED[(Role.PATIENT, target, Operation.READ)] = True
    EXPECTED[(Role.PATIENT, target, Operation.SEARCH)] = True
EXPECTED[(Role.PATIENT, DIRECTORY, Operation.WRITE)] = False


@pytest.mark.parametrize(
    ("role", "target", "operation"),
    sorted(
        EXPECTED, key=lambda k: (k[0].value, k[1].resource_type, str(k[1].patient_id), k[2].value)
    ),
)
def test_every_cell_of_the_matrix(role: Role, target: Target, operation: Operation) -> None:
    principal = Principal(
        id="u", role=role.value, patient_id="p1" if role is Role.PATIENT else None
    )
    decision = decide(principal, operation, target)
    assert decision.allowed is EXPECTED[(role, target, operation)]
    assert decision.reasons, "every decision says why"


def test_a_patient_never_reaches_another_patient() -> None:
    me = Principal(id="u", role="patient", patient_id="p1")
    for target in (Target("Observation", "p2"), Target("Patient", "p2"), ORPHAN_CLINICAL):
        for op in Operation:
            decision = decide(me, op, target)
            assert not decision.allowed
    assert search_restriction(me) == "p1"


def test_patient_token_without_a_patient_reaches_nothing() -> None:
    lost = Principal(id="u", role="patient", patient_id=None)
    assert not decide(lost, Operation.READ, CLINICAL).allowed
    restriction = search_restriction(lost)
    assert restriction is not None
    assert restriction not in {"p1", ""}


@given(st.text(min_size=1, max_size=30).filter(lambda r: r not in {x.value for x in Role}))
def test_unknown_roles_are_denied_everything(role: str) -> None:
    principal = Principal(id="u", role=role)
    for target in (CLINICAL, DEMOGRAPHIC, DIRECTORY):
        for op in Operation:
            assert not decide(principal, op, target).allowed


def test_permission_and_role_enums_are_alphabetised() -> None:
    assert [p.value for p in Permission] == sorted(p.value for p in Permission)
    assert [r.value for r in Role] == sorted(r.value for r in Role)
    assert set(ROLE_PERMISSIONS) == set(Role)


def test_admin_has_no_patient_permission() -> None:
    assert not any(p.value.startswith("patient:") for p in ROLE_PERMISSIONS[Role.ADMIN])

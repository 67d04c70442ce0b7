"""Which role may do what to which kind of patient data, and under which relationship.

Pure data and lookups (no I/O). One table, `RULES`, is the whole clinical policy: for each role,
rules of the form "these resource types, these operations, when the principal holds one of
these relationships with the patient". Deny by default (DESIGN.md, contract 1): a role, type
and operation no rule names is refused. `docs/access.md` is generated from this table
(`egide.access.matrix`) and a table-driven test walks every cell of it.

The roles are those of issue 5, item 2:

* physician and resident: the records of patients they treat (personal link or their
  department's), or in an emergency under break-the-glass;
* nurse: the same, but no orders (prescriptions and requests are a prescriber's);
* secretary: demographics and scheduling of every patient, clinical elements masked;
* lab, radiology, pharmacist: the orders and results of their service for patients with an
  active order for it;
* patient: their own compartment and, as a guardian, their minor's; they record their consent;
* dpo: consents and the identity of data subjects (GDPR requests), no clinical data;
* security_officer: clinical data only under an investigation grant, read-only;
* service: integration engines, every patient (SMART `system/*.cruds`);
* admin and researcher: no patient data through the FHIR API (accounts and keys; pseudonymised
  exports come with the privacy issue).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from egide.access.permissions import Role
from egide.access.relationships import Relationship


class Operation(StrEnum):
    READ = "read"
    SEARCH = "search"
    WRITE = "write"


class Obligation(StrEnum):
    """What the caller must do with an allowed act, alphabetised."""

    BREAK_GLASS = "break_glass"  # mark the ledger entry: the act used an emergency grant
    MASK_CLINICAL = "mask_clinical"  # remove clinical elements (access.masking)


@dataclass(frozen=True)
class TypeSet:
    """A set of patient-data resource types: `include` exactly, or every type but `exclude`."""

    include: frozenset[str] | None = None
    exclude: frozenset[str] = frozenset()

    def __contains__(self, resource_type: object) -> bool:
        if self.include is not None:
            return resource_type in self.include
        return resource_type not in self.exclude

    def describe(self) -> str:
        if self.include is not None:
            return ", ".join(sorted(self.include))
        if self.exclude:
            return "every type but " + ", ".join(sorted(self.exclude))
        return "every type"


# Who the patient is (and who acts for them).
DEMOGRAPHIC = frozenset({"Patient", "RelatedPerson"})
# When and where they are seen: what admission desks and secretaries work with.
SCHEDULING = frozenset({"Appointment", "CareTeam", "Encounter", "EpisodeOfCare"})
CONSENT = frozenset({"Consent"})
# Prescriptions and requests: written by prescribers only.
ORDERS = frozenset(
    {"DeviceRequest", "MedicationRequest", "NutritionOrder", "ServiceRequest", "VisionPrescription"}
)
LAB = frozenset({"DiagnosticReport", "Observation", "ServiceRequest", "Specimen"})
IMAGING = frozenset({"DiagnosticReport", "ImagingStudy", "Media", "Observation", "ServiceRequest"})
PHARMACY = frozenset(
    {
        "AllergyIntolerance",
        "MedicationAdministration",
        "MedicationDispense",
        "MedicationRequest",
        "MedicationStatement",
    }
)
ALL = TypeSet()
# A consent that restricts "everything" (a deny with no actor and no label) keeps the clinical
# record to the treating team; who the patient is, their appointments and their consents stay
# reachable by the desks and the DPO who must act on them.
RESTRICT_ALL_EXEMPT = DEMOGRAPHIC | SCHEDULING | CONSENT

READ_OPS = frozenset({Operation.READ, Operation.SEARCH})
ALL_OPS = frozenset(Operation)
R = Relationship
TREATING = frozenset({R.BREAK_GLASS, R.DEPARTMENT, R.PERSONAL})
EVERYONE = frozenset({R.ANY})


@dataclass(frozen=True)
class Rule:
    types: TypeSet
    operations: frozenset[Operation]
    relationships: frozenset[Relationship]
    obligations: tuple[Obligation, ...] = ()


def _clinician(*, orders: bool) -> tuple[Rule, ...]:
    # A patient's consent is theirs (or their guardian's, or recorded by the DPO): a clinician
    # who could withdraw it could lift a refusal that names them.
    writes = TypeSet(exclude=CONSENT if orders else CONSENT | ORDERS)
    return (
        # Finding a patient (the admission list, a name search) needs no relationship; the
        # look-up is audited and watched by detection. Their record does.
        Rule(TypeSet(DEMOGRAPHIC), READ_OPS, EVERYONE),
        Rule(ALL, READ_OPS, TREATING),
        Rule(writes, frozenset({Operation.WRITE}), TREATING),
    )


def _service_desk(types: frozenset[str], writes: frozenset[str]) -> tuple[Rule, ...]:
    order = frozenset({R.ORDER})
    return (
        Rule(TypeSet(DEMOGRAPHIC | types), READ_OPS, order),
        Rule(TypeSet(writes), frozenset({Operation.WRITE}), order),
    )


RULES: Mapping[Role, tuple[Rule, ...]] = {
    Role.ADMIN: (),
    Role.DPO: (
        Rule(TypeSet(CONSENT), ALL_OPS, EVERYONE),
        Rule(TypeSet(DEMOGRAPHIC), READ_OPS, EVERYONE),
    ),
    Role.LAB: _service_desk(LAB, frozenset({"DiagnosticReport", "Observation", "Specimen"})),
    Role.NURSE: _clinician(orders=False),
    Role.PATIENT: (
        Rule(ALL, READ_OPS, frozenset({R.GUARDIAN, R.OWN})),
        Rule(TypeSet(CONSENT), frozenset({Operation.WRITE}), frozenset({R.GUARDIAN, R.OWN})),
    ),
    Role.PHARMACIST: _service_desk(PHARMACY, frozenset({"MedicationDispense"})),
    Role.PHYSICIAN: _clinician(orders=True),
    Role.RADIOLOGY: _service_desk(
        IMAGING, frozenset({"DiagnosticReport", "ImagingStudy", "Media", "Observation"})
    ),
    Role.RESEARCHER: (),
    Role.RESIDENT: _clinician(orders=True),
    Role.SECRETARY: (
        Rule(TypeSet(DEMOGRAPHIC), ALL_OPS, EVERYONE),
        Rule(TypeSet(SCHEDULING), ALL_OPS, EVERYONE, (Obligation.MASK_CLINICAL,)),
    ),
    Role.SECURITY_OFFICER: (Rule(ALL, READ_OPS, frozenset({R.INVESTIGATION})),),
    Role.SERVICE: (Rule(ALL, ALL_OPS, EVERYONE),),
}

# Roles whose acts the patient's consent does not bind: a system feed is not a person reading.
CONSENT_EXEMPT = frozenset({Role.SERVICE})


def rules_for(role: Role, resource_type: str, operation: Operation) -> tuple[Rule, ...]:
    """The rules that could allow `operation` on `resource_type` for `role` (patient data)."""
    return tuple(
        rule for rule in RULES[role] if operation in rule.operations and resource_type in rule.types
    )


def may_ever(role: Role, resource_type: str, operation: Operation) -> bool:
    """Whether some relationship lets `role` do this: a refusal that depends on nothing the
    caller could not know already (the role and the type), hence safe to answer 403."""
    return bool(rules_for(role, resource_type, operation))

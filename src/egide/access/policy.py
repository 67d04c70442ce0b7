"""The decision function: pure, deny by default, with reasons for the ledger."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from egide.access.permissions import ROLE_PERMISSIONS, Permission, Role
from egide.access.scopes import scope_allows_any
from egide.core.principal import Decision, Principal

# Resources that a secretary may see: who the patient is and when they come (issue 5: clinical
# elements masked). Everything else in a patient compartment is clinical.
DEMOGRAPHIC_TYPES = frozenset({"Appointment", "Patient"})


class Operation(StrEnum):
    READ = "read"
    SEARCH = "search"
    WRITE = "write"


# The SMART interaction letters (access.scopes) any of which allows an operation.
_SCOPE_LETTERS = {Operation.READ: "rs", Operation.SEARCH: "s", Operation.WRITE: "cud"}


@dataclass(frozen=True)
class Target:
    """What is being touched: a resource type and the patient whose compartment holds it.

    `patient_data` says whether the type belongs to the FHIR patient compartment (clinical or
    demographic data) or is directory data (a Practitioner, an Organization). A patient-data
    resource with no patient (`patient_id` None) is still patient data: only roles with the
    clinical permission reach it, never a patient principal.
    """

    resource_type: str
    patient_id: str | None
    patient_data: bool = True


def required_permission(target: Target, operation: Operation) -> Permission:
    write = operation is Operation.WRITE
    if not target.patient_data and target.resource_type not in DEMOGRAPHIC_TYPES:
        return Permission.DIRECTORY_RESOURCE_WRITE if write else Permission.DIRECTORY_RESOURCE_READ
    if target.resource_type in DEMOGRAPHIC_TYPES:
        return (
            Permission.PATIENT_DEMOGRAPHICS_WRITE if write else Permission.PATIENT_DEMOGRAPHICS_READ
        )
    return Permission.PATIENT_CLINICAL_WRITE if write else Permission.PATIENT_CLINICAL_READ


def _role(principal: Principal) -> Role | None:
    try:
        return Role(principal.role)
    except ValueError:
        return None


def has_permission(principal: Principal, permission: Permission) -> bool:
    role = _role(principal)
    return role is not None and permission in ROLE_PERMISSIONS[role]


def decide(principal: Principal, operation: Operation, target: Target) -> Decision:
    """May `principal` perform `operation` on `target`? Deny unless a rule allows."""
    role = _role(principal)
    if role is None:
        return Decision.deny(f"unknown role {principal.role!r}")
    permission = required_permission(target, operation)
    if permission not in ROLE_PERMISSIONS[role]:
        return Decision.deny(f"role {role} lacks permission {permission}")
    # SMART scopes bound the role, never widen it (access-control issue, item 7). The API
    # checks the exact interaction letter first; here, behind it, an operation passes when any
    # of its letters is granted (a search result is read: `r` or `s`).
    letters = _SCOPE_LETTERS[operation]
    if principal.scopes is not None and not scope_allows_any(
        principal.scopes, target.resource_type, letters
    ):
        return Decision.deny(f"the token's scopes do not allow {operation} {target.resource_type}")
    if role is Role.PATIENT and target.patient_data:
        if principal.patient_id is None or target.patient_id != principal.patient_id:
            return Decision.deny("outside the patient's own compartment")
        return Decision.allow(f"role {role} grants {permission}", "own compartment")
    return Decision.allow(f"role {role} grants {permission}")


@dataclass(frozen=True)
class SearchScope:
    """What a principal's searches and histories may return, as facts the records layer turns
    into a filter inside the query (so totals and paging count only what may be seen)."""

    directory: bool  # directory data (staff, organisations, terminology)
    demographics: bool  # Patient and Appointment resources
    clinical: bool  # every other kind of patient data
    only_patient: str | None  # patient data only from this patient's compartment


def search_scope(principal: Principal) -> SearchScope:
    role = _role(principal)
    granted = ROLE_PERMISSIONS[role] if role is not None else frozenset()
    clinical = Permission.PATIENT_CLINICAL_READ in granted
    return SearchScope(
        directory=Permission.DIRECTORY_RESOURCE_READ in granted,
        demographics=clinical or Permission.PATIENT_DEMOGRAPHICS_READ in granted,
        clinical=clinical,
        only_patient=search_restriction(principal),
    )


def search_restriction(principal: Principal) -> str | None:
    """The only patient whose compartment this principal's searches may return, if any.

    A patient principal searches within their own compartment; the records layer applies this
    as a filter in the query itself, so counts and paging leak nothing about other patients.
    """
    if _role(principal) is Role.PATIENT:
        # A patient token with no patient id reaches nothing: an impossible id filters all.
        return principal.patient_id or "\x00none"
    return None


def decide_access_report(principal: Principal, patient_id: str) -> Decision:
    """Who may read the access report of `patient_id`: the patient (GDPR art. 15), and the
    data-protection and security officers; nobody else, and a patient no one else's."""
    role = _role(principal)
    if role is Role.PATIENT:
        if principal.patient_id is not None and principal.patient_id == patient_id:
            return Decision.allow("the patient's own access report (GDPR art. 15)")
        return Decision.deny("outside the patient's own compartment")
    if has_permission(principal, Permission.LEDGER_REPORT_READ):
        return Decision.allow(f"role {principal.role} grants {Permission.LEDGER_REPORT_READ}")
    return Decision.deny(f"role {principal.role} may not read access reports")

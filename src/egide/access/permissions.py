"""Permissions and roles, as alphabetised StrEnums, and the role-to-permission table.

This is the simplest honest policy (issue 2): what a role may do at all. Care relationships,
consent and break-the-glass narrow it further in the access-control issue without changing the
callers: they already pass every fact through `decide`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class Permission(StrEnum):
    """`scope:resource:action`, alphabetised."""

    ADMIN_KEYS_ROTATE = "admin:keys:rotate"
    ADMIN_TOKENS_MANAGE = "admin:tokens:manage"
    DIRECTORY_RESOURCE_READ = "directory:resource:read"
    DIRECTORY_RESOURCE_WRITE = "directory:resource:write"
    LEDGER_AUDIT_READ = "ledger:audit:read"
    LEDGER_REPORT_READ = "ledger:report:read"  # any patient's access report
    PATIENT_CLINICAL_READ = "patient:clinical:read"
    PATIENT_CLINICAL_WRITE = "patient:clinical:write"
    PATIENT_DEMOGRAPHICS_READ = "patient:demographics:read"
    PATIENT_DEMOGRAPHICS_WRITE = "patient:demographics:write"


class Role(StrEnum):
    """The roles of DESIGN.md and the access-control issue, alphabetised."""

    ADMIN = "admin"
    DPO = "dpo"
    LAB = "lab"
    NURSE = "nurse"
    PATIENT = "patient"
    PHARMACIST = "pharmacist"
    PHYSICIAN = "physician"
    RADIOLOGY = "radiology"
    RESEARCHER = "researcher"
    RESIDENT = "resident"
    SECRETARY = "secretary"
    SECURITY_OFFICER = "security_officer"
    SERVICE = "service"


P = Permission
_CLINICAL = frozenset(
    {
        P.DIRECTORY_RESOURCE_READ,
        P.PATIENT_CLINICAL_READ,
        P.PATIENT_CLINICAL_WRITE,
        P.PATIENT_DEMOGRAPHICS_READ,
        P.PATIENT_DEMOGRAPHICS_WRITE,
    }
)

ROLE_PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    # Accounts, keys and settings; the staff directory; never patient data (DESIGN.md).
    Role.ADMIN: frozenset(
        {
            P.ADMIN_KEYS_ROTATE,
            P.ADMIN_TOKENS_MANAGE,
            P.DIRECTORY_RESOURCE_READ,
            P.DIRECTORY_RESOURCE_WRITE,
        }
    ),
    # GDPR requests and access reports come with the privacy issue; no clinical reach here.
    Role.DPO: frozenset({P.DIRECTORY_RESOURCE_READ, P.LEDGER_REPORT_READ}),
    Role.LAB: _CLINICAL,
    Role.NURSE: _CLINICAL,
    # Their own compartment only (see policy.decide), read-only.
    Role.PATIENT: frozenset(
        {P.DIRECTORY_RESOURCE_READ, P.PATIENT_CLINICAL_READ, P.PATIENT_DEMOGRAPHICS_READ}
    ),
    Role.PHARMACIST: _CLINICAL,
    Role.PHYSICIAN: _CLINICAL,
    Role.RADIOLOGY: _CLINICAL,
    # Pseudonymised exports only, with the privacy issue.
    Role.RESEARCHER: frozenset(),
    Role.RESIDENT: _CLINICAL,
    # Demographics and appointments only.
    Role.SECRETARY: frozenset(
        {
            P.DIRECTORY_RESOURCE_READ,
            P.PATIENT_DEMOGRAPHICS_READ,
            P.PATIENT_DEMOGRAPHICS_WRITE,
        }
    ),
    # The ledger as FHIR AuditEvents (read-only); alerts and incidents come with their issues;
    # clinical data only under an investigation grant (access-control issue).
    Role.SECURITY_OFFICER: frozenset(
        {P.DIRECTORY_RESOURCE_READ, P.LEDGER_AUDIT_READ, P.LEDGER_REPORT_READ}
    ),
    # Integration engines and migrations: SMART `system/*.cruds` (DESIGN.md, tokens).
    Role.SERVICE: _CLINICAL | {P.DIRECTORY_RESOURCE_WRITE},
}

"""Permissions and roles, as alphabetised StrEnums, and the role-to-permission table.

These are the permissions that do not depend on a patient: the directory, the ledger, access
reports, keys and tokens. What a role may do to patient data, and under which care
relationship, is the rule table of `access.rules`.
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
_STAFF = frozenset({P.DIRECTORY_RESOURCE_READ})

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
    Role.DPO: frozenset({P.DIRECTORY_RESOURCE_READ, P.LEDGER_REPORT_READ}),
    Role.LAB: _STAFF,
    Role.NURSE: _STAFF,
    Role.PATIENT: _STAFF,  # who their clinicians are
    Role.PHARMACIST: _STAFF,
    Role.PHYSICIAN: _STAFF,
    Role.RADIOLOGY: _STAFF,
    Role.RESEARCHER: frozenset(),
    Role.RESIDENT: _STAFF,
    Role.SECRETARY: _STAFF,
    # The ledger as FHIR AuditEvents (read-only) and any patient's access report.
    Role.SECURITY_OFFICER: frozenset(
        {P.DIRECTORY_RESOURCE_READ, P.LEDGER_AUDIT_READ, P.LEDGER_REPORT_READ}
    ),
    # Integration engines and migrations: SMART `system/*.cruds` (DESIGN.md, tokens).
    Role.SERVICE: frozenset({P.DIRECTORY_RESOURCE_READ, P.DIRECTORY_RESOURCE_WRITE}),
}

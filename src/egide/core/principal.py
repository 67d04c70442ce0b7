"""Who is acting (`Principal`) and what the access policy said about it (`Decision`).

Patient-data code receives a Principal, never an account: it cannot see passwords, TOTP seeds
or token hashes (DESIGN.md, layout). A Decision carries its reasons so the ledger can record
why an act was allowed or denied.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request."""

    id: str  # account or API-token id: what the ledger records as `user`
    role: str
    name: str = ""
    patient_id: str | None = None  # for the patient role: the patient they are
    ip: str | None = None
    device: str | None = None
    request_id: str | None = None
    # The SMART scopes of an OAuth access token: an upper bound on what this caller may do
    # (access.scopes). None: not limited by scopes (sessions, `egide_` API tokens).
    scopes: frozenset[str] | None = None
    # Who this person is in the FHIR data (SMART `fhirUser`): `Practitioner/<id>` for staff,
    # `Patient/<id>` for a patient; care relationships are found from it (access.relationships).
    fhir_user: str | None = None

    def with_request(
        self, *, ip: str | None, device: str | None, request_id: str | None
    ) -> Principal:
        return dataclasses.replace(self, ip=ip, device=device, request_id=request_id)


def fhir_user_for(*, patient_id: str | None, practitioner_id: str | None) -> str | None:
    """The FHIR reference a signed-in person is (SMART `fhirUser`), from their account."""
    if practitioner_id:
        return f"Practitioner/{practitioner_id}"
    if patient_id:
        return f"Patient/{patient_id}"
    return None


@dataclass(frozen=True)
class Decision:
    """The result of an access decision: allowed or not, why, and what must be done."""

    allowed: bool
    reasons: tuple[str, ...] = ()
    obligations: tuple[str, ...] = field(default=())
    # The stated reason the act relies on (a break-the-glass reason), for the ledger's `purpose`.
    purpose: str | None = None

    @classmethod
    def allow(cls, *reasons: str) -> Decision:
        return cls(allowed=True, reasons=reasons)

    @classmethod
    def deny(cls, *reasons: str) -> Decision:
        return cls(allowed=False, reasons=reasons)

"""Who is acting (`Principal`) and what the access policy said about it (`Decision`).

Patient-data code receives a Principal, never an account: it cannot see passwords, TOTP seeds
or token hashes (DESIGN.md, layout). A Decision carries its reasons so the ledger can record
why an act was allowed or denied.
"""

from __future__ import annotations

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

    def with_request(
        self, *, ip: str | None, device: str | None, request_id: str | None
    ) -> Principal:
        return Principal(
            self.id, self.role, self.name, self.patient_id, ip, device, request_id, self.scopes
        )


@dataclass(frozen=True)
class Decision:
    """The result of an access decision: allowed or not, why, and what must be done."""

    allowed: bool
    reasons: tuple[str, ...] = ()
    obligations: tuple[str, ...] = field(default=())

    @classmethod
    def allow(cls, *reasons: str) -> Decision:
        return cls(allowed=True, reasons=reasons)

    @classmethod
    def deny(cls, *reasons: str) -> Decision:
        return cls(allowed=False, reasons=reasons)

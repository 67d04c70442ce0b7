"""API bearer tokens: issue, authenticate, revoke.

A token is `egide_` followed by 43 base64url characters carrying 256 random bits (OWASP ASVS 5.0
V7.2.3: at least 128 bits of entropy; we use 256 as the vault issue asks). The database keeps
SHA-256(token) only: a stolen database yields no usable token. A slow hash is unnecessary for
256-bit random secrets, and a fast one keeps every request cheap.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from egide.access.permissions import Role
from egide.core.clock import Clock
from egide.core.errors import BadRequest
from egide.core.ids import RandomSource, SystemRandom, new_id
from egide.core.principal import Principal, fhir_user_for
from egide.identity.models import ApiToken

TOKEN_PREFIX = "egide_"  # noqa: S105 - a public prefix that lets secret scanners spot leaks
_TOKEN_RE = re.compile(r"^egide_[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True)
class IssuedToken:
    id: str
    token: str  # shown once, never stored
    role: str
    name: str


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii")).digest()


def create_token(
    session: Session,
    *,
    role: str,
    name: str,
    clock: Clock,
    patient_id: str | None = None,
    practitioner_id: str | None = None,
    expires_at: dt.datetime | None = None,
    random: RandomSource | None = None,
) -> IssuedToken:
    """Issue a new token bound to `role`. The clear token is returned once and never stored."""
    try:
        parsed = Role(role)
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        msg = f"unknown role {role!r} (one of: {roles})"
        raise BadRequest(msg) from None
    name = name.strip()
    if not name or len(name) > 200:
        msg = "a token needs a name of 1 to 200 characters"
        raise BadRequest(msg)
    if parsed is Role.PATIENT and not patient_id:
        msg = "a patient token must name its patient (--patient ID)"
        raise BadRequest(msg)
    if parsed is not Role.PATIENT and patient_id:
        msg = "only patient tokens are bound to a patient"
        raise BadRequest(msg)
    if practitioner_id and parsed in (Role.PATIENT, Role.SERVICE, Role.ADMIN):
        msg = "only staff tokens act as a practitioner"
        raise BadRequest(msg)
    raw = (random or SystemRandom()).token_bytes(32)
    token = TOKEN_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    row = ApiToken(
        id=new_id(random),
        name=name,
        role=parsed.value,
        patient_id=patient_id,
        practitioner_id=practitioner_id or None,
        token_hash=_hash(token),
        created_at=clock.now(),
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    return IssuedToken(id=row.id, token=token, role=row.role, name=row.name)


def authenticate(session: Session, *, token: str, clock: Clock) -> Principal | None:
    """The principal a presented token stands for, or None (unknown, revoked, expired)."""
    if not _TOKEN_RE.fullmatch(token):
        return None
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == _hash(token)))
    if row is None or row.revoked_at is not None:
        return None
    if row.expires_at is not None and row.expires_at <= clock.now():
        return None
    return Principal(
        id=row.id,
        role=row.role,
        name=row.name,
        patient_id=row.patient_id,
        fhir_user=fhir_user_for(patient_id=row.patient_id, practitioner_id=row.practitioner_id),
    )


def revoke_token(session: Session, *, token_id: str, clock: Clock) -> bool:
    row = session.get(ApiToken, token_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = clock.now()
    session.flush()
    return True

"""Shared steps of the identity tests: invite, accept, enrol, sign in, read the ledger."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from egide.cli.runtime import OPERATOR, Services
from egide.core.clock import FixedClock
from egide.db.engine import transaction
from egide.identity import accounts, login, totp
from egide.ledger.models import LedgerEntry
from egide.ledger.service import flush_pending

STAFF_PASSWORD = "violet kettle orbit 42"
PATIENT_PASSWORD = "marmalade submarine lantern"
IP = "192.0.2.10"
DEVICE = "pytest-browser"


@dataclass
class Person:
    id: str
    email: str
    password: str
    seed: bytes | None = None


def clock_of(services: Services) -> FixedClock:
    clock = services.records.clock
    assert isinstance(clock, FixedClock)
    return clock


def past_step_up(services: Services) -> None:
    """Move the clock past the step-up window, still within the 15-minute idle timeout."""
    clock_of(services).advance(dt.timedelta(minutes=services.settings.step_up_minutes, seconds=30))


def invite(
    services: Services,
    email: str,
    *,
    role: str = "physician",
    name: str = "Alice Martin",
    patient_id: str | None = None,
) -> tuple[str, str]:
    """(account id, invitation token)."""
    with transaction(services.session_factory) as session:
        view, token = accounts.create_account(
            session,
            email=email,
            name=name,
            role=role,
            clock=services.records.clock,
            settings=services.settings,
            envelope=services.records.envelope,
            actor=OPERATOR,
            patient_id=patient_id,
        )
    return view.id, token


def accept(services: Services, token: str, password: str) -> accounts.AccountView:
    with transaction(services.session_factory) as session:
        return accounts.accept_invitation(
            session,
            token=token,
            password=password,
            clock=services.records.clock,
            settings=services.settings,
            ip=IP,
            device=DEVICE,
        )


def staff(services: Services, email: str = "alice@clinic.example", **kw: Any) -> Person:
    """An active staff account without an authenticator yet."""
    account_id, token = invite(services, email, **kw)
    accept(services, token, STAFF_PASSWORD)
    return Person(account_id, email, STAFF_PASSWORD)


def patient(services: Services, email: str = "paul@mail.example") -> Person:
    account_id, token = invite(
        services, email, role="patient", name="Paul Durand", patient_id="pat-123"
    )
    accept(services, token, PATIENT_PASSWORD)
    return Person(account_id, email, PATIENT_PASSWORD)


def enrol(services: Services, person: Person) -> list[str]:
    """Enrol TOTP through the account API; returns the recovery codes."""
    with transaction(services.session_factory) as session:
        enrolment = accounts.begin_totp_enrolment(
            session,
            account_id=person.id,
            clock=services.records.clock,
            envelope=services.records.envelope,
            settings=services.settings,
        )
    person.seed = totp.decode_secret(enrolment.secret_base32)
    with transaction(services.session_factory) as session:
        codes = accounts.confirm_totp_enrolment(
            session,
            account_id=person.id,
            code=code_now(services, person),
            clock=services.records.clock,
            envelope=services.records.envelope,
        )
    # The enrolment code's step is spent: move to the next step for the next code.
    clock_of(services).advance(dt.timedelta(seconds=30))
    return codes


def code_now(services: Services, person: Person) -> str:
    assert person.seed is not None
    return totp.totp_at_time(person.seed, services.records.clock.now().timestamp())


def password_step(
    services: Services, email: str, password: str, *, ip: str | None = IP
) -> login.LoginResult:
    with transaction(services.session_factory) as session:
        return login.password_step(
            session,
            email=email,
            password=password,
            clock=services.records.clock,
            settings=services.settings,
            envelope=services.records.envelope,
            ip=ip,
            device=DEVICE,
        )


def mfa_step(
    services: Services, pending: str, code: str, *, ip: str | None = IP
) -> login.LoginResult:
    with transaction(services.session_factory) as session:
        return login.mfa_step(
            session,
            pending_token=pending,
            code=code,
            clock=services.records.clock,
            settings=services.settings,
            envelope=services.records.envelope,
            ip=ip,
            device=DEVICE,
        )


def sign_in(services: Services, person: Person) -> login.LoginResult:
    """A complete sign-in (with a fresh TOTP code when enrolled); asserts it succeeded."""
    first = password_step(services, person.email, person.password)
    if first.outcome == "signed_in":
        return first
    assert first.outcome == "mfa_required", first
    assert first.pending_token is not None
    result = mfa_step(services, first.pending_token, code_now(services, person))
    assert result.outcome == "signed_in", result
    # A TOTP code works once: the next sign-in needs the next step's code.
    clock_of(services).advance(dt.timedelta(seconds=30))
    return result


def ledger(services: Services) -> list[dict[str, Any]]:
    """Every ledger entry, parsed, in order."""
    with transaction(services.session_factory) as session:
        flush_pending(session)
        rows = session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq)).all()
        return [json.loads(r.canonical) for r in rows]


def ledger_bytes(services: Services) -> bytes:
    with transaction(services.session_factory) as session:
        rows = session.scalars(select(LedgerEntry.canonical).order_by(LedgerEntry.seq)).all()
        return b"\n".join(rows)


def actions(services: Services, action: str) -> list[dict[str, Any]]:
    return [e for e in ledger(services) if e["action"] == action]

"""Shared steps of the live-detection tests: instances configured with a response, alerts,
sign-ins, sessions and account status, read through the real services."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select

from egide.cli.runtime import Services, open_services
from egide.core.clock import FixedClock
from egide.db.engine import transaction
from egide.identity.models import Account, WebSession
from egide.incidents import alerts
from tests.integration.identity_support import Person, clock_of, code_now, mfa_step, password_step

ATTACKER = "203.0.113.66"


def reopened(settings: Any, clock: FixedClock, **changes: Any) -> Iterator[Services]:
    """The same installation opened again with some settings changed."""
    opened = open_services(settings.model_copy(update=changes), clock=clock)
    yield opened
    opened.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def stored_alerts(services: Services, **filters: Any) -> list[alerts.Alert]:
    with transaction(services.session_factory) as session:
        return alerts.list_alerts(session, **filters)


def sign_in_from(services: Services, person: Person, *, ip: str) -> None:
    """Password and TOTP from `ip`; asserts it worked."""
    first = password_step(services, person.email, person.password, ip=ip)
    assert first.outcome == "mfa_required", first
    assert first.pending_token is not None
    done = mfa_step(services, first.pending_token, code_now(services, person), ip=ip)
    assert done.outcome == "signed_in", done
    clock_of(services).advance(dt.timedelta(seconds=30))  # a TOTP code works once


def live_sessions(services: Services, account_id: str) -> int:
    with transaction(services.session_factory) as session:
        rows = session.scalars(
            select(WebSession).where(
                WebSession.account_id == account_id, WebSession.revoked_at.is_(None)
            )
        ).all()
        return len(rows)


def account_status(services: Services, account_id: str) -> str:
    with transaction(services.session_factory) as session:
        account = session.get(Account, account_id)
        assert account is not None
        return account.status

"""Automatic containment (`identity.containment`, issue 6 item 6) on SQLite and PostgreSQL: each
response does what it says to the account, is ledgered under the detector with the alert, and
can never be turned against the defenders or provoked by a stranger into a lock-out."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from egide.cli.runtime import Services
from egide.db.engine import transaction
from egide.identity.containment import contain
from egide.identity.models import ApiToken, WebSession
from egide.incidents.alerts import DETECTOR
from tests.helpers import issue_token
from tests.integration.access_support import ledger
from tests.integration.detect_live_support import account_status
from tests.integration.identity_support import Person, enrol, sign_in
from tests.integration.identity_support import staff as staff_account

REASON = "critical alert al-0000000000000000test (exfiltration)"


def _contain(
    services: Services, user_id: str, actions: list[str], kind: str = "exfiltration"
) -> list[str]:
    with transaction(services.session_factory) as session:
        return contain(
            session,
            user_id=user_id,
            kind=kind,
            actions=actions,
            reason=REASON,
            clock=services.records.clock,
            actor=DETECTOR,
        )


def _signed_in(
    services: Services, role: str = "physician", email: str = "a@clinic.example"
) -> Person:
    person = staff_account(services, email=email, role=role)
    enrol(services, person)
    sign_in(services, person)
    return person


def _sessions(services: Services, account_id: str) -> list[Any]:
    with transaction(services.session_factory) as session:
        return [
            (row.revoked_at is None, row.mfa_at is not None)
            for row in session.scalars(
                select(WebSession).where(WebSession.account_id == account_id)
            )
        ]


def test_revoke_sessions_ends_every_session(services: Services) -> None:
    alice = _signed_in(services)
    done = _contain(services, alice.id, ["revoke_sessions"])
    assert done == ["1 session(s) and 0 app token(s) revoked"]
    assert _sessions(services, alice.id) == [(False, True)]
    assert account_status(services, alice.id) == "active"
    revoked = [e for e in ledger(services) if e["action"] == "session_revoke"][-1]
    assert revoked["user"] == "system:detect"
    assert REASON[:64] in revoked["reasons"]


def test_require_step_up_keeps_the_session_but_not_its_second_factor(services: Services) -> None:
    alice = _signed_in(services)
    done = _contain(services, alice.id, ["require_step_up"])
    assert done[0].startswith("step-up required on 1 session(s)")
    assert _sessions(services, alice.id) == [(True, False)]  # live, but must step up again
    entry = [e for e in ledger(services) if e["action"] == "step_up_required"][-1]
    assert entry["user"] == "system:detect"
    assert entry["resource_id"] == alice.id


def test_disable_account_stops_sign_in(services: Services) -> None:
    alice = _signed_in(services)
    done = _contain(services, alice.id, ["disable_account", "revoke_sessions"])
    assert done == ["account disabled, its sessions and app tokens revoked"]
    assert account_status(services, alice.id) == "disabled"
    assert _sessions(services, alice.id) == [(False, True)]
    disabled = [e for e in ledger(services) if e["action"] == "account_disable"][-1]
    assert disabled["user"] == "system:detect"
    assert REASON in disabled["reasons"]
    assert _contain(services, alice.id, ["disable_account"]) == []  # already: nothing more


@pytest.mark.parametrize("role", ["security_officer", "dpo", "admin"])
def test_the_defenders_are_signed_out_never_disabled(services: Services, role: str) -> None:
    person = _signed_in(services, role=role, email=f"{role}@clinic.example")
    done = _contain(services, person.id, ["disable_account"])
    assert done == ["1 session(s) and 0 app token(s) revoked"]
    assert account_status(services, person.id) == "active"


def test_an_alert_a_stranger_can_provoke_never_disables(services: Services) -> None:
    """Failed sign-ins can be typed by anyone who knows the address: the worst they buy is a
    sign-out, never a lock-out."""
    alice = _signed_in(services)
    done = _contain(services, alice.id, ["disable_account"], kind="credential_stuffing")
    assert done == ["1 session(s) and 0 app token(s) revoked"]
    assert account_status(services, alice.id) == "active"


def test_an_api_token_cannot_step_up_so_it_is_revoked(services: Services) -> None:
    issue_token(services, "nurse")
    with transaction(services.session_factory) as session:
        token = session.scalars(select(ApiToken).where(ApiToken.role == "nurse")).one()
        token_id = token.id
    assert _contain(services, token_id, ["require_step_up"]) == ["API token revoked"]
    with transaction(services.session_factory) as session:
        row = session.get(ApiToken, token_id)
        assert row is not None
        assert row.revoked_at is not None
    entry = [e for e in ledger(services) if e["action"] == "token_revoke"][-1]
    assert entry["resource_id"] == token_id


def test_service_accounts_and_unknown_ids_are_left_alone(services: Services) -> None:
    issue_token(services, "service")
    with transaction(services.session_factory) as session:
        service = session.scalars(select(ApiToken).where(ApiToken.role == "service")).one().id
    assert _contain(services, service, ["disable_account", "revoke_sessions"]) == []
    assert _contain(services, "unknown", ["revoke_sessions"]) == []
    assert _contain(services, "no-such-account", ["revoke_sessions"]) == []
    assert _contain(services, service, []) == []

"""Step-up (the identity issue, item 8), role changes, re-enrolment and sign-in housekeeping,
on SQLite and PostgreSQL.

OWASP ASVS 5.0: V7.5.1 (re-authentication before changing the second factor), V7.5.3 (further
authentication before a highly sensitive operation: a role change), V6.3.1 (failed step-up
codes count towards the same lockout as sign-in failures).
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from egide.cli.runtime import OPERATOR, Services, background_pass
from egide.core.errors import BadRequest, Conflict, Forbidden
from egide.db.engine import transaction
from egide.identity import accounts, login, sessions
from egide.identity.factors import BACKOFF_AFTER
from egide.identity.models import Account, AddressThrottle, LoginPending
from tests.integration.identity_support import (
    Person,
    actions,
    clock_of,
    code_now,
    enrol,
    password_step,
    sign_in,
    staff,
)


def _session_of(services: Services, person: Person) -> tuple[str, sessions.SessionInfo]:
    token = sign_in(services, person).session_token
    assert token is not None
    info = _validate(services, token)
    assert info is not None
    return token, info


def _validate(services: Services, token: str) -> sessions.SessionInfo | None:
    with transaction(services.session_factory) as session:
        return sessions.validate_session(
            session, token=token, clock=services.records.clock, settings=services.settings
        )


def _enrolled(services: Services, email: str, **kw: str) -> Person:
    person = staff(services, email, **kw)
    enrol(services, person)
    return person


def _step_up(services: Services, info: sessions.SessionInfo, code: str) -> sessions.StepUpResult:
    with transaction(services.session_factory) as session:
        return sessions.step_up(
            session,
            session_id=info.id,
            account_id=info.account_id,
            code=code,
            clock=services.records.clock,
            envelope=services.records.envelope,
            settings=services.settings,
        )


def _failed_count(services: Services, account_id: str) -> int:
    with transaction(services.session_factory) as session:
        row = session.get(Account, account_id)
        assert row is not None
        return row.failed_count


def _stale(services: Services) -> None:
    clock_of(services).advance(dt.timedelta(minutes=services.settings.step_up_minutes, seconds=1))


# --- failures persist and count towards the lockout --------------------------------------------


def test_v6_3_1_wrong_step_up_codes_are_recorded_and_reach_the_backoff(
    services: Services,
) -> None:
    person = _enrolled(services, "ines@clinic.example", name="Ines Roy")
    token, info = _session_of(services, person)
    right = code_now(services, person)
    wrong = "000000" if right != "000000" else "111111"
    before = len(actions(services, "mfa_failed"))
    for n in range(1, BACKOFF_AFTER + 1):
        result = _step_up(services, info, wrong)
        assert not result.ok
        assert result.message == sessions.STEP_UP_WRONG
        # The refusal committed: the ledger has it and the counter moved.
        assert _failed_count(services, person.id) == n
        assert len(actions(services, "mfa_failed")) == before + n
    assert actions(services, "mfa_failed")[-1]["reasons"] == ["step-up", "wrong TOTP code"]
    assert actions(services, "mfa_failed")[-1]["outcome"] == "denied"
    # In backoff now: even the right code is refused, with a delay, and that is recorded too.
    held = _step_up(services, info, right)
    assert not held.ok
    assert held.retry_after is not None
    assert held.retry_after > 0
    assert actions(services, "mfa_failed")[-1]["reasons"] == [
        "step-up",
        "too many failed attempts",
    ]
    # The sign-in shares the counter: the password step is in backoff as well.
    assert password_step(services, person.email, person.password).retry_after is not None
    # Once the backoff has passed, the right code steps up and clears the counter.
    clock_of(services).advance(dt.timedelta(minutes=1))
    done = _step_up(services, info, code_now(services, person))
    assert done.ok
    assert done.session_token is not None
    assert _failed_count(services, person.id) == 0
    assert _validate(services, done.session_token) is not None
    assert _validate(services, token) is None  # a re-authentication replaced the token


def test_v7_2_4_step_up_refreshes_the_window_and_replaces_the_token(services: Services) -> None:
    person = _enrolled(services, "jon@clinic.example", name="Jon Snow")
    token, _ = _session_of(services, person)
    _stale(services)
    stale = _validate(services, token)
    assert stale is not None
    with pytest.raises(Forbidden):
        sessions.require_recent_mfa(stale, clock=services.records.clock, settings=services.settings)
    done = _step_up(services, stale, code_now(services, person))
    assert done.ok
    assert done.session_token is not None
    assert done.session_token != token
    # The old token is terminated; the new one is the same session, stepped up now.
    assert _validate(services, token) is None
    fresh = _validate(services, done.session_token)
    assert fresh is not None
    assert fresh.id == stale.id
    assert fresh.csrf_secret == stale.csrf_secret
    assert fresh.mfa_at == clock_of(services).now()
    sessions.require_recent_mfa(fresh, clock=services.records.clock, settings=services.settings)


# --- re-enrolment of TOTP (V7.5.1) -------------------------------------------------------------


def _begin(services: Services, person: Person, info: sessions.SessionInfo | None) -> None:
    with transaction(services.session_factory) as session:
        accounts.begin_totp_enrolment(
            session,
            account_id=person.id,
            clock=services.records.clock,
            envelope=services.records.envelope,
            settings=services.settings,
            actor_session=info,
        )


def test_v7_5_1_replacing_the_authenticator_needs_a_recent_step_up(services: Services) -> None:
    person = _enrolled(services, "kim@clinic.example", name="Kim Lee")
    other = _enrolled(services, "lou@clinic.example", name="Lou Reed")
    token, _ = _session_of(services, person)
    _, theirs = _session_of(services, other)
    # Without a session: only a first enrolment, never a replacement.
    with pytest.raises(Forbidden, match="step-up"):
        _begin(services, person, None)
    # Another account's session cannot change this account's authenticator.
    with pytest.raises(Forbidden):
        _begin(services, person, theirs)
    _stale(services)
    stale = _validate(services, token)
    assert stale is not None
    with pytest.raises(Forbidden, match="step-up"):
        _begin(services, person, stale)
    with pytest.raises(Forbidden, match="step-up"), transaction(services.session_factory) as s:
        accounts.confirm_totp_enrolment(
            s,
            account_id=person.id,
            code="123456",
            clock=services.records.clock,
            envelope=services.records.envelope,
            actor_session=stale,
            settings=services.settings,
        )
    done = _step_up(services, stale, code_now(services, person))
    assert done.session_token is not None
    fresh = _validate(services, done.session_token)
    assert fresh is not None
    _begin(services, person, fresh)


# --- role changes (V7.5.3) --------------------------------------------------------------------


def _change_role(
    services: Services, admin: sessions.SessionInfo, email: str, role: str
) -> accounts.AccountView:
    with transaction(services.session_factory) as session:
        return accounts.change_role(
            session,
            email=email,
            role=role,
            clock=services.records.clock,
            settings=services.settings,
            actor=admin.principal,
            actor_session=admin,
        )


def test_v7_5_3_role_change_needs_an_administrator_who_stepped_up(services: Services) -> None:
    admin = _enrolled(services, "ada@clinic.example", role="admin", name="Ada King")
    nurse = _enrolled(services, "ned@clinic.example", role="nurse", name="Ned Park")
    admin_token, _ = _session_of(services, admin)
    nurse_token, nurse_info = _session_of(services, nurse)

    # A nurse cannot change roles, however recent their step-up.
    with pytest.raises(Forbidden, match="administrator"):
        _change_role(services, nurse_info, admin.email, "nurse")
    # A stale administrator session must step up first.
    _stale(services)
    stale = _validate(services, admin_token)
    assert stale is not None
    with pytest.raises(Forbidden, match="step-up"):
        _change_role(services, stale, nurse.email, "physician")
    done = _step_up(services, stale, code_now(services, admin))
    assert done.session_token is not None
    fresh = _validate(services, done.session_token)
    assert fresh is not None

    changed = _change_role(services, fresh, nurse.email, "physician")
    assert changed.role == "physician"
    # The nurse's sessions ended: their permissions changed with the role.
    assert _validate(services, nurse_token) is None
    entry = actions(services, "account_role_change")[-1]
    assert entry["user"] == admin.id
    assert entry["resource_id"] == nurse.id
    assert entry["reasons"] == ["role nurse -> physician", "1 sessions revoked"]
    assert actions(services, "session_revoke")[-1]["user"] == admin.id

    with pytest.raises(Conflict):
        _change_role(services, fresh, nurse.email, "physician")
    with pytest.raises(BadRequest, match="staff role"):
        _change_role(services, fresh, nurse.email, "patient")
    with pytest.raises(BadRequest, match="staff role"):
        _change_role(services, fresh, nurse.email, "service")
    with pytest.raises(Forbidden, match="own role"):
        _change_role(services, fresh, admin.email, "physician")
    # The actor must be the session's own principal.
    with pytest.raises(Forbidden), transaction(services.session_factory) as session:
        accounts.change_role(
            session,
            email=nurse.email,
            role="nurse",
            clock=services.records.clock,
            settings=services.settings,
            actor=OPERATOR,
            actor_session=fresh,
        )
    del nurse_info


# --- housekeeping -----------------------------------------------------------------------------


def _counts(services: Services) -> tuple[int, int]:
    with transaction(services.session_factory) as session:
        throttles = session.scalar(select(func.count()).select_from(AddressThrottle)) or 0
        pending = session.scalar(select(func.count()).select_from(LoginPending)) or 0
    return throttles, pending


def _purge(services: Services) -> login.Purged:
    with transaction(services.session_factory) as session:
        return login.purge_expired(session, clock=services.records.clock)


def test_purge_expired_deletes_ended_throttles_and_spent_or_expired_pending(
    services: Services,
) -> None:
    person = _enrolled(services, "max@clinic.example", name="Max Ernst")
    password_step(services, "nobody@clinic.example", "wrong password", ip="198.51.100.1")
    sign_in(services, person)  # one pending sign-in, spent
    assert _counts(services) == (1, 1)
    # Nothing has ended yet but the spent pending sign-in.
    assert _purge(services) == login.Purged(address_throttles=0, pending_sign_ins=1)
    live = password_step(services, person.email, person.password)  # a live pending sign-in
    assert live.pending_token is not None
    password_step(services, "nobody@clinic.example", "wrong", ip="198.51.100.2")
    assert _counts(services) == (2, 1)
    assert _purge(services) == login.Purged(address_throttles=0, pending_sign_ins=0)

    clock_of(services).advance(login.ADDRESS_WINDOW)
    assert _purge(services) == login.Purged(address_throttles=2, pending_sign_ins=1)
    assert _counts(services) == (0, 0)
    # The expired pending sign-in was refused anyway; after the purge it still is.
    with transaction(services.session_factory) as session:
        refused = login.mfa_step(
            session,
            pending_token=live.pending_token,
            code=code_now(services, person),
            clock=services.records.clock,
            settings=services.settings,
            envelope=services.records.envelope,
            ip=None,
            device=None,
        )
    assert refused.message == login.PENDING_EXPIRED


def test_the_background_pass_purges(services: Services) -> None:
    password_step(services, "nobody@clinic.example", "wrong password", ip="198.51.100.3")
    assert _counts(services) == (1, 0)
    clock_of(services).advance(login.ADDRESS_WINDOW + dt.timedelta(seconds=1))
    background_pass(services)
    assert _counts(services) == (0, 0)

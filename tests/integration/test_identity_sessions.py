"""Web sessions (OWASP ASVS 5.0 V7): timeouts, revocation, listing, step-up.

Adversarial cases of the identity issue: an expired session (idle and absolute, by moving
the FixedClock), a stolen cookie after logout, after a password change, after an MFA reset and
after the account is disabled, session fixation (a fresh token at every sign-in), and another
account's session id (NotFound).
"""

from __future__ import annotations

import datetime as dt

import pytest

from egide.cli.runtime import OPERATOR, Services
from egide.core.errors import Forbidden, NotFound
from egide.db.engine import transaction
from egide.identity import accounts, sessions
from egide.identity.session_tokens import token_hash
from tests.helpers import Database
from tests.integration.identity_support import (
    IP,
    Person,
    actions,
    clock_of,
    code_now,
    enrol,
    patient,
    sign_in,
    staff,
)


def _validate(services: Services, token: str) -> sessions.SessionInfo | None:
    with transaction(services.session_factory) as session:
        return sessions.validate_session(
            session, token=token, clock=services.records.clock, settings=services.settings
        )


def _token(services: Services, person: Person) -> str:
    token = sign_in(services, person).session_token
    assert token is not None
    return token


def _list(services: Services, person: Person) -> list[sessions.SessionInfo]:
    with transaction(services.session_factory) as session:
        return sessions.list_sessions(
            session, account_id=person.id, clock=services.records.clock, settings=services.settings
        )


def _enrolled_staff(services: Services, email: str = "sam@clinic.example") -> Person:
    person = staff(services, email, name="Sam Weller")
    enrol(services, person)
    return person


def test_v7_2_1_a_valid_session_names_its_principal(services: Services) -> None:
    person = _enrolled_staff(services)
    token = _token(services, person)
    info = _validate(services, token)
    assert info is not None
    assert info.account_id == person.id
    assert info.principal.id == person.id
    assert info.principal.role == "physician"
    assert info.ip == IP
    assert len(info.csrf_secret) == 32
    assert info.mfa_at is not None
    for junk in ("", "x" * 43, token[:-1], token + "A", "../" * 20):
        assert _validate(services, junk) is None


def test_v7_2_4_a_new_token_at_every_sign_in(services: Services) -> None:
    """Session fixation: the server issues a fresh random token each time."""
    person = patient(services)
    tokens = {_token(services, person) for _ in range(3)}
    assert len(tokens) == 3
    assert all(len(t) == 43 for t in tokens)


def test_session_token_is_stored_hashed(services: Services, database: Database) -> None:
    if database.path is None:
        pytest.skip("the raw-file scan is for the SQLite file")
    person = patient(services)
    token = _token(services, person)
    raw = b"".join(p.read_bytes() for p in sorted(database.path.parent.glob("egide.db*")))
    assert token.encode() not in raw
    assert token_hash(token) in raw  # positive control


def test_v7_3_1_staff_idle_timeout(services: Services) -> None:
    person = _enrolled_staff(services)
    token = _token(services, person)
    clock = clock_of(services)
    # Activity keeps it alive: a request every 14 minutes for an hour.
    for _ in range(4):
        clock.advance(dt.timedelta(minutes=14))
        assert _validate(services, token) is not None
    clock.advance(dt.timedelta(minutes=services.settings.session_idle_minutes))
    assert _validate(services, token) is None
    # Once expired, it stays dead even if the clock were to allow it.
    assert _validate(services, token) is None
    assert _list(services, person) == []


def test_v7_3_1_patient_idle_timeout_is_thirty_minutes(services: Services) -> None:
    person = patient(services)
    token = _token(services, person)
    clock = clock_of(services)
    clock.advance(dt.timedelta(minutes=29))
    assert _validate(services, token) is not None
    clock.advance(dt.timedelta(minutes=30))
    assert _validate(services, token) is None


def test_v7_3_2_absolute_timeout(services: Services) -> None:
    person = patient(services)
    token = _token(services, person)
    clock = clock_of(services)
    elapsed = dt.timedelta()
    limit = dt.timedelta(hours=services.settings.session_absolute_hours)
    while elapsed + dt.timedelta(minutes=10) < limit:
        clock.advance(dt.timedelta(minutes=10))
        elapsed += dt.timedelta(minutes=10)
        assert _validate(services, token) is not None
    clock.advance(limit - elapsed)
    assert _validate(services, token) is None


def test_v7_4_1_stolen_cookie_after_logout(services: Services) -> None:
    person = patient(services)
    token = _token(services, person)
    with transaction(services.session_factory) as session:
        sessions.logout(session, token=token, clock=services.records.clock)
    assert _validate(services, token) is None
    assert actions(services, "logout")[-1]["user"] == person.id
    with transaction(services.session_factory) as session:
        sessions.logout(session, token=token, clock=services.records.clock)  # no-op
        sessions.logout(session, token="junk", clock=services.records.clock)
    assert len(actions(services, "logout")) == 1


def test_v7_4_3_password_change_revokes_the_other_sessions(services: Services) -> None:
    person = patient(services)
    kept, other = _token(services, person), _token(services, person)
    kept_info = _validate(services, kept)
    assert kept_info is not None
    with transaction(services.session_factory) as session:
        accounts.change_password(
            session,
            account_id=person.id,
            current_password=person.password,
            new_password="completely different passphrase",
            clock=services.records.clock,
            settings=services.settings,
            keep_session_id=kept_info.id,
        )
    assert _validate(services, kept) is not None
    assert _validate(services, other) is None
    assert actions(services, "session_revoke")[-1]["reasons"][0] == "password changed"


def test_v7_4_2_mfa_reset_and_disable_revoke_every_session(services: Services) -> None:
    person = _enrolled_staff(services)
    first = _token(services, person)
    with transaction(services.session_factory) as session:
        accounts.reset_mfa(
            session, email=person.email, clock=services.records.clock, actor=OPERATOR
        )
    assert _validate(services, first) is None
    enrol(services, person)
    second = _token(services, person)
    with transaction(services.session_factory) as session:
        accounts.disable_account(
            session, email=person.email, clock=services.records.clock, actor=OPERATOR
        )
    assert _validate(services, second) is None
    # Enabling again does not bring old sessions back.
    with transaction(services.session_factory) as session:
        accounts.enable_account(
            session, email=person.email, clock=services.records.clock, actor=OPERATOR
        )
    assert _validate(services, second) is None


def test_new_authenticator_revokes_the_other_sessions(services: Services) -> None:
    person = _enrolled_staff(services)
    kept, other = _token(services, person), _token(services, person)
    kept_info = _validate(services, kept)
    assert kept_info is not None
    with transaction(services.session_factory) as session:
        enrolment = accounts.begin_totp_enrolment(
            session,
            account_id=person.id,
            clock=services.records.clock,
            envelope=services.records.envelope,
            settings=services.settings,
            actor_session=kept_info,  # signed in with TOTP just now: a recent step-up
        )
    from egide.identity import totp  # noqa: PLC0415

    person.seed = totp.decode_secret(enrolment.secret_base32)
    with transaction(services.session_factory) as session:
        accounts.confirm_totp_enrolment(
            session,
            account_id=person.id,
            code=code_now(services, person),
            clock=services.records.clock,
            envelope=services.records.envelope,
            keep_session_id=kept_info.id,
            actor_session=kept_info,
            settings=services.settings,
        )
    assert _validate(services, kept) is not None
    assert _validate(services, other) is None


def test_v7_5_2_list_and_revoke_own_sessions(services: Services) -> None:
    person = patient(services)
    intruder = patient(services, "eve@mail.example")
    one, two = _token(services, person), _token(services, person)
    theirs = _token(services, intruder)
    listed = _list(services, person)
    assert len(listed) == 2
    info_two = _validate(services, two)
    info_theirs = _validate(services, theirs)
    assert info_two is not None
    assert info_theirs is not None
    # Another account's session id: NotFound, and nothing changes.
    with pytest.raises(NotFound), transaction(services.session_factory) as session:
        sessions.revoke_session(
            session,
            account_id=person.id,
            session_id=info_theirs.id,
            clock=services.records.clock,
            reason="revoked by the user",
        )
    assert _validate(services, theirs) is not None
    with transaction(services.session_factory) as session:
        sessions.revoke_session(
            session,
            account_id=person.id,
            session_id=info_two.id,
            clock=services.records.clock,
            reason="revoked by the user",
        )
    assert _validate(services, two) is None
    assert _validate(services, one) is not None
    assert [s.id for s in _list(services, person)] != [info_two.id]
    assert len(_list(services, person)) == 1
    assert actions(services, "session_revoke")[-1]["reasons"][0] == "revoked by the user"


def test_revoke_all_sessions_counts(services: Services) -> None:
    person = patient(services)
    for _ in range(3):
        _token(services, person)
    with transaction(services.session_factory) as session:
        count = sessions.revoke_all_sessions(
            session, account_id=person.id, clock=services.records.clock, reason="test"
        )
    assert count == 3
    assert _list(services, person) == []


# --- Step-up ----------------------------------------------------------------------------


def test_step_up_requires_a_recent_second_factor(services: Services) -> None:
    person = _enrolled_staff(services)
    token = _token(services, person)
    info = _validate(services, token)
    assert info is not None
    sessions.require_recent_mfa(info, clock=services.records.clock, settings=services.settings)
    clock = clock_of(services)
    clock.advance(dt.timedelta(minutes=services.settings.step_up_minutes, seconds=1))
    info = _validate(services, token)
    assert info is not None
    with pytest.raises(Forbidden, match="step-up"):
        sessions.require_recent_mfa(info, clock=services.records.clock, settings=services.settings)
    code = code_now(services, person)
    with transaction(services.session_factory) as session:
        done = sessions.step_up(
            session,
            session_id=info.id,
            account_id=person.id,
            code=code,
            clock=services.records.clock,
            envelope=services.records.envelope,
            settings=services.settings,
        )
    assert done.ok
    assert done.session_token is not None
    assert _validate(services, token) is None  # re-authentication: a new token (V7.2.4)
    token = done.session_token
    info = _validate(services, token)
    assert info is not None
    sessions.require_recent_mfa(info, clock=services.records.clock, settings=services.settings)
    assert actions(services, "login")[-1]["reasons"] == ["step-up", "totp"]
    # The same code cannot be used again (replay): a refusal, returned (not raised), so the
    # caller's transaction commits its ledger entry.
    with transaction(services.session_factory) as session:
        replayed = sessions.step_up(
            session,
            session_id=info.id,
            account_id=person.id,
            code=code,
            clock=services.records.clock,
            envelope=services.records.envelope,
            settings=services.settings,
        )
    assert not replayed.ok
    assert replayed.message == sessions.STEP_UP_WRONG
    failed = actions(services, "mfa_failed")[-1]
    assert failed["reasons"] == ["step-up", "TOTP code replayed"]


def test_step_up_of_another_accounts_session_is_not_found(services: Services) -> None:
    person = _enrolled_staff(services)
    other = _enrolled_staff(services, "tom@clinic.example")
    info = _validate(services, _token(services, other))
    assert info is not None
    with pytest.raises(NotFound), transaction(services.session_factory) as session:
        sessions.step_up(
            session,
            session_id=info.id,
            account_id=person.id,
            code=code_now(services, person),
            clock=services.records.clock,
            envelope=services.records.envelope,
            settings=services.settings,
        )


def test_patient_without_mfa_steps_up_with_the_password(services: Services) -> None:
    """An account without an authenticator re-authenticates with its one factor (ASVS
    V7.5.2: "having authenticated again with at least one factor")."""
    person = patient(services)
    token = _token(services, person)
    info = _validate(services, token)
    assert info is not None
    assert info.mfa_at is None
    with pytest.raises(Forbidden):
        sessions.require_recent_mfa(info, clock=services.records.clock, settings=services.settings)

    def attempt(answer: str) -> sessions.StepUpResult:
        with transaction(services.session_factory) as s:
            assert sessions.step_up_factor(s, account_id=person.id) == "password"
            return sessions.step_up(
                s,
                session_id=info.id,
                account_id=person.id,
                code=answer,
                clock=services.records.clock,
                envelope=services.records.envelope,
                settings=services.settings,
            )

    wrong = attempt("123456")
    assert not wrong.ok
    assert wrong.message == sessions.STEP_UP_WRONG_PASSWORD
    assert actions(services, "mfa_failed")[-1]["reasons"] == ["step-up", "wrong password"]
    done = attempt(person.password)
    assert done.ok
    assert done.session_token is not None
    fresh = _validate(services, done.session_token)
    assert fresh is not None
    sessions.require_recent_mfa(fresh, clock=services.records.clock, settings=services.settings)
    assert actions(services, "login")[-1]["reasons"] == ["step-up", "password"]

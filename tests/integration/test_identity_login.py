"""Sign-in: password step, TOTP and recovery codes, enrolment, throttling and lockout.

Adversarial cases of the identity issue: TOTP replay, recovery code reuse, brute force to the
backoff and the lock, unknown vs known user (same message, same Argon2id work), throttling
per source address, and a ledger that records every outcome and never a secret. Time moves
through the injected FixedClock (DESIGN.md contract 6); nothing sleeps and nothing is timed.
"""

from __future__ import annotations

import datetime as dt

import pytest

from egide.cli.runtime import OPERATOR, Services
from egide.db.engine import transaction
from egide.identity import accounts, factors, login, passwords, totp
from egide.identity.models import Account
from tests.helpers import make_settings
from tests.integration.identity_support import (
    DEVICE,
    IP,
    actions,
    clock_of,
    code_now,
    enrol,
    ledger,
    ledger_bytes,
    mfa_step,
    password_step,
    patient,
    sign_in,
    staff,
)

WRONG = "Email or password is incorrect."


def _row(services: Services, account_id: str) -> Account:
    with transaction(services.session_factory) as session:
        row = session.get(Account, account_id)
        assert row is not None
        session.expunge(row)
        return row


def _wrong_code(right: str) -> str:
    # Not "000000": the ledger scan below would find it in timestamps' microseconds.
    return "492817" if right != "492817" else "582913"


# --- Outcomes ---------------------------------------------------------------------------


def test_patient_without_mfa_signs_in_with_the_password(services: Services) -> None:
    person = patient(services)
    result = password_step(services, person.email, person.password)
    assert result.outcome == "signed_in"
    assert result.session_token is not None
    assert result.pending_token is None
    assert result.account_id == person.id
    entry = actions(services, "login")[-1]
    assert entry["user"] == person.id
    assert entry["reasons"][0] == "password"
    assert entry["ip"] == IP
    assert entry["device"] == DEVICE


def test_v6_3_3_staff_must_enrol_before_any_session(services: Services) -> None:
    person = staff(services)
    first = password_step(services, person.email, person.password)
    assert first.outcome == "enrolment_required"
    assert first.session_token is None
    assert first.pending_token is not None
    with transaction(services.session_factory) as session:
        enrolment = login.enrol_step(
            session,
            pending_token=first.pending_token,
            clock=services.records.clock,
            envelope=services.records.envelope,
            settings=services.settings,
        )
    seed = totp.decode_secret(enrolment.secret_base32)
    right = totp.totp_at_time(seed, clock_of(services).now().timestamp())

    def confirm(code: str) -> tuple[login.LoginResult, list[str]]:
        assert first.pending_token is not None
        with transaction(services.session_factory) as session:
            return login.confirm_enrol_step(
                session,
                pending_token=first.pending_token,
                code=code,
                clock=services.records.clock,
                envelope=services.records.envelope,
                settings=services.settings,
                ip=IP,
                device=DEVICE,
            )

    refused, none = confirm(_wrong_code(right))
    assert refused.outcome == "refused"
    assert none == []
    assert _row(services, person.id).failed_count == 1
    result, codes = confirm(right)
    assert result.outcome == "signed_in"
    assert result.session_token is not None
    assert len(codes) == 10
    assert _row(services, person.id).failed_count == 0
    assert actions(services, "login")[-1]["reasons"][:2] == ["password", "totp"]
    # The pending sign-in is spent.
    again, _ = confirm(right)
    assert again.outcome == "refused"


def test_staff_with_totp_needs_the_code(services: Services) -> None:
    person = staff(services)
    enrol(services, person)
    first = password_step(services, person.email, person.password)
    assert first.outcome == "mfa_required"
    assert first.session_token is None
    assert first.pending_token is not None
    result = mfa_step(services, first.pending_token, code_now(services, person))
    assert result.outcome == "signed_in"
    assert actions(services, "login")[-1]["reasons"][:2] == ["password", "totp"]
    # The pending sign-in is spent: replayed with the next (fresh, valid) code, within its
    # five minutes, it gives no second session.
    clock_of(services).advance(dt.timedelta(seconds=30))
    replayed = mfa_step(services, first.pending_token, code_now(services, person))
    assert replayed.outcome == "refused"
    assert replayed.message == login.PENDING_EXPIRED
    assert replayed.session_token is None


def test_v6_5_1_totp_code_is_accepted_once(services: Services) -> None:
    """RFC 6238 section 5.2: the same code is refused the second time (replay)."""
    person = staff(services)
    enrol(services, person)
    code = code_now(services, person)
    first = password_step(services, person.email, person.password)
    assert first.pending_token is not None
    assert mfa_step(services, first.pending_token, code).outcome == "signed_in"
    again = password_step(services, person.email, person.password)
    assert again.pending_token is not None
    replayed = mfa_step(services, again.pending_token, code)
    assert replayed.outcome == "refused"
    assert replayed.session_token is None
    failed = actions(services, "mfa_failed")[-1]
    assert failed["reasons"] == ["TOTP code replayed"]
    assert failed["outcome"] == "denied"
    # A code of the previous step is as dead as the one used (it is older).
    clock_of(services).advance(dt.timedelta(seconds=30))
    assert mfa_step(services, again.pending_token, code).outcome == "refused"
    assert mfa_step(services, again.pending_token, code_now(services, person)).outcome == (
        "signed_in"
    )


def test_v6_5_1_recovery_code_is_single_use(services: Services) -> None:
    person = staff(services)
    codes = enrol(services, person)
    first = password_step(services, person.email, person.password)
    assert first.pending_token is not None
    # Typed loosely: lowercase, spaces instead of dashes.
    typed = codes[3].lower().replace("-", " ")
    result = mfa_step(services, first.pending_token, typed)
    assert result.outcome == "signed_in"
    entry = actions(services, "login")[-1]
    assert entry["reasons"][:2] == ["password", "recovery code"]
    assert "9 recovery codes left" in entry["reasons"]
    again = password_step(services, person.email, person.password)
    assert again.pending_token is not None
    reused = mfa_step(services, again.pending_token, codes[3])
    assert reused.outcome == "refused"
    assert actions(services, "mfa_failed")[-1]["reasons"] == ["wrong or used recovery code"]
    assert mfa_step(services, again.pending_token, codes[4]).outcome == "signed_in"


def test_pending_sign_in_expires_after_five_minutes(services: Services) -> None:
    person = staff(services)
    enrol(services, person)
    first = password_step(services, person.email, person.password)
    assert first.pending_token is not None
    clock_of(services).advance(dt.timedelta(minutes=login.PENDING_MINUTES))
    late = mfa_step(services, first.pending_token, code_now(services, person))
    assert late.outcome == "refused"
    assert late.message == login.PENDING_EXPIRED
    assert mfa_step(services, "x" * 43, "123456").outcome == "refused"
    assert mfa_step(services, "junk", "123456").outcome == "refused"


# --- Enumeration ------------------------------------------------------------------------


class CountingHasher(passwords.PasswordHasher):
    """Counts the Argon2id verifications and which stored hash each was against."""

    def __init__(self, params: passwords.Argon2Parameters) -> None:
        super().__init__(params)
        self.verified: list[str] = []

    def _verify(self, stored: str, password: str) -> bool:
        self.verified.append(stored)
        return super()._verify(stored, password)


def test_v6_3_8_unknown_and_known_users_get_the_same_answer_and_work(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    person = patient(services)
    staff(services, "disabled@clinic.example", name="Dee Abled")
    with transaction(services.session_factory) as session:
        accounts.disable_account(
            session, email="disabled@clinic.example", clock=services.records.clock, actor=None
        )
    _, _ = accounts_invited(services)
    hasher = CountingHasher(factors.password_hasher(services.settings).params)
    monkeypatch.setattr(factors, "password_hasher", lambda _settings: hasher)

    known = password_step(services, person.email, "wrong password entirely")
    unknown = password_step(services, "nobody@mail.example", "wrong password entirely")
    disabled = password_step(services, "disabled@clinic.example", "whatever it is")
    invited = password_step(services, "invited@clinic.example", "whatever it is")
    results = [known, unknown, disabled, invited]
    assert {r.outcome for r in results} == {"refused"}
    assert {r.message for r in results} == {WRONG}
    assert {r.retry_after for r in results} == {None}
    # Each attempt cost exactly one Argon2id verification; the unknown and the invited
    # accounts (no stored hash) were checked against the dummy hash.
    assert len(hasher.verified) == 4
    dummy = passwords._dummy_hash(hasher.params)
    assert hasher.verified[1] == dummy
    assert hasher.verified[3] == dummy
    assert hasher.verified[0] != dummy
    reasons = [e["reasons"] for e in actions(services, "login_failed")[-4:]]
    assert reasons == [
        ["wrong password"],
        ["unknown account"],
        ["account disabled"],
        ["invitation not accepted"],
    ]
    assert actions(services, "login_failed")[-3]["user"] == "anonymous"


def accounts_invited(services: Services) -> tuple[str, str]:
    with transaction(services.session_factory) as session:
        view, token = accounts.create_account(
            session,
            email="invited@clinic.example",
            name="Ivy Invited",
            role="nurse",
            clock=services.records.clock,
            settings=services.settings,
            envelope=services.records.envelope,
            actor=OPERATOR,
        )
    return view.id, token


def test_rehash_on_login_when_parameters_change(services: Services) -> None:
    person = patient(services)
    before = _row(services, person.id).password_hash
    assert before is not None
    assert "m=64," in before
    stronger = make_settings(
        services.settings.data_dir,
        services.settings.database_url,
        argon2_memory_kib=128,
    )
    with transaction(services.session_factory) as session:
        result = login.password_step(
            session,
            email=person.email,
            password=person.password,
            clock=services.records.clock,
            settings=stronger,
            envelope=services.records.envelope,
            ip=IP,
            device=DEVICE,
        )
    assert result.outcome == "signed_in"
    after = _row(services, person.id).password_hash
    assert after is not None
    assert "m=128," in after


# --- Lockout and throttling (NIST SP 800-63B-4 3.2.2) -------------------------------------


def test_v6_3_1_backoff_after_five_failures_then_lock_at_one_hundred(services: Services) -> None:
    person = patient(services)
    clock = clock_of(services)
    for n in range(1, 6):
        assert password_step(services, person.email, f"wrong guess {n}").message == WRONG
    # Five consecutive failures: the next attempt waits 2**0 = 1 s, even the right password.
    blocked = password_step(services, person.email, person.password)
    assert blocked.outcome == "refused"
    assert blocked.retry_after == 1
    assert blocked.message == "Too many attempts; try again in 1 minute."
    assert actions(services, "login_failed")[-1]["reasons"] == ["account in backoff after failures"]
    assert _row(services, person.id).failed_count == 5  # refusals in backoff do not count
    # Backoff doubles: after the 8th failure the wait is 2**3 = 8 s.
    for n in range(6, 9):
        clock.advance(dt.timedelta(seconds=900))
        assert password_step(services, person.email, f"wrong guess {n}").message == WRONG
    assert password_step(services, person.email, person.password).retry_after == 8
    # Up to the 100th consecutive failure, each after its backoff (capped at 15 minutes).
    for n in range(9, 101):
        clock.advance(dt.timedelta(seconds=900))
        result = password_step(services, person.email, f"wrong guess {n}", ip=f"198.51.100.{n}")
        assert result.message == WRONG, n
    row = _row(services, person.id)
    assert row.failed_count == 100
    assert row.locked_at is not None
    locks = actions(services, "account_lock")
    assert len(locks) == 1
    assert locks[0]["reasons"][0] == "100 consecutive failed attempts"
    # Locked: even the right password, a day later, is refused until an administrator unlocks.
    clock.advance(dt.timedelta(days=1))
    locked = password_step(services, person.email, person.password)
    assert locked.outcome == "refused"
    assert locked.message == login.ACCOUNT_LOCKED
    assert actions(services, "login_failed")[-1]["reasons"] == ["account locked"]
    with transaction(services.session_factory) as session:
        accounts.unlock_account(
            session, email=person.email, clock=services.records.clock, actor=OPERATOR
        )
    assert password_step(services, person.email, person.password).outcome == "signed_in"
    assert actions(services, "account_unlock")[-1]["resource_id"] == person.id
    assert _row(services, person.id).failed_count == 0


def test_mfa_failures_count_towards_the_same_lockout(services: Services) -> None:
    """Knowing the password does not buy unlimited TOTP guesses."""
    person = staff(services)
    enrol(services, person)
    for _ in range(5):
        first = password_step(services, person.email, person.password)
        assert first.outcome == "mfa_required"
        assert first.pending_token is not None
        wrong = _wrong_code(code_now(services, person))
        assert mfa_step(services, first.pending_token, wrong).message == login.WRONG_CODE
    assert _row(services, person.id).failed_count == 5
    blocked = password_step(services, person.email, person.password)
    assert blocked.outcome == "refused"
    assert blocked.retry_after == 1
    clock_of(services).advance(dt.timedelta(seconds=1))
    sign_in(services, person)
    assert _row(services, person.id).failed_count == 0
    assert len(actions(services, "mfa_failed")) == 5


def test_throttle_per_source_address(services: Services) -> None:
    """Credential stuffing from one address: 20 failures in 10 minutes stop that address."""
    person = patient(services)
    for n in range(login.ADDRESS_MAX_FAILURES):
        result = password_step(services, f"user{n}@mail.example", "some password", ip=IP)
        assert result.message == WRONG
    throttled = password_step(services, person.email, person.password, ip=IP)
    assert throttled.outcome == "refused"
    assert throttled.retry_after == 600
    assert throttled.message == "Too many attempts; try again in 10 minutes."
    assert actions(services, "login_failed")[-1]["reasons"] == [
        "too many failed attempts from this address"
    ]
    # Another address is not affected, and the window ends.
    assert password_step(services, person.email, person.password, ip="203.0.113.7").outcome == (
        "signed_in"
    )
    clock_of(services).advance(login.ADDRESS_WINDOW)
    assert password_step(services, person.email, person.password, ip=IP).outcome == "signed_in"


# --- The ledger -------------------------------------------------------------------------


def test_the_ledger_records_every_outcome_and_never_a_secret(services: Services) -> None:
    person = staff(services)
    codes = enrol(services, person)
    assert person.seed is not None
    password_step(services, person.email, "a wrong password")
    first = password_step(services, person.email, person.password)
    assert first.pending_token is not None
    used_code = code_now(services, person)
    wrong = _wrong_code(used_code)
    mfa_step(services, first.pending_token, wrong)
    done = mfa_step(services, first.pending_token, used_code)
    assert done.session_token is not None
    second = password_step(services, person.email, person.password)
    assert second.pending_token is not None
    mfa_step(services, second.pending_token, codes[0])

    by_action: dict[str, list[list[str]]] = {}
    for entry in ledger(services):
        by_action.setdefault(entry["action"], []).append(entry["reasons"])
    assert ["wrong password"] in by_action["login_failed"]
    assert ["wrong TOTP code"] in by_action["mfa_failed"]
    assert any(r[:2] == ["password", "totp"] for r in by_action["login"])
    assert any(r[:2] == ["password", "recovery code"] for r in by_action["login"])

    raw = ledger_bytes(services)
    secrets = [
        person.password,
        "a wrong password",
        used_code,
        wrong,
        *codes,
        *(c.replace("-", "") for c in codes),
        first.pending_token,
        second.pending_token,
        done.session_token,
        totp.encode_secret(person.seed),
    ]
    for secret in secrets:
        assert secret.encode() not in raw, secret
    assert person.seed not in raw

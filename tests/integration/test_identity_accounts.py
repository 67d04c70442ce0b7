"""Accounts: invitation, password policy, TOTP enrolment, administration (ASVS 5.0 V6).

Runs on SQLite and PostgreSQL (the `services` fixture). Requirement ids in test names and
docstrings are those of OWASP ASVS 5.0.0; docs/asvs.md tabulates them.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from egide.cli.runtime import OPERATOR, Services
from egide.core.errors import BadRequest, Conflict, NotFound, Unauthorized
from egide.db.engine import transaction
from egide.identity import accounts, totp
from egide.identity.models import Account, RecoveryCode
from egide.identity.session_tokens import token_hash
from tests.helpers import Database
from tests.integration.identity_support import (
    STAFF_PASSWORD,
    accept,
    actions,
    clock_of,
    enrol,
    invite,
    password_step,
    patient,
    sign_in,
    staff,
)


def _account(services: Services, account_id: str) -> Account:
    with transaction(services.session_factory) as session:
        found = session.get(Account, account_id)
        assert found is not None
        session.expunge(found)
        return found


# --- Creation ----------------------------------------------------------------------------


def test_create_account_is_invited_until_accepted(services: Services) -> None:
    account_id, token = invite(services, "  Alice@Clinic.Example ")
    with transaction(services.session_factory) as session:
        view = accounts.find_account(session, email="alice@clinic.example")
        listed = accounts.list_accounts(session)
    assert view is not None
    assert view.id == account_id
    assert view.email == "alice@clinic.example"  # stored lower-cased and stripped
    assert view.status == "invited"
    assert not view.mfa_enrolled
    assert [a.id for a in listed] == [account_id]
    assert len(token) == 43  # 256 bits, base64url (ASVS V6.4.1: random initial secret)
    entries = actions(services, "account_create")
    assert entries[-1]["resource_id"] == account_id
    assert entries[-1]["user"] == OPERATOR.id
    assert "role physician" in entries[-1]["reasons"]


def test_duplicate_email_is_a_conflict_whatever_its_case(services: Services) -> None:
    invite(services, "bob@clinic.example")
    with pytest.raises(Conflict, match="already exists"):
        invite(services, "BOB@clinic.example")
    with pytest.raises(Conflict):
        # NFKC: full-width letters fold to the same address.
        invite(services, "ｂｏｂ@clinic.example")


@pytest.mark.parametrize(
    ("email", "role", "patient_id", "message"),
    [
        ("not-an-address", "physician", None, "e-mail"),
        ("a@b.example", "wizard", None, "unknown account role"),
        ("a@b.example", "service", None, "unknown account role"),  # service: API tokens only
        ("a@b.example", "patient", None, "must name its patient"),
        ("a@b.example", "nurse", "pat-1", "only patient accounts"),
    ],
)
def test_bad_email_or_role_is_refused(
    services: Services, email: str, role: str, patient_id: str | None, message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        invite(services, email, role=role, patient_id=patient_id)


def test_staff_roles_are_every_account_role_but_patient() -> None:
    assert "patient" not in accounts.STAFF_ROLES
    assert {"physician", "nurse", "secretary", "admin", "security_officer"} <= accounts.STAFF_ROLES
    assert accounts.STAFF_ROLES | {"patient"} == accounts.ACCOUNT_ROLES


# --- Invitations ------------------------------------------------------------------------


def test_v6_4_1_invitation_is_single_use(services: Services) -> None:
    account_id, token = invite(services, "carol@clinic.example")
    with transaction(services.session_factory) as session:
        shown = accounts.invitation_account(session, token=token, clock=services.records.clock)
    assert shown.id == account_id
    view = accept(services, token, STAFF_PASSWORD)
    assert view.status == "active"
    with pytest.raises(NotFound) as second:
        accept(services, token, "another fine passphrase")
    with pytest.raises(NotFound) as shown_again, transaction(services.session_factory) as session:
        accounts.invitation_account(session, token=token, clock=services.records.clock)
    assert str(second.value) == str(shown_again.value)


def test_v6_4_1_invitation_expires(services: Services) -> None:
    _, token = invite(services, "dan@clinic.example")
    clock_of(services).advance(dt.timedelta(hours=services.settings.invitation_hours))
    with pytest.raises(NotFound) as expired:
        accept(services, token, STAFF_PASSWORD)
    with pytest.raises(NotFound) as unknown:
        accept(services, "A" * 43, STAFF_PASSWORD)
    with pytest.raises(NotFound) as junk:
        accept(services, "../../etc/passwd", STAFF_PASSWORD)
    # One message for expired, unknown and malformed links.
    assert str(expired.value) == str(unknown.value) == str(junk.value)


def test_invitation_token_is_stored_hashed(services: Services, database: Database) -> None:
    _, token = invite(services, "erin@clinic.example")
    if database.path is not None:
        raw = b"".join(p.read_bytes() for p in database.path.parent.glob("egide.db*"))
        assert token.encode() not in raw
        assert token_hash(token) in raw  # positive control: the scan sees stored bytes


# --- Password policy at acceptance (NIST SP 800-63B-4 3.1.1.2) ---------------------------


def test_v6_2_1_staff_need_8_characters_patients_15(services: Services) -> None:
    _, staff_token = invite(services, "fay@clinic.example", name="Fay Leroy")
    with pytest.raises(BadRequest, match="at least 8"):
        accept(services, staff_token, "kq7#zt")
    accept(services, staff_token, "kq7#ztv!w")  # 9 characters: fine with mfa mandatory
    _, patient_token = invite(
        services, "gus@mail.example", role="patient", name="Gus Petit", patient_id="p-9"
    )
    with pytest.raises(BadRequest, match="at least 15"):
        accept(services, patient_token, "kq7#ztv!wplm")
    accept(services, patient_token, "kq7#ztv!wplm-rose-jet")


def test_v6_2_4_common_and_v6_2_11_context_passwords_are_refused(services: Services) -> None:
    _, token = invite(services, "hugo.bernard@clinic.example", name="Hugo Bernard")
    with pytest.raises(BadRequest) as common:
        accept(services, token, "password123456789")
    assert any("common" in issue.message for issue in common.value.issues)
    with pytest.raises(BadRequest) as context:
        accept(services, token, "Hugo.Bernard-2026")
    assert "your name" in str(context.value)
    with pytest.raises(BadRequest):
        accept(services, token, "Egide demo clinic")  # the clinic's name
    # The invitation survives refused passwords: the person tries another one.
    assert accept(services, token, "lantern quietly mosaic").status == "active"


def test_v6_2_8_password_is_argon2id_and_verified_unchanged(services: Services) -> None:
    person = staff(services, "ines@clinic.example")
    row = _account(services, person.id)
    assert row.password_hash is not None
    assert row.password_hash.startswith("$argon2id$")
    assert STAFF_PASSWORD not in row.password_hash
    # A long passphrase with spaces and emoji is accepted and checked exactly (no truncation).
    long_password = "🦉 " + "ridge " * 20 + "end"
    _, token = invite(services, "jo@clinic.example", name="Jo Kim")
    accept(services, token, long_password)
    assert password_step(services, "jo@clinic.example", long_password).outcome != "refused"
    assert password_step(services, "jo@clinic.example", long_password[:-1]).outcome == "refused"


# --- Password change --------------------------------------------------------------------


def test_v6_2_3_change_password_needs_the_current_one(services: Services) -> None:
    person = staff(services, "kim@clinic.example")
    with pytest.raises(Unauthorized), transaction(services.session_factory) as session:
        accounts.change_password(
            session,
            account_id=person.id,
            current_password="not the password",
            new_password="a brand new passphrase",
            clock=services.records.clock,
            settings=services.settings,
            keep_session_id=None,
        )
    with pytest.raises(BadRequest), transaction(services.session_factory) as session:
        accounts.change_password(
            session,
            account_id=person.id,
            current_password=STAFF_PASSWORD,
            new_password="password",
            clock=services.records.clock,
            settings=services.settings,
            keep_session_id=None,
        )
    with transaction(services.session_factory) as session:
        accounts.change_password(
            session,
            account_id=person.id,
            current_password=STAFF_PASSWORD,
            new_password="a brand new passphrase",
            clock=services.records.clock,
            settings=services.settings,
            keep_session_id=None,
        )
    assert password_step(services, person.email, STAFF_PASSWORD).outcome == "refused"
    assert password_step(services, person.email, "a brand new passphrase").outcome != "refused"
    assert actions(services, "password_change")[-1]["resource_id"] == person.id


# --- TOTP enrolment ---------------------------------------------------------------------


def test_v6_5_3_totp_enrolment_shows_uri_and_qr_and_issues_recovery_codes(
    services: Services,
) -> None:
    person = staff(services, "lea@clinic.example")
    with transaction(services.session_factory) as session:
        enrolment = accounts.begin_totp_enrolment(
            session,
            account_id=person.id,
            clock=services.records.clock,
            envelope=services.records.envelope,
            settings=services.settings,
        )
    assert enrolment.uri.startswith("otpauth://totp/")
    assert "lea%40clinic.example" in enrolment.uri
    assert enrolment.svg.startswith("<svg")
    seed = totp.decode_secret(enrolment.secret_base32)
    assert len(seed) == 20
    wrong = (
        "000000"
        if totp.totp_at_time(seed, clock_of(services).now().timestamp()) != "000000"
        else "111111"
    )
    with (
        pytest.raises(BadRequest, match="incorrect"),
        transaction(services.session_factory) as session,
    ):
        accounts.confirm_totp_enrolment(
            session,
            account_id=person.id,
            code=wrong,
            clock=services.records.clock,
            envelope=services.records.envelope,
        )
    with transaction(services.session_factory) as session:
        codes = accounts.confirm_totp_enrolment(
            session,
            account_id=person.id,
            code=totp.totp_at_time(seed, clock_of(services).now().timestamp()),
            clock=services.records.clock,
            envelope=services.records.envelope,
        )
    assert len(codes) == 10
    assert len(set(codes)) == 10
    row = _account(services, person.id)
    assert row.mfa_enrolled_at == clock_of(services).now()
    assert row.totp_pending_sealed is None
    with transaction(services.session_factory) as session:
        stored = session.scalars(
            select(RecoveryCode.code_hash).where(RecoveryCode.account_id == person.id)
        ).all()
        view = accounts.find_account(session, email=person.email)
    assert len(stored) == 10
    assert all(len(h) == 32 for h in stored)  # SHA-256 hashes (ASVS V6.5.2)
    assert view is not None
    assert view.mfa_enrolled
    assert actions(services, "mfa_enrol")[-1]["resource_id"] == person.id


def test_totp_seed_and_recovery_codes_are_not_in_clear_in_the_database(
    services: Services, database: Database
) -> None:
    """DESIGN.md contract 4: the seed is sealed; codes are hashed (scan the SQLite file)."""
    if database.path is None:
        pytest.skip("the raw-file scan is for the SQLite file")
    person = staff(services, "max@clinic.example")
    codes = enrol(services, person)
    sign_in(services, person)
    assert person.seed is not None
    raw = b"".join(p.read_bytes() for p in sorted(database.path.parent.glob("egide.db*")))
    base32 = totp.encode_secret(person.seed).encode()
    assert person.seed not in raw
    assert base32 not in raw
    assert base32.lower() not in raw
    assert person.seed.hex().encode() not in raw
    for code in codes:
        assert code.encode() not in raw
        assert code.replace("-", "").encode() not in raw
    assert STAFF_PASSWORD.encode() not in raw
    assert person.email.encode() in raw  # positive control: clear columns are seen


def test_a_sealed_seed_moved_to_another_account_does_not_open(services: Services) -> None:
    """The seal's associated data binds the seed to its account (contract 3 and 4)."""
    first = staff(services, "ned@clinic.example")
    second = staff(services, "ola@clinic.example", name="Ola Nordmann")
    enrol(services, first)
    enrol(services, second)
    with transaction(services.session_factory) as session:
        a = session.get(Account, first.id)
        b = session.get(Account, second.id)
        assert a is not None
        assert b is not None
        b.totp_seed_sealed = a.totp_seed_sealed
    from egide.crypto.errors import DecryptionError  # noqa: PLC0415

    with pytest.raises(DecryptionError):
        sign_in(services, second)


# --- Administration ---------------------------------------------------------------------


def test_disable_and_enable(services: Services) -> None:
    person = patient(services)
    with transaction(services.session_factory) as session:
        accounts.disable_account(
            session, email=person.email, clock=services.records.clock, actor=OPERATOR
        )
    refused = password_step(services, person.email, person.password)
    assert refused.outcome == "refused"
    assert refused.message == "Email or password is incorrect."
    with pytest.raises(Conflict), transaction(services.session_factory) as session:
        accounts.disable_account(
            session, email=person.email, clock=services.records.clock, actor=OPERATOR
        )
    with transaction(services.session_factory) as session:
        accounts.enable_account(
            session, email=person.email, clock=services.records.clock, actor=OPERATOR
        )
    assert password_step(services, person.email, person.password).outcome == "signed_in"
    assert actions(services, "account_disable")[-1]["resource_id"] == person.id
    assert actions(services, "account_enable")[-1]["resource_id"] == person.id
    with pytest.raises(NotFound), transaction(services.session_factory) as session:
        accounts.enable_account(
            session, email="nobody@x.example", clock=services.records.clock, actor=OPERATOR
        )


def test_v6_4_4_reset_mfa_forces_enrolment_at_next_sign_in(services: Services) -> None:
    person = staff(services, "pia@clinic.example")
    enrol(services, person)
    with transaction(services.session_factory) as session:
        accounts.reset_mfa(
            session, email=person.email, clock=services.records.clock, actor=OPERATOR
        )
        left = session.scalars(
            select(RecoveryCode).where(RecoveryCode.account_id == person.id)
        ).all()
    assert left == []
    assert _account(services, person.id).totp_seed_sealed is None
    result = password_step(services, person.email, person.password)
    assert result.outcome == "enrolment_required"
    assert result.session_token is None
    assert actions(services, "mfa_reset")[-1]["user"] == OPERATOR.id

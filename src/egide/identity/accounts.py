"""Accounts: invitation, password setting and change, TOTP enrolment, administration.

Security role: this module is where an account's credentials come into being and where an
administrator changes an account's security state. Every change is appended to the ledger in
the caller's transaction (DESIGN.md contract 2), and no secret ever leaves in clear
(contract 4):

* Accounts are created by an administrator (or the CLI operator) as "invited": the person
  receives a single-use link holding 256 random bits (`session_tokens.new_session_token`);
  only SHA-256 of it is stored, and it expires after `settings.invitation_hours` (OWASP ASVS
  5.0 V6.4.1: initial secrets random, short-lived, single use). Following the link, they choose
  their own password (NIST SP 800-63B-4 section 3.1.1.2): `passwords.check_password` with the
  user's name, e-mail and the clinic's name as context words (ASVS V6.1.2, V6.2.11).
* MFA policy (the identity issue, item 6; ASVS V6.3.3): staff must enrol TOTP at their first
  sign-in, so their password is checked with `mfa=True` (8 characters at least, 63B-4
  3.1.1.2). Patients may sign in with a password alone, so theirs is checked with `mfa=False`
  (15 at least) when set; a patient who has enrolled TOTP later may change to a password of
  8 or more (`change_password` uses the account's state at the time of the change).
* Passwords are stored as Argon2id hashes with the parameters of the settings
  (`password_hasher`), NFKC-normalised, never truncated (ASVS V6.2.8, V11.4.2).
* TOTP seeds (RFC 6238) are drawn from the CSPRNG and sealed with `crypto.envelope` under the
  account's own data key (owner "account:<id>"), with associated data naming the account and
  the purpose ("pending" until the first code proves the authenticator holds it, then
  "active"), so a sealed seed copied to another account or column fails to open.
* Recovery codes (ten, 120 bits each, `recovery`) are issued when TOTP is enrolled, shown once
  and stored as SHA-256 hashes (ASVS V6.5.2).
* A password change, a new authenticator, an MFA reset and disabling an account revoke the
  account's other sessions (ASVS V7.4.3); disabling an account ends all of them (V7.4.2).
  A password change, an MFA reset, a role change and disabling also revoke the account's
  OAuth access tokens (`oauth.revoke_account_tokens`; ASVS V10.4.9).
* Re-authentication before sensitive changes (ASVS V7.5.1, V7.5.3; the identity issue, item 8):
  replacing an enrolled authenticator, or enrolling one from a session, needs a session that
  stepped up within `settings.step_up_minutes` (`sessions.require_recent_mfa`); a first
  enrolment outside a session only happens inside the sign-in (`login.enrol_step`, after the
  password). `change_role` needs an administrator's session that stepped up recently, and
  revokes every session of the account whose role changes.

Functions take keyword arguments only, never commit, and raise `core.errors`.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from egide.access.permissions import Role
from egide.core.clock import Clock
from egide.core.errors import BadRequest, Conflict, Forbidden, Issue, NotFound, Unauthorized
from egide.core.ids import new_id
from egide.core.principal import Principal
from egide.core.settings import Settings
from egide.crypto.envelope import Envelope
from egide.identity import oauth, passwords, recovery, session_tokens, totp
from egide.identity.factors import (
    TOTP,
    audit,
    has_second_factor,
    open_seed,
    password_hasher,
    principal_of,
    seal_seed,
)
from egide.identity.models import Account, Invitation, Passkey, RecoveryCode
from egide.identity.sessions import SessionInfo, require_recent_mfa, revoke_all_sessions
from egide.ledger.service import Action

INVITED, ACTIVE, DISABLED = "invited", "active", "disabled"
# Accounts are for people: the "service" role belongs to API tokens (identity.tokens).
ACCOUNT_ROLES = frozenset(r.value for r in Role if r is not Role.SERVICE)
STAFF_ROLES = frozenset(r for r in ACCOUNT_ROLES if r != Role.PATIENT.value)
MAX_EMAIL_LENGTH = 254  # RFC 5321 section 4.5.3.1.3 (path) less the angle brackets
# No white space, no control character (NUL included: PostgreSQL text refuses it).
_EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s.\x00-\x1f\x7f]+")
_INVALID_INVITATION = "This invitation link is invalid, was already used or has expired."


@dataclass(frozen=True)
class AccountView:
    """What may be shown about an account: no hash, seed or code."""

    id: str
    email: str
    name: str
    role: str
    status: str
    mfa_enrolled: bool
    patient_id: str | None
    practitioner_id: str | None
    created_at: dt.datetime


@dataclass(frozen=True)
class TotpEnrolment:
    """What enrolment shows once: the seed as base32, the otpauth URI and its QR code."""

    secret_base32: str
    uri: str
    svg: str


def view(session: Session, account: Account) -> AccountView:
    """What may be shown of `account`; `mfa_enrolled` counts TOTP and passkeys alike."""
    return AccountView(
        id=account.id,
        email=account.email,
        name=account.name,
        role=account.role,
        status=account.status,
        mfa_enrolled=has_second_factor(session, account),
        patient_id=account.patient_id,
        practitioner_id=account.practitioner_id,
        created_at=account.created_at,
    )


# --- Helpers shared with login and sessions ------------------------------------------------


def normalise_email(email: str) -> str:
    """The stored form of an e-mail address: NFKC, stripped, lower-cased."""
    return unicodedata.normalize("NFKC", email).strip().lower()


def is_staff(account: Account) -> bool:
    return account.role != Role.PATIENT.value


def _password_refused(
    password: str, *, account: Account, mfa: bool, settings: Settings
) -> BadRequest | None:
    words = passwords.context_words_for(
        names=account.name.split(), email=account.email, organisation=settings.clinic_name
    )
    reasons = passwords.check_password(password, mfa=mfa, context_words=words)
    if not reasons:
        return None
    sentences = [passwords.describe(r, mfa=mfa) for r in reasons]
    issues = [Issue(s, location="password", code="value") for s in sentences]
    return BadRequest(" ".join(sentences), issues)


def _by_email(session: Session, email: str) -> Account:
    address = normalise_email(email)
    account = (
        None  # NUL is in no stored address (and PostgreSQL text cannot compare with it)
        if "\x00" in address
        else session.scalar(select(Account).where(Account.email == address).with_for_update())
    )
    if account is None:
        msg = f"no account with the e-mail address {address!r}"
        raise NotFound(msg)
    return account


def _by_id(session: Session, account_id: str) -> Account:
    account = session.get(Account, account_id, with_for_update=True, populate_existing=True)
    if account is None:
        msg = "no such account"
        raise NotFound(msg)
    return account


# --- Creation and invitation ---------------------------------------------------------------


def create_account(
    session: Session,
    *,
    email: str,
    name: str,
    role: str,
    clock: Clock,
    settings: Settings,
    envelope: Envelope,
    actor: Principal | None,
    patient_id: str | None = None,
    practitioner_id: str | None = None,
) -> tuple[AccountView, str]:
    """A new "invited" account and the token of its invitation link (shown once).

    BadRequest for a malformed e-mail, an unknown role or a missing/extra patient link;
    Conflict when the e-mail address is taken.
    """
    del envelope  # the account's data key is created when it first seals a seed
    address = normalise_email(email)
    if len(address) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(address):
        msg = "an account needs a valid e-mail address (name@example.org)"
        raise BadRequest(msg)
    if role not in ACCOUNT_ROLES:
        roles = ", ".join(sorted(ACCOUNT_ROLES))
        msg = f"unknown account role {role!r} (one of: {roles})"
        raise BadRequest(msg)
    name = unicodedata.normalize("NFKC", name).strip()
    if not name or len(name) > 200:
        msg = "an account needs a name of 1 to 200 characters"
        raise BadRequest(msg)
    if role == Role.PATIENT.value and not patient_id:
        msg = "a patient account must name its patient (--patient ID)"
        raise BadRequest(msg)
    if role != Role.PATIENT.value and patient_id:
        msg = "only patient accounts are linked to a patient"
        raise BadRequest(msg)
    if role == Role.PATIENT.value and practitioner_id:
        msg = "a patient account is not linked to a practitioner"
        raise BadRequest(msg)
    for value in (patient_id, practitioner_id):
        if value is not None and not 1 <= len(value) <= 64:
            msg = "a patient or practitioner id has 1 to 64 characters"
            raise BadRequest(msg)
    if session.scalar(select(Account.id).where(Account.email == address)) is not None:
        msg = f"an account with the e-mail address {address!r} already exists"
        raise Conflict(msg)
    now = clock.now()
    account = Account(
        id=new_id(),
        email=address,
        name=name,
        role=role,
        patient_id=patient_id,
        practitioner_id=practitioner_id,
        status=INVITED,
        failed_count=0,
        created_at=now,
    )
    session.add(account)
    token = session_tokens.new_session_token()
    expires = now + dt.timedelta(hours=settings.invitation_hours)
    session.add(
        Invitation(
            id=new_id(),
            account_id=account.id,
            token_hash=session_tokens.token_hash(token),
            expires_at=expires,
            created_by=actor.id if actor is not None else None,
        )
    )
    session.flush()
    audit(
        session,
        clock=clock,
        principal=actor,
        action=Action.ACCOUNT_CREATE,
        account=account,
        reasons=(f"role {role}", f"invitation valid {settings.invitation_hours} hours"),
    )
    return view(session, account), token


def _live_invitation(session: Session, token: str, clock: Clock) -> tuple[Invitation, Account]:
    """The unused, unexpired invitation of an invited account; one NotFound for all else."""
    found = None
    if session_tokens.looks_like_session_token(token):
        found = session.scalar(
            select(Invitation)
            .where(Invitation.token_hash == session_tokens.token_hash(token))
            .with_for_update()
        )
    if found is None or found.used_at is not None or found.expires_at <= clock.now():
        raise NotFound(_INVALID_INVITATION)
    account = session.get(Account, found.account_id, with_for_update=True)
    if account is None or account.status != INVITED:
        raise NotFound(_INVALID_INVITATION)
    return found, account


def invitation_expiry(session: Session, *, token: str, clock: Clock) -> dt.datetime:
    """When a live invitation expires (for display); NotFound like `invitation_account`."""
    invitation, _ = _live_invitation(session, token, clock)
    return invitation.expires_at


def invitation_account(session: Session, *, token: str, clock: Clock) -> AccountView:
    """The account a live invitation is for; NotFound (one message) when unknown, used or
    expired."""
    _, account = _live_invitation(session, token, clock)
    return view(session, account)


def accept_invitation(
    session: Session,
    *,
    token: str,
    password: str,
    clock: Clock,
    settings: Settings,
    ip: str | None,
    device: str | None,
) -> AccountView:
    """Set the first password through an invitation link; the link is then spent.

    BadRequest (with one issue per reason) when the password is refused by the policy; the
    invitation stays usable then, so the person can try another password.
    """
    invitation, account = _live_invitation(session, token, clock)
    refused = _password_refused(password, account=account, mfa=is_staff(account), settings=settings)
    if refused is not None:
        raise refused
    now = clock.now()
    account.password_hash = password_hasher(settings).hash(password)
    account.password_changed_at = now
    account.status = ACTIVE
    invitation.used_at = now
    session.flush()
    audit(
        session,
        clock=clock,
        principal=principal_of(account, ip=ip, device=device),
        action=Action.PASSWORD_CHANGE,
        account=account,
        reasons=("invitation accepted", "first password set"),
    )
    return view(session, account)


# --- Self-service ------------------------------------------------------------------------


def change_password(
    session: Session,
    *,
    account_id: str,
    current_password: str,
    new_password: str,
    clock: Clock,
    settings: Settings,
    keep_session_id: str | None,
) -> None:
    """Change a password after checking the current one (ASVS V6.2.3); every other session
    of the account is revoked (ASVS V7.4.3).

    Unauthorized when the current password is wrong, BadRequest when the new one is refused.
    """
    account = _by_id(session, account_id)
    hasher = password_hasher(settings)
    if account.status != ACTIVE or not hasher.verify_or_dummy(
        account.password_hash, current_password
    ):
        msg = "The current password is incorrect."
        raise Unauthorized(msg)
    mfa = account.totp_seed_sealed is not None or is_staff(account)
    refused = _password_refused(new_password, account=account, mfa=mfa, settings=settings)
    if refused is not None:
        raise refused
    account.password_hash = hasher.hash(new_password)
    account.password_changed_at = clock.now()
    session.flush()
    revoked = revoke_all_sessions(
        session,
        account_id=account.id,
        clock=clock,
        reason="password changed",
        except_id=keep_session_id,
    )
    # The apps' tokens too (ASVS V10.4.9; V7.4.3): a thief who changed it keeps no way in.
    tokens = oauth.revoke_account_tokens(
        session, account_id=account.id, clock=clock, reason="password changed"
    )
    audit(
        session,
        clock=clock,
        principal=principal_of(account),
        action=Action.PASSWORD_CHANGE,
        account=account,
        reasons=(
            "password changed by the account holder",
            f"{revoked} other sessions revoked",
            *((f"{tokens} app tokens revoked",) if tokens else ()),
        ),
    )


def _require_reauthentication(
    account: Account,
    actor_session: SessionInfo | None,
    *,
    clock: Clock,
    settings: Settings | None,
) -> None:
    """Forbidden unless a change of the account's second factor is allowed now (ASVS V7.5.1):
    from a session, that session is the account's own and stepped up recently; without one,
    only a first enrolment (the account has no authenticator to replace)."""
    if actor_session is None:
        if account.totp_seed_sealed is not None:
            msg = "Replacing the authenticator needs a recent step-up in a signed-in session."
            raise Forbidden(msg)
        return
    if actor_session.account_id != account.id:
        msg = "a session may only change its own account's authenticator"
        raise Forbidden(msg)
    if settings is None:
        msg = "settings are needed to check the step-up of a session"
        raise BadRequest(msg)
    require_recent_mfa(actor_session, clock=clock, settings=settings)


def begin_totp_enrolment(
    session: Session,
    *,
    account_id: str,
    clock: Clock,
    envelope: Envelope,
    settings: Settings,
    actor_session: SessionInfo | None = None,
) -> TotpEnrolment:
    """A fresh TOTP seed, kept sealed as pending until `confirm_totp_enrolment` proves the
    authenticator holds it. Shows the seed, its otpauth URI and QR code once (RFC 6238).

    From a session (`actor_session`), that session must have stepped up within
    `step_up_minutes`; replacing an enrolled authenticator always needs one (Forbidden).
    """
    account = _by_id(session, account_id)
    if account.status != ACTIVE:
        msg = "only an active account can enrol an authenticator"
        raise BadRequest(msg)
    _require_reauthentication(account, actor_session, clock=clock, settings=settings)
    return _begin(session, account, envelope=envelope, settings=settings)


def _begin(
    session: Session, account: Account, *, envelope: Envelope, settings: Settings
) -> TotpEnrolment:
    seed = totp.new_secret()  # 160 bits from the CSPRNG (ASVS V6.5.3)
    account.totp_pending_sealed = seal_seed(session, envelope, account.id, seed, "pending")
    session.flush()
    issuer = settings.clinic_name.replace(":", " ")
    uri = totp.provisioning_uri(seed, account.email.replace(":", " "), issuer)
    return TotpEnrolment(totp.encode_secret(seed), uri, totp.qr_svg(uri))


def confirm_totp_enrolment(
    session: Session,
    *,
    account_id: str,
    code: str,
    clock: Clock,
    envelope: Envelope,
    keep_session_id: str | None = None,
    actor_session: SessionInfo | None = None,
    settings: Settings | None = None,
) -> list[str]:
    """Make the pending seed the account's TOTP once `code` proves the authenticator holds it;
    return ten new recovery codes (shown once). Sessions other than `keep_session_id` are
    revoked (an MFA change, ASVS V7.4.3). BadRequest for a wrong code or no pending seed;
    Forbidden without a recent step-up, as `begin_totp_enrolment` (pass `settings` with
    `actor_session`)."""
    account = _by_id(session, account_id)
    _require_reauthentication(account, actor_session, clock=clock, settings=settings)
    codes = confirm(session, account, code=code, clock=clock, envelope=envelope)
    if codes is None:
        msg = "The code is incorrect; check the authenticator's clock and try the next code."
        raise BadRequest(msg)
    revoke_all_sessions(
        session,
        account_id=account.id,
        clock=clock,
        reason="authenticator changed",
        except_id=keep_session_id,
    )
    return codes


def confirm(
    session: Session, account: Account, *, code: str, clock: Clock, envelope: Envelope
) -> list[str] | None:
    """Shared by `confirm_totp_enrolment` and the sign-in enrolment: None for a wrong code."""
    if account.totp_pending_sealed is None or account.status != ACTIVE:
        msg = "no authenticator enrolment is in progress; start again"
        raise BadRequest(msg)
    seed = open_seed(session, envelope, account.id, account.totp_pending_sealed, "pending")
    step = TOTP.verify(seed, code.strip(), clock=clock, last_used_step=None)
    if step is None:
        return None
    now = clock.now()
    account.totp_seed_sealed = seal_seed(session, envelope, account.id, seed, "active")
    account.totp_pending_sealed = None
    account.totp_last_step = step  # the enrolment code may not be replayed to sign in
    account.mfa_enrolled_at = now
    codes = recovery.generate_codes()
    session.execute(delete(RecoveryCode).where(RecoveryCode.account_id == account.id))
    for slot, shown in enumerate(codes):
        session.add(
            RecoveryCode(account_id=account.id, slot=slot, code_hash=recovery.hash_code(shown))
        )
    session.flush()
    audit(
        session,
        clock=clock,
        principal=principal_of(account),
        action=Action.MFA_ENROL,
        account=account,
        reasons=("totp authenticator enrolled", f"{len(codes)} recovery codes issued"),
    )
    return codes


# --- Administration ----------------------------------------------------------------------


def disable_account(
    session: Session,
    *,
    email: str,
    clock: Clock,
    actor: Principal | None,
    reason: str = "disabled by an administrator",
) -> None:
    """Disable an account: no sign-in, every session revoked (ASVS V7.4.2)."""
    account = _by_email(session, email)
    if account.status == DISABLED:
        msg = "the account is already disabled"
        raise Conflict(msg)
    account.status = DISABLED
    account.disabled_at = clock.now()
    session.flush()
    revoked = revoke_all_sessions(
        session, account_id=account.id, clock=clock, reason="account disabled"
    )
    tokens = oauth.revoke_account_tokens(
        session, account_id=account.id, clock=clock, reason="account disabled", actor=actor
    )
    audit(
        session,
        clock=clock,
        principal=actor,
        action=Action.ACCOUNT_DISABLE,
        account=account,
        reasons=(
            reason,
            f"{revoked} sessions revoked",
            *((f"{tokens} app tokens revoked",) if tokens else ()),
        ),
    )


def enable_account(session: Session, *, email: str, clock: Clock, actor: Principal | None) -> None:
    """Enable a disabled account again (back to "invited" if it never set a password)."""
    account = _by_email(session, email)
    if account.status != DISABLED:
        msg = "the account is not disabled"
        raise Conflict(msg)
    account.status = ACTIVE if account.password_hash is not None else INVITED
    account.disabled_at = None
    session.flush()
    audit(
        session,
        clock=clock,
        principal=actor,
        action=Action.ACCOUNT_ENABLE,
        account=account,
        reasons=("enabled by an administrator",),
    )


def reset_mfa(session: Session, *, email: str, clock: Clock, actor: Principal | None) -> None:
    """Forget the account's TOTP seed, passkeys and recovery codes, revoke its sessions: a staff
    member enrols again at the next sign-in (lost phone). ASVS V6.4.4 asks that the person's
    identity be proven again before this, as at enrolment: that check is the operator's."""
    account = _by_email(session, email)
    account.totp_seed_sealed = None
    account.totp_pending_sealed = None
    account.totp_last_step = None
    account.mfa_enrolled_at = None
    session.execute(delete(RecoveryCode).where(RecoveryCode.account_id == account.id))
    session.execute(delete(Passkey).where(Passkey.account_id == account.id))  # lost with it
    session.flush()
    revoked = revoke_all_sessions(session, account_id=account.id, clock=clock, reason="MFA reset")
    tokens = oauth.revoke_account_tokens(
        session, account_id=account.id, clock=clock, reason="MFA reset", actor=actor
    )
    audit(
        session,
        clock=clock,
        principal=actor,
        action=Action.MFA_RESET,
        account=account,
        reasons=(
            "second factor reset by an administrator",
            f"{revoked} sessions revoked",
            *((f"{tokens} app tokens revoked",) if tokens else ()),
        ),
    )


def change_role(
    session: Session,
    *,
    email: str,
    role: str,
    clock: Clock,
    settings: Settings,
    actor: Principal,
    actor_session: SessionInfo,
) -> AccountView:
    """Give a staff account another staff role, by an administrator who stepped up within
    `step_up_minutes` (the identity issue, item 8; ASVS V7.5.3). Every session of the account
    ends (its permissions change with its role; ASVS V7.4.2 in spirit), and the ledger records
    the change (ACCOUNT_ROLE_CHANGE).

    Forbidden when the actor is not an administrator, is not the session's principal or has not
    stepped up recently, or changes their own role; BadRequest for an unknown role or a change to
    or from "patient" (a patient account is linked to its Patient: invite a new account);
    Conflict when the account already has the role.
    """
    if actor.role != Role.ADMIN.value or actor_session.principal.id != actor.id:
        msg = "only an administrator, in their own session, may change a role"
        raise Forbidden(msg)
    require_recent_mfa(actor_session, clock=clock, settings=settings)
    if role not in STAFF_ROLES:
        roles = ", ".join(sorted(STAFF_ROLES))
        msg = f"a role change gives a staff role (one of: {roles})"
        raise BadRequest(msg)
    account = _by_email(session, email)
    if account.id == actor_session.account_id:
        msg = "an administrator may not change their own role"
        raise Forbidden(msg)
    if not is_staff(account):
        msg = "a patient account keeps its role: invite a staff account instead"
        raise BadRequest(msg)
    if account.role == role:
        msg = f"the account already has the role {role!r}"
        raise Conflict(msg)
    old = account.role
    account.role = role
    session.flush()
    revoked = revoke_all_sessions(
        session, account_id=account.id, clock=clock, reason="role changed", actor=actor
    )
    tokens = oauth.revoke_account_tokens(
        session, account_id=account.id, clock=clock, reason="role changed", actor=actor
    )
    audit(
        session,
        clock=clock,
        principal=actor,
        action=Action.ACCOUNT_ROLE_CHANGE,
        account=account,
        reasons=(
            f"role {old} -> {role}",
            f"{revoked} sessions revoked",
            *((f"{tokens} app tokens revoked",) if tokens else ()),
        ),
    )
    return view(session, account)


def revoke_account_sessions(
    session: Session, *, email: str, clock: Clock, actor: Principal | None
) -> int:
    """End every session of an account, by an administrator (ASVS V7.4.5); how many."""
    account = _by_email(session, email)
    return revoke_all_sessions(
        session,
        account_id=account.id,
        clock=clock,
        reason="revoked by an administrator",
        actor=actor,
    )


def unlock_account(session: Session, *, email: str, clock: Clock, actor: Principal | None) -> None:
    """Clear the failure count, the backoff and the lock of an account."""
    account = _by_email(session, email)
    was = account.failed_count
    account.failed_count = 0
    account.locked_until = None
    account.locked_at = None
    session.flush()
    audit(
        session,
        clock=clock,
        principal=actor,
        action=Action.ACCOUNT_UNLOCK,
        account=account,
        reasons=("unlocked by an administrator", f"{was} consecutive failures cleared"),
    )


def list_accounts(session: Session) -> list[AccountView]:
    return [view(session, a) for a in session.scalars(select(Account).order_by(Account.email))]


def find_account(session: Session, *, email: str) -> AccountView | None:
    address = normalise_email(email)
    if "\x00" in address:
        return None
    found = session.scalar(select(Account).where(Account.email == address))
    return view(session, found) if found is not None else None

"""Sign-in: the password step, then the second factor (or its first enrolment), then a session.

Security role: this is the front door every person passes, and where online guessing is
stopped (NIST SP 800-63B-4 section 3.2.2; OWASP ASVS 5.0 V6.3.1, V6.3.3, V6.3.8).

* One answer for every failure a stranger could learn from: an unknown e-mail, a wrong
  password, a disabled account and an invited account that has not set a password all say
  `WRONG_CREDENTIALS`, and all cost one Argon2id verification (`verify_or_dummy` checks a
  dummy hash when there is no usable one), so neither the message nor the time tells which
  accounts exist (ASVS V6.3.8). The ledger records the real reason.
* Throttling per source address: `ADDRESS_MAX_FAILURES` failed attempts (password or second
  factor) within `ADDRESS_WINDOW` refuse every further attempt from that address until the
  window ends: credential stuffing across many accounts from one address stops there.
* Lockout per account (`factors`): exponential backoff after 5 consecutive failures, and a lock
  after 100 until an administrator unlocks (63B-4 3.2.2: at most 100). Password and
  second-factor failures count together, and only a complete sign-in resets the count, so
  knowing the password does not buy unlimited TOTP guesses.
* MFA policy (the identity issue, item 6; ASVS V6.3.3): a staff account without an enrolled
  authenticator gets "enrolment_required" and must enrol TOTP before any session is issued;
  a patient without MFA is signed in on the password alone (their password had to be 15
  characters or more); anyone with TOTP gets "mfa_required".
* Between the two steps the browser holds a pending token (256 random bits, stored hashed)
  valid `PENDING_MINUTES` and spent by the sign-in it completes.
* The second factor is a TOTP code (RFC 6238; a code is accepted once, ASVS V6.5.1) or one of
  the ten recovery codes (single use, ASVS V6.5.1, V6.5.2).
* Rehash on login: a password hashed with other Argon2 parameters is re-hashed with the
  current ones once it verifies.
* Housekeeping: `purge_expired` deletes the address-throttle rows whose window has ended and
  the pending sign-ins that are spent or expired (the server's background pass and
  `egide user purge` call it); neither is evidence (the ledger keeps every attempt).
* Every outcome is appended to the ledger in the caller's transaction: LOGIN (with the factors
  used), LOGIN_FAILED and MFA_FAILED (with the reason in words), ACCOUNT_LOCK. Refusals are
  returned as a `LoginResult`, never raised, so the caller commits them with the failure
  counters. Passwords, codes and tokens never reach the ledger.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from egide.access.permissions import Role
from egide.core.clock import Clock
from egide.core.errors import BadRequest, Unauthorized
from egide.core.ids import new_id
from egide.core.principal import Principal
from egide.core.settings import Settings
from egide.crypto.envelope import Envelope
from egide.identity import factors, recovery, session_tokens
from egide.identity.accounts import ACTIVE, TotpEnrolment, confirm, normalise_email
from egide.identity.accounts import _begin as begin_enrolment
from egide.identity.factors import audit, blocked_for, principal_of
from egide.identity.models import Account, AddressThrottle, LoginPending, RecoveryCode
from egide.identity.sessions import create_session
from egide.ledger.service import Action

WRONG_CREDENTIALS = "Email or password is incorrect."
WRONG_CODE = "The code is incorrect."
PENDING_EXPIRED = "Your sign-in has expired; please start again."
ACCOUNT_LOCKED = "Too many attempts; this account is locked. Ask an administrator to unlock it."
PENDING_MINUTES = 5
ADDRESS_MAX_FAILURES = 20
ADDRESS_WINDOW = dt.timedelta(minutes=10)
_NO_ADDRESS = "unknown"

Outcome = Literal["signed_in", "mfa_required", "enrolment_required", "refused"]


@dataclass(frozen=True)
class LoginResult:
    """What a sign-in step answers. `message` is safe to show to anyone."""

    outcome: Outcome
    session_token: str | None = None
    pending_token: str | None = None
    message: str = ""
    retry_after: int | None = None  # seconds, when refused for throttling or backoff
    account_id: str | None = None


def too_many(seconds: int) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return f"Too many attempts; try again in {minutes} minute{'s' if minutes > 1 else ''}."


def _refused(message: str, retry_after: int | None = None) -> LoginResult:
    return LoginResult("refused", message=message, retry_after=retry_after)


def _anonymous(ip: str | None, device: str | None) -> Principal:
    return Principal(id="anonymous", role="anonymous", ip=ip, device=device)


# --- Per-address throttle --------------------------------------------------------------------


def _address_blocked(session: Session, ip: str | None, now: dt.datetime) -> int | None:
    row = session.get(AddressThrottle, (ip or _NO_ADDRESS)[:64])
    if row is None or now - row.window_start >= ADDRESS_WINDOW:
        return None
    if row.failures < ADDRESS_MAX_FAILURES:
        return None
    return max(1, math.ceil((row.window_start + ADDRESS_WINDOW - now).total_seconds()))


def _address_failure(session: Session, ip: str | None, now: dt.datetime) -> None:
    key = (ip or _NO_ADDRESS)[:64]
    row = session.get(AddressThrottle, key, with_for_update=True)
    if row is None:
        session.add(AddressThrottle(ip=key, window_start=now, failures=1))
    elif now - row.window_start >= ADDRESS_WINDOW:
        row.window_start, row.failures = now, 1
    else:
        row.failures += 1
    session.flush()


# --- Housekeeping -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Purged:
    """How many rows `purge_expired` deleted."""

    address_throttles: int
    pending_sign_ins: int


def purge_expired(session: Session, *, clock: Clock) -> Purged:
    """Delete what no longer counts: throttle windows that have ended (`_address_blocked`
    ignores them and the next failure starts a new one) and pending sign-ins that are spent
    or expired (`_live_pending` refuses them). Never commits."""
    now = clock.now()
    throttles = session.execute(
        delete(AddressThrottle).where(AddressThrottle.window_start <= now - ADDRESS_WINDOW)
    )
    pending = session.execute(
        delete(LoginPending).where(
            or_(LoginPending.expires_at <= now, LoginPending.used_at.is_not(None))
        )
    )
    session.flush()
    return Purged(address_throttles=_rowcount(throttles), pending_sign_ins=_rowcount(pending))


def _rowcount(result: object) -> int:
    count = getattr(result, "rowcount", None)
    return count if isinstance(count, int) and count > 0 else 0


# --- Steps ------------------------------------------------------------------------------------


def password_step(
    session: Session,
    *,
    email: str,
    password: str,
    clock: Clock,
    settings: Settings,
    envelope: Envelope,
    ip: str | None,
    device: str | None,
) -> LoginResult:
    """Check the e-mail and password; answer what the person must do next."""
    del envelope
    now = clock.now()
    wait = _address_blocked(session, ip, now)
    if wait is not None:
        audit(
            session,
            clock=clock,
            principal=_anonymous(ip, device),
            action=Action.LOGIN_FAILED,
            account=None,
            reasons=("too many failed attempts from this address",),
            denied=True,
        )
        return _refused(too_many(wait), wait)
    address = normalise_email(email)[:254]
    account = (
        None  # NUL is in no stored address, and PostgreSQL text cannot even compare with it
        if "\x00" in address
        else session.scalar(select(Account).where(Account.email == address).with_for_update())
    )
    hasher = factors.password_hasher(settings)
    if account is None:
        hasher.verify_or_dummy(None, password)  # the same Argon2id work as a known account
        return _fail_password(session, None, "unknown account", clock=clock, ip=ip, device=device)
    principal = principal_of(account, ip=ip, device=device)
    wait = blocked_for(account, now)
    if wait is not None:
        audit(
            session,
            clock=clock,
            principal=principal,
            action=Action.LOGIN_FAILED,
            account=account,
            reasons=("account locked" if wait == 0 else "account in backoff after failures",),
            denied=True,
        )
        return _refused(ACCOUNT_LOCKED, None) if wait == 0 else _refused(too_many(wait), wait)
    matches = hasher.verify_or_dummy(account.password_hash, password)
    if account.status != ACTIVE:
        reason = "account disabled" if account.status == "disabled" else "invitation not accepted"
        return _fail_password(
            session, account, reason, clock=clock, ip=ip, device=device, count=False
        )
    if not matches:
        return _fail_password(session, account, "wrong password", clock=clock, ip=ip, device=device)
    if account.password_hash is not None and hasher.needs_rehash(account.password_hash):
        account.password_hash = hasher.hash(password)  # rehash on login (new parameters)
        session.flush()
    if factors.has_second_factor(session, account):  # TOTP or a passkey (identity.passkeys)
        return _pending(session, account, "mfa_required", clock)
    if account.role != Role.PATIENT.value:
        return _pending(session, account, "enrolment_required", clock)
    return _sign_in(
        session,
        account,
        ("password",),
        clock=clock,
        settings=settings,
        ip=ip,
        device=device,
        mfa=False,
    )


def _fail_password(
    session: Session,
    account: Account | None,
    reason: str,
    *,
    clock: Clock,
    ip: str | None,
    device: str | None,
    count: bool = True,
) -> LoginResult:
    now = clock.now()
    _address_failure(session, ip, now)
    principal = principal_of(account, ip=ip, device=device) if account else _anonymous(ip, device)
    audit(
        session,
        clock=clock,
        principal=principal,
        action=Action.LOGIN_FAILED,
        account=account,
        reasons=(reason,),
        denied=True,
    )
    if account is not None and count:
        factors.register_failure(session, account, clock=clock, principal=principal)
    return _refused(WRONG_CREDENTIALS)


def _pending(session: Session, account: Account, outcome: Outcome, clock: Clock) -> LoginResult:
    now = clock.now()
    token = session_tokens.new_session_token()
    session.add(
        LoginPending(
            id=new_id(),
            token_hash=session_tokens.token_hash(token),
            account_id=account.id,
            created_at=now,
            expires_at=now + dt.timedelta(minutes=PENDING_MINUTES),
        )
    )
    session.flush()
    message = (
        "Enter the code from your authenticator app, or a recovery code."
        if outcome == "mfa_required"
        else "Set up an authenticator app to finish signing in."
    )
    return LoginResult(outcome, pending_token=token, message=message, account_id=account.id)


def _sign_in(
    session: Session,
    account: Account,
    used: tuple[str, ...],
    *,
    clock: Clock,
    settings: Settings,
    ip: str | None,
    device: str | None,
    mfa: bool,
    pending: LoginPending | None = None,
) -> LoginResult:
    now = clock.now()
    if pending is not None:
        pending.used_at = now
    factors.register_success(account)
    session.flush()
    token, info = create_session(
        session,
        account_id=account.id,
        clock=clock,
        settings=settings,
        ip=ip,
        device=device,
        mfa=mfa,
    )
    audit(
        session,
        clock=clock,
        principal=principal_of(account, ip=ip, device=device),
        action=Action.LOGIN,
        account=account,
        reasons=(*used, f"session {info.id}"),
    )
    return LoginResult(
        "signed_in", session_token=token, message="Signed in.", account_id=account.id
    )


def _live_pending(
    session: Session, token: str, clock: Clock
) -> tuple[LoginPending, Account] | None:
    if not session_tokens.looks_like_session_token(token):
        return None
    pending = session.scalar(
        select(LoginPending)
        .where(LoginPending.token_hash == session_tokens.token_hash(token))
        .with_for_update()
    )
    if pending is None or pending.used_at is not None or pending.expires_at <= clock.now():
        return None
    account = session.get(Account, pending.account_id, with_for_update=True, populate_existing=True)
    if account is None or account.status != ACTIVE:
        return None
    return pending, account


def _second_factor_gate(
    session: Session, account: Account, clock: Clock, ip: str | None, device: str | None
) -> LoginResult | None:
    """A refusal when the address or the account may not try now, else None."""
    now = clock.now()
    wait = _address_blocked(session, ip, now)
    if wait is None:
        wait = blocked_for(account, now)
    if wait is None:
        return None
    audit(
        session,
        clock=clock,
        principal=principal_of(account, ip=ip, device=device),
        action=Action.MFA_FAILED,
        account=account,
        reasons=("account locked" if wait == 0 else "too many failed attempts",),
        denied=True,
    )
    return _refused(ACCOUNT_LOCKED) if wait == 0 else _refused(too_many(wait), wait)


def _fail_code(
    session: Session,
    account: Account,
    reason: str,
    *,
    clock: Clock,
    ip: str | None,
    device: str | None,
) -> LoginResult:
    principal = principal_of(account, ip=ip, device=device)
    _address_failure(session, ip, clock.now())
    audit(
        session,
        clock=clock,
        principal=principal,
        action=Action.MFA_FAILED,
        account=account,
        reasons=(reason,),
        denied=True,
    )
    factors.register_failure(session, account, clock=clock, principal=principal)
    return _refused(WRONG_CODE)


def mfa_step(
    session: Session,
    *,
    pending_token: str,
    code: str,
    clock: Clock,
    settings: Settings,
    envelope: Envelope,
    ip: str | None,
    device: str | None,
) -> LoginResult:
    """Second step: a TOTP code (6 digits) or a recovery code; a session on success."""
    live = _live_pending(session, pending_token, clock)
    if live is None:
        return _refused(PENDING_EXPIRED)
    pending, account = live
    if not factors.has_second_factor(session, account):
        return _refused(PENDING_EXPIRED)
    refusal = _second_factor_gate(session, account, clock, ip, device)
    if refusal is not None:
        return refusal
    code = code.strip()
    if recovery.normalise_code(code) is not None:
        rows = session.scalars(
            select(RecoveryCode)
            .where(RecoveryCode.account_id == account.id)
            .order_by(RecoveryCode.slot)
            .with_for_update()
        ).all()
        slot = recovery.match(code, [None if r.used_at else r.code_hash for r in rows])
        if slot is None:
            return _fail_code(
                session, account, "wrong or used recovery code", clock=clock, ip=ip, device=device
            )
        rows[slot].used_at = clock.now()  # single use (ASVS V6.5.1)
        left = sum(1 for r in rows if r.used_at is None)
        return _sign_in(
            session,
            account,
            ("password", "recovery code", f"{left} recovery codes left"),
            clock=clock,
            settings=settings,
            ip=ip,
            device=device,
            mfa=True,
            pending=pending,
        )
    ok, why = factors.check_totp(session, envelope, account, code, clock)
    if not ok:
        return _fail_code(session, account, why, clock=clock, ip=ip, device=device)
    return _sign_in(
        session,
        account,
        ("password", "totp"),
        clock=clock,
        settings=settings,
        ip=ip,
        device=device,
        mfa=True,
        pending=pending,
    )


def enrol_step(
    session: Session, *, pending_token: str, clock: Clock, envelope: Envelope, settings: Settings
) -> TotpEnrolment:
    """First-time TOTP enrolment inside the sign-in (staff without an authenticator).

    Unauthorized when the pending sign-in is unknown, spent or expired; BadRequest when the
    account already has an authenticator (it must sign in with it).
    """
    live = _live_pending(session, pending_token, clock)
    if live is None:
        raise Unauthorized(PENDING_EXPIRED)
    _, account = live
    if factors.has_second_factor(session, account):  # a passkey counts (identity.passkeys)
        msg = "An authenticator is already enrolled; sign in with its code."
        raise BadRequest(msg)
    return begin_enrolment(session, account, envelope=envelope, settings=settings)


def confirm_enrol_step(
    session: Session,
    *,
    pending_token: str,
    code: str,
    clock: Clock,
    envelope: Envelope,
    settings: Settings,
    ip: str | None,
    device: str | None,
) -> tuple[LoginResult, list[str]]:
    """Confirm the sign-in enrolment with a first code: a session and ten recovery codes
    (show them once). A wrong code is refused (and counted), with no codes."""
    live = _live_pending(session, pending_token, clock)
    if live is None:
        return _refused(PENDING_EXPIRED), []
    pending, account = live
    if account.totp_pending_sealed is None or factors.has_second_factor(session, account):
        return _refused(PENDING_EXPIRED), []
    refusal = _second_factor_gate(session, account, clock, ip, device)
    if refusal is not None:
        return refusal, []
    codes = confirm(session, account, code=code, clock=clock, envelope=envelope)
    if codes is None:
        return _fail_code(
            session, account, "wrong TOTP code at enrolment", clock=clock, ip=ip, device=device
        ), []
    result = _sign_in(
        session,
        account,
        ("password", "totp"),
        clock=clock,
        settings=settings,
        ip=ip,
        device=device,
        mfa=True,
        pending=pending,
    )
    return result, codes

"""Web sessions: issued at sign-in, checked on every request, listed, revoked, stepped up.

Security role (OWASP ASVS 5.0 chapter V7): the session token in the browser's cookie is the
signed-in person's credential.

* A new token is issued at every authentication (V7.2.4, against session fixation): 256 bits
  from the CSPRNG (`session_tokens.new_session_token`; V7.2.3), an opaque reference looked up
  server-side (V7.2.1, V7.2.2). Only SHA-256 of it is stored (DESIGN.md contract 4), so a
  stolen database yields no usable cookie. Each session has its own CSRF secret (V3.5.1).
* `validate_session` refuses unknown, revoked, idle-expired and absolute-expired sessions
  (V7.3.1 inactivity timeout: 15 minutes for staff, 30 for patients, configurable; V7.3.2
  absolute lifetime: 12 hours), and sessions of an account that is no longer active. It
  touches `last_seen_at` at most once a minute, so an active session costs one write a minute,
  and a session expires at most a minute early, never late.
* At most `settings.max_sessions_per_account` (10) live sessions per account (V7.1.2): a new
  sign-in beyond it revokes the least recently used ones (reason "session limit", in the
  ledger as SESSION_REVOKE).
* Logout (V7.4.1), a password change or a new authenticator (V7.4.3: the other sessions), an
  MFA reset or disabling the account (V7.4.2: all of them; V7.4.5, by an administrator)
  revoke sessions server-side; a user lists their active sessions and revokes any of them
  (V7.5.2). Revoking another account's session answers NotFound, so a session id reveals
  nothing about who holds it.
* Step-up (the identity issue, item 8; V7.5.3 "further authentication ... before performing
  highly sensitive transactions"; V7.5.1 and V7.5.2 re-authentication before changing the
  second factor or ending other sessions): `require_recent_mfa` refuses when the session's
  last full authentication is older than `settings.step_up_minutes`; `step_up` checks a fresh
  TOTP code (replay refused) and records when. An account without an authenticator (a patient
  who did not enrol) re-authenticates with its password, the one factor it has; an account
  whose only authenticators are passkeys, with a passkey (`passkeys.finish_step_up`). A successful
  step-up is a re-authentication, so the session gets a new token and the old one stops
  working (V7.2.4); the session keeps its id and CSRF secret. A refusal is
  returned as a `StepUpResult`, never raised, so the caller commits the failure: it is in the
  ledger (MFA_FAILED) and counts towards the account's lockout.

Functions take keyword arguments only and never commit: the caller's transaction does.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from egide.access.permissions import Role
from egide.core.clock import Clock
from egide.core.errors import Forbidden, NotFound
from egide.core.ids import new_id
from egide.core.principal import Principal, fhir_user_for
from egide.core.settings import Settings
from egide.crypto.envelope import Envelope
from egide.identity import session_tokens
from egide.identity.factors import (
    audit,
    blocked_for,
    check_totp,
    has_passkey,
    password_hasher,
    principal_of,
    register_failure,
    register_success,
)
from egide.identity.models import Account, WebSession
from egide.ledger.service import Action

TOUCH_EVERY = dt.timedelta(minutes=1)
_ACTIVE = "active"
STEP_UP_WRONG = "The code is incorrect."
STEP_UP_WRONG_PASSWORD = "The password is incorrect."  # noqa: S105 - a message
STEP_UP_LOCKED = "Too many attempts; try again later."
STEP_UP_USE_PASSKEY = "Confirm with your passkey."


@dataclass(frozen=True)
class StepUpResult:
    """What a step-up answers; `message` is safe to show. `retry_after` (seconds) when the
    account is in backoff, 0 when it is locked until an administrator unlocks it."""

    ok: bool
    message: str = ""
    retry_after: int | None = None
    session_token: str | None = None  # on success: the session's new token, for the cookie


@dataclass(frozen=True)
class SessionInfo:
    """A live session as the web layer sees it: who, when, where; never the token."""

    id: str
    account_id: str
    principal: Principal
    csrf_secret: bytes
    created_at: dt.datetime
    last_seen_at: dt.datetime
    mfa_at: dt.datetime | None
    ip: str | None
    device: str | None


def _info(row: WebSession, account: Account) -> SessionInfo:
    return SessionInfo(
        id=row.id,
        account_id=row.account_id,
        principal=Principal(
            id=account.id,
            role=account.role,
            name=account.name,
            patient_id=account.patient_id,
            fhir_user=fhir_user_for(
                patient_id=account.patient_id, practitioner_id=account.practitioner_id
            ),
        ),
        csrf_secret=row.csrf_secret,
        created_at=row.created_at,
        last_seen_at=row.last_seen_at,
        mfa_at=row.mfa_at,
        ip=row.ip,
        device=row.device,
    )


def idle_limit(account: Account, settings: Settings) -> dt.timedelta:
    minutes = (
        settings.patient_session_idle_minutes
        if account.role == Role.PATIENT.value
        else settings.session_idle_minutes
    )
    return dt.timedelta(minutes=minutes)


def _expiry(row: WebSession, account: Account, now: dt.datetime, settings: Settings) -> str | None:
    """Why a session is no longer valid at `now`, or None when it is."""
    if row.revoked_at is not None:
        return row.revoked_reason or "revoked"
    if account.status != _ACTIVE:
        return "account not active"
    if now - row.created_at >= dt.timedelta(hours=settings.session_absolute_hours):
        return "absolute timeout"
    if now - row.last_seen_at >= idle_limit(account, settings):
        return "idle timeout"
    return None


def create_session(
    session: Session,
    *,
    account_id: str,
    clock: Clock,
    settings: Settings,
    ip: str | None,
    device: str | None,
    mfa: bool,
) -> tuple[str, SessionInfo]:
    """A new session (a fresh token, never one the client proposed: V7.2.4) and its info.

    The token is returned once, for the cookie; only its hash is stored. `mfa`: the sign-in
    included a second factor, which starts the step-up clock. When the account would have more
    than `settings.max_sessions_per_account` live sessions, the least recently used ones are
    revoked ("session limit"; ASVS V7.1.2).
    """
    account = session.get(Account, account_id)
    if account is None:
        msg = "no such account"
        raise NotFound(msg)
    now = clock.now()
    token = session_tokens.new_session_token()
    row = WebSession(
        id=new_id(),
        account_id=account.id,
        token_hash=session_tokens.token_hash(token),
        csrf_secret=session_tokens.new_csrf_secret(),
        created_at=now,
        last_seen_at=now,
        mfa_at=now if mfa else None,
        ip=ip[:64] if ip else None,
        device=device[:128] if device else None,
    )
    session.add(row)
    session.flush()
    _enforce_limit(session, account=account, keep_id=row.id, clock=clock, settings=settings)
    return token, _info(row, account)


def _enforce_limit(
    session: Session, *, account: Account, keep_id: str, clock: Clock, settings: Settings
) -> int:
    """Revoke the account's least recently used live sessions beyond
    `max_sessions_per_account` (ASVS V7.1.2: the documented number of concurrent sessions);
    the new session `keep_id` always stays. Returns how many were revoked."""
    now = clock.now()
    rows = session.scalars(
        select(WebSession)
        .where(WebSession.account_id == account.id, WebSession.revoked_at.is_(None))
        .order_by(WebSession.last_seen_at.desc(), WebSession.created_at.desc(), WebSession.id)
        .with_for_update()
    ).all()
    live = [r for r in rows if r.id == keep_id or _expiry(r, account, now, settings) is None]
    live.sort(key=lambda r: r.id != keep_id)  # stable: the new one first, then by last use
    excess = live[settings.max_sessions_per_account :]
    for old in excess:
        old.revoked_at = now
        old.revoked_reason = "session limit"
    if excess:
        session.flush()
        audit(
            session,
            clock=clock,
            principal=principal_of(account),
            action=Action.SESSION_REVOKE,
            account=account,
            reasons=(
                "session limit",
                f"at most {settings.max_sessions_per_account} sessions",
                f"{len(excess)} least recently used sessions revoked",
            ),
        )
    return len(excess)


def validate_session(
    session: Session, *, token: str, clock: Clock, settings: Settings
) -> SessionInfo | None:
    """The session a cookie token stands for, or None (unknown, revoked, expired)."""
    if not session_tokens.looks_like_session_token(token):
        return None
    row = session.scalar(
        select(WebSession).where(WebSession.token_hash == session_tokens.token_hash(token))
    )
    if row is None:
        return None
    account = session.get(Account, row.account_id)
    if account is None:
        return None
    now = clock.now()
    why = _expiry(row, account, now, settings)
    if why is not None:
        if row.revoked_at is None:
            row.revoked_at = now
            row.revoked_reason = why
            session.flush()
        return None
    if now - row.last_seen_at >= TOUCH_EVERY:
        row.last_seen_at = now
        session.flush()
    return _info(row, account)


def revoke_session(
    session: Session, *, account_id: str, session_id: str, clock: Clock, reason: str
) -> None:
    """Revoke one of the account's own sessions; NotFound for any other session id."""
    row = session.get(WebSession, session_id, with_for_update=True)
    if row is None or row.account_id != account_id:
        msg = "no such session"
        raise NotFound(msg)
    account = session.get(Account, account_id)
    assert account is not None  # the foreign key guarantees it
    if row.revoked_at is None:
        row.revoked_at = clock.now()
        row.revoked_reason = reason[:64]
        session.flush()
        audit(
            session,
            clock=clock,
            principal=principal_of(account),
            action=Action.SESSION_REVOKE,
            account=account,
            reasons=(reason, f"session {row.id}"),
        )


def revoke_all_sessions(
    session: Session,
    *,
    account_id: str,
    clock: Clock,
    reason: str,
    except_id: str | None = None,
    actor: Principal | None = None,
) -> int:
    """Revoke every live session of the account but `except_id`; returns how many.

    The caller's own ledger entry (password change, disable...) says why; this adds one
    SESSION_REVOKE entry when any session was revoked, under `actor` (an administrator) or
    else the account itself.
    """
    now = clock.now()
    rows = session.scalars(
        select(WebSession)
        .where(WebSession.account_id == account_id, WebSession.revoked_at.is_(None))
        .with_for_update()
    ).all()
    count = 0
    for row in rows:
        if row.id == except_id:
            continue
        row.revoked_at = now
        row.revoked_reason = reason[:64]
        count += 1
    if count:
        session.flush()
        account = session.get(Account, account_id)
        audit(
            session,
            clock=clock,
            principal=actor or (principal_of(account) if account is not None else None),
            action=Action.SESSION_REVOKE,
            account=account,
            reasons=(reason, f"{count} sessions revoked"),
        )
    return count


def list_sessions(
    session: Session, *, account_id: str, clock: Clock, settings: Settings
) -> list[SessionInfo]:
    """The account's active sessions, most recently used first (ASVS V7.5.2)."""
    account = session.get(Account, account_id)
    if account is None:
        return []
    now = clock.now()
    rows = session.scalars(
        select(WebSession)
        .where(WebSession.account_id == account_id, WebSession.revoked_at.is_(None))
        .order_by(WebSession.last_seen_at.desc(), WebSession.id)
    ).all()
    return [_info(r, account) for r in rows if _expiry(r, account, now, settings) is None]


def logout(session: Session, *, token: str, clock: Clock) -> None:
    """End the session of `token` server-side (ASVS V7.4.1); unknown tokens are ignored."""
    if not session_tokens.looks_like_session_token(token):
        return
    row = session.scalar(
        select(WebSession)
        .where(WebSession.token_hash == session_tokens.token_hash(token))
        .with_for_update()
    )
    if row is None or row.revoked_at is not None:
        return
    row.revoked_at = clock.now()
    row.revoked_reason = "logout"
    session.flush()
    account = session.get(Account, row.account_id)
    audit(
        session,
        clock=clock,
        principal=principal_of(account, ip=row.ip, device=row.device) if account else None,
        action=Action.LOGOUT,
        account=account,
        reasons=("signed out",),
    )


def require_recent_mfa(info: SessionInfo, *, clock: Clock, settings: Settings) -> None:
    """Forbidden unless the session authenticated fully (sign-in with every factor of the
    account, or `step_up`) within `step_up_minutes`."""
    limit = dt.timedelta(minutes=settings.step_up_minutes)
    if info.mfa_at is None or clock.now() - info.mfa_at > limit:
        msg = (
            "This action needs a recent second-factor check (step-up): "
            f"enter a code from your authenticator (valid {settings.step_up_minutes} minutes)."
        )
        raise Forbidden(msg)


def step_up_factor(session: Session, *, account_id: str) -> str:
    """What `step_up` asks of this account: "totp"; "passkey" for an account whose only
    authenticators are passkeys (`passkeys.finish_step_up`: the password alone is not its full
    authentication, ASVS V7.5.1); "password" when it has no authenticator (a patient who did
    not enrol)."""
    account = session.get(Account, account_id)
    if account is None:
        return "password"
    return _factor_of(session, account)


def _factor_of(session: Session, account: Account) -> str:
    if account.totp_seed_sealed is not None:
        return "totp"
    return "passkey" if has_passkey(session, account.id) else "password"


def step_up(
    session: Session,
    *,
    session_id: str,
    account_id: str,
    code: str,
    clock: Clock,
    envelope: Envelope,
    settings: Settings,
) -> StepUpResult:
    """Re-authenticate within a session and record when (step-up): `code` is a fresh TOTP code,
    or the password for an account without an authenticator (see `step_up_factor`). On success
    the session's token is replaced: the result carries the new one, the old one is dead.

    NotFound for a session of another account or an ended one. Every refusal (wrong or
    replayed code, wrong password, account in backoff or locked) is a `StepUpResult` with
    `ok=False`, appended to the ledger (MFA_FAILED) and, for a wrong answer, counted towards
    the lockout: the caller commits it (nothing is raised, so no rollback loses it).
    """
    row, account = stepping_up(session, session_id=session_id, account_id=account_id)
    principal = principal_of(account, ip=row.ip, device=row.device)
    now = clock.now()
    factor = _factor_of(session, account)
    blocked = step_up_blocked(session, account, now=now, clock=clock, principal=principal)
    if blocked is not None:
        return blocked
    if factor == "passkey":
        # A passkey-only account steps up with its passkey; its password alone is refused
        # without being checked (so not counted: this answers no guess).
        return step_up_refused(
            session,
            account,
            clock=clock,
            principal=principal,
            why="password offered by a passkey-only account",
            message=STEP_UP_USE_PASSKEY,
            count=False,
        )
    if factor == "totp":
        ok, why = check_totp(session, envelope, account, code, clock)
        wrong = STEP_UP_WRONG
    else:
        ok = password_hasher(settings).verify_or_dummy(account.password_hash, code)
        why, wrong = "wrong password", STEP_UP_WRONG_PASSWORD
    if not ok:
        return step_up_refused(
            session, account, clock=clock, principal=principal, why=why, message=wrong
        )
    return step_up_done(
        session, row, account, now=now, clock=clock, principal=principal, reasons=(factor,)
    )


def stepping_up(
    session: Session, *, session_id: str, account_id: str
) -> tuple[WebSession, Account]:
    """The live web session and its active account, both locked, for a step-up; NotFound
    otherwise (a session id reveals nothing about another account)."""
    row = session.get(WebSession, session_id, with_for_update=True)
    if row is None or row.account_id != account_id or row.revoked_at is not None:
        msg = "no such session"
        raise NotFound(msg)
    account = session.get(Account, account_id, with_for_update=True, populate_existing=True)
    if account is None or account.status != _ACTIVE:
        msg = "no such session"
        raise NotFound(msg)
    return row, account


def step_up_blocked(
    session: Session, account: Account, *, now: dt.datetime, clock: Clock, principal: Principal
) -> StepUpResult | None:
    """None when the account may step up now; else the refusal (ledgered MFA_FAILED, not
    counted) for an account in backoff or locked."""
    wait = blocked_for(account, now)
    if wait is None:
        return None
    audit(
        session,
        clock=clock,
        principal=principal,
        action=Action.MFA_FAILED,
        account=account,
        reasons=("step-up", "account locked" if wait == 0 else "too many failed attempts"),
        denied=True,
    )
    return StepUpResult(ok=False, message=STEP_UP_LOCKED, retry_after=wait)


def step_up_refused(
    session: Session,
    account: Account,
    *,
    clock: Clock,
    principal: Principal,
    why: str,
    message: str,
    count: bool = True,
) -> StepUpResult:
    """A refused step-up: counted towards the lockout (unless `count` is false) and ledgered
    MFA_FAILED; `message` is what the result shows."""
    if count:
        register_failure(session, account, clock=clock, principal=principal)
    audit(
        session,
        clock=clock,
        principal=principal,
        action=Action.MFA_FAILED,
        account=account,
        reasons=("step-up", why),
        denied=True,
    )
    return StepUpResult(ok=False, message=message)


def step_up_done(
    session: Session,
    row: WebSession,
    account: Account,
    *,
    now: dt.datetime,
    clock: Clock,
    principal: Principal,
    reasons: tuple[str, ...],
) -> StepUpResult:
    """A successful step-up: the session's `mfa_at` is `now` and it gets a new token (the
    result carries it), the failure count is cleared, and a LOGIN is ledgered."""
    row.mfa_at = now
    # A re-authentication: a new token, and the current one terminated (ASVS V7.2.4).
    token = session_tokens.new_session_token()
    row.token_hash = session_tokens.token_hash(token)
    register_success(account)
    session.flush()
    audit(
        session,
        clock=clock,
        principal=principal,
        action=Action.LOGIN,
        account=account,
        reasons=("step-up", *reasons),
    )
    return StepUpResult(ok=True, session_token=token)

"""What accounts, sign-in and sessions share: the hasher, sealed TOTP seeds, lockout, audit.

Security role:

* `password_hasher` gives the Argon2id hasher of the configured cost (OWASP Password Storage
  Cheat Sheet defaults in `core.settings`), one per parameter set.
* TOTP seeds are sealed with `crypto.envelope` under the account's own data key (owner
  "account:<id>"), with associated data naming the account and the column's purpose
  ("pending" or "active"): a sealed seed moved to another account or column fails to open
  (DESIGN.md contract 4). `TOTP` is the verifier: RFC 6238 SHA-1, 6 digits, 30 s, one step of
  tolerance either side (section 5.2), replay refused through `totp_last_step` (ASVS V6.5.1).
* Lockout (NIST SP 800-63B-4 section 3.2.2 "Rate Limiting (Throttling)"; ASVS V6.3.1): every
  failed password or second-factor attempt counts towards the same consecutive-failure
  counter. From the `BACKOFF_AFTER`-th failure on, the next attempt is refused until
  `min(2 ** (n - BACKOFF_AFTER), MAX_BACKOFF_SECONDS)` seconds after the last failure
  (exponential backoff); at `LOCK_AFTER` consecutive failures (63B-4: "no more than 100")
  the account is locked until an administrator unlocks it. A full sign-in resets the count.
* `audit` appends one ledger entry about an account: ids and reasons, never a secret
  (DESIGN.md contract 2 and 4).
"""

from __future__ import annotations

import datetime as dt
import functools

from sqlalchemy import select
from sqlalchemy.orm import Session

from egide.core.clock import Clock
from egide.core.principal import Principal
from egide.core.settings import Settings
from egide.crypto.envelope import Envelope
from egide.identity import passwords, totp
from egide.identity.models import Account, Passkey
from egide.ledger.service import Act, Action, Outcome, append

BACKOFF_AFTER = 5
MAX_BACKOFF_SECONDS = 900
LOCK_AFTER = 100  # NIST SP 800-63B-4 section 3.2.2: at most 100 consecutive failures
TOTP = totp.TotpVerifier()


@functools.cache
def _hasher(memory_kib: int, iterations: int) -> passwords.PasswordHasher:
    params = passwords.Argon2Parameters(memory_kib=memory_kib, time_cost=iterations)
    return passwords.PasswordHasher(params)


def password_hasher(settings: Settings) -> passwords.PasswordHasher:
    """The Argon2id hasher of the configured cost (one per parameter set, reused)."""
    return _hasher(settings.argon2_memory_kib, settings.argon2_iterations)


def principal_of(
    account: Account, *, ip: str | None = None, device: str | None = None
) -> Principal:
    """The account as the ledger's acting principal (no secret in it)."""
    return Principal(
        id=account.id,
        role=account.role,
        name=account.name,
        patient_id=account.patient_id,
        ip=ip,
        device=device,
    )


def totp_owner(account_id: str) -> str:
    """The envelope owner whose data key seals this account's TOTP seed."""
    return f"account:{account_id}"


def totp_aad(account_id: str, purpose: str) -> bytes:
    """Associated data binding a sealed seed to its account and its column."""
    return f"egide-totp/1|{purpose}|{account_id}".encode()


def seal_seed(
    session: Session, envelope: Envelope, account_id: str, seed: bytes, purpose: str
) -> bytes:
    return envelope.seal(
        session, owner=totp_owner(account_id), plaintext=seed, aad=totp_aad(account_id, purpose)
    )


def open_seed(
    session: Session, envelope: Envelope, account_id: str, sealed: bytes, purpose: str
) -> bytes:
    return envelope.open(
        session, owner=totp_owner(account_id), sealed=sealed, aad=totp_aad(account_id, purpose)
    )


def has_passkey(session: Session, account_id: str) -> bool:
    """Whether the account has at least one WebAuthn passkey registered."""
    found = session.scalar(select(Passkey.id).where(Passkey.account_id == account_id).limit(1))
    return found is not None


def has_second_factor(session: Session, account: Account) -> bool:
    """Whether the account has an authenticator to sign in with: TOTP or a passkey."""
    return account.totp_seed_sealed is not None or has_passkey(session, account.id)


def check_totp(
    session: Session, envelope: Envelope, account: Account, code: str, clock: Clock
) -> tuple[bool, str]:
    """Verify a TOTP code against the account's active seed; on success the accepted step is
    stored (a code works once). Returns (accepted, reason for the ledger when refused)."""
    if account.totp_seed_sealed is None:
        return False, "no TOTP authenticator enrolled"
    seed = open_seed(session, envelope, account.id, account.totp_seed_sealed, "active")
    code = code.strip()
    step = TOTP.verify(seed, code, clock=clock, last_used_step=account.totp_last_step)
    if step is not None:
        account.totp_last_step = step
        return True, ""
    if TOTP.verify(seed, code, clock=clock, last_used_step=None) is not None:
        return False, "TOTP code replayed"
    return False, "wrong TOTP code"


def audit(
    session: Session,
    *,
    clock: Clock,
    principal: Principal | None,
    action: Action,
    account: Account | None,
    reasons: tuple[str, ...],
    denied: bool = False,
) -> None:
    """One ledger entry about an account (ids and reasons only; never a secret)."""
    append(
        session,
        principal=principal,
        clock=clock,
        act=Act(
            action,
            Outcome.DENIED if denied else Outcome.SUCCESS,
            patient=account.patient_id if account is not None else None,
            resource_type="Account" if account is not None else None,
            resource_id=account.id if account is not None else None,
            count=1 if account is not None else 0,
            reasons=reasons,
        ),
    )


def blocked_for(account: Account, now: dt.datetime) -> int | None:
    """None when the account may try now; else seconds to wait (0: locked until unlocked)."""
    if account.locked_at is not None:
        return 0
    if account.locked_until is not None and account.locked_until > now:
        return max(1, int((account.locked_until - now).total_seconds() + 0.999))
    return None


def register_failure(
    session: Session, account: Account, *, clock: Clock, principal: Principal
) -> None:
    """Count one failed attempt: backoff from the 5th, lock at the 100th (ledger entry)."""
    now = clock.now()
    account.failed_count += 1
    n = account.failed_count
    if n >= BACKOFF_AFTER:
        account.locked_until = now + dt.timedelta(
            seconds=min(2 ** min(n - BACKOFF_AFTER, 20), MAX_BACKOFF_SECONDS)
        )
    if n >= LOCK_AFTER and account.locked_at is None:
        account.locked_at = now
        audit(
            session,
            clock=clock,
            principal=principal,
            action=Action.ACCOUNT_LOCK,
            account=account,
            reasons=(f"{n} consecutive failed attempts", "locked until an administrator unlocks"),
            denied=True,
        )
    session.flush()


def register_success(account: Account) -> None:
    account.failed_count = 0
    account.locked_until = None

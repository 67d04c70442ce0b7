"""WebAuthn passkeys: registration and sign-in with a phishing-resistant authenticator.

Security role: a passkey is a key pair held by an authenticator (a security key, a phone, the
computer's own platform authenticator); the server keeps only the public key. Signing in
proves possession of the private key over a fresh challenge, and the browser binds that proof
to the site's origin, so a look-alike site can neither use nor relay it (W3C WebAuthn Level 3,
section 13.4.1 "Security Benefits for WebAuthn Relying Parties"; OWASP ASVS 5.0 V6.3.3 at L3:
"a hardware-based authentication mechanism which provides compromise and impersonation
resistance against phishing attacks"). py_webauthn (`webauthn`) does the parsing and the
relying party's checks of L3 sections 7.1 and 7.2; this module adds what is the relying
party's own:

* Challenges (L3 section 13.4.3 "Cryptographic Challenges"; ASVS V6.7.2): 256 bits from the
  CSPRNG, stored as SHA-256 in `identity_webauthn_challenge`, bound to the account (and, in a
  sign-in, to the pending sign-in that asked for it), valid `CHALLENGE_MINUTES` and spent by
  the first response that presents it, accepted or not (L3 section 7.2: the client data's
  challenge must equal the one sent; a response replayed later finds it spent).
* The expected origin and RP ID come from settings (`webauthn_origin`, `webauthn_rp_id`), never
  from the request (L3 sections 7.1 and 7.2: client data origin, authenticator data rpIdHash).
* User verification is required at registration and at every sign-in (L3 sections 7.1 and
  7.2): the UV flag proves a PIN or biometric at the authenticator, so a passkey is a
  multi-factor cryptographic authenticator (NIST SP 800-63B-4 section 3.1.7).
* The credential must belong to the account being signed in (L3 section 7.2: one of
  `allowCredentials`, and the user handle when present); a credential id is registered once
  across all accounts and is at most 1023 bytes (L3 section 7.1).
* Signature counter (L3 section 7.2; section 6.1.1 "Signature Counter Considerations"): when
  the stored or the presented counter is non-zero, the presented one must be greater. A
  counter that does not increase is a sign of a cloned authenticator: the sign-in is refused
  and the ledger says so. The counter is only compared after the signature verified, so a
  forged response cannot raise the alarm.
* Attestation "none" (L3 section 5.4.7): Égide needs no proof of the authenticator's model,
  and asking for it would reveal more about the user's device than the sign-in needs.
* Every outcome goes to the ledger in the caller's transaction: MFA_ENROL (passkey added),
  PASSKEY_REMOVE, LOGIN with the factors used, MFA_FAILED with a fixed reason (never text from
  the response, which the caller controls). Failed assertions count towards the account's
  lockout and the address throttle exactly as wrong TOTP codes do (`login`).
* Step-up (ASVS V7.5.1, V7.5.3): a signed-in session re-authenticates with a passkey
  (`begin_step_up`, `finish_step_up`), UV required, over a challenge bound to that web session;
  success sets the session's `mfa_at` and replaces its token (ASVS V7.2.4), a refusal is
  ledgered MFA_FAILED and counted like a wrong TOTP code at step-up (`sessions.step_up`).
* Adding a passkey or removing one revokes the account's other sessions (ASVS V7.4.3); staff
  cannot remove their last second factor (they would fall back to enrolling one with the
  password alone at the next sign-in).

Functions take keyword arguments only and never commit: the caller's transaction does.
Sign-in refusals are returned as a `LoginResult` (so their audit and counters commit);
registration refusals raise `core.errors` (nothing is kept).
"""

from __future__ import annotations

import binascii
import datetime as dt
import hashlib
import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, options_to_json_dict
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from egide.access.permissions import Role
from egide.core.clock import Clock
from egide.core.errors import BadRequest, Conflict, NotFound, Unauthorized
from egide.core.ids import RandomSource, SystemRandom, new_id
from egide.core.principal import Principal
from egide.core.settings import Settings
from egide.identity import factors, recovery
from egide.identity.accounts import ACTIVE, normalise_email
from egide.identity.factors import audit, principal_of
from egide.identity.login import (
    PENDING_EXPIRED,
    LoginResult,
    _address_blocked,
    _address_failure,
    _live_pending,
    _second_factor_gate,
    _sign_in,
    too_many,
)
from egide.identity.models import (
    Account,
    LoginPending,
    Passkey,
    RecoveryCode,
    WebAuthnChallenge,
)
from egide.identity.sessions import (
    StepUpResult,
    revoke_all_sessions,
    step_up_blocked,
    step_up_done,
    step_up_refused,
    stepping_up,
)
from egide.ledger.service import Action

CHALLENGE_BYTES = 32  # 256 bits (ASVS V6.7.2 asks for 64 at least; L3 section 13.4.3: 16 bytes)
CHALLENGE_MINUTES = 5
# L3 section 15.1 recommends 300,000 to 600,000 ms when user verification is required.
TIMEOUT_MS = CHALLENGE_MINUTES * 60 * 1000
MAX_PASSKEYS = 20  # per account
MAX_CREDENTIAL_ID = 1023  # L3 section 7.1: "credentialId ... at most 1023 bytes"
MAX_NAME = 64
REGISTER, AUTHENTICATE, STEP_UP = "register", "authenticate", "step-up"
PASSKEY_REFUSED = "The passkey could not be verified."
REGISTRATION_REFUSED = "The passkey could not be registered; please try again."
_TRANSPORTS = frozenset(t.value for t in AuthenticatorTransport)
_MAX_FIELD = 16 * 1024  # characters of one base64url field of a response: generous


@dataclass(frozen=True)
class PasskeyView:
    """What may be shown about a passkey: its label and dates, never key material."""

    id: str
    name: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    transports: tuple[str, ...]
    aaguid: str


def view(row: Passkey) -> PasskeyView:
    transports = tuple(t for t in (row.transports or "").split(",") if t)
    return PasskeyView(row.id, row.name, row.created_at, row.last_used_at, transports, row.aaguid)


def relying_party(settings: Settings) -> tuple[str, str]:
    """(RP ID, expected origin) from the settings (never from a request)."""
    return settings.effective_webauthn_rp_id, settings.effective_webauthn_origin


def user_handle(account_id: str) -> bytes:
    """The WebAuthn user handle of an account (L3 section 5.4.3 `user.id`): its random UUID,
    which holds nothing personal (L3 section 14.6.1)."""
    return account_id.encode("ascii")


# --- Challenges --------------------------------------------------------------------------------


def _challenge_hash(challenge: bytes, bound_session: str | None = None) -> bytes:
    """What the database keeps of a challenge. A step-up challenge is bound to the web session
    that asked for it by hashing that session's id in (L3 section 13.4.3: the challenge ties
    the response to one ceremony): presented in any other session, it is unknown."""
    if bound_session is None:
        return hashlib.sha256(b"egide-webauthn-challenge/1\x00" + challenge).digest()
    prefix = b"egide-webauthn-step-up/1\x00" + bound_session.encode("ascii") + b"\x00"
    return hashlib.sha256(prefix + challenge).digest()


def _new_challenge(
    session: Session,
    *,
    purpose: str,
    account_id: str | None,
    login_id: str | None,
    expires_at: dt.datetime,
    clock: Clock,
    random: RandomSource | None = None,
    bound_session: str | None = None,
) -> bytes:
    challenge = (random or SystemRandom()).token_bytes(CHALLENGE_BYTES)
    now = clock.now()
    # Spent and expired challenges are of no further use: drop them as new ones are made.
    session.execute(delete(WebAuthnChallenge).where(WebAuthnChallenge.expires_at <= now))
    session.add(
        WebAuthnChallenge(
            id=new_id(),
            challenge_hash=_challenge_hash(challenge, bound_session),
            purpose=purpose,
            account_id=account_id,
            login_id=login_id,
            created_at=now,
            expires_at=expires_at,
        )
    )
    session.flush()
    return challenge


def _b64url(value: object) -> bytes | None:
    if not isinstance(value, str) or not value or len(value) > _MAX_FIELD:
        return None
    try:
        return base64url_to_bytes(value)
    except (binascii.Error, ValueError):
        return None


def _presented_challenge(credential: Mapping[str, Any]) -> bytes | None:
    """The challenge the browser signed over, read from clientDataJSON (not yet trusted)."""
    response = credential.get("response")
    if not isinstance(response, Mapping):
        return None
    raw = _b64url(response.get("clientDataJSON"))
    if raw is None:
        return None
    try:
        client_data = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(client_data, Mapping):
        return None
    return _b64url(client_data.get("challenge"))


def _spend_challenge(
    session: Session,
    credential: Mapping[str, Any],
    *,
    purpose: str,
    account_id: str | None,
    login_id: str | None,
    clock: Clock,
    bound_session: str | None = None,
) -> tuple[bytes | None, str]:
    """The challenge of this response when it was issued for this ceremony and is live; it is
    spent now, whatever follows. (challenge, "") or (None, why for the ledger)."""
    challenge = _presented_challenge(credential)
    if challenge is None:
        return None, "malformed passkey response"
    row = session.scalar(
        select(WebAuthnChallenge)
        .where(WebAuthnChallenge.challenge_hash == _challenge_hash(challenge, bound_session))
        .with_for_update()
    )
    if row is None:
        if bound_session is not None:
            return None, "passkey challenge unknown or issued to another session"
        return None, "passkey challenge unknown"
    if row.purpose != purpose or row.account_id != account_id or row.login_id != login_id:
        return None, "passkey challenge issued for another ceremony"
    if row.used_at is not None:
        return None, "passkey challenge replayed"
    now = clock.now()
    row.used_at = now  # single use, accepted or not
    session.flush()
    if row.expires_at <= now:
        return None, "passkey challenge expired"
    return challenge, ""


# --- Helpers -------------------------------------------------------------------------------------


def _credential(credential_json: str) -> dict[str, Any] | None:
    """The browser's PublicKeyCredential JSON (L3 section 5.1 `toJSON()`) as a dict."""
    if len(credential_json) > 4 * _MAX_FIELD:
        return None
    try:
        parsed = json.loads(credential_json)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _why(exc: Exception) -> str:
    """A fixed ledger reason for a refusal by py_webauthn (its messages quote the response)."""
    text = str(exc).lower()
    for needle, reason in (
        ("origin", "passkey response from another origin"),
        ("rp id", "passkey response for another relying party (RP ID)"),
        ("user verification", "passkey user verification (UV) missing"),
        ("user was not present", "passkey user presence (UP) missing"),
        ("user presence", "passkey user presence (UP) missing"),
        ("signature", "passkey signature invalid"),
        ("challenge", "passkey challenge mismatch"),
        ("client data type", "passkey response of the wrong ceremony"),
        ("alg", "passkey algorithm not supported"),
    ):
        if needle in text:
            return reason
    return "malformed passkey response"


def _name(name: str) -> str:
    label = " ".join(unicodedata.normalize("NFKC", name).split())
    if not label:
        return "Passkey"
    if len(label) > MAX_NAME or not label.isprintable():
        msg = f"a passkey's name has 1 to {MAX_NAME} printable characters"
        raise BadRequest(msg)
    return label


def _rows(session: Session, account_id: str) -> list[Passkey]:
    return list(
        session.scalars(
            select(Passkey)
            .where(Passkey.account_id == account_id)
            .order_by(Passkey.created_at, Passkey.id)
        )
    )


def _active_account(session: Session, account_id: str) -> Account:
    account = session.get(Account, account_id, with_for_update=True, populate_existing=True)
    if account is None or account.status != ACTIVE:
        msg = "no such account"
        raise NotFound(msg)
    return account


def _creation_options(
    session: Session,
    account: Account,
    *,
    login_id: str | None,
    expires_at: dt.datetime,
    clock: Clock,
    settings: Settings,
) -> dict[str, Any]:
    existing = _rows(session, account.id)
    if len(existing) >= MAX_PASSKEYS:
        msg = f"an account holds at most {MAX_PASSKEYS} passkeys; remove one first"
        raise Conflict(msg)
    rp_id, _ = relying_party(settings)
    challenge = _new_challenge(
        session,
        purpose=REGISTER,
        account_id=account.id,
        login_id=login_id,
        expires_at=expires_at,
        clock=clock,
    )
    options = generate_registration_options(
        rp_id=rp_id,
        rp_name=settings.clinic_name,
        user_id=user_handle(account.id),
        user_name=normalise_email(account.email),
        user_display_name=account.name,
        challenge=challenge,
        timeout=TIMEOUT_MS,
        attestation=AttestationConveyancePreference.NONE,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        # L3 section 5.4 excludeCredentials: an authenticator already holding one of these
        # says so instead of making a second credential for the same account.
        exclude_credentials=[_descriptor(row) for row in existing],
    )
    return options_to_json_dict(options)


def _descriptor(row: Passkey) -> PublicKeyCredentialDescriptor:
    transports = [AuthenticatorTransport(t) for t in view(row).transports if t in _TRANSPORTS]
    return PublicKeyCredentialDescriptor(id=row.credential_id, transports=transports or None)


def _register(
    session: Session,
    account: Account,
    credential: Mapping[str, Any],
    *,
    name: str,
    login_id: str | None,
    clock: Clock,
    settings: Settings,
) -> tuple[Passkey | None, str]:
    """Verify a registration response (L3 section 7.1) and store the credential record.
    (row, "") or (None, why for the ledger); Conflict when the credential is registered."""
    label = _name(name)
    challenge, why = _spend_challenge(
        session,
        credential,
        purpose=REGISTER,
        account_id=account.id,
        login_id=login_id,
        clock=clock,
    )
    if challenge is None:
        return None, why
    rp_id, origin = relying_party(settings)
    try:
        verified = verify_registration_response(
            credential=dict(credential),
            expected_challenge=challenge,
            expected_rp_id=rp_id,
            expected_origin=origin,
            require_user_presence=True,
            require_user_verification=True,
        )
    except (WebAuthnException, ValueError, TypeError, KeyError, IndexError) as exc:
        return None, _why(exc)
    if not 1 <= len(verified.credential_id) <= MAX_CREDENTIAL_ID:
        return None, "passkey credential id too long"
    taken = session.scalar(
        select(Passkey.id).where(Passkey.credential_id == verified.credential_id)
    )
    if taken is not None:  # L3 section 7.1: a credential id is registered to one user only
        msg = "This passkey is already registered."
        raise Conflict(msg)
    response = credential.get("response")
    listed = response.get("transports") if isinstance(response, Mapping) else None
    transports = sorted(
        {t for t in listed if isinstance(t, str) and t in _TRANSPORTS}
        if isinstance(listed, list)
        else set()
    )
    now = clock.now()
    row = Passkey(
        id=new_id(),
        account_id=account.id,
        credential_id=verified.credential_id,
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        transports=",".join(transports) or None,
        aaguid=verified.aaguid,
        name=label,
        created_at=now,
    )
    session.add(row)
    if account.mfa_enrolled_at is None:
        account.mfa_enrolled_at = now
    session.flush()
    return row, ""


def _issue_recovery_codes(session: Session, account: Account) -> list[str]:
    codes = recovery.generate_codes()
    session.execute(delete(RecoveryCode).where(RecoveryCode.account_id == account.id))
    for slot, shown in enumerate(codes):
        session.add(
            RecoveryCode(account_id=account.id, slot=slot, code_hash=recovery.hash_code(shown))
        )
    session.flush()
    return codes


def _fail(
    session: Session,
    account: Account | None,
    reason: str,
    *,
    clock: Clock,
    ip: str | None,
    device: str | None,
    message: str = PASSKEY_REFUSED,
) -> LoginResult:
    """A refused passkey step: ledger MFA_FAILED, one failure for the address and account."""
    _address_failure(session, ip, clock.now())
    principal = (
        principal_of(account, ip=ip, device=device)
        if account is not None
        else Principal(id="anonymous", role="anonymous", ip=ip, device=device)
    )
    audit(
        session,
        clock=clock,
        principal=principal,
        action=Action.MFA_FAILED,
        account=account,
        reasons=(reason,),
        denied=True,
    )
    if account is not None:
        factors.register_failure(session, account, clock=clock, principal=principal)
    return LoginResult("refused", message=message)


def _stored_credential(session: Session, credential: Mapping[str, Any]) -> Passkey | None:
    """The credential record the response names by its raw id (not yet proven)."""
    raw_id = _b64url(credential.get("rawId"))
    if raw_id is None:
        return None
    return session.scalar(select(Passkey).where(Passkey.credential_id == raw_id).with_for_update())


def _check_assertion(
    credential: Mapping[str, Any],
    row: Passkey,
    account: Account,
    challenge: bytes,
    *,
    handle_required: bool,
    clock: Clock,
    settings: Settings,
) -> str:
    """Verify an assertion of `row` (the account's own credential) over the spent `challenge`
    (L3 section 7.2), user verification required; on success the stored counter and last use
    move on. "" when it holds, else a fixed reason for the ledger."""
    # L3 section 7.2: a user handle, when given, must name the credential's owner.
    response = credential.get("response")
    handle = response.get("userHandle") if isinstance(response, Mapping) else None
    if (handle or handle_required) and _b64url(handle) != user_handle(account.id):
        return "passkey user handle of another account"
    rp_id, origin = relying_party(settings)
    try:
        verified = verify_authentication_response(
            credential=dict(credential),
            expected_challenge=challenge,
            expected_rp_id=rp_id,
            expected_origin=origin,
            credential_public_key=row.public_key,
            # The counter is compared below, once the signature is known to be genuine.
            credential_current_sign_count=0,
            require_user_verification=True,
        )
    except (WebAuthnException, ValueError, TypeError, KeyError, IndexError) as exc:
        return _why(exc)
    stored, presented = row.sign_count, verified.new_sign_count
    if (stored or presented) and presented <= stored:
        # L3 sections 7.2 and 6.1.1: "a signal that the authenticator may be cloned".
        return (
            f"passkey signature counter did not increase ({presented} after {stored}): "
            f"possibly a cloned authenticator, passkey {row.id}"
        )
    row.sign_count = presented
    row.last_used_at = clock.now()
    return ""


def _challenge_expiry(clock: Clock, pending: LoginPending | None) -> dt.datetime:
    limit = clock.now() + dt.timedelta(minutes=CHALLENGE_MINUTES)
    return limit if pending is None else min(limit, pending.expires_at)


# --- Registration from a signed-in session --------------------------------------------------


def begin_registration(
    session: Session, *, account_id: str, clock: Clock, settings: Settings
) -> dict[str, Any]:
    """PublicKeyCredentialCreationOptions (L3 section 5.4) as JSON for
    `navigator.credentials.create()`: UV required, a discoverable credential preferred,
    attestation "none", the account's passkeys excluded. NotFound for an inactive account;
    Conflict when it holds `MAX_PASSKEYS` already."""
    account = _active_account(session, account_id)
    return _creation_options(
        session,
        account,
        login_id=None,
        expires_at=_challenge_expiry(clock, None),
        clock=clock,
        settings=settings,
    )


def finish_registration(
    session: Session,
    *,
    account_id: str,
    credential_json: str,
    name: str,
    clock: Clock,
    settings: Settings,
    keep_session_id: str | None = None,
) -> PasskeyView:
    """Verify the browser's answer to `begin_registration` and keep the passkey.

    BadRequest when the response is refused (wrong origin or RP ID, no UV, unknown, spent or
    expired challenge, malformed); Conflict when the credential is registered already. The
    account's sessions other than `keep_session_id` are revoked (ASVS V7.4.3)."""
    account = _active_account(session, account_id)
    credential = _credential(credential_json)
    if credential is None:
        raise BadRequest(REGISTRATION_REFUSED)
    row, why = _register(
        session, account, credential, name=name, login_id=None, clock=clock, settings=settings
    )
    if row is None:
        # `why` is one of this module's fixed phrases, never text from the response.
        msg = f"The passkey could not be registered ({why}); please try again."
        raise BadRequest(msg)
    revoked = revoke_all_sessions(
        session,
        account_id=account.id,
        clock=clock,
        reason="passkey added",
        except_id=keep_session_id,
    )
    audit(
        session,
        clock=clock,
        principal=principal_of(account),
        action=Action.MFA_ENROL,
        account=account,
        reasons=("passkey added", f"passkey {row.id}", f"{revoked} other sessions revoked"),
    )
    return view(row)


# --- Registration as the first factor, inside a sign-in (staff enrolment) -------------------


def _enrolling(
    session: Session, pending_token: str, clock: Clock
) -> tuple[LoginPending, Account] | None:
    live = _live_pending(session, pending_token, clock)
    if live is None:
        return None
    # Only an account with no second factor enrols one on the strength of its password: with
    # a TOTP seed or a passkey, the person must sign in with it first.
    if factors.has_second_factor(session, live[1]):
        return None
    return live


def begin_enrolment(
    session: Session, *, pending_token: str, clock: Clock, settings: Settings
) -> dict[str, Any]:
    """Creation options for a staff member's first authenticator, within the sign-in.
    Unauthorized when the pending sign-in is unknown, spent, expired, or its account already
    has a second factor."""
    live = _enrolling(session, pending_token, clock)
    if live is None:
        raise Unauthorized(PENDING_EXPIRED)
    pending, account = live
    return _creation_options(
        session,
        account,
        login_id=pending.id,
        expires_at=_challenge_expiry(clock, pending),
        clock=clock,
        settings=settings,
    )


def finish_enrolment(
    session: Session,
    *,
    pending_token: str,
    credential_json: str,
    name: str,
    clock: Clock,
    settings: Settings,
    ip: str | None,
    device: str | None,
) -> tuple[LoginResult, list[str]]:
    """Register the first passkey and finish the sign-in: a session and ten recovery codes
    (show them once). A refused response is counted like a wrong code, with no codes."""
    live = _enrolling(session, pending_token, clock)
    if live is None:
        return LoginResult("refused", message=PENDING_EXPIRED), []
    pending, account = live
    refusal = _second_factor_gate(session, account, clock, ip, device)
    if refusal is not None:
        return refusal, []
    credential = _credential(credential_json)
    if credential is None:
        return _fail(
            session,
            account,
            "malformed passkey response",
            clock=clock,
            ip=ip,
            device=device,
            message=REGISTRATION_REFUSED,
        ), []
    row, why = _register(
        session,
        account,
        credential,
        name=name,
        login_id=pending.id,
        clock=clock,
        settings=settings,
    )
    if row is None:
        return _fail(
            session,
            account,
            f"at enrolment: {why}",
            clock=clock,
            ip=ip,
            device=device,
            message=REGISTRATION_REFUSED,
        ), []
    codes = _issue_recovery_codes(session, account)
    audit(
        session,
        clock=clock,
        principal=principal_of(account, ip=ip, device=device),
        action=Action.MFA_ENROL,
        account=account,
        reasons=("passkey added", f"passkey {row.id}", f"{len(codes)} recovery codes issued"),
    )
    row.last_used_at = clock.now()
    result = _sign_in(
        session,
        account,
        ("password", "passkey", f"passkey {row.id}"),
        clock=clock,
        settings=settings,
        ip=ip,
        device=device,
        mfa=True,
        pending=pending,
    )
    return result, codes


# --- Authentication ----------------------------------------------------------------------------


def begin_authentication(
    session: Session, *, pending_token: str | None, clock: Clock, settings: Settings
) -> dict[str, Any]:
    """PublicKeyCredentialRequestOptions (L3 section 5.5) as JSON for
    `navigator.credentials.get()`, with UV required.

    With a pending sign-in (the password was right): the challenge is bound to it and
    `allowCredentials` lists the account's passkeys. Without (passwordless sign-in with a
    discoverable passkey): an empty list, and the passkey chosen names the account.
    Unauthorized when the pending sign-in is unknown, spent or expired; BadRequest when its
    account has no passkey.
    """
    rp_id, _ = relying_party(settings)
    if pending_token is None:
        challenge = _new_challenge(
            session,
            purpose=AUTHENTICATE,
            account_id=None,
            login_id=None,
            expires_at=_challenge_expiry(clock, None),
            clock=clock,
        )
        allowed: list[PublicKeyCredentialDescriptor] = []
    else:
        live = _live_pending(session, pending_token, clock)
        if live is None:
            raise Unauthorized(PENDING_EXPIRED)
        pending, account = live
        rows = _rows(session, account.id)
        if not rows:
            msg = "No passkey is registered for this account; use your authenticator app."
            raise BadRequest(msg)
        challenge = _new_challenge(
            session,
            purpose=AUTHENTICATE,
            account_id=account.id,
            login_id=pending.id,
            expires_at=_challenge_expiry(clock, pending),
            clock=clock,
        )
        allowed = [_descriptor(row) for row in rows]
    options = generate_authentication_options(
        rp_id=rp_id,
        challenge=challenge,
        timeout=TIMEOUT_MS,
        allow_credentials=allowed,
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    return options_to_json_dict(options)


def finish_authentication(
    session: Session,
    *,
    pending_token: str | None,
    credential_json: str,
    clock: Clock,
    settings: Settings,
    ip: str | None,
    device: str | None,
) -> LoginResult:
    """Verify an assertion (L3 section 7.2) and sign in: after the password when
    `pending_token` is given (LOGIN reasons "password", "passkey"), else passwordless with a
    discoverable passkey (reasons "passkey"). Every refusal is a `LoginResult` "refused",
    ledgered as MFA_FAILED and counted towards the lockout and the address throttle.
    """
    pending: LoginPending | None = None
    account: Account | None = None
    if pending_token is not None:
        live = _live_pending(session, pending_token, clock)
        if live is None:
            return LoginResult("refused", message=PENDING_EXPIRED)
        pending, account = live
        refusal = _second_factor_gate(session, account, clock, ip, device)
        if refusal is not None:
            return refusal
    else:
        wait = _address_blocked(session, ip, clock.now())
        if wait is not None:  # refused without counting, as `login.password_step` does
            audit(
                session,
                clock=clock,
                principal=Principal(id="anonymous", role="anonymous", ip=ip, device=device),
                action=Action.MFA_FAILED,
                account=None,
                reasons=("too many failed attempts from this address",),
                denied=True,
            )
            return LoginResult("refused", message=too_many(wait), retry_after=wait)
    credential = _credential(credential_json)
    if credential is None:
        return _fail(
            session, account, "malformed passkey response", clock=clock, ip=ip, device=device
        )
    challenge, why = _spend_challenge(
        session,
        credential,
        purpose=AUTHENTICATE,
        account_id=account.id if account is not None else None,
        login_id=pending.id if pending is not None else None,
        clock=clock,
    )
    if challenge is None:
        return _fail(session, account, why, clock=clock, ip=ip, device=device)
    row = _stored_credential(session, credential)
    if account is None and row is not None:  # passwordless: the passkey names the account
        account = session.get(Account, row.account_id, with_for_update=True, populate_existing=True)
        if account is None or account.status != ACTIVE:
            return _fail(
                session, None, "passkey of an inactive account", clock=clock, ip=ip, device=device
            )
        refusal = _second_factor_gate(session, account, clock, ip, device)
        if refusal is not None:
            return refusal
    if row is None or account is None or row.account_id != account.id:
        return _fail(
            session,
            account,
            "passkey not registered to this account",
            clock=clock,
            ip=ip,
            device=device,
        )
    why = _check_assertion(
        credential,
        row,
        account,
        challenge,
        handle_required=pending is None,  # a discoverable credential always gives one
        clock=clock,
        settings=settings,
    )
    if why:
        return _fail(session, account, why, clock=clock, ip=ip, device=device)
    session.flush()
    used = ("password", "passkey") if pending is not None else ("passkey",)
    return _sign_in(
        session,
        account,
        (*used, f"passkey {row.id}"),
        clock=clock,
        settings=settings,
        ip=ip,
        device=device,
        mfa=True,
        pending=pending,
    )


# --- Step-up within a signed-in session --------------------------------------------------------


def begin_step_up(
    session: Session, *, session_id: str, account_id: str, clock: Clock, settings: Settings
) -> dict[str, Any]:
    """PublicKeyCredentialRequestOptions (L3 section 5.5) to re-authenticate within a web
    session (step-up, ASVS V7.5.1 and V7.5.3): UV required, `allowCredentials` listing the
    account's passkeys, the challenge bound to this session (`_challenge_hash`). NotFound for
    an ended session or another account's; BadRequest when the account has no passkey."""
    _, account = stepping_up(session, session_id=session_id, account_id=account_id)
    rows = _rows(session, account.id)
    if not rows:
        msg = "No passkey is registered for this account."
        raise BadRequest(msg)
    challenge = _new_challenge(
        session,
        purpose=STEP_UP,
        account_id=account.id,
        login_id=None,
        expires_at=_challenge_expiry(clock, None),
        clock=clock,
        bound_session=session_id,
    )
    options = generate_authentication_options(
        rp_id=relying_party(settings)[0],
        challenge=challenge,
        timeout=TIMEOUT_MS,
        allow_credentials=[_descriptor(row) for row in rows],
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    return options_to_json_dict(options)


def finish_step_up(
    session: Session,
    *,
    session_id: str,
    account_id: str,
    credential_json: str,
    clock: Clock,
    settings: Settings,
) -> StepUpResult:
    """Verify an assertion answering `begin_step_up` (L3 section 7.2, UV required) and record
    the step-up: the session's `mfa_at` is now and it gets a new token, the old one stops
    working (ASVS V7.2.4), as `sessions.step_up` does with a TOTP code.

    NotFound for an ended session or another account's (nothing to record). Every refusal
    (bad signature, no UV, spent, expired or another session's challenge, another account's
    passkey, a counter that did not increase, the account in backoff or locked) is a
    `StepUpResult` with `ok=False`, ledgered MFA_FAILED and, but for the backoff, counted
    towards the lockout: nothing is raised, so the caller's commit keeps it."""
    row, account = stepping_up(session, session_id=session_id, account_id=account_id)
    principal = principal_of(account, ip=row.ip, device=row.device)
    blocked = step_up_blocked(session, account, now=clock.now(), clock=clock, principal=principal)
    if blocked is not None:
        return blocked
    used, why = _step_up_assertion(
        session,
        account,
        credential_json,
        session_id=session_id,
        clock=clock,
        settings=settings,
    )
    if used is None:
        return step_up_refused(
            session, account, clock=clock, principal=principal, why=why, message=PASSKEY_REFUSED
        )
    return step_up_done(
        session,
        row,
        account,
        now=clock.now(),
        clock=clock,
        principal=principal,
        reasons=("passkey", f"passkey {used.id}"),
    )


def _step_up_assertion(
    session: Session,
    account: Account,
    credential_json: str,
    *,
    session_id: str,
    clock: Clock,
    settings: Settings,
) -> tuple[Passkey | None, str]:
    """(the passkey that answered, "") or (None, why for the ledger); the challenge is spent
    either way."""
    credential = _credential(credential_json)
    if credential is None:
        return None, "malformed passkey response"
    challenge, why = _spend_challenge(
        session,
        credential,
        purpose=STEP_UP,
        account_id=account.id,
        login_id=None,
        clock=clock,
        bound_session=session_id,
    )
    if challenge is None:
        return None, why
    row = _stored_credential(session, credential)
    if row is None or row.account_id != account.id:
        return None, "passkey not registered to this account"
    why = _check_assertion(
        credential,
        row,
        account,
        challenge,
        handle_required=False,
        clock=clock,
        settings=settings,
    )
    return (None, why) if why else (row, "")


# --- Management --------------------------------------------------------------------------------


def list_passkeys(session: Session, *, account_id: str) -> list[PasskeyView]:
    """The account's passkeys, oldest first."""
    return [view(row) for row in _rows(session, account_id)]


def count_passkeys(session: Session, *, account_id: str) -> int:
    found = session.scalar(
        select(func.count()).select_from(Passkey).where(Passkey.account_id == account_id)
    )
    return int(found or 0)


def remove_passkey(
    session: Session,
    *,
    account_id: str,
    passkey_id: str,
    clock: Clock,
    keep_session_id: str | None = None,
) -> None:
    """Delete one of the account's own passkeys (ASVS V6.5.6: a lost authenticator can be
    revoked); NotFound for any other id, so an id reveals nothing about its owner. Staff may
    not remove their last second factor (Conflict). Other sessions are revoked (V7.4.3)."""
    row = session.get(Passkey, passkey_id, with_for_update=True)
    if row is None or row.account_id != account_id:
        msg = "no such passkey"
        raise NotFound(msg)
    account = _active_account(session, account_id)
    others = count_passkeys(session, account_id=account_id) - 1
    if account.role != Role.PATIENT.value and others == 0 and account.totp_seed_sealed is None:
        msg = (
            "This is your only second factor: add another passkey or an authenticator app "
            "before removing it."
        )
        raise Conflict(msg)
    session.delete(row)
    session.flush()
    revoked = revoke_all_sessions(
        session,
        account_id=account.id,
        clock=clock,
        reason="passkey removed",
        except_id=keep_session_id,
    )
    audit(
        session,
        clock=clock,
        principal=principal_of(account),
        action=Action.PASSKEY_REMOVE,
        account=account,
        reasons=("passkey removed", f"passkey {passkey_id}", f"{revoked} other sessions revoked"),
    )

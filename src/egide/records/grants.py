"""Explicit access grants: break-the-glass, assignments and investigations (issue 5).

Most care links follow the clinical data (`records.links`); these three are made by a person
and stored as rows of `records_access_link` with `source_type` "grant" and a fresh id, so the
access policy (`access.relationships`) reads them exactly like the others:

* **Break-the-glass** (issue 5, item 5). A physician, resident or nurse with no care
  relationship to a patient opens that patient's record in an emergency. They give a coded
  reason (HL7 v3 ActReason / PurposeOfUse: `ETREAT`, `PATSFTY`, `PUBHLTH`, or `OTHER`) and their
  own words (10 to 500 characters, no control or formatting characters), after a step-up second
  factor no older than the step-up window (OWASP ASVS 5.0 V7.5.3: re-authentication before a
  highly sensitive transaction). The grant holds for `hours` (setting `break_glass_hours`,
  default 4) and for that patient only; every act it allows carries the obligation
  BREAK_GLASS, which puts its reason in the ledger entry's `purpose`. The grant itself is a
  `break_glass` ledger entry (DICOM 110113 Security Alert / 110127 Emergency Override Started)
  whose `purpose` holds the clinician's words; the link row keeps only the code. The alert the
  security officer receives is raised by `incidents.alerts.open_break_glass_with_alert`, in the
  same transaction.
* **Assignment** (issue 5, item 3): an administrator names a practitioner (or a clinician's
  account) as treating a patient for a number of days.
* **Investigation** (issue 5, item 2): the data-protection officer lets a security officer
  read (never write: `access.rules`) one patient's record until the grant expires. Four eyes:
  the officer cannot grant it to themself, and only the DPO (or the local operator at the
  command line, who holds the keys anyway) grants it.

Decisions this module makes:

* A clinician who already holds a care relationship (or an open emergency grant) with the
  patient gets a Conflict (409) saying so, and no new grant: break-the-glass is for when
  nothing else allows, and every needless use would drown the officer's alerts. The exception
  is a department-only link to a patient whose consent restricts some records to the
  treating team: the department does not reach those, an emergency may need them.
* A patient's consent that refuses this clinician is **not** overridden: the grant is made (and
  ledgered, and alerted) but the policy still refuses every read it would allow
  (`access.policy.decide` checks consent before any relationship). Telling the clinician at
  grant time would need the same consent check here; the reads answer 404 as any refused read.
* A patient that does not exist answers 404 with the same message as a hidden record.

Every grant, refusal and end is appended to the ledger in the caller's transaction; a refusal
raises an error carrying its ledger entry (`defer_audit`), written after the rollback, so
nothing is granted and the refusal is still recorded (DESIGN.md contract 2). Functions take
keyword arguments only and never commit.

Ids used by the records room are checked against the FHIR id syntax before they reach a query.
Who an officer or a clinician account is (its role) lives in the identity room, which this
room may not import: the callers (`api`, `cli`) look it up and pass the role in.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from egide.access.permissions import Role
from egide.access.relationships import LinkKind, Relationship, Windows
from egide.core.clock import Clock
from egide.core.errors import BadRequest, Conflict, EgideError, Forbidden, NotFound
from egide.core.ids import new_id
from egide.core.principal import Principal
from egide.ledger.service import Act, Action, Outcome, append
from egide.records.models import AccessLink, ResourceHead
from egide.records.repository import defer_audit
from egide.records.visibility import actors_of, gather

__all__ = [
    "GRANT_KINDS",
    "GRANT_SOURCE",
    "REASON_TEXT_MAX",
    "REASON_TEXT_MIN",
    "Grant",
    "Granted",
    "ReasonCode",
    "active_grants",
    "assign",
    "end_grant",
    "open_break_glass",
    "open_investigation",
]


class ReasonCode(StrEnum):
    """Why the glass is broken: HL7 v3 ActReason (PurposeOfUse) codes, alphabetised."""

    ETREAT = "ETREAT"  # emergency treatment
    OTHER = "OTHER"  # none of these: the free text says it all
    PATSFTY = "PATSFTY"  # patient safety
    PUBHLTH = "PUBHLTH"  # public-health emergency


REASON_DISPLAY = {
    ReasonCode.ETREAT: "emergency treatment",
    ReasonCode.OTHER: "another reason, stated in words",
    ReasonCode.PATSFTY: "patient safety",
    ReasonCode.PUBHLTH: "public-health emergency",
}
REASON_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"

GRANT_SOURCE = "grant"  # `source_type` of every grant row
GRANT_KINDS = frozenset({LinkKind.ASSIGNMENT, LinkKind.BREAK_GLASS, LinkKind.INVESTIGATION})
NO_CARE_LINK = (
    "no appointment, admission, care-team or other care link between this user and this patient"
)
REASON_TEXT_MIN = 10
REASON_TEXT_MAX = 500
MAX_ASSIGNMENT_DAYS = 366
MAX_INVESTIGATION_HOURS = 24 * 30

# Who may break the glass: those who treat (issue 5, item 5).
BREAK_GLASS_ROLES = frozenset({Role.NURSE, Role.PHYSICIAN, Role.RESIDENT})
# Explicit assignments are an administrator's; investigations the DPO's (four eyes).
_ASSIGNERS = frozenset({Role.ADMIN})
_INVESTIGATION_GRANTERS = frozenset({Role.DPO})
# The local operator (`egide` at the command line, `cli.runtime.OPERATOR`) holds the keyring
# and the database: refusing it a grant would protect nothing, so it may make both.
_OPERATOR_PREFIX = "operator:"
# Relationships that already reach all of a patient's clinical data: no emergency grant is
# needed. A department link does not reach what the patient's consent keeps to the treating
# team (access.policy), so it needs a grant for that when the patient has such a restriction.
_ALREADY = frozenset({Relationship.BREAK_GLASS, Relationship.PERSONAL})
_ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # FHIR R4 datatypes.html#id
_ACCOUNT_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,120}")
# Control characters (Cc: newlines, escapes), invisible formatting (Cf: bidirectional
# overrides, "Trojan Source") and lone surrogates (Cs): a reason is shown to the security
# officer and the patient, and must read as what it says.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})


@dataclass(frozen=True)
class Grant:
    """One grant as stored (the coded reason only; the words are in its ledger entry)."""

    id: str
    kind: LinkKind
    patient_id: str
    actor: str
    valid_from: dt.datetime | None
    valid_to: dt.datetime | None
    granted_by: str | None
    reason: str


@dataclass(frozen=True)
class Granted:
    """A grant just made, and the id of the ledger entry that records it."""

    grant: Grant
    entry_id: str


def _grant_of(row: AccessLink) -> Grant:
    return Grant(
        id=row.source_id,
        kind=LinkKind(row.kind),
        patient_id=row.patient_id,
        actor=row.actor,
        valid_from=row.valid_from,
        valid_to=row.valid_to,
        granted_by=row.granted_by,
        reason=row.reason or "",
    )


def _role(principal: Principal) -> Role | None:
    try:
        return Role(principal.role)
    except ValueError:
        return None


def _refuse(
    exc: EgideError,
    *,
    principal: Principal,
    clock: Clock,
    action: Action,
    patient_id: str | None,
    reasons: Sequence[str],
    resource_id: str | None = None,
    purpose: str | None = None,
) -> EgideError:
    """`exc`, carrying the ledger entry of the refusal, written after the rollback."""
    act = Act(
        action,
        Outcome.DENIED,
        patient=patient_id,
        resource_type="Patient" if resource_id or patient_id else None,
        resource_id=resource_id or patient_id,
        count=0,
        purpose=purpose,
        reasons=tuple(reasons),
    )
    return defer_audit(exc, lambda s: append(s, principal=principal, act=act, clock=clock))


def check_reason(code: object, text: object) -> tuple[ReasonCode, str]:
    """The coded reason and the stated words, checked; BadRequest (with the field) if not."""
    if not isinstance(code, str) or code not in ReasonCode.__members__:
        allowed = ", ".join(c.value for c in ReasonCode)
        msg = f"reason_code must be one of {allowed}"
        raise BadRequest(msg)
    if not isinstance(text, str):
        msg = "reason_text is required: say in words why the record must be opened"
        raise BadRequest(msg)
    words = unicodedata.normalize("NFC", text).strip()
    if any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in words):
        msg = "reason_text may not contain control or invisible formatting characters"
        raise BadRequest(msg)
    if not REASON_TEXT_MIN <= len(words) <= REASON_TEXT_MAX:
        msg = f"reason_text must be {REASON_TEXT_MIN} to {REASON_TEXT_MAX} characters"
        raise BadRequest(msg)
    return ReasonCode(code), words


def _check_id(value: object, what: str) -> str:
    if not isinstance(value, str) or _ID_RE.fullmatch(value) is None:
        msg = f"{what} must be a FHIR id (letters, digits, '-' and '.', at most 64)"
        raise BadRequest(msg)
    return value


def _check_account(value: object, what: str) -> str:
    if not isinstance(value, str) or _ACCOUNT_RE.fullmatch(value) is None:
        msg = f"{what} must be an account id"
        raise BadRequest(msg)
    return value


def _patient_exists(session: Session, patient_id: str) -> bool:
    head = session.get(ResourceHead, ("Patient", patient_id))
    return head is not None and not head.deleted


def _store(
    session: Session,
    *,
    kind: LinkKind,
    patient_id: str,
    actor: str,
    valid_from: dt.datetime,
    valid_to: dt.datetime,
    granted_by: str,
    reason: str,
) -> Grant:
    row = AccessLink(
        source_type=GRANT_SOURCE,
        source_id=new_id(),
        patient_id=patient_id,
        kind=kind.value,
        actor=actor,
        valid_from=valid_from,
        valid_to=valid_to,
        granted_by=granted_by[:64],
        reason=reason[:600],
    )
    session.add(row)
    session.flush()
    return _grant_of(row)


def _until(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="minutes").replace("+00:00", "Z")


# -- break-the-glass ------------------------------------------------------------------------


def open_break_glass(
    session: Session,
    principal: Principal,
    *,
    patient_id: object,
    reason_code: object,
    reason_text: object,
    clock: Clock,
    hours: float,
    mfa_at: dt.datetime | None,
    step_up_minutes: int,
    windows: Windows | None = None,
) -> Granted:
    """Open an emergency grant for `principal` (a signed-in clinician) to one patient.

    `mfa_at`: when the principal's session last passed its second factor (sign-in or step-up);
    older than `step_up_minutes` is refused here too, whatever the caller checked. Refusals, in
    the order checked: 403 for a role that may not break the glass or a stale second factor,
    400 for a malformed patient id or reason, 404 for a patient that does not exist, 409 when
    the principal already reaches the record. Each is ledgered (BREAK_GLASS, denied).
    """
    now = clock.now()
    named = patient_id if isinstance(patient_id, str) and _ID_RE.fullmatch(patient_id) else None

    def refused(exc: EgideError, *reasons: str, patient: str | None = None) -> EgideError:
        return _refuse(
            exc,
            principal=principal,
            clock=clock,
            action=Action.BREAK_GLASS,
            patient_id=patient,
            resource_id=named,
            reasons=reasons or (exc.message,),
        )

    if _role(principal) not in BREAK_GLASS_ROLES:
        msg = f"role {principal.role} may not break the glass: physicians, residents, nurses do"
        raise refused(Forbidden(msg))
    if mfa_at is None or now - mfa_at > dt.timedelta(minutes=step_up_minutes):
        msg = (
            "break-the-glass needs a recent second-factor check (step-up within "
            f"{step_up_minutes} minutes)"
        )
        raise refused(Forbidden(msg))
    try:
        checked_patient = _check_id(patient_id, "patient")
        code, words = check_reason(reason_code, reason_text)
    except BadRequest as exc:
        raise refused(exc) from None
    if not _patient_exists(session, checked_patient):
        raise refused(NotFound(f"Patient/{checked_patient} is not known"), "no such patient")
    actors = actors_of(session, principal, now)
    found = gather(
        session,
        principal,
        actors=actors,
        patients=[checked_patient],
        now=now,
        windows=windows or Windows(),
    )[checked_patient]
    facts = found.facts
    held = [f for f in facts if f.relationship in _ALREADY]
    if not held and not found.restricted:
        # A department link opens everything but what the patient's consent keeps to the
        # treating team; with no such restriction there is nothing to break the glass for.
        held = [f for f in facts if f.relationship is Relationship.DEPARTMENT]
    if held:
        if held[0].relationship is Relationship.BREAK_GLASS:
            msg = "you already hold an emergency grant for this patient"
        else:
            msg = "you already have a care relationship with this patient: the record is open"
        raise refused(Conflict(msg), msg, held[0].reason, patient=checked_patient)
    until = now + dt.timedelta(hours=hours)
    grant = _store(
        session,
        kind=LinkKind.BREAK_GLASS,
        patient_id=checked_patient,
        actor=f"user:{principal.id}",
        valid_from=now,
        valid_to=until,
        granted_by=principal.id,
        reason=code.value,
    )
    entry = append(
        session,
        principal=principal,
        clock=clock,
        act=Act(
            Action.BREAK_GLASS,
            patient=checked_patient,
            resource_type="Patient",
            resource_id=checked_patient,
            # The clinician's own words (IHE BALP purposeOfEvent); the link row keeps the code.
            purpose=words,
            reasons=(
                f"break-the-glass: {code.value} ({REASON_DISPLAY[code]}) [{REASON_SYSTEM}]",
                NO_CARE_LINK,
                f"emergency grant {grant.id} until {_until(until)}",
                "after a step-up second-factor check",
            ),
        ),
    )
    return Granted(grant, entry)


# -- assignments and investigations ----------------------------------------------------------


def _grant_refusal(principal: Principal, clock: Clock) -> Callable[..., EgideError]:
    """How assignments and investigations refuse: ACCESS_GRANT, denied, ledgered."""

    def refused(exc: EgideError, *reasons: str) -> EgideError:
        return _refuse(
            exc,
            principal=principal,
            clock=clock,
            action=Action.ACCESS_GRANT,
            patient_id=None,
            reasons=reasons or (exc.message,),
        )

    return refused


def _may_grant(principal: Principal, roles: frozenset[Role]) -> bool:
    role = _role(principal)
    return (role is not None and role in roles) or principal.id.startswith(_OPERATOR_PREFIX)


def assign(
    session: Session,
    principal: Principal,
    *,
    patient_id: str,
    clock: Clock,
    days: int,
    reason: str,
    practitioner_id: str | None = None,
    account_id: str | None = None,
    account_role: str | None = None,
) -> Granted:
    """Name a practitioner (`Practitioner/<id>`, which must exist) or a clinician's account
    (`user:<id>`, whose role the caller looked up) as treating `patient_id` for `days` days.

    Only an administrator (or the local operator) assigns. The reason is required (the same
    rules as a break-the-glass text) and stored with the grant and in its ledger entry."""
    refused = _grant_refusal(principal, clock)
    if not _may_grant(principal, _ASSIGNERS):
        msg = f"role {principal.role} may not assign patients"
        raise refused(Forbidden(msg))
    try:
        _check_id(patient_id, "patient")
        if (practitioner_id is None) == (account_id is None):
            msg = "name either a practitioner or an account to assign"
            raise BadRequest(msg)
        if practitioner_id is not None:
            actor = f"Practitioner/{_check_id(practitioner_id, 'practitioner')}"
        else:
            actor = f"user:{_check_account(account_id, 'account')}"
            if account_role not in {r.value for r in BREAK_GLASS_ROLES}:
                msg = "only a physician's, resident's or nurse's account can be assigned"
                raise BadRequest(msg)
        if not 1 <= days <= MAX_ASSIGNMENT_DAYS:
            msg = f"days must be 1 to {MAX_ASSIGNMENT_DAYS}"
            raise BadRequest(msg)
        _code, words = check_reason(ReasonCode.OTHER.value, reason)
    except BadRequest as exc:
        raise refused(exc) from None
    if not _patient_exists(session, patient_id):
        raise refused(NotFound(f"Patient/{patient_id} is not known"), "no such patient")
    if practitioner_id is not None and not _exists(session, "Practitioner", practitioner_id):
        raise refused(NotFound(f"Practitioner/{practitioner_id} is not known"))
    return _grant(
        session,
        principal,
        clock=clock,
        kind=LinkKind.ASSIGNMENT,
        patient_id=patient_id,
        actor=actor,
        lasting=dt.timedelta(days=days),
        words=words,
        says=lambda grant, until: (
            f"assignment {grant.id}: {actor} treats this patient until {until}"
        ),
    )


def _grant(
    session: Session,
    principal: Principal,
    *,
    clock: Clock,
    kind: LinkKind,
    patient_id: str,
    actor: str,
    lasting: dt.timedelta,
    words: str,
    says: Callable[[Grant, str], str],
) -> Granted:
    """Store an assignment or investigation and ledger it in the same transaction."""
    now = clock.now()
    until = now + lasting
    grant = _store(
        session,
        kind=kind,
        patient_id=patient_id,
        actor=actor,
        valid_from=now,
        valid_to=until,
        granted_by=principal.id,
        reason=words,
    )
    entry = append(
        session,
        principal=principal,
        clock=clock,
        act=Act(
            Action.ACCESS_GRANT,
            patient=patient_id,
            resource_type="Patient",
            resource_id=patient_id,
            purpose=words,
            reasons=(says(grant, _until(until)),),
        ),
    )
    return Granted(grant, entry)


def _exists(session: Session, resource_type: str, resource_id: str) -> bool:
    head = session.get(ResourceHead, (resource_type, resource_id))
    return head is not None and not head.deleted


def open_investigation(
    session: Session,
    principal: Principal,
    *,
    officer_id: str,
    officer_role: str | None,
    patient_id: str,
    clock: Clock,
    hours: float,
    reason: str,
) -> Granted:
    """Let the security officer `officer_id` read one patient's record for `hours` hours.

    Only the data-protection officer (or the local operator) grants it, and never to
    themself (four eyes); `officer_role` is the officer account's role as the caller found
    it, and must be security_officer. The reason (10 to 500 characters) names the incident."""
    refused = _grant_refusal(principal, clock)
    if not _may_grant(principal, _INVESTIGATION_GRANTERS):
        msg = f"role {principal.role} may not grant investigations: the DPO does"
        raise refused(Forbidden(msg))
    try:
        _check_id(patient_id, "patient")
        _check_account(officer_id, "officer")
        if officer_id == principal.id:
            msg = "nobody grants an investigation to themself (four eyes)"
            raise BadRequest(msg)
        if officer_role != Role.SECURITY_OFFICER.value:
            msg = "investigation grants go to a security officer's account"
            raise BadRequest(msg)
        if not 0 < hours <= MAX_INVESTIGATION_HOURS:
            msg = f"hours must be more than 0 and at most {MAX_INVESTIGATION_HOURS}"
            raise BadRequest(msg)
        _code, words = check_reason(ReasonCode.OTHER.value, reason)
    except BadRequest as exc:
        raise refused(exc) from None
    if not _patient_exists(session, patient_id):
        raise refused(NotFound(f"Patient/{patient_id} is not known"), "no such patient")
    return _grant(
        session,
        principal,
        clock=clock,
        kind=LinkKind.INVESTIGATION,
        patient_id=patient_id,
        actor=f"user:{officer_id}",
        lasting=dt.timedelta(hours=hours),
        words=words,
        says=lambda grant, until: (
            f"investigation {grant.id}: security officer {officer_id} may read this "
            f"patient's record until {until}"
        ),
    )


# -- listing and ending ------------------------------------------------------------------------


def active_grants(
    session: Session,
    *,
    clock: Clock,
    patient_id: str | None = None,
    include_ended: bool = False,
) -> list[Grant]:
    """The grants in force now (or all of them), newest first, for one patient or all."""
    stmt = select(AccessLink).where(
        AccessLink.source_type == GRANT_SOURCE,
        AccessLink.kind.in_(sorted(k.value for k in GRANT_KINDS)),
    )
    if patient_id is not None:
        stmt = stmt.where(AccessLink.patient_id == _check_id(patient_id, "patient"))
    if not include_ended:
        now = clock.now()
        stmt = stmt.where(
            or_(AccessLink.valid_from.is_(None), AccessLink.valid_from <= now),
            or_(AccessLink.valid_to.is_(None), AccessLink.valid_to >= now),
        )
    rows = session.scalars(stmt.order_by(AccessLink.valid_from.desc(), AccessLink.pk.desc()))
    return [_grant_of(row) for row in rows]


def end_grant(
    session: Session, principal: Principal, *, grant_id: str, clock: Clock, reason: str = ""
) -> Grant:
    """End a grant now. Its holder may end their own emergency grant; an administrator (or the
    local operator) any grant; the DPO an investigation. Anyone else, and an unknown id, get
    the same 404. Ending an already ended grant changes nothing and is not an error."""
    row = None
    if isinstance(grant_id, str) and _ID_RE.fullmatch(grant_id):
        row = session.scalar(
            select(AccessLink).where(
                AccessLink.source_type == GRANT_SOURCE, AccessLink.source_id == grant_id
            )
        )
    kind = LinkKind(row.kind) if row is not None else None
    holder = row is not None and row.actor == f"user:{principal.id}"
    allowed = row is not None and (
        _may_grant(principal, _ASSIGNERS)
        or (holder and kind is LinkKind.BREAK_GLASS)
        or (kind is LinkKind.INVESTIGATION and _may_grant(principal, _INVESTIGATION_GRANTERS))
    )
    action = Action.BREAK_GLASS_END if kind is LinkKind.BREAK_GLASS else Action.ACCESS_GRANT_END
    if row is None or not allowed:
        msg = "no such grant"
        raise _refuse(
            NotFound(msg),
            principal=principal,
            clock=clock,
            action=action,
            patient_id=None,
            reasons=(f"grant {str(grant_id)[:64]}: {msg}",),
        )
    words = unicodedata.normalize("NFC", reason).strip()[:REASON_TEXT_MAX]
    if any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in words):
        msg = "the reason may not contain control or invisible formatting characters"
        raise BadRequest(msg)
    now = clock.now()
    grant = _grant_of(row)
    if row.valid_to is not None and row.valid_to < now:
        return grant  # already over
    # Just before now: the policy counts a link as active up to and including `valid_to`.
    row.valid_to = now - dt.timedelta(microseconds=1)
    session.flush()
    append(
        session,
        principal=principal,
        clock=clock,
        act=Act(
            action,
            patient=row.patient_id,
            resource_type="Patient",
            resource_id=row.patient_id,
            purpose=words or None,
            reasons=(f"{row.kind} grant {row.source_id} of {row.actor} ended",),
        ),
    )
    return _grant_of(row)

"""The live detector's context, built from Égide's own data (DESIGN.md, "Detection context").

Security role: behavioural detection judges each access against who treats whom. In batch,
an outside system hands that context in a file; live, it comes from here: the accounts and
API tokens (role, department through an active PractitionerRole), the patients' and staff's
names and addresses (opened through `records.demographics`, which audits the read), and the
care links the records room derives from the FHIR data (Encounter, EpisodeOfCare,
Appointment, CareTeam, orders, guardians, assignments, investigations). Break-the-glass grants
are left out on purpose: the break-the-glass detector judges those accesses.

The context lives in memory only, never written anywhere.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from egide.access.permissions import Role
from egide.access.relationships import LinkKind
from egide.core.clock import Clock
from egide.detect.events import CareLink, Context, PatientInfo, UserInfo
from egide.identity.models import Account, ApiToken
from egide.incidents.alerts import DETECTOR
from egide.records.demographics import Person, people_for_detection
from egide.records.models import AccessLink, AccessMembership
from egide.records.repository import RecordServices

# Who may read the records of a patient with an active order for their service ("*": any
# member of the service).
_SERVICE_OF_ORDER = {
    LinkKind.ORDER_IMAGING.value: Role.RADIOLOGY.value,
    LinkKind.ORDER_LAB.value: Role.LAB.value,
    LinkKind.ORDER_MEDICATION.value: Role.PHARMACIST.value,
}
# Not care: the break-the-glass detector judges emergency access.
_NOT_CARE = frozenset({LinkKind.BREAK_GLASS.value})


def _stamp(when: dt.datetime | None) -> str | None:
    if when is None:
        return None
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Staff:
    """Accounts and API tokens, with what the data says they are."""

    def __init__(self, session: Session, now: dt.datetime) -> None:
        self.role: dict[str, str] = {}
        self.fhir: dict[str, str] = {}  # user id -> Practitioner/<id> or Patient/<id>
        for account in session.scalars(select(Account)):
            self.role[account.id] = account.role
            if account.practitioner_id:
                self.fhir[account.id] = f"Practitioner/{account.practitioner_id}"
            elif account.patient_id:
                self.fhir[account.id] = f"Patient/{account.patient_id}"
        for token in session.scalars(select(ApiToken).where(ApiToken.revoked_at.is_(None))):
            self.role[token.id] = token.role
            if token.practitioner_id:
                self.fhir[token.id] = f"Practitioner/{token.practitioner_id}"
            elif token.patient_id:
                self.fhir[token.id] = f"Patient/{token.patient_id}"
        # Groups each FHIR identity belongs to now: departments (Organization/<id>) and the
        # RelatedPerson a patient also is.
        self.groups: dict[str, list[str]] = defaultdict(list)
        rows = session.execute(
            select(AccessMembership.member, AccessMembership.group, AccessMembership.valid_from)
            .where(
                (AccessMembership.valid_from.is_(None)) | (AccessMembership.valid_from <= now),
                (AccessMembership.valid_to.is_(None)) | (AccessMembership.valid_to >= now),
            )
            .order_by(AccessMembership.member, AccessMembership.group)
        )
        for member, group, _start in rows:
            self.groups[member].append(group)
        # Actor -> the users it stands for.
        self.users_of: dict[str, set[str]] = defaultdict(set)
        for user, ident in self.fhir.items():
            self.users_of[ident].add(user)
            for group in self.groups.get(ident, ()):
                if not group.startswith("Organization/"):
                    self.users_of[group].add(user)
        for user in self.role:
            self.users_of[f"user:{user}"].add(user)

    def department(self, user: str) -> str | None:
        ident = self.fhir.get(user)
        if ident is None:
            return None
        return next((g for g in self.groups.get(ident, ()) if g.startswith("Organization/")), None)


class ContextBuilder:
    """The context, kept up to date from what the ledger says changed: a new or updated
    Patient or Practitioner is opened again alone, the care links of the patients whose
    admissions, appointments, teams, orders or grants changed are read again, and the staff
    (accounts, tokens, departments) reloaded when they changed. A full rebuild reads
    everything again (at start, and now and then to catch what no entry announced)."""

    def __init__(self, *, services: RecordServices, clock: Clock) -> None:
        self.services = services
        self.clock = clock
        self._staff: _Staff | None = None
        self._practitioners: dict[str, Person] = {}
        self._patients: dict[str, Person] = {}
        self._links: dict[str, list[_LinkRow]] = {}

    def full(self, session: Session) -> Context:
        now = self.clock.now()
        self._staff = _Staff(session, now)
        self._practitioners = self._read(session, "Practitioner", None)
        self._patients = self._read(session, "Patient", None)
        self._links = _link_rows(session, None)
        return self.context()

    def update(
        self,
        session: Session,
        *,
        staff: bool = False,
        practitioners: set[str] | None = None,
        patients: set[str] | None = None,
        links_of: set[str] | None = None,
    ) -> Context:
        """Re-read what changed (ids), then the whole context from the caches."""
        if self._staff is None:
            return self.full(session)
        if staff:
            self._staff = _Staff(session, self.clock.now())
        for resource_type, ids, cache in (
            ("Practitioner", practitioners, self._practitioners),
            ("Patient", patients, self._patients),
        ):
            if ids:
                found = self._read(session, resource_type, ids)
                for gone in ids - set(found):
                    cache.pop(gone, None)  # deleted or erased
                cache.update(found)
        if links_of:
            fresh = _link_rows(session, links_of)
            for patient in links_of:
                self._links[patient] = fresh.get(patient, [])
        return self.context()

    def context(self) -> Context:
        assert self._staff is not None
        staff = self._staff
        users = [
            _user_info(user, role, staff, self._practitioners)
            for user, role in sorted(staff.role.items())
        ]
        return Context(
            users=tuple(users),
            patients=tuple(_patient_info(p, users) for p in self._patients.values()),
            care=tuple(_care(staff, self._links)),
        )

    def _read(
        self, session: Session, resource_type: str, ids: set[str] | None
    ) -> dict[str, Person]:
        people = people_for_detection(
            session,
            self.services,
            principal=DETECTOR,
            clock=self.clock,
            resource_type=resource_type,
            ids=ids,
        )
        return {p.id: p for p in people}


def _user_info(user: str, role: str, staff: _Staff, practitioners: dict[str, Person]) -> UserInfo:
    ident = staff.fhir.get(user, "")
    person = practitioners.get(ident.removeprefix("Practitioner/")) if ident else None
    return UserInfo(
        id=user,
        role=role,
        department=staff.department(user),
        family_name=person.family_name if person else None,
        postal_code=person.postal_code if person else None,
        address=person.address if person else None,
    )


def _patient_info(person: Person, users: Iterable[UserInfo]) -> PatientInfo:
    employee: str | None = None
    if person.employee:
        # An EMP-labelled record: the coworker's account is the staff member of the same
        # family name and postal code when exactly one matches; else "someone here".
        same = [
            u.id
            for u in users
            if u.role != Role.PATIENT.value
            and person.family_name
            and u.family_name
            and u.family_name.casefold() == person.family_name.casefold()
            and (u.postal_code or "") == (person.postal_code or "")
        ]
        employee = same[0] if len(same) == 1 else "staff"
    return PatientInfo(
        id=person.id,
        family_name=person.family_name,
        postal_code=person.postal_code,
        address=person.address,
        vip=person.vip,
        employee=employee,
        deceased=person.deceased,
    )


# (kind, actor, start, end) of one stored link.
_LinkRow = tuple[str, str, str | None, str | None]


def _link_rows(session: Session, patients: set[str] | None) -> dict[str, list[_LinkRow]]:
    stmt = select(
        AccessLink.patient_id,
        AccessLink.kind,
        AccessLink.actor,
        AccessLink.valid_from,
        AccessLink.valid_to,
    ).order_by(AccessLink.pk)
    if patients is not None:
        stmt = stmt.where(AccessLink.patient_id.in_(sorted(patients)))
    rows: dict[str, list[_LinkRow]] = defaultdict(list)
    for patient, kind, actor, start, end in session.execute(stmt):
        if kind not in _NOT_CARE:
            rows[patient].append((kind, actor, _stamp(start), _stamp(end)))
    return rows


def _care(staff: _Staff, links: dict[str, list[_LinkRow]]) -> list[CareLink]:
    care: list[CareLink] = []
    # A patient's own account (and a token bound to the patient) reads their own record.
    for user, ident in sorted(staff.fhir.items()):
        if ident.startswith("Patient/"):
            care.append(CareLink(ident.removeprefix("Patient/"), user, None, None, None))
    by_role: dict[str, list[str]] = defaultdict(list)
    for user, role in sorted(staff.role.items()):
        by_role[role].append(user)
    for patient, rows in links.items():
        for kind, actor, first, last in rows:
            if actor.startswith("Organization/"):
                care.append(CareLink(patient, None, actor, first, last))
                continue
            if actor == "*":
                users = by_role.get(_SERVICE_OF_ORDER.get(kind, ""), [])
            else:
                users = sorted(staff.users_of.get(actor, ()))
            care.extend(CareLink(patient, user, None, first, last) for user in users)
    return care

"""A Hypothesis state machine against the real repository: no act outside the policy.

Issue 5, "must show": random sequences of accounts, care relationships, consents and actions
find no read, search result, history entry or write outside what the policy allows, and no
allowed act refused. The machine drives the real records room in process
(`records.repository`, the same code the FHIR API calls, on SQLite and PostgreSQL): a system
job writes departments, patients, practitioners with their PractitionerRole, admissions
(Encounter in progress naming a practitioner or a department), discharges, cancellations and
deletions of stays, appointments, Observations and security labels; patients write their own
Consents (deny a practitioner, deny a department, keep PSY-labelled records to the treating
team) and withdraw them; the clock moves across grace periods and appointment lead times. Then
random principals (physicians, nurses, patients, a secretary) read, search with paging, read
type and instance history, update and create.

The oracle is `Model`: plain Python sets and dates written from the rules of issue 5 (care
links with their lead and grace windows, consent denials and label restrictions, the patient's
own record, the secretary's reach), sharing no code with `access` or `records`. Every answer is
compared with it both ways: anything returned or written that the model forbids, and anything
the model allows that is refused, fails the run with the shrunk sequence. Random sequences
rarely meet the interesting cases by chance, so the initial world draws stays, labels and
consents, the `edge` rule moves the clock to the last instant a link holds (or one second
past), acts are often "focused" on a principal and a record some link ties together, and the
run must have met every case of `REQUIRED_CASES` (a machine that silently stopped reaching
them would otherwise pass). Checked by hand against mutants of the policy (grace 29 days,
lead 8 days, entered-in-error still linking, department links ignored, a consent denial
dropped, the label filter uncorrelated): each made this test fail. It found two bugs: the
consent label filter in SQL matched a label carried by any resource (fixed in
`records.visibility`), and history pages were not a total order, so versions written at one
instant could repeat on one page and be missed on another (fixed in `records.repository`).

Cost: each sequence is short (at most `STEPS` steps, the initial world in one transaction)
and reuses one database per test; a sequence isolates itself by starting its clock after the
previous one ended (it reads history `_since` its start) and by tagging its Observations with
an identifier of its own (searches filter on it), so sequences cannot see each other's data.
SQLite runs 650 sequences (about 130 s on the 2-core development machine) and PostgreSQL 400
(about 120 s: each statement is a network round trip, and more would pass three minutes):
1,050 in all.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from egide.access.relationships import Windows
from egide.cli.runtime import Services
from egide.core.clock import FixedClock
from egide.core.errors import Forbidden, NotFound
from egide.core.principal import Principal
from egide.db.engine import transaction
from egide.fhir.search import parse_search_query
from egide.records.repository import Repository, repository_for, system_repository
from tests.helpers import Database

EXAMPLES = {"sqlite": 650, "postgresql": 400}
STEPS = 25
TAG = "urn:egide:test:stateful"
PSY = "PSY"
V3_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
# Each sequence starts this long after the previous one ended (the clock only moves forward),
# so the versions it reads `_since` its start are its own.
EPOCH = dt.timedelta(seconds=1)
ADVANCES = (
    dt.timedelta(hours=1),
    dt.timedelta(days=1),
    dt.timedelta(days=6),
    dt.timedelta(days=7),
    dt.timedelta(days=29),
    dt.timedelta(days=30),
    dt.timedelta(days=31),
)
_sequence = itertools.count()
T = TypeVar("T")
# Situations (Model.situation) and outcomes every run must have met at least once.
REQUIRED_CASES = frozenset(
    {
        "clinician, consent refuses: refused",
        "clinician, department: allowed",
        "clinician, label restricted, department: refused",
        "clinician, label restricted, personal: allowed",
        "clinician, no link: refused",
        "clinician, personal (grace period): allowed",
        "clinician, personal: allowed",
        "patient (own): allowed",
        "patient: refused",
        "secretary: refused",
    }
)


# -- the model: plain Python, written from issue 5, independent of egide.access --------------


@dataclass
class Stay:
    """An Encounter: who it names and when."""

    patient: str
    practitioner: str | None
    department: str | None
    start: dt.datetime
    end: dt.datetime | None
    body: dict[str, Any]


@dataclass
class Visit:
    """An Appointment between a patient and a practitioner."""

    patient: str
    practitioner: str
    start: dt.datetime
    end: dt.datetime


@dataclass
class Refusal:
    """A Consent of `patient`: deny `actor`, or (actor None) keep PSY records to the team."""

    patient: str
    actor: str | None
    active: bool
    body: dict[str, Any]


@dataclass
class Record:
    """An Observation: its patient, whether it carries the PSY label, its versions."""

    patient: str
    labelled: bool
    versions: int
    body: dict[str, Any]


@dataclass(frozen=True)
class Who:
    """A principal as the model sees it."""

    role: str  # physician, nurse, patient, secretary
    person: str | None  # the practitioner or patient id


class Model:
    """Who may do what, from the data the sequence wrote. Grace 30 days, lead 7 days."""

    def __init__(self, grace: dt.timedelta, lead: dt.timedelta) -> None:
        self.grace, self.lead = grace, lead
        self.departments: list[str] = []
        self.patients: list[str] = []
        self.practitioners: dict[str, str | None] = {}  # id -> department
        self.roles: dict[str, str] = {}  # practitioner id -> physician or nurse
        self.stays: dict[str, Stay] = {}
        self.visits: dict[str, Visit] = {}
        self.refusals: dict[str, Refusal] = {}
        self.records: dict[str, Record] = {}

    def _held(self, start: dt.datetime, end: dt.datetime | None, now: dt.datetime) -> bool:
        return start <= now and (end is None or now <= end + self.grace)

    def ties(self, practitioner: str, patient: str, now: dt.datetime) -> tuple[bool, bool]:
        """(personally named, through their department) on a care link that holds now."""
        department = self.practitioners[practitioner]
        personal = by_department = False
        for stay in self.stays.values():
            if stay.patient != patient or not self._held(stay.start, stay.end, now):
                continue
            personal |= stay.practitioner == practitioner
            by_department |= department is not None and stay.department == department
        for visit in self.visits.values():
            if visit.patient == patient and visit.practitioner == practitioner:
                personal |= self._held(visit.start - self.lead, visit.end, now)
        return personal, by_department

    def refused(self, practitioner: str, patient: str) -> bool:
        department = self.practitioners[practitioner]
        named = {f"Practitioner/{practitioner}"}
        if department is not None:
            named.add(f"Organization/{department}")
        return any(
            r.active and r.patient == patient and r.actor in named for r in self.refusals.values()
        )

    def restricted(self, patient: str) -> bool:
        return any(
            r.active and r.patient == patient and r.actor is None for r in self.refusals.values()
        )

    def may_see_patient(self, who: Who, patient: str) -> bool:
        if who.role == "secretary":
            return True
        if who.role == "patient":
            return who.person == patient
        assert who.person is not None
        return not self.refused(who.person, patient)

    def may_see_record(self, who: Who, record_id: str, now: dt.datetime) -> bool:
        """Read and write alike: a clinician who may read a record may also amend it."""
        record = self.records[record_id]
        if who.role == "secretary":
            return False
        if who.role == "patient":
            return who.person == record.patient
        assert who.person is not None
        personal, by_department = self.ties(who.person, record.patient, now)
        if not (personal or by_department) or self.refused(who.person, record.patient):
            return False
        return personal or not (record.labelled and self.restricted(record.patient))

    def situation(self, who: Who, record_id: str, now: dt.datetime) -> str:
        """What the case exercises, for Hypothesis' statistics (`event`): coverage shown."""
        record = self.records[record_id]
        if who.role in ("secretary", "patient"):
            own = who.person == record.patient
            return who.role + (" (own)" if own else "")
        assert who.person is not None
        personal, by_department = self.ties(who.person, record.patient, now)
        if not (personal or by_department):
            return "clinician, no link"
        if self.refused(who.person, record.patient):
            return "clinician, consent refuses"
        if record.labelled and self.restricted(record.patient):
            return "clinician, label restricted, " + ("personal" if personal else "department")
        grace_only = self._only_by_grace(who.person, record.patient, now)
        kind = "personal" if personal else "department"
        return f"clinician, {kind}" + (" (grace period)" if grace_only else "")

    def _only_by_grace(self, practitioner: str, patient: str, now: dt.datetime) -> bool:
        grace, self.grace = self.grace, dt.timedelta(0)
        try:
            return self.ties(practitioner, patient, now) == (False, False)
        finally:
            self.grace = grace

    def may_add_record(self, who: Who, patient: str, now: dt.datetime) -> bool:
        if who.role not in ("physician", "nurse"):
            return False
        assert who.person is not None
        personal, by_department = self.ties(who.person, patient, now)
        return (personal or by_department) and not self.refused(who.person, patient)


# -- FHIR bodies ---------------------------------------------------------------------------


def _ref(resource_type: str, resource_id: str) -> dict[str, str]:
    return {"reference": f"{resource_type}/{resource_id}"}


def _instant(when: dt.datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def _observation(patient: str, tag: str, value: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": _ref("Patient", patient),
        "identifier": [{"system": TAG, "value": tag}],
        "valueQuantity": {"value": value, "unit": "/min"},
    }


def _consent(patient: str, actor: str | None) -> dict[str, Any]:
    provision: dict[str, Any] = {"type": "deny"}
    if actor is None:
        provision["securityLabel"] = [{"system": V3_ACT_CODE, "code": PSY}]
    else:
        provision["actor"] = [
            {
                "role": {"coding": [{"code": "PROV"}]},
                "reference": {"reference": actor},
            }
        ]
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": _ref("Patient", patient),
        "provision": {"type": "permit", "provision": [provision]},
    }


# -- the machine ---------------------------------------------------------------------------

INDEX = st.integers(min_value=0, max_value=50)
# Which of the two departments a practitioner joins, or none; mostly the first, so that stays
# and staff meet often enough for department links, refusals and label restrictions to matter.
DEPARTMENTS = st.sampled_from([0, 0, 1, None])
# A consent denies a practitioner, a department, or keeps PSY records to the treating team.
CONSENT_KINDS = st.sampled_from(["practitioner", "department", "label"])


def _fixed_clock(services: Services) -> FixedClock:
    clock = services.records.clock
    assert isinstance(clock, FixedClock)
    return clock


def _machine(services: Services, seen_cases: Counter[str]) -> type[RuleBasedStateMachine]:
    clock = _fixed_clock(services)
    windows: Windows = services.records.windows

    class AccessMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.model = Model(windows.care_grace, windows.appointment_lead)
            self.tag = f"seq-{next(_sequence)}"
            self.started = clock.now()
            self.batch: Repository | None = None

        # -- plumbing ------------------------------------------------------------------

        def system(self, work: Any) -> Any:
            if self.batch is not None:
                return work(self.batch)
            with transaction(services.session_factory) as session:
                return work(system_repository(session, services.records, job="stateful"))

        @contextlib.contextmanager
        def batched(self) -> Iterator[None]:
            """The system writes inside the block go in one transaction (cheaper sequences)."""
            if self.batch is not None:
                yield
                return
            with transaction(services.session_factory) as session:
                self.batch = system_repository(session, services.records, job="stateful")
                try:
                    yield
                finally:
                    self.batch = None

        def acting(self, who: Who, work: Any) -> Any:
            """Run `work` as `who`; (True, result) or (False, the refusal)."""
            if who.role == "patient":
                principal = Principal(
                    id=f"acct-{who.person}",
                    role="patient",
                    patient_id=who.person,
                    fhir_user=f"Patient/{who.person}",
                )
            elif who.role == "secretary":
                principal = Principal(id="acct-secretary", role="secretary")
            else:
                principal = Principal(
                    id=f"acct-{who.person}",
                    role=who.role,
                    fhir_user=f"Practitioner/{who.person}",
                )
            try:
                with transaction(services.session_factory) as session:
                    repo: Repository = repository_for(session, principal, services.records)
                    return True, work(repo)
            except (NotFound, Forbidden) as refusal:
                return False, refusal

        @staticmethod
        def pick(items: Iterable[T], index: int) -> T:
            found = list(items)
            return found[index % len(found)]

        def create(self, resource: dict[str, Any]) -> dict[str, Any]:
            stored: dict[str, Any] = self.system(lambda repo: repo.create(resource).resource)
            return stored

        def update(self, resource: dict[str, Any]) -> dict[str, Any]:
            rtype, rid = resource["resourceType"], resource["id"]
            stored: dict[str, Any] = self.system(
                lambda repo: repo.update(rtype, rid, resource).resource
            )
            return stored

        # -- the data ------------------------------------------------------------------

        @initialize(
            departments=st.lists(DEPARTMENTS, min_size=2, max_size=2),
            roles=st.lists(st.sampled_from(["physician", "nurse"]), min_size=2, max_size=2),
            stays=st.lists(st.tuples(INDEX, st.none() | INDEX, DEPARTMENTS), max_size=3),
            labels=st.lists(INDEX, max_size=2),
            consents=st.lists(st.tuples(INDEX, st.booleans(), CONSENT_KINDS), max_size=2),
            sensitive=st.booleans(),
        )
        def setup(
            self,
            departments: list[int | None],
            roles: list[str],
            stays: list[tuple[int, int | None, int | None]],
            labels: list[int],
            consents: list[tuple[int, bool, str]],
            sensitive: bool,
        ) -> None:
            """A world to start from, in one transaction (sequences stay cheap): two
            departments, two practitioners, two patients with a record each, and some stays,
            PSY labels and consents, so most sequences start where a rule has work to do."""
            clock.advance(EPOCH)
            self.started = clock.now()
            with self.batched():
                for name in ("Cardiologie", "Gériatrie"):
                    org = self.create({"resourceType": "Organization", "name": name})
                    self.model.departments.append(org["id"])
                for department, role in zip(departments, roles, strict=True):
                    self.add_practitioner(department, role)
                for _ in range(2):
                    self.add_patient()
                for patient, practitioner, department in stays:
                    self.admit(patient, practitioner, department)
                for record in labels:
                    self.label(record)
                for scene, focus, kind in consents:
                    self.consent(scene, focus, kind)
                if sensitive:
                    # The first patient's first record is PSY, kept to the treating team.
                    first = self.model.patients[0]
                    key = next(k for k, r in self.model.records.items() if r.patient == first)
                    if not self.model.records[key].labelled:
                        self._label(key)
                    self._consent(first, None)

        def add_practitioner(self, department: int | None, role: str) -> None:
            org = None if department is None else self.model.departments[department]
            with self.batched():
                practitioner = self.create(
                    {"resourceType": "Practitioner", "name": [{"family": "P"}]}
                )
                if org is not None:
                    self.create(
                        {
                            "resourceType": "PractitionerRole",
                            "active": True,
                            "practitioner": _ref("Practitioner", practitioner["id"]),
                            "organization": _ref("Organization", org),
                        }
                    )
            self.model.practitioners[practitioner["id"]] = org
            self.model.roles[practitioner["id"]] = role

        def add_patient(self) -> None:
            with self.batched():
                pid = self.create({"resourceType": "Patient", "name": [{"family": "X"}]})["id"]
                self.model.patients.append(pid)
                self.add_record(pid)

        def add_record(self, pid: str) -> None:
            stored = self.create(_observation(pid, self.tag, 60))
            self.model.records[stored["id"]] = Record(pid, labelled=False, versions=1, body=stored)

        @rule(
            kind=st.sampled_from(["practitioner", "patient", "record"]),
            department=DEPARTMENTS,
            role=st.sampled_from(["physician", "nurse"]),
            item=INDEX,
        )
        def grow(self, kind: str, department: int | None, role: str, item: int) -> None:
            """Hire a practitioner (in a department or none), register a patient, or add an
            Observation to a patient's record."""
            if kind == "practitioner":
                self.add_practitioner(department, role)
            elif kind == "patient":
                self.add_patient()
            else:
                self.add_record(self.pick(self.model.patients, item))

        @rule(patient=INDEX, practitioner=st.none() | INDEX, department=DEPARTMENTS)
        def admit(self, patient: int, practitioner: int | None, department: int | None) -> None:
            """An Encounter in progress naming a practitioner, a department, both or none."""
            pid = self.pick(self.model.patients, patient)
            named = (
                None if practitioner is None else self.pick(self.model.practitioners, practitioner)
            )
            org = None if department is None else self.model.departments[department]
            now = clock.now()
            body: dict[str, Any] = {
                "resourceType": "Encounter",
                "status": "in-progress",
                "class": {"system": V3_ACT_CODE, "code": "IMP"},
                "subject": _ref("Patient", pid),
                "period": {"start": _instant(now)},
            }
            if named is not None:
                body["participant"] = [{"individual": _ref("Practitioner", named)}]
            if org is not None:
                body["serviceProvider"] = _ref("Organization", org)
            stored = self.create(body)
            self.model.stays[stored["id"]] = Stay(pid, named, org, now, None, stored)

        @precondition(lambda self: bool(self.model.stays))
        @rule(stay=INDEX, how=st.sampled_from(["discharge", "entered-in-error", "delete"]))
        def end_stay(self, stay: int, how: str) -> None:
            """Discharge (the grace period starts), or a stay entered in error or deleted (it
            links nobody any more)."""
            ongoing = [k for k, s in self.model.stays.items() if s.end is None]
            if how == "discharge" and ongoing:
                found = self.model.stays[self.pick(ongoing, stay)]
                now = clock.now()
                body = {
                    **found.body,
                    "status": "finished",
                    "period": {"start": _instant(found.start), "end": _instant(now)},
                }
                found.body, found.end = self.update(body), now
                return
            key = self.pick(self.model.stays, stay)
            found = self.model.stays.pop(key)
            if how == "delete":
                self.system(lambda repo: repo.delete("Encounter", key))
            else:
                self.update({**found.body, "status": "entered-in-error"})

        @rule(patient=INDEX, practitioner=INDEX, days=st.integers(min_value=0, max_value=14))
        def book(self, patient: int, practitioner: int, days: int) -> None:
            """An Appointment `days` ahead: it links from 7 days before."""
            pid = self.pick(self.model.patients, patient)
            named = self.pick(self.model.practitioners, practitioner)
            start = clock.now() + dt.timedelta(days=days)
            end = start + dt.timedelta(minutes=30)
            stored = self.create(
                {
                    "resourceType": "Appointment",
                    "status": "booked",
                    "start": _instant(start),
                    "end": _instant(end),
                    "participant": [
                        {"actor": _ref("Patient", pid), "status": "accepted"},
                        {"actor": _ref("Practitioner", named), "status": "accepted"},
                    ],
                }
            )
            self.model.visits[stored["id"]] = Visit(pid, named, start, end)

        @rule(step=st.sampled_from(ADVANCES))
        def advance(self, step: dt.timedelta) -> None:
            clock.advance(step)

        @rule(link=INDEX, past=st.booleans())
        def edge(self, link: int, past: bool) -> None:
            """Move the clock to the last instant a link holds (or one second past it): the
            end of a grace period, the start of an appointment's lead time."""
            now = clock.now()
            edges = [s.end + windows.care_grace for s in self.model.stays.values() if s.end]
            for visit in self.model.visits.values():
                edges += [visit.start - windows.appointment_lead - dt.timedelta(seconds=1)]
                edges += [visit.end + windows.care_grace]
            ahead = sorted(e for e in edges if e > now)
            if ahead:
                clock.advance(self.pick(ahead, link) - now + dt.timedelta(seconds=int(past)))

        @rule(
            scene=INDEX,
            focus=st.booleans(),
            kind=CONSENT_KINDS,
        )
        def consent(self, scene: int, focus: bool, kind: str) -> None:
            """The patient, with their own token, denies a practitioner or a department, or
            keeps PSY-labelled records to their treating team. Focused: someone who treats
            them (a consent that changes something)."""
            who, record = self.scene(scene, focus=focus)
            pid = self.model.records[record].patient
            if who.person is None or who.role not in ("physician", "nurse"):
                who = Who("physician", self.pick(self.model.practitioners, scene))
            assert who.person is not None
            department = self.model.practitioners[who.person]
            if kind == "label":
                actor = None
            elif kind == "department" and department is not None:
                actor = f"Organization/{department}"
            else:
                actor = f"Practitioner/{who.person}"
            self._consent(pid, actor)

        def _consent(self, pid: str, actor: str | None) -> None:
            body = _consent(pid, actor)
            if self.batch is not None:  # the initial world: written by the system job
                stored = self.batch.create(body)
            else:
                done, stored = self.acting(Who("patient", pid), lambda repo: repo.create(body))
                assert done, f"a patient could not record their own consent: {stored}"
            self.model.refusals[stored.id] = Refusal(pid, actor, active=True, body=stored.resource)

        @precondition(lambda self: any(r.active for r in self.model.refusals.values()))
        @rule(refusal=INDEX)
        def withdraw(self, refusal: int) -> None:
            key = self.pick([k for k, r in self.model.refusals.items() if r.active], refusal)
            found = self.model.refusals[key]
            body = {**found.body, "status": "inactive"}
            done, stored = self.acting(
                Who("patient", found.patient),
                lambda repo: repo.update("Consent", key, body),
            )
            assert done, f"a patient could not withdraw their own consent: {stored}"
            found.active, found.body = False, stored.resource

        @precondition(lambda self: any(not r.labelled for r in self.model.records.values()))
        @rule(record=INDEX)
        def label(self, record: int) -> None:
            unlabelled = [k for k, r in self.model.records.items() if not r.labelled]
            if unlabelled:
                self._label(self.pick(unlabelled, record))

        def _label(self, key: str) -> None:
            found = self.model.records[key]
            body = {**found.body, "meta": {"security": [{"system": V3_ACT_CODE, "code": PSY}]}}
            found.body = self.update(body)
            found.labelled, found.versions = True, found.versions + 1

        # -- the acts, each checked against the model ----------------------------------

        def scene(self, index: int, *, focus: bool) -> tuple[Who, str]:
            """A principal and an Observation. Focused: a pair some stay or appointment
            (current or past) ties together, the cases where a window, a consent or a label
            decides; otherwise any principal and any record."""
            if focus:
                links: list[Stay | Visit] = [
                    *self.model.stays.values(),
                    *self.model.visits.values(),
                ]
                pairs = [
                    (Who(self.model.roles[p], p), r)
                    for link in links
                    for p, dept in self.model.practitioners.items()
                    if p == link.practitioner
                    or (dept is not None and dept == getattr(link, "department", None))
                    for r, rec in self.model.records.items()
                    if rec.patient == link.patient
                ]
                if pairs:
                    return self.pick(pairs, index)
            people = [Who(self.model.roles[p], p) for p in self.model.practitioners]
            people += [Who("patient", p) for p in self.model.patients]
            people.append(Who("secretary", None))
            records = list(self.model.records)
            return (
                self.pick(people, index),
                self.pick(records, index // len(people)),
            )

        def note(self, act: str, person: Who, record: str, done: bool) -> None:
            situation = self.model.situation(person, record, clock.now())
            seen_cases[f"{act}: {situation}: {'allowed' if done else 'refused'}"] += 1

        @rule(scene=INDEX, focus=st.booleans(), patient=st.booleans())
        def read(self, scene: int, focus: bool, patient: bool) -> None:
            person, key = self.scene(scene, focus=focus)
            pid = self.model.records[key].patient
            if patient:
                expected = self.model.may_see_patient(person, pid)
                done, answer = self.acting(person, lambda repo: repo.read("Patient", pid))
            else:
                expected = self.model.may_see_record(person, key, clock.now())
                done, answer = self.acting(person, lambda repo: repo.read("Observation", key))
                self.note("read", person, key, done)
                if done:
                    assert answer.resource["subject"] == _ref("Patient", pid)
            assert done == expected, (person, "read", answer)
            if not done:
                assert isinstance(answer, NotFound), (person, answer)  # hidden: 404, never 403

        def _visible(self, person: Who) -> set[str]:
            now = clock.now()
            return {k for k in self.model.records if self.model.may_see_record(person, k, now)}

        @rule(scene=INDEX, focus=st.booleans(), count=st.integers(min_value=1, max_value=3))
        def search(self, scene: int, focus: bool, count: int) -> None:
            person, _record = self.scene(scene, focus=focus)
            expected = self._visible(person)
            seen: list[str] = []
            offset = 0
            while True:
                query = parse_search_query(
                    "Observation",
                    [
                        ("identifier", f"{TAG}|{self.tag}"),
                        ("_count", str(count)),
                        ("_offset", str(offset)),
                    ],
                )
                done, answer = self.acting(person, lambda repo, q=query: repo.search(q))
                if person.role == "secretary":
                    assert not done, answer
                    assert isinstance(answer, Forbidden), answer
                    return
                assert done, (person, "search", answer)
                page, total = answer
                assert total == len(expected), (person, "total", total, expected)
                assert len(page) <= count
                seen.extend(s.id for s in page)
                offset += count
                if offset >= total:
                    break
            assert sorted(seen) == sorted(expected), (person, "search", seen, expected)
            share = (
                "none" if not expected else "all" if expected == set(self.model.records) else "some"
            )
            seen_cases[f"search by {person.role}: {share} visible"] += 1

        @rule(scene=INDEX, focus=st.booleans(), count=st.integers(min_value=1, max_value=4))
        def history(self, scene: int, focus: bool, count: int) -> None:
            person, _record = self.scene(scene, focus=focus)
            expected = {
                (key, version)
                for key in self._visible(person)
                for version in range(1, self.model.records[key].versions + 1)
            }
            seen: list[tuple[str, int]] = []
            offset = 0
            while True:
                done, answer = self.acting(
                    person,
                    lambda repo, at=offset: repo.history(
                        "Observation", None, count=count, offset=at, since=self.started
                    ),
                )
                if person.role == "secretary":
                    assert not done, answer
                    assert isinstance(answer, Forbidden), answer
                    return
                assert done, (person, "history", answer)
                items, total = answer
                assert total == len(expected), (person, "history total", total, expected)
                seen.extend((item.id, item.version) for item in items)
                offset += count
                if offset >= total:
                    break
            assert sorted(seen) == sorted(expected), (person, "history", seen, expected)
            seen_cases[f"history by {person.role}: {len(expected)} versions"] += 1

        @rule(scene=INDEX, focus=st.booleans())
        def instance_history(self, scene: int, focus: bool) -> None:
            person, key = self.scene(scene, focus=focus)
            expected = self.model.may_see_record(person, key, clock.now())
            done, answer = self.acting(
                person,
                lambda repo: repo.history("Observation", key, count=50, offset=0),
            )
            self.note("instance history", person, key, done)
            assert done == expected, (person, "instance history", answer)
            if done:
                items, total = answer
                assert total == self.model.records[key].versions
                assert [i.version for i in items] == list(range(total, 0, -1))
            else:
                assert isinstance(answer, NotFound), answer

        @rule(scene=INDEX, focus=st.booleans(), value=st.integers(min_value=30, max_value=200))
        def amend(self, scene: int, focus: bool, value: int) -> None:
            person, key = self.scene(scene, focus=focus)
            found = self.model.records[key]
            writer = person.role in ("physician", "nurse")
            expected = writer and self.model.may_see_record(person, key, clock.now())
            body = {**found.body, "valueQuantity": {"value": value, "unit": "/min"}}
            done, answer = self.acting(person, lambda repo: repo.update("Observation", key, body))
            self.note("update", person, key, done)
            assert done == expected, (person, "update", answer)
            if done:
                found.body, found.versions = answer.resource, found.versions + 1
                assert answer.version == found.versions
            elif writer:
                # The role may write Observations: a refusal on this one hides it (404).
                assert isinstance(answer, NotFound), answer
            else:
                assert isinstance(answer, Forbidden), answer  # the role may never write them

        @rule(scene=INDEX, focus=st.booleans())
        def add_as(self, scene: int, focus: bool) -> None:
            person, key = self.scene(scene, focus=focus)
            pid = self.model.records[key].patient
            expected = self.model.may_add_record(person, pid, clock.now())
            body = _observation(pid, self.tag, 70)
            done, answer = self.acting(person, lambda repo: repo.create(body))
            seen_cases[f"create by {person.role}: {'allowed' if done else 'refused'}"] += 1
            assert done == expected, (person, "create", answer)
            if done:
                self.model.records[answer.id] = Record(
                    pid, labelled=False, versions=1, body=answer.resource
                )
            else:
                assert isinstance(answer, Forbidden), answer

    return AccessMachine


def test_no_act_outside_the_policy(services: Services, database: Database) -> None:
    seen_cases: Counter[str] = Counter()
    machine = _machine(services, seen_cases)
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=EXAMPLES[database.backend],
            stateful_step_count=STEPS,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    # The run must have exercised each kind of case, allowed and refused: a machine that
    # stopped reaching them (a rule that always fails early, a broken focus) would otherwise
    # pass while checking nothing.
    situations = {case.split(": ", 1)[1] for case in seen_cases if case.count(": ") == 2}
    missing = REQUIRED_CASES - situations
    assert not missing, (missing, dict(seen_cases))


@pytest.mark.parametrize("days", [0, 30])
def test_the_model_knows_the_grace_period(days: int) -> None:
    """The oracle itself: a stay discharged `days` ago still links at 30 days, not after."""
    model = Model(dt.timedelta(days=30), dt.timedelta(days=7))
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    model.practitioners["p"] = None
    model.stays["e"] = Stay("x", "p", None, start, start, {})
    assert model.ties("p", "x", start + dt.timedelta(days=days)) == (True, False)
    later = start + dt.timedelta(days=30, seconds=1)
    assert model.ties("p", "x", later) == (False, False)

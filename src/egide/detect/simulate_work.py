"""Ordinary hospital work as access events: the legitimate noise detectors must not alert on.

Part of the simulator (`egide.detect.simulate`). Given the plan of `simulate_world`, `Work.day`
produces the events of one day: sign-ins (with the odd typo), ward rounds, clinics, emergency
visits, consults without a care link, on-call cover at night, laboratory, radiology and pharmacy
work across departments, secretaries booking appointments, billing batches, legitimate
break-the-glass in emergencies, exports for referral letters. Security role: this is what a
detector would wrongly flag if it only followed rules, so it is deliberately varied.

Events are kept as rows `(time, user id, rendered JSON members, attack tag)`; the JSON text is
built once here with pre-quoted ids (no `json.dumps` on the hot path) so millions of events stay
cheap, and the writer only prepends the event id and the time.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeVar

from egide.detect.simulate_world import DAY, HOUR, MINUTE, World, public_ip, vpn_ip

if TYPE_CHECKING:
    from _typeshed import SupportsLenAndGetItem

T = TypeVar("T")
Row = tuple[int, str, str, int]  # (time, user id, JSON members after "time", attack tag)
Hook = Callable[["Work", "Session", int], int]  # runs inside a session, returns the new time
DayHook = Callable[["Work", int], None]


class FastRandom(random.Random):
    """`random.Random` with cheaper `randint` and `choice` (one `random()` call each).

    The standard ones draw exact uniform integers bit by bit, which is most of the simulator's
    time; a float product is uniform enough for simulated work and stays deterministic.
    """

    def randint(self, a: int, b: int) -> int:
        return a + int(self.random() * (b - a + 1))

    def choice(self, seq: SupportsLenAndGetItem[T]) -> T:
        return seq[int(self.random() * len(seq))]


def q(value: str | None) -> str:
    return "null" if value is None else json.dumps(value, ensure_ascii=False)


RT: Final = {
    name: f'"{name}"'
    for name in (  # noqa: SIM905 - a word list reads better as text
        "Patient Observation MedicationRequest CarePlan Condition MedicationAdministration "
        "Encounter DiagnosticReport DocumentReference AllergyIntolerance ImagingStudy "
        "Procedure ServiceRequest Appointment Coverage Specimen MedicationDispense Claim "
        "AuditEvent Bundle Immunization"
    ).split()
}
NURSE_READ: Final = (
    *("Observation",) * 4,
    *("MedicationRequest",) * 2,
    "Patient",
    "CarePlan",
    "Condition",
    "MedicationAdministration",
    "Encounter",
    "AllergyIntolerance",
)
PHYSICIAN_READ: Final = (
    *("Observation",) * 3,
    *("DiagnosticReport",) * 2,
    "Condition",
    "MedicationRequest",
    "DocumentReference",
    "DocumentReference",
    "Encounter",
    "Patient",
    "AllergyIntolerance",
    "ImagingStudy",
    "Procedure",
)
PHYSICIAN_WRITE: Final = (
    "DocumentReference",
    "MedicationRequest",
    "ServiceRequest",
    "Condition",
    "Observation",
)
EMERGENCY_PURPOSES: Final = (
    "emergency: unconscious patient, history and allergies needed",
    "cardiac arrest in the emergency room",
    "suspected stroke, anticoagulant treatment to check",
    "trauma patient, surgery tonight",
    "septic shock, previous cultures needed",
    "respiratory distress, home oxygen and treatments",
    "unresponsive patient brought by ambulance",
    "urgence vitale : patient inconscient, antécédents",
    "overdose, treatments and psychiatric history needed",
    "restricted record, patient in resuscitation bay",
)
EXPORT_PURPOSES: Final = (
    "referral letter",
    "transfer to another hospital",
    "copy requested by the patient",
    "letter to the general practitioner",
    "multidisciplinary meeting",
)


# Minutes between two tasks, by role: about 50 to 150 record accesses a clinician-day.
_GAPS: Final = {"nurse": (8, 30), "physician": (8, 30), "resident": (7, 28), "lab": (3, 14)}


@dataclass(slots=True)
class Session:
    user: int
    us: str  # '"user":"u12345",'
    net: str  # ',"ip":...,"device":...,"purpose":'
    tail: str  # net + 'null}'
    device: str | None
    ip: str | None


class Work:
    """Generates one day of ordinary work at a time into `rows` (unsorted)."""

    def __init__(
        self,
        world: World,
        rng: random.Random,
        hooks: dict[tuple[int, int], list[Hook]],
        day_hooks: dict[int, list[DayHook]],
        month_end_days: frozenset[int] = frozenset(),
    ) -> None:
        self.month_end_days = month_end_days  # the last two working days of each month
        self.w = world
        self.rng = rng
        self.hooks = hooks
        self.day_hooks = day_hooks
        self.rows: list[Row] = []
        self.us = [f'"user":"{u.id}",' for u in world.users]
        self.uid = [u.id for u in world.users]
        self.pq = [f'"{p.id}"' for p in world.patients]
        # Each worker's own patient record (-1 if none): ordinary work never opens it, so every
        # self-access in the output is a labelled attack.
        self.own = [-1 if u.patient is None else u.patient for u in world.users]
        self.wards = [d.idx for d in world.depts if d.kind in {"ward", "icu"}]
        self.ed = next((d.idx for d in world.depts if d.kind == "ed"), None)
        self.buddy = {d: self.wards[(i + 1) % len(self.wards)] for i, d in enumerate(self.wards)}
        self.by_role: dict[str, Callable[[Session, int, str], int]] = {
            "nurse": self.nurse,
            "physician": self.doctor,
            "resident": self.doctor,
            "secretary": self.secretary,
            "pharmacist": self.pharmacist,
            "lab": self.lab,
            "radiology": self.radiology,
            "billing": self.billing,
            "security_officer": self.security_officer,
        }

    # --- events ----------------------------------------------------------------------------

    def session(self, user: int, device: str | None, ip: str | None) -> Session:
        # Addresses and device names are the simulator's own ASCII: quoted without json.dumps.
        ipq = "null" if ip is None else f'"{ip}"'
        devq = "null" if device is None else f'"{device}"'
        net = f',"ip":{ipq},"device":{devq},"purpose":'
        return Session(user, self.us[user], net, net + "null}", device, ip)

    def raw(self, t: int, user_id: str, members: str, tag: int = -1) -> None:
        self.rows.append((t, user_id, members, tag))

    def ev(
        self,
        t: int,
        s: Session,
        action: str,
        patient: int | None = None,
        rt: str | None = None,
        *,
        count: int = 1,
        outcome: str = "success",
        purpose: str | None = None,
        tag: int = -1,
    ) -> None:
        if tag < 0 and patient is not None and patient == self.own[s.user]:
            return
        pq = "null" if patient is None else self.pq[patient]
        rtq = "null" if rt is None else RT[rt]
        tail = s.tail if purpose is None else s.net + q(purpose) + "}"
        members = (
            f'{s.us}"action":"{action}","outcome":"{outcome}","patient":{pq},'
            f'"resource_type":{rtq},"count":{count}{tail}'
        )
        self.rows.append((t, self.uid[s.user], members, tag))

    def chart(
        self,
        t: int,
        s: Session,
        patient: int,
        reads: int,
        kinds: tuple[str, ...],
        *,
        pace: int = 25,
        tag: int = -1,
    ) -> int:
        """Open a patient's chart: `reads` reads a few seconds apart. Returns the new time."""
        if tag < 0 and patient == self.own[s.user]:
            return t
        head = (
            f'{s.us}"action":"read","outcome":"success","patient":{self.pq[patient]},'
            '"resource_type":'
        )
        end = ',"count":1' + s.tail
        uid, rows, rnd = self.uid[s.user], self.rows, self.rng.random
        n, spread = len(kinds), pace - 1
        # random() arithmetic rather than randint/choice: this loop makes most of the events.
        for _ in range(reads):
            t += 2 + int(rnd() * spread)
            rows.append((t, uid, head + RT[kinds[int(rnd() * n)]] + end, tag))
        return t

    def write(
        self,
        t: int,
        s: Session,
        patient: int,
        rt: str,
        action: str = "create",
        *,
        tag: int = -1,
    ) -> int:
        t += self.rng.randint(20, 240)
        self.ev(t, s, action, patient, rt, tag=tag)
        return t

    def login(self, t: int, user: int, device: str | None, ip: str | None) -> tuple[Session, int]:
        s = self.session(user, device, ip)
        r = self.rng.random()
        if r < 0.035:  # a typo or two, then the right password
            for _ in range(self.rng.choice((1, 1, 1, 2))):
                self.ev(t, s, "login_failed", outcome="denied")
                t += self.rng.randint(4, 25)
        elif r < 0.04:
            self.ev(t, s, "mfa_failed", outcome="denied")
            t += self.rng.randint(10, 40)
        self.ev(t, s, "login")
        return s, t + self.rng.randint(3, 30)

    # --- places ----------------------------------------------------------------------------

    def station(self, user: int, *, roam: float) -> tuple[str, str]:
        u = self.w.users[user]
        rng = self.rng
        if rng.random() < roam:  # another department's workstation
            d = self.w.depts[rng.choice(self.wards + ([self.ed] if self.ed is not None else []))]
        else:
            d = self.w.depts[u.dept]
            if u.stations:
                # Favour the first usual workstation: people have habits.
                pick = u.stations[0] if rng.random() < 0.5 else rng.choice(u.stations)
                return d.stations[pick]
        return rng.choice(d.stations)

    def remote(self, user: int) -> tuple[str | None, str]:
        u = self.w.users[user]
        ip = vpn_ip(self.rng) if self.rng.random() < 0.6 or not u.home_ips else None
        if ip is None:
            ip = self.rng.choice(u.home_ips)
        return u.laptop, ip

    # --- patients at hand ------------------------------------------------------------------

    def ward_patient(self, dept: int, t: int, grace: int = 0) -> int | None:
        day = min(max(t // DAY, 0), self.w.days - 1)
        pool = self.w.inpatients[dept][day]
        if not pool:
            return None
        choice = self.rng.choice
        for _ in range(5):
            p, start, end = choice(pool)
            if start <= t <= end + grace:
                return p
        return None

    def ed_patient(self, t: int) -> int | None:
        day = min(max(t // DAY, 0), self.w.days - 1)
        pool = self.w.ed_by_day[day]
        if not pool:
            return None
        for _ in range(6):
            v = self.rng.choice(pool)
            if v.arrival <= t <= v.departure:
                return v.patient
        return None

    def any_inpatient(self, t: int) -> int | None:
        return self.ward_patient(self.rng.choice(self.wards), t) if self.wards else None

    def order_patient(self, t: int) -> int | None:
        """A patient some department ordered a test for: admitted, in the ED or in clinic."""
        r = self.rng.random()
        if r < 0.3 and self.ed is not None:
            p = self.ed_patient(t)
            if p is not None:
                return p
        if r < 0.85:
            return self.any_inpatient(t)
        day = min(max(t // DAY, 0), self.w.days - 1)
        dept = self.rng.choice(self.w.clinical_depts()).idx
        appts = self.w.appts_by_dept_day.get((dept, day))
        return self.rng.choice(appts).patient if appts else self.any_inpatient(t)

    # --- one day ---------------------------------------------------------------------------

    def day(self, day: int) -> None:
        for u in self.w.users:
            for start, end, kind in u.shifts.get(day, ()):
                self.shift(u.idx, start, end, kind, day)
        self.night_emergencies(day)
        for hook in self.day_hooks.get(day, ()):
            hook(self, day)

    def shift(self, user: int, start: int, end: int, kind: str, day: int) -> None:
        rng = self.rng
        u = self.w.users[user]
        if kind == "oncall":
            self.oncall(user, start, end, day)
            return
        lengths = {
            "nurse": (20, 110),
            "resident": (40, 150),
            "physician": (45, 180),
            "lab": (60, 240),
        }.get(u.role, (80, 260))
        windows: list[tuple[int, int]] = []
        t = start + rng.randint(0, 20) * MINUTE
        while t < end - 15 * MINUTE:
            length = rng.randint(*lengths) * MINUTE
            windows.append((t, min(end, t + length)))
            t += length + rng.randint(3, 35) * MINUTE
        hooks = self.hooks.get((user, day), [])
        carrier = rng.randrange(len(windows)) if windows else -1
        if hooks and carrier < 0:
            windows, carrier = [(start, end)], 0
        roam = 0.08 if u.role == "physician" else 0.03
        gap = _GAPS.get(u.role, (4, 18))
        task = self.by_role[u.role]
        for i, (s_start, s_end) in enumerate(windows):
            device, ip = self.station(user, roam=roam)
            s, t = self.login(s_start, user, device, ip)
            if u.role == "billing" and i == 0 and self.batch_day(day):
                t = self.billing_batch(s, t)
            injected = i != carrier
            while t < s_end:
                if not injected and t > (s_start + s_end) // 2:
                    injected = True
                    for hook in hooks:
                        t = hook(self, s, t)
                t = task(s, t, kind)
                # Quieter between midnight and six in the morning.
                t += rng.randint(*gap) * (MINUTE if t % DAY > 6 * HOUR else 2 * MINUTE)
            if not injected:
                for hook in hooks:
                    t = hook(self, s, t)
            if rng.random() < 0.85:
                self.ev(t + rng.randint(5, 90), s, "logout")

    # --- roles -----------------------------------------------------------------------------

    def nurse(self, s: Session, t: int, _kind: str = "day") -> int:
        rng = self.rng
        dept = self.w.users[s.user].dept
        p = self.ed_patient(t) if dept == self.ed else self.ward_patient(dept, t)
        if p is None:
            return t + rng.randint(5, 20) * MINUTE
        t = self.chart(t, s, p, rng.randint(1, 5), NURSE_READ)
        r = rng.random()
        if r < 0.5:
            t = self.write(t, s, p, "Observation")
        elif r < 0.7:
            t = self.write(t, s, p, "MedicationAdministration")
        elif r < 0.78:
            t = self.write(t, s, p, "CarePlan", "update")
        elif r < 0.79:  # a measurement entered on the wrong chart, removed
            t = self.write(t, s, p, "Observation", "delete")
        return t

    def doctor(self, s: Session, t: int, kind: str) -> int:
        rng = self.rng
        w = self.w
        u = w.users[s.user]
        day = min(max(t // DAY, 0), w.days - 1)
        appts = w.appts_by_user_day.get((s.user, day))
        if appts and kind == "day":
            due = [a for a in appts if a.time - 20 * MINUTE <= t <= a.time + 40 * MINUTE]
            if due:
                a = rng.choice(due)
                t = self.chart(t, s, a.patient, rng.randint(3, 9), PHYSICIAN_READ)
                t = self.write(t, s, a.patient, "DocumentReference")
                if rng.random() < 0.3:
                    t = self.write(t, s, a.patient, rng.choice(PHYSICIAN_WRITE))
                return t
        r = rng.random()
        dept = u.dept
        if kind == "night" and r < 0.25 and self.ed is not None:
            # Night admissions come up from the emergency room.
            p = self.ed_patient(t)
        elif r < 0.08 and u.role == "physician" and len(self.wards) > 1:
            # A consult on another department's patient: no care link is ever recorded.
            other = rng.choice([d for d in self.wards if d != dept])
            p = self.ward_patient(other, t)
            if p is not None:
                t = self.chart(t, s, p, rng.randint(3, 9), PHYSICIAN_READ)
                return self.write(t, s, p, "DocumentReference")
        elif r < 0.12 and s.user in w.longterm:
            p = rng.choice(w.longterm[s.user])
            return self.chart(t, s, p, rng.randint(2, 5), ("DiagnosticReport", "Observation"))
        elif r < 0.15:
            # Discharge letters are finished after the patient left.
            p = self.ward_patient(dept, t, grace=3 * DAY)
            if p is not None:
                t = self.chart(t, s, p, rng.randint(2, 6), PHYSICIAN_READ)
                return self.write(t, s, p, "DocumentReference")
        elif r < 0.17 and u.role == "physician":
            p = self.ward_patient(dept, t) or (
                rng.choice(w.longterm[s.user]) if s.user in w.longterm else None
            )
            if p is not None:
                t += rng.randint(30, 300)
                self.ev(
                    t,
                    s,
                    "export",
                    p,
                    "Bundle",
                    count=rng.randint(3, 25),
                    purpose=rng.choice(EXPORT_PURPOSES),
                )
                return t
        if dept == self.ed:
            p = self.ed_patient(t)
        elif kind == "night" and rng.random() < 0.3:
            p = self.ward_patient(self.buddy.get(dept, dept), t)  # cross-cover at night
        else:
            p = self.ward_patient(dept, t)
        if p is None:
            return t + rng.randint(5, 25) * MINUTE
        t = self.chart(t, s, p, rng.randint(2, 9), PHYSICIAN_READ)
        if rng.random() < 0.35:
            t = self.write(t, s, p, rng.choice(PHYSICIAN_WRITE))
        return t

    def secretary(self, s: Session, t: int, _kind: str = "day") -> int:
        rng = self.rng
        dept = self.w.users[s.user].dept
        day = min(max(t // DAY, 0), self.w.days - 1)
        r = rng.random()
        bookings = self.w.bookings_by_dept_day.get((dept, day))
        today = self.w.appts_by_dept_day.get((dept, day))
        if r < 0.4 and bookings:
            a = rng.choice(bookings)
            self.ev(t, s, "search", None, "Patient", count=rng.randint(1, 30))
            t = self.chart(t + 10, s, a.patient, rng.randint(1, 2), ("Patient", "Coverage"))
            return self.write(t, s, a.patient, "Appointment")
        if r < 0.8 and today:
            a = rng.choice(today)
            t = self.chart(t, s, a.patient, rng.randint(1, 3), ("Patient", "Appointment"))
            # Most visits are checked in; a few are cancelled.
            action = "delete" if rng.random() < 0.05 else "update"
            return self.write(t, s, a.patient, "Appointment", action)
        if r < 0.85 and today:
            a = rng.choice(today)
            t += rng.randint(20, 200)
            self.ev(
                t,
                s,
                "export",
                a.patient,
                "DocumentReference",
                count=rng.randint(1, 3),
                purpose="letter to the referring physician",
            )
            return t
        self.ev(
            t, s, "search", None, rng.choice(("Patient", "Appointment")), count=rng.randint(0, 40)
        )
        return t + rng.randint(60, 600)

    def pharmacist(self, s: Session, t: int, _kind: str = "day") -> int:
        rng = self.rng
        p = self.any_inpatient(t)
        if p is None:
            return t + 10 * MINUTE
        t = self.chart(
            t, s, p, rng.randint(2, 5), ("MedicationRequest", "AllergyIntolerance", "Observation")
        )
        if rng.random() < 0.35:
            t = self.write(t, s, p, "MedicationRequest", "update")
        if rng.random() < 0.4:
            t = self.write(t, s, p, "MedicationDispense")
        return t

    def lab(self, s: Session, t: int, _kind: str = "day") -> int:
        rng = self.rng
        p = self.order_patient(t)
        if p is None:
            return t + 10 * MINUTE
        t = self.chart(t, s, p, rng.randint(1, 3), ("ServiceRequest", "Specimen", "Patient"))
        for _ in range(rng.randint(1, 5)):
            t = self.write(t, s, p, "Observation")
        if rng.random() < 0.3:
            t = self.write(t, s, p, "DiagnosticReport")
        return t

    def radiology(self, s: Session, t: int, _kind: str = "day") -> int:
        rng = self.rng
        p = self.order_patient(t)
        if p is None:
            return t + 15 * MINUTE
        t = self.chart(t, s, p, rng.randint(2, 5), ("ServiceRequest", "ImagingStudy", "Patient"))
        t += rng.randint(120, 900)
        return self.write(t, s, p, "DiagnosticReport")

    def billing(self, s: Session, t: int, _kind: str = "day") -> int:
        rng = self.rng
        p = self.billable(t)
        if p is None:
            return t + 15 * MINUTE
        t = self.chart(t, s, p, rng.randint(2, 5), ("Encounter", "Claim", "Coverage", "Procedure"))
        if rng.random() < 0.5:
            t = self.write(t, s, p, "Claim")
        return t

    def security_officer(self, s: Session, t: int, _kind: str = "day") -> int:
        rng = self.rng
        self.ev(t, s, "search", None, "AuditEvent", count=rng.randint(5, 800))
        if rng.random() < 0.1:
            # Looking into a complaint: the audit trail of one patient.
            p = self.any_inpatient(t) or rng.randrange(len(self.w.patients))
            t = self.chart(t + 30, s, p, rng.randint(1, 3), ("AuditEvent",))
        return t + rng.randint(5, 40) * MINUTE

    def billable(self, t: int) -> int | None:
        day = min(max(t // DAY, 0), self.w.days - 1)
        back = self.rng.randint(1, min(14, max(1, day)))
        pool = self.w.discharged_by_day[max(0, day - back)]
        return self.rng.choice(pool).patient if pool else None

    # --- special work ----------------------------------------------------------------------

    def batch_day(self, day: int) -> bool:
        """Billing batches: every Friday, and the last two working days of each month."""
        weekday = self.w.weekday(day)
        if weekday == 4:
            return True
        if weekday >= 5:
            return False
        return day in self.month_end_days

    def billing_batch(self, s: Session, t: int) -> int:
        """A clerk submits claims: a search, then hundreds of records in a few dozen minutes."""
        rng = self.rng
        day = min(max(t // DAY, 0), self.w.days - 1)
        big = day in self.month_end_days
        n = rng.randint(150, 600) if big else rng.randint(30, 140)
        pool = [
            v.patient for d in range(max(0, day - 30), day + 1) for v in self.w.discharged_by_day[d]
        ]
        pool += [
            a.patient
            for (_u, d), appts in self.w.appts_by_user_day.items()
            if day - 30 <= d < day
            for a in appts
        ][: 4 * n]
        if not pool:
            return t
        self.ev(t, s, "search", None, "Encounter", count=n)
        seen = rng.sample(pool, min(n, len(pool)))
        for p in seen:
            t = self.chart(t, s, p, rng.choice((1, 1, 2)), ("Encounter", "Claim"), pace=6)
        t += rng.randint(30, 300)
        self.ev(t, s, "export", None, "Claim", count=len(seen), purpose="claims submission")
        return t + rng.randint(60, 300)

    def oncall(self, user: int, start: int, end: int, day: int) -> None:
        """A physician on call at home: a few calls a night, from the laptop or on site."""
        rng = self.rng
        u = self.w.users[user]
        t = start
        for _ in range(rng.choice((0, 1, 1, 2, 2, 3))):
            t = rng.randint(t, max(t, end - HOUR))
            if u.laptop and rng.random() < 0.7:
                device, ip = self.remote(user)
            else:
                device, ip = self.station(user, roam=0.3)
            s, t = self.login(t, user, device, ip)
            for _ in range(rng.randint(1, 3)):
                dept = u.dept if rng.random() < 0.6 else self.buddy.get(u.dept, u.dept)
                p = self.ward_patient(dept, t) if u.role != "radiology" else self.order_patient(t)
                if p is None:
                    continue
                t = self.chart(t, s, p, rng.randint(2, 8), PHYSICIAN_READ)
                if u.role == "radiology":
                    t = self.write(t, s, p, "DiagnosticReport")
            if rng.random() < 0.8:
                self.ev(t + rng.randint(10, 120), s, "logout")
            t += HOUR
        del day

    def night_emergencies(self, day: int) -> None:
        """Legitimate break-the-glass: a doctor on duty called to a patient in the emergency
        room at night, whose record is outside the doctor's own department."""
        rng = self.rng
        duty = [
            (u.idx, s, e)
            for u in self.w.users
            if u.role in {"physician", "resident"}
            for s, e, kind in u.shifts.get(day, ())
            if kind in {"night", "oncall"}
        ]
        if not duty or self.ed is None:
            return
        for _ in range(rng.choice((0, 1, 1, 1, 2))):
            user, start, end = rng.choice(duty)
            t = rng.randint(start, end - HOUR)
            p = self.ed_patient(t)
            if p is None:
                continue
            u = self.w.users[user]
            device, ip = (
                self.remote(user)
                if u.laptop and rng.random() < 0.3
                else (self.station(user, roam=0.9))
            )
            s, t = self.login(t, user, device, ip)
            self.ev(t, s, "break_glass", p, "Patient", purpose=rng.choice(EMERGENCY_PURPOSES))
            t = self.chart(t + 5, s, p, rng.randint(4, 15), PHYSICIAN_READ)
            if rng.random() < 0.5:
                t = self.write(t, s, p, rng.choice(PHYSICIAN_WRITE))
            self.ev(t + rng.randint(30, 300), s, "logout")


def remote_device(rng: random.Random) -> tuple[str, str]:
    """Where an outsider connects from: an unknown laptop and an outside address."""
    return f"laptop-{rng.getrandbits(24):06x}", public_ip(rng)

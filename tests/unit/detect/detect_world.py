"""A small, hand-written hospital for the detection tests: departments, staff, admissions with
care links, a month of ordinary work (with its legitimate noise: consults, laboratory and
pharmacy across departments, billing batches, night emergencies), and helpers that inject one
attack at a time. Deterministic for a seed. Not the simulator: tests state their own cases.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import astuple, dataclass, field
from typing import Any

from egide.detect.events import Context, context_from_json
from egide.detect.features import Failure, StreamState

START = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
CLINICAL = ("cardiology", "internal_medicine", "surgery", "emergency")
SERVICE = {"laboratory": "lab_tech", "pharmacy": "pharmacist", "billing": "billing_clerk"}


def stamp(day: int, hour: float) -> str:
    return (START + dt.timedelta(days=day, hours=hour)).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class World:
    rng: random.Random
    days: int
    users: list[dict[str, Any]] = field(default_factory=list)
    patients: list[dict[str, Any]] = field(default_factory=list)
    care: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    # day -> dept -> admitted patient ids
    admitted: dict[int, dict[str, list[str]]] = field(default_factory=dict)
    seq: int = 0

    def context(self) -> Context:
        return context_from_json(self.context_json())

    def context_json(self) -> dict[str, Any]:
        return {"users": self.users, "patients": self.patients, "care": self.care}

    def event(self, user: dict[str, Any], day: int, hour: float, action: str, **extra: Any) -> str:
        self.seq += 1
        eid = extra.pop("id", None) or f"ev{self.seq:08d}"
        record = {
            "id": eid,
            "time": stamp(day, hour),
            "user": user["id"],
            "action": action,
            "outcome": "success",
            "patient": None,
            "resource_type": None,
            "count": 1,
            "ip": user["_ip"],
            "device": user["_device"],
            "purpose": None,
        }
        record.update(extra)
        self.events.append(record)
        return eid

    def sorted_events(self) -> list[dict[str, Any]]:
        return sorted(self.events, key=lambda e: (e["time"], e["id"]))

    def user(self, dept: str, role: str | None = None, n: int = 0) -> dict[str, Any]:
        found = [u for u in self.users if u["department"] == dept and role in (None, u["role"])]
        return found[n]

    def some_patient_not_in_care(self) -> dict[str, Any]:
        cared = {c["patient"] for c in self.care}
        return next(p for p in self.patients if p["id"] not in cared and not p["vip"])


def build(seed: int = 7, days: int = 28, staff_per_dept: int = 8, patients: int = 1500) -> World:
    rng = random.Random(seed)
    world = World(rng, days)
    surnames = ["Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand"]
    for dept in (*CLINICAL, *SERVICE):
        for k in range(staff_per_dept):
            role = SERVICE.get(dept) or ("physician" if k < staff_per_dept // 2 else "nurse")
            uid = f"u-{dept[:4]}-{k}"
            world.users.append(
                {
                    "id": uid,
                    "role": role,
                    "department": dept,
                    "family_name": rng.choice(surnames) if k % 2 else f"Staff{dept[:3]}{k}",
                    "postal_code": f"750{k % 20:02d}",
                    "address": f"{k + 1} rue du personnel {dept}",
                    "_ip": f"10.{len(world.users) // 200}.{len(world.users) % 200}.{k + 10}",
                    "_device": f"ws-{dept[:4]}-{k}",
                }
            )
    for i in range(patients):
        world.patients.append(
            {
                "id": f"pat-{i:05d}",
                "family_name": rng.choice(surnames) if i % 3 else f"Name{i}",
                "postal_code": f"69{i % 90:03d}",
                "address": f"{i} avenue des patients",
                "vip": i % 500 == 7,
                "employee": None,
                "deceased": False,
            }
        )
    # Admissions: every clinical department keeps ~12 patients, stays of 2-6 days.
    pool = [p["id"] for p in world.patients[: patients * 2 // 3]]
    rng.shuffle(pool)
    current: dict[str, list[tuple[str, int]]] = {d: [] for d in CLINICAL}
    for day in range(days):
        world.admitted[day] = {}
        for dept in CLINICAL:
            current[dept] = [(p, end) for p, end in current[dept] if end >= day]
            while len(current[dept]) < 12 and pool:
                pid = pool.pop()
                stay = rng.randint(2, 6)
                current[dept].append((pid, day + stay))
                attending = world.user(dept, "physician", rng.randrange(staff_per_dept // 2))
                start, end = stamp(day, 7), stamp(day + stay, 12)
                world.care.append({"patient": pid, "department": dept, "start": start, "end": end})
                world.care.append(
                    {"patient": pid, "user": attending["id"], "start": start, "end": end}
                )
            world.admitted[day][dept] = [p for p, _ in current[dept]]
    for day in range(days):
        _ordinary_day(world, day)
    return world


def _ordinary_day(world: World, day: int) -> None:
    rng = world.rng
    weekday = (START + dt.timedelta(days=day)).weekday()
    everyone = [p for d in CLINICAL for p in world.admitted[day][d]]
    for user in world.users:
        if weekday >= 5 and rng.random() < 0.6:
            continue
        dept, role = user["department"], user["role"]
        begin = rng.uniform(7, 9)
        world.event(user, day, begin, "login")
        hour = begin
        if dept in CLINICAL:
            mine = world.admitted[day][dept]
            for pid in rng.sample(mine, min(len(mine), rng.randint(6, 10))):
                for _ in range(rng.randint(2, 5)):
                    hour += rng.uniform(0.02, 0.1)
                    world.event(user, day, hour, "read", patient=pid, resource_type="Observation")
                if role == "nurse" and rng.random() < 0.5:
                    world.event(user, day, hour, "update", patient=pid, resource_type="Observation")
            if dept == "cardiology" and role == "physician":
                # Consults on other wards' patients: no care link, daily work of cardiology.
                others = [p for d in CLINICAL if d != dept for p in world.admitted[day][d]]
                for pid in rng.sample(others, 2):
                    hour += 0.2
                    world.event(user, day, hour, "read", patient=pid, resource_type="Condition")
        elif dept in {"laboratory", "pharmacy"}:
            for pid in rng.sample(everyone, min(len(everyone), rng.randint(8, 14))):
                hour += rng.uniform(0.05, 0.2)
                world.event(user, day, hour, "read", patient=pid, resource_type="Observation")
        elif dept == "billing":
            discharged = [c["patient"] for c in world.care if c["end"] and c["end"] < stamp(day, 0)]
            for pid in rng.sample(discharged, min(len(discharged), 6)):
                hour += 0.2
                world.event(user, day, hour, "read", patient=pid, resource_type="Claim")
            if day == world.days - 2:
                # Month-end batch: every clerk exports the month's claims.
                for k in range(30):
                    world.event(user, day, hour + k / 60, "export", count=8, purpose="billing")
        world.event(user, day, hour + 0.1, "logout")
    # A night emergency: an ED physician breaks the glass with a reason; admission follows.
    if day % 5 == 2:
        ed = world.user("emergency", "physician", day % 4)
        pid = world.patients[patients_tail(world, day)]["id"]
        world.event(ed, day, 2.5, "break_glass", patient=pid, purpose="cardiac arrest in ED")
        world.event(ed, day, 2.6, "read", patient=pid)
        world.care.append(
            {"patient": pid, "department": "emergency", "start": stamp(day, 3), "end": None}
        )


def patients_tail(world: World, day: int) -> int:
    return len(world.patients) - 1 - day


def line_event(i: int, **changes: object) -> dict[str, object]:
    """Event `i` of a small synthetic file (three users, seven patients, five actions, one
    day), with `changes` applied: the reading tests' common line."""
    event: dict[str, object] = {
        "id": f"e{i}",
        "time": f"2026-03-02T10:{i % 60:02d}:{(7 * i) % 60:02d}Z",
        "user": f"u{i % 3}",
        "action": ("read", "login", "update", "export", "login_failed")[i % 5],
        "outcome": "success",
        "patient": f"p{i % 7}",
        "resource_type": "Observation",
        "count": 1 + i % 4,
        "ip": f"10.0.{i % 2}.{i % 5}",
        "device": f"ws-{i % 4}",
        "purpose": None,
    }
    event.update(changes)
    return event


def typed(value: object) -> object:
    """`value` with the type of every part beside it (sets and dicts sorted), so that two views are
    equal only when their parts are of the same types too: 1 == 1.0 and a tuple read back as
    a list would otherwise pass unseen."""
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, [typed(v) for v in value])
    if isinstance(value, (set, frozenset)):
        return (type(value).__name__, sorted((typed(v) for v in value), key=repr))
    if isinstance(value, dict):  # a lookup: its order is not part of the state
        return ("dict", sorted(((typed(k), typed(v)) for k, v in value.items()), key=repr))
    if isinstance(value, Failure):
        return ("Failure", typed(astuple(value)))
    return (type(value).__name__, value)


def state_view(state: StreamState) -> object:
    """Everything in the state, in order (dict order included), with its types (`typed`)."""
    view = (
        [
            (
                key,
                ud.n,
                ud.records,
                ud.hours,
                ud.other,
                [(p, x.first, x.last, x.t0, x.t1, x.ids) for p, x in ud.pairs.items()],
                [
                    (k, s.device, s.ip, s.ips, s.first, s.last, s.t0, s.t1, s.ids, s.n, s.patients)
                    for k, s in ud.sessions.items()
                ],
                ud.exports,
                ud.writes,
                ud.break_glass,
                ud.auth,
            )
            for key, ud in state.days.items()
        ],
        {user: (ud.user, ud.day) for user, ud in state.current.items()},
        state.failures,
        state.events,
        state.unknown_actions,
        state.first_ts,
        state.last_ts,
    )
    return typed(view)

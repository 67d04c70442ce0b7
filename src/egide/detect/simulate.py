"""A seeded simulator of a hospital's access events, with labelled attacks.

For demos, tests and tuning of the detectors (`egide simulate`). Security role: it is the ground
truth behavioural detection is measured against, so ordinary work is noisy on purpose (consults
and night cover without a care link, laboratory, radiology and pharmacy reading across
departments, billing batches, emergency break-the-glass, surnames shared by strangers) and the
attacks range from blatant to quiet. Same arguments, same bytes: one seed drives every choice.
Standard library only; the hospital is built in `simulate_world`, its ordinary work in
`simulate_work`, the attacks in `simulate_attacks`.

`write_simulation(simulate(...), out_dir)` writes four files:

* `events.jsonl` (or `events.jsonl.gz`): access events in the DESIGN.md format, in time order,
  ids `e1`, `e2`... in that order. Times are UTC (`Z`), to the second; the
  hospital's clock is taken to be UTC. Day 0 starts at midnight of `start`'s date.
* `context.json`: the detection context (users, patients, care) in the DESIGN.md format.
  Departments are named (`cardiology`, `laboratory`...). Care comes from admissions (the
  department and the attending physician), emergency visits (the emergency department, and half
  the time the emergency physician), appointments (the physician and the department, from the
  day of booking to 30 days after the visit) and long-term follow-up (the physician, `end`
  null). Laboratory, radiology, pharmacy and billing staff have no care entries, as in most real
  hospitals: they read the patients other departments treat. Consults, night cross-cover, nurses
  floating to another ward and discharge letters written after discharge have none either.
* `labels.jsonl`: one JSON object per injected attack, in injection order::

    {"id": "a0001", "kind": "snooping", "variant": "plain", "user": "u12345" | null,
     "patient": "p1234567" | null, "start": "2026-03-04T10:12:40Z", "end": "...",
     "events": ["e12345", ...], "description": "plain sentence"}

  `kind` is one of `ATTACK_KINDS` (the DESIGN.md alert kinds); `variant` refines it (brute force
  is `credential_stuffing` with variant `brute_force`; exfiltration is `burst` or `slow`);
  `user` is the account misused (null for credential stuffing over many accounts); `patient` the
  one victim, null when there are many; `start`/`end` the first and last evidence event; `events`
  every event the attack produced, and only those.
* `meta.json`: `{"format": "egide-simulation/1", "users", "patients", "days", "seed", "start",
  "end", "events", "attacks", "attacks_by_kind", "user_days"}` where `user_days` counts the
  distinct (user, day) pairs with at least one event (the denominator of alert volume).
"""

from __future__ import annotations

import calendar
import datetime as dt
import gzip
import json
import random
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any, Final

from egide.detect.simulate_attacks import ATTACK_KINDS, Attack, Plan, plan_attacks
from egide.detect.simulate_work import FastRandom, Row, Work
from egide.detect.simulate_world import DAY, World, build_world

__all__ = [
    "ATTACK_KINDS",
    "LIMITS",
    "Simulation",
    "SimulationSummary",
    "simulate",
    "write_simulation",
]

FORMAT: Final = "egide-simulation/1"
DEFAULT_START: Final = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)  # a Monday
# Bounds of the arguments: small enough hospitals still need every role and attack kind.
LIMITS: Final = {
    "users": (30, 50_000),
    "patients": (200, 5_000_000),
    "days": (1, 3_650),
}
_HMS: Final = tuple(
    f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)
)


def _rfc3339(origin: dt.datetime, seconds: int) -> str:
    return (origin + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Simulation:
    """A planned hospital: the context is fixed; events are produced when iterated."""

    users: int
    patients: int
    days: int
    seed: int
    start: dt.datetime  # midnight UTC of day 0
    world: World
    plan: Plan
    progress: Callable[[int], None] | None = None
    labels: list[dict[str, Any]] = field(default_factory=list)  # filled by a complete run
    user_days: int = 0
    events: int = 0

    @property
    def attacks(self) -> list[Attack]:
        return self.plan.attacks

    def context(self) -> dict[str, Any]:
        w, origin = self.world, self.start
        users = [
            {
                "id": u.id,
                "role": u.role,
                "department": w.depts[u.dept].name,
                "family_name": u.family_name,
                "postal_code": u.postal_code,
                "address": u.address,
            }
            for u in w.users
        ]
        patients = [
            {
                "id": p.id,
                "family_name": p.family_name,
                "postal_code": p.postal_code,
                "address": p.address,
                "vip": p.vip,
                "employee": None if p.employee is None else w.users[p.employee].id,
                "deceased": p.deceased,
            }
            for p in w.patients
        ]
        care: list[dict[str, Any]] = []
        for c in w.care:
            entry: dict[str, Any] = {"patient": w.patients[c.patient].id}
            if c.user is not None:
                entry["user"] = w.users[c.user].id
            else:
                assert c.dept is not None
                entry["department"] = w.depts[c.dept].name
            entry["start"] = _rfc3339(origin, c.start)
            entry["end"] = None if c.end is None else _rfc3339(origin, c.end)
            care.append(entry)
        return {"users": users, "patients": patients, "care": care}

    def lines(self) -> Iterator[list[str]]:
        """The event lines (with their newline), one list per day, in time order.

        A complete iteration also fills `labels`, `user_days` and `events`; every iteration
        starts afresh and yields the same lines.
        """
        rng = FastRandom(f"egide-simulate:{self.seed}:work")
        work = Work(self.world, rng, self.plan.hooks, self.plan.day_hooks, _month_ends(self))
        evidence: list[list[str]] = [[] for _ in self.plan.attacks]
        first: list[int | None] = [None] * len(self.plan.attacks)
        last: list[int] = [0] * len(self.plan.attacks)
        carry: list[Row] = []
        number = 0
        user_days = 0
        key, user_of, tag_of = itemgetter(0), itemgetter(1), itemgetter(3)
        for day in range(self.days):
            work.rows = carry
            work.day(day)
            rows = work.rows
            rows.sort(key=key)
            cut = bisect_left(rows, (day + 1) * DAY, key=key)
            carry = rows[cut:]
            base = day * DAY
            prefix = '","time":"' + (self.start + dt.timedelta(days=day)).strftime("%Y-%m-%dT")
            today = rows[:cut]
            out = [
                f'{{"id":"e{n}{prefix}{_HMS[t - base]}Z",{members}\n'
                for n, (t, _user, members, _tag) in enumerate(today, start=number + 1)
            ]
            for i, tag in enumerate(map(tag_of, today)):
                if tag >= 0:  # evidence of an attack: rare
                    t = today[i][0]
                    evidence[tag].append(f"e{number + 1 + i}")
                    if first[tag] is None:
                        first[tag] = t
                    last[tag] = t
            number += len(today)
            seen = set(map(user_of, today))
            user_days += len(seen)
            if self.progress is not None:
                self.progress(day + 1)
            yield out
        self.events = number
        self.user_days = user_days
        self.labels = [
            {
                "id": f"a{a.tag + 1:04d}",
                "kind": a.kind,
                "variant": a.variant,
                "user": a.user,
                "patient": a.patient,
                "start": _rfc3339(self.start, start),
                "end": _rfc3339(self.start, last[a.tag]),
                "events": evidence[a.tag],
                "description": a.description,
            }
            for a in self.plan.attacks
            if (start := first[a.tag]) is not None
        ]

    def materialise(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Every event as a dict, and the labels: for tests and small simulations."""
        events = [json.loads(line) for day in self.lines() for line in day]
        return events, self.labels

    def meta(self) -> dict[str, Any]:
        kinds = Counter(label["kind"] for label in self.labels)
        return {
            "format": FORMAT,
            "users": self.users,
            "patients": self.patients,
            "days": self.days,
            "seed": self.seed,
            "start": _rfc3339(self.start, 0),
            "end": _rfc3339(self.start, self.days * DAY),
            "events": self.events,
            "attacks": len(self.labels),
            "attacks_by_kind": {k: kinds[k] for k in ATTACK_KINDS if kinds[k]},
            "user_days": self.user_days,
        }


def _month_ends(sim: Simulation) -> frozenset[int]:
    """Day indexes of the last two working days of every month in the period."""
    ends: set[int] = set()
    for day in range(sim.days):
        date = (sim.start + dt.timedelta(days=day)).date()
        last = calendar.monthrange(date.year, date.month)[1]
        working_left = sum(
            1
            for d in range(date.day + 1, last + 1)
            if dt.date(date.year, date.month, d).weekday() < 5
        )
        if date.weekday() < 5 and working_left < 2:
            ends.add(day)
    return frozenset(ends)


def check_arguments(*, users: int, patients: int, days: int) -> None:
    for name, value in (("users", users), ("patients", patients), ("days", days)):
        low, high = LIMITS[name]
        if not low <= value <= high:
            msg = f"--{name} must be between {low} and {high}, got {value}"
            raise ValueError(msg)


def simulate(
    *,
    users: int,
    patients: int,
    days: int,
    seed: int,
    start: dt.datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> Simulation:
    """Plan a hospital of `users` staff and `patients` patients over `days` days.

    The plan (context and attacks) is built now; events come from `Simulation.lines()` or
    `write_simulation`. `progress` is called with the number of days done. `start` is taken in
    UTC and truncated to its date. Raises ValueError on arguments outside `LIMITS`.
    """
    check_arguments(users=users, patients=patients, days=days)
    origin = (start or DEFAULT_START).astimezone(dt.UTC)
    origin = dt.datetime(origin.year, origin.month, origin.day, tzinfo=dt.UTC)
    world = build_world(
        random.Random(f"egide-simulate:{seed}:world"),  # noqa: S311 - simulation only
        users=users,
        patients=patients,
        days=days,
        first_weekday=origin.weekday(),
    )
    plan_rng = random.Random(f"egide-simulate:{seed}:attacks")  # noqa: S311 - simulation only
    plan = plan_attacks(plan_rng, world)
    return Simulation(users, patients, days, seed, origin, world, plan, progress)


@dataclass(frozen=True)
class SimulationSummary:
    events: int
    attacks_by_kind: dict[str, int]
    user_days: int
    events_path: Path
    context_path: Path
    labels_path: Path
    meta_path: Path


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def write_simulation(
    sim: Simulation,
    out_dir: Path,
    *,
    compress: bool = False,
    progress: Callable[[int], None] | None = None,
) -> SimulationSummary:
    """Write events, context, labels and meta into `out_dir` (created if needed).

    With `compress`, events go to `events.jsonl.gz` (deterministic: no name or time in the
    gzip header). `progress`, when given, replaces the simulation's own callback.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if progress is not None:
        sim.progress = progress
    events_path = out_dir / ("events.jsonl.gz" if compress else "events.jsonl")
    stale = out_dir / ("events.jsonl" if compress else "events.jsonl.gz")
    if stale.exists():  # never leave the other flavour of an earlier run next to this one
        stale.unlink()
    with events_path.open("wb") as raw:
        if compress:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=3) as z:
                for day in sim.lines():
                    z.write("".join(day).encode())
        else:
            for day in sim.lines():
                raw.write("".join(day).encode())
    context_path = out_dir / "context.json"
    context_path.write_text(_dump(sim.context()) + "\n", encoding="utf-8")
    labels_path = out_dir / "labels.jsonl"
    labels_path.write_text("".join(_dump(label) + "\n" for label in sim.labels), encoding="utf-8")
    meta_path = out_dir / "meta.json"
    meta = sim.meta()
    meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return SimulationSummary(
        events=sim.events,
        attacks_by_kind=dict(meta["attacks_by_kind"]),
        user_days=sim.user_days,
        events_path=events_path,
        context_path=context_path,
        labels_path=labels_path,
        meta_path=meta_path,
    )

"""Labelled misuse injected into the simulated hospital's ordinary work.

Part of the simulator (`egide.detect.simulate`). `plan_attacks` picks attackers, victims and days
up front from the hospital plan and returns hooks: insider attacks run inside one of the
attacker's real sessions (same workstation, same shift, between ordinary tasks), outsider attacks
open sessions of their own. Every event an attack produces carries the attack's tag, so the
labels name exactly the evidence. Security role: this is the ground truth detectors are scored
against; attacks vary in intensity (one read of a neighbour's chart, or two hundred records in
ten minutes) so that a detector tuned here learns the behaviours, not a threshold.

Every attack keeps at least one signal a careful reviewer could point at (no care link, a
family name shared with the reader, an unknown device, a burst), because the labels claim that
the events are misuse; subtle means quiet, not invisible.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from egide.detect.simulate_work import DayHook, Hook, Session, Work, remote_device
from egide.detect.simulate_world import DAY, HOUR, World, public_ip, vpn_ip

ATTACK_KINDS: Final = (
    "snooping",
    "vip",
    "coworker",
    "family",
    "self_access",
    "exfiltration",
    "stolen_credentials",
    "credential_stuffing",
    "mass_modification",
    "break_glass_abuse",
)
# Cases per 1000 user-days (at least one of each kind is always injected). Kept low: a real
# hospital has few incidents, and a privacy officer reviews a handful of alerts a day.
_RATES: Final = {
    "snooping": 0.5,
    "vip": 0.25,
    "coworker": 0.25,
    "family": 0.25,
    "self_access": 0.25,
    "exfiltration/burst": 0.2,
    "exfiltration/slow": 0.2,
    "stolen_credentials": 0.25,
    "credential_stuffing/stuffing": 0.2,
    "credential_stuffing/brute_force": 0.2,
    "mass_modification": 0.2,
    "break_glass_abuse": 0.25,
}
CURIOUS_READ: Final = (
    "Patient",
    "Patient",
    "Encounter",
    "Condition",
    "DocumentReference",
    "Observation",
    "DiagnosticReport",
)
WEAK_PURPOSES: Final = ("", "check", "verification", "info", "needed", "access", "test", "x")
READERS: Final = ("nurse", "secretary", "resident", "physician", "pharmacist", "lab", "radiology")


@dataclass(slots=True)
class Attack:
    tag: int
    kind: str
    variant: str
    user: str | None
    patient: str | None
    description: str


@dataclass(slots=True)
class Plan:
    attacks: list[Attack]
    hooks: dict[tuple[int, int], list[Hook]]
    day_hooks: dict[int, list[DayHook]]


class _Planner:
    def __init__(self, rng: random.Random, world: World) -> None:
        self.rng = rng
        self.w = world
        self.plan = Plan([], {}, {})
        self.used: set[int] = set()
        self._work_days: dict[int, list[int]] = {}
        days = world.days
        self.first = min(days // 5, 5)
        self.last = max(self.first + 1, days - (1 if days > 2 else 0))
        self.user_days = sum(1 for u in world.users for d in range(days) if u.shifts.get(d))

    def count(self, key: str) -> int:
        return max(1, round(_RATES[key] * self.user_days / 1000))

    def new(self, kind: str, variant: str, user: int | None, patient: int | None, text: str) -> int:
        tag = len(self.plan.attacks)
        self.plan.attacks.append(
            Attack(
                tag,
                kind,
                variant,
                None if user is None else self.w.users[user].id,
                None if patient is None else self.w.patients[patient].id,
                text,
            )
        )
        return tag

    def hook(self, user: int, day: int, fn: Hook) -> None:
        self.plan.hooks.setdefault((user, day), []).append(fn)

    def day_hook(self, day: int, fn: DayHook) -> None:
        self.plan.day_hooks.setdefault(day, []).append(fn)

    def work_days(self, user: int) -> list[int]:
        cached = self._work_days.get(user)
        if cached is None:
            u = self.w.users[user]
            cached = self._work_days[user] = [d for d in range(self.first, self.last) if u.works(d)]
        return cached

    def insider(
        self, roles: Sequence[str], *, where: Callable[[int], bool] = lambda _u: True
    ) -> int | None:
        pool = [
            u.idx
            for u in self.w.users
            if u.role in roles and u.idx not in self.used and self.work_days(u.idx) and where(u.idx)
        ]
        if not pool:
            return None
        user = self.rng.choice(pool)
        self.used.add(user)
        return user

    def unlinked(self, patient: int, user: int, day: int) -> bool:
        return not self.w.has_link(patient, user, day * DAY - DAY, day * DAY + 2 * DAY)

    def stranger(self, user: int, day: int, *, admitted_elsewhere: bool) -> int | None:
        """A patient the user has no reason to open: not family, not a colleague."""
        w, rng = self.w, self.rng
        u = w.users[user]
        if admitted_elsewhere:
            depts = [d for d in range(len(w.depts)) if d != u.dept and w.inpatients[d][day]]
            if depts:
                for _ in range(20):
                    p, _s, _e = rng.choice(w.inpatients[rng.choice(depts)][day])
                    if self._plain(p, user) and self.unlinked(p, user, day):
                        return p
        for _ in range(200):
            p = rng.randrange(len(w.patients))
            if self._plain(p, user) and not w.under_care(p, day * DAY - DAY, day * DAY + 2 * DAY):
                return p
        return None

    def _plain(self, p: int, user: int) -> bool:
        pat, u = self.w.patients[p], self.w.users[user]
        return not (
            pat.vip
            or pat.deceased
            or pat.employee is not None
            or pat.family_name == u.family_name
            or (pat.address == u.address and pat.postal_code == u.postal_code)
        )

    # --- insiders reading what they should not ------------------------------------------

    def curious(self, kind: str, user: int, day: int, p: int, *, text: str, variant: str) -> None:
        tag = self.new(kind, variant, user, p, text)
        reads = self.rng.choice((1, 2, 3, 3, 4, 5, 6, 8))
        search = self.rng.random() < 0.5
        write = kind == "self_access" and self.rng.random() < 0.3

        def run(work: Work, s: Session, t: int) -> int:
            rng = work.rng
            if search:  # looked the name up first
                work.ev(t, s, "search", None, "Patient", count=rng.randint(1, 12), tag=tag)
                t += rng.randint(5, 40)
            t = work.chart(t, s, p, reads, CURIOUS_READ, pace=40, tag=tag)
            if write:
                t = work.write(t, s, p, "Observation", "update", tag=tag)
            return t + rng.randint(30, 300)

        self.hook(user, day, run)

    def snooping(self) -> None:
        for _ in range(self.count("snooping")):
            user = self.insider(READERS)
            if user is None:
                return
            days = self.work_days(user)
            episodes = min(len(days), self.rng.randint(2, 4))
            for day in sorted(self.rng.sample(days, episodes)):
                subtle = self.rng.random() < 0.2
                p = self.stranger(user, day, admitted_elsewhere=subtle)
                if p is None:
                    continue
                where = "admitted in another department" if subtle else "not under care"
                text = f"reads the chart of a patient {where}, with no care link"
                variant = "admitted" if subtle else "plain"
                self.curious("snooping", user, day, p, text=text, variant=variant)

    def targeted(self, kind: str) -> None:
        w, rng = self.w, self.rng
        wanted, attempts = self.count(kind), 0
        while wanted and attempts < 20:
            attempts += 1
            if kind == "vip":
                user = self.insider(READERS)
            elif kind == "coworker":
                user = self.insider(
                    READERS, where=lambda u: any(p.employee not in {None, u} for p in w.patients)
                )
            elif kind == "family":
                user = self.insider(READERS, where=lambda u: bool(w.users[u].relatives))
            else:
                user = self.insider(READERS, where=lambda u: w.users[u].patient is not None)
            if user is None:
                continue
            u = w.users[user]
            day = rng.choice(self.work_days(user))
            if kind == "vip":
                pool = [p.idx for p in w.patients if p.vip]
                text = "reads the record of a VIP patient with no care link"
            elif kind == "coworker":
                mates = [p.idx for p in w.patients if p.employee not in {None, user}]
                near = [p for p in mates if w.users[w.patients[p].employee or 0].dept == u.dept]
                pool = near if near and rng.random() < 0.6 else mates
                text = "reads the record of a colleague who is a patient, with no care link"
            elif kind == "family":
                pool = list(u.relatives)
                text = "reads the record of a relative (same family name and address or town)"
            else:
                pool = [u.patient] if u.patient is not None else []
                text = "reads the user's own record"
            pool = [p for p in pool if self.unlinked(p, user, day)]
            if not pool:
                continue  # this user stays innocent; try another
            self.curious(kind, user, day, rng.choice(pool), text=text, variant="plain")
            wanted -= 1

    def break_glass_abuse(self) -> None:
        w, rng = self.w, self.rng
        for _ in range(self.count("break_glass_abuse")):
            user = self.insider(("physician", "resident", "nurse"))
            if user is None:
                return
            days = self.work_days(user)
            for n, day in enumerate(sorted(rng.sample(days, min(len(days), rng.randint(1, 3))))):
                target = None
                if n == 0 and rng.random() < 0.5:
                    pool = [
                        p.idx
                        for p in w.patients
                        if (p.vip or (p.employee is not None and p.employee != user))
                        and self.unlinked(p.idx, user, day)
                    ]
                    target = rng.choice(pool) if pool else None
                if target is None:
                    target = self.stranger(user, day, admitted_elsewhere=False)
                if target is None:
                    continue
                purpose = rng.choice(WEAK_PURPOSES) if rng.random() < 0.7 else "patient follow-up"
                tag = self.new(
                    "break_glass_abuse",
                    "repeated" if n else "single",
                    user,
                    target,
                    "breaks the glass on a patient with no care and no emergency, "
                    f"stated purpose {purpose!r}",
                )
                self.hook(user, day, _glass(tag, target, purpose))

    # --- bulk misuse by insiders ---------------------------------------------------------

    def exfiltration(self) -> None:
        rng = self.rng
        for _ in range(self.count("exfiltration/burst")):
            user = self.insider(("physician", "resident", "nurse", "secretary"))
            if user is None:
                break
            day = rng.choice(self.work_days(user))
            n = rng.randint(40, 200)
            export = rng.random() < 0.6
            tag = self.new(
                "exfiltration",
                "burst",
                user,
                None,
                f"reads {n} records in minutes" + (" and exports them" if export else ""),
            )
            victims = [self._outsider_patient(user, day) for _ in range(n)]
            after_hours = rng.random() < 0.4

            def burst(
                work: Work,
                s: Session,
                t: int,
                *,
                tag: int = tag,
                victims: list[int] = victims,
                export: bool = export,
            ) -> int:
                r = work.rng
                work.ev(t, s, "search", None, "Patient", count=r.randint(50, 500), tag=tag)
                for p in victims:
                    t = work.chart(t, s, p, r.choice((1, 1, 2)), CURIOUS_READ, pace=12, tag=tag)
                if export:
                    t += r.randint(20, 120)
                    work.ev(
                        t,
                        s,
                        "export",
                        None,
                        "Bundle",
                        count=len(victims) * r.randint(1, 4),
                        tag=tag,
                    )
                return t + r.randint(60, 300)

            if after_hours:
                self.day_hook(day, _after_hours(user, burst))
            else:
                self.hook(user, day, burst)
        for _ in range(self.count("exfiltration/slow")):
            user = self.insider(("nurse", "secretary", "resident", "physician"))
            if user is None:
                break
            days = self.work_days(user)
            span = days[: rng.randint(6, 15)] if len(days) > 6 else days
            tag = self.new(
                "exfiltration",
                "slow",
                user,
                None,
                f"reads a few extra records every day over {len(span)} working days",
            )
            for day in span:
                victims = [self._outsider_patient(user, day) for _ in range(rng.randint(3, 8))]
                export = rng.random() < 0.35
                self.hook(user, day, _slow(tag, victims, export))

    def _outsider_patient(self, user: int, day: int) -> int:
        p = self.stranger(user, day, admitted_elsewhere=self.rng.random() < 0.3)
        return p if p is not None else self.rng.randrange(len(self.w.patients))

    def mass_modification(self) -> None:
        rng = self.rng
        for _ in range(self.count("mass_modification")):
            user = self.insider(("physician", "nurse", "secretary", "pharmacist", "resident"))
            if user is None:
                return
            day = rng.choice(self.work_days(user))
            n = rng.randint(30, 400)
            action = rng.choice(("delete", "delete", "update"))
            victims = [rng.randrange(len(self.w.patients)) for _ in range(n)]
            tag = self.new(
                "mass_modification",
                action,
                user,
                None,
                f"{action}s records of {n} patients in a few minutes",
            )

            def sabotage(
                work: Work,
                s: Session,
                t: int,
                *,
                tag: int = tag,
                victims: list[int] = victims,
                action: str = action,
            ) -> int:
                r = work.rng
                kinds = ("Observation", "Condition", "MedicationRequest", "DocumentReference")
                for p in victims:
                    t += r.randint(1, 6)
                    work.ev(t, s, action, p, r.choice(kinds), count=r.randint(1, 8), tag=tag)
                return t + r.randint(60, 300)

            if rng.random() < 0.4:
                self.day_hook(day, _after_hours(user, sabotage))
            else:
                self.hook(user, day, sabotage)

    # --- outsiders -----------------------------------------------------------------------

    def stolen_credentials(self) -> None:
        w, rng = self.w, self.rng
        for _ in range(self.count("stolen_credentials")):
            owner = self.insider(("physician", "nurse", "secretary", "resident"))
            if owner is None:
                return
            days = self.work_days(owner)
            concurrent = rng.random() < 0.5
            if concurrent:
                day = rng.choice(days)
                start, end, _k = next(s for s in w.users[owner].shifts[day] if s[2] != "oncall")
                t0 = rng.randint(start + HOUR, max(start + HOUR, end - 2 * HOUR))
                variant = "concurrent"
            else:
                free = [d for d in range(self.first, self.last) if not w.users[owner].works(d)]
                day = rng.choice(free or days)
                t0 = day * DAY + rng.randint(HOUR, 5 * HOUR)
                variant = "night"
            n = rng.randint(8, 60)
            tag = self.new(
                "stolen_credentials",
                variant,
                owner,
                None,
                "the account is used from an unknown device and address"
                + (
                    " while its owner works on site"
                    if concurrent
                    else " in the middle of the night"
                ),
            )
            victims = [self._outsider_patient(owner, day) for _ in range(n)]
            export = rng.random() < 0.4
            use_vpn = rng.random() < 0.35

            def intrude(
                work: Work,
                day: int,
                *,
                tag: int = tag,
                owner: int = owner,
                t0: int = t0,
                victims: list[int] = victims,
                export: bool = export,
                use_vpn: bool = use_vpn,
            ) -> None:
                r = work.rng
                device, ip = remote_device(r)
                if use_vpn:
                    ip = vpn_ip(r)
                s = work.session(owner, device, ip)
                t = t0
                for _ in range(r.choice((0, 0, 1, 2))):
                    work.ev(t, s, "login_failed", outcome="denied", tag=tag)
                    t += r.randint(5, 30)
                work.ev(t, s, "login", tag=tag)
                for i, p in enumerate(victims):
                    t += r.randint(20, 240)
                    if i % 6 == 0:
                        work.ev(t, s, "search", None, "Patient", count=r.randint(1, 60), tag=tag)
                    t = work.chart(t, s, p, r.randint(1, 3), CURIOUS_READ, pace=20, tag=tag)
                if export:
                    t += r.randint(30, 200)
                    work.ev(t, s, "export", None, "Bundle", count=len(victims) * 3, tag=tag)
                work.ev(t + r.randint(10, 100), s, "logout", tag=tag)
                del day

            self.day_hook(day, intrude)

    def credential_stuffing(self) -> None:
        w, rng = self.w, self.rng
        known = [u.id for u in w.users]
        existing = set(known)
        for _ in range(self.count("credential_stuffing/stuffing")):
            day = rng.randrange(self.first, self.last)
            t0 = day * DAY + rng.randint(0, DAY - 3 * HOUR)
            tries = rng.randint(60, 400)
            accounts = rng.sample(known, min(len(known), rng.randint(15, 120)))
            accounts += [
                f"u{n}" for n in rng.sample(range(10_000, 99_999), 40) if f"u{n}" not in existing
            ][:30]
            ips = [public_ip(rng) for _ in range(rng.randint(1, 3))]
            success = rng.random() < 0.25
            tag = self.new(
                "credential_stuffing",
                "stuffing",
                None,
                None,
                f"{tries} failed sign-ins over many accounts from {len(ips)} address(es)",
            )

            def stuff(
                work: Work,
                day: int,
                *,
                tag: int = tag,
                t0: int = t0,
                tries: int = tries,
                accounts: list[str] = accounts,
                ips: list[str] = ips,
                success: bool = success,
            ) -> None:
                r = work.rng
                t = t0
                agent = r.choice((None, "python-requests/2.31", "curl/8.5.0", "Mozilla/5.0"))
                for _ in range(tries):
                    t += r.randint(1, 25)
                    _outsider_event(
                        work,
                        t,
                        r.choice(accounts),
                        "login_failed",
                        ip=r.choice(ips),
                        device=agent,
                        tag=tag,
                    )
                if success:
                    _outsider_event(
                        work,
                        t + r.randint(1, 20),
                        r.choice(known),
                        "login",
                        ip=r.choice(ips),
                        device=agent,
                        tag=tag,
                    )
                del day

            self.day_hook(day, stuff)
        for _ in range(self.count("credential_stuffing/brute_force")):
            victim = rng.randrange(len(w.users))
            day = rng.randrange(self.first, self.last)
            t0 = day * DAY + rng.randint(0, DAY - 3 * HOUR)
            tries = rng.randint(15, 250)
            ip = public_ip(rng)
            success = rng.random() < 0.3
            tag = self.new(
                "credential_stuffing",
                "brute_force",
                victim,
                None,
                f"{tries} failed sign-ins on one account from one address",
            )

            def brute(
                work: Work,
                day: int,
                *,
                tag: int = tag,
                t0: int = t0,
                tries: int = tries,
                victim: int = victim,
                ip: str = ip,
                success: bool = success,
            ) -> None:
                r = work.rng
                t = t0
                uid = work.uid[victim]
                for _ in range(tries):
                    t += r.randint(2, 40)
                    _outsider_event(work, t, uid, "login_failed", ip=ip, device=None, tag=tag)
                if success:
                    _outsider_event(
                        work, t + r.randint(2, 40), uid, "login", ip=ip, device=None, tag=tag
                    )
                del day

            self.day_hook(day, brute)


def _outsider_event(
    work: Work, t: int, user_id: str, action: str, *, ip: str, device: str | None, tag: int
) -> None:
    dev = "null" if device is None else f'"{device}"'
    outcome = "success" if action == "login" else "denied"
    work.raw(
        t,
        user_id,
        f'"user":"{user_id}","action":"{action}","outcome":"{outcome}",'
        f'"patient":null,"resource_type":null,"count":1,'
        f'"ip":"{ip}","device":{dev},"purpose":null}}',
        tag,
    )


def _glass(tag: int, patient: int, purpose: str) -> Hook:
    def run(work: Work, s: Session, t: int) -> int:
        r = work.rng
        work.ev(t, s, "break_glass", patient, "Patient", purpose=purpose, tag=tag)
        t = work.chart(t + 5, s, patient, r.randint(2, 8), CURIOUS_READ, pace=40, tag=tag)
        return t + r.randint(30, 200)

    return run


def _slow(tag: int, victims: list[int], export: bool) -> Hook:
    def run(work: Work, s: Session, t: int) -> int:
        r = work.rng
        for p in victims:
            t = work.chart(t, s, p, r.choice((1, 2)), CURIOUS_READ, pace=30, tag=tag)
            t += r.randint(20, 400)
        if export:
            work.ev(t, s, "export", None, "Bundle", count=len(victims), tag=tag)
        return t

    return run


def _after_hours(user: int, body: Hook) -> DayHook:
    """Run `body` in a session of its own, at the user's usual workstation, late at night."""

    def run(work: Work, day: int) -> None:
        r = work.rng
        device, ip = work.station(user, roam=0.0)
        t = day * DAY + 21 * HOUR + r.randint(0, 4 * HOUR)
        s, t = work.login(t, user, device, ip)
        t = body(work, s, t)
        work.ev(t + r.randint(10, 100), s, "logout")

    return run


def plan_attacks(rng: random.Random, world: World) -> Plan:
    planner = _Planner(rng, world)
    planner.credential_stuffing()
    planner.stolen_credentials()
    planner.exfiltration()
    planner.mass_modification()
    planner.break_glass_abuse()
    for kind in ("self_access", "family", "coworker", "vip"):
        planner.targeted(kind)
    planner.snooping()
    return planner.plan

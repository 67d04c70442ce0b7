"""The simulated hospital itself: departments, staff, patients, care and rosters.

Part of the simulator (`egide.detect.simulate`). Everything here is decided up front from one
seeded `random.Random`, before any access event is produced: the detection context written to
`context.json` is exactly this plan, and the daily work (`simulate_work`) and the injected attacks
(`simulate_attacks`) only read it. Security role: the detectors are tuned and judged on the
hospitals built here, so the plan deliberately contains what makes real audit trails hard —
surnames shared by strangers, neighbours, colleagues who are patients, care that was never
recorded — and never a field that gives an attack away.

All times are whole seconds from midnight UTC of the first simulated day; care may start before
it (patients already admitted or followed when the period opens).
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

DAY: Final = 86_400
HOUR: Final = 3_600
MINUTE: Final = 60

ROLES: Final = (
    "physician",
    "resident",
    "nurse",
    "secretary",
    "pharmacist",
    "lab",
    "radiology",
    "billing",
    "security_officer",
)
# Share of the staff in each role; nurses take whatever is left.
_ROLE_SHARE: Final = {
    "physician": 0.17,
    "resident": 0.07,
    "secretary": 0.10,
    "pharmacist": 0.04,
    "lab": 0.07,
    "radiology": 0.05,
    "billing": 0.04,
    "security_officer": 0.01,
}
CLINICAL_ROLES: Final = frozenset({"physician", "resident", "nurse"})

# name, workstation prefix, kind, relative staff size
_CLINICAL: Final = (
    ("emergency", "ed", "ed", 1.6),
    ("internal_medicine", "med", "ward", 1.4),
    ("cardiology", "card", "ward", 1.1),
    ("surgery", "surg", "ward", 1.2),
    ("icu", "icu", "icu", 1.0),
    ("pediatrics", "ped", "ward", 0.9),
    ("oncology", "onc", "ward", 0.9),
    ("neurology", "neuro", "ward", 0.8),
    ("geriatrics", "ger", "ward", 0.9),
    ("pneumology", "pneu", "ward", 0.7),
)
_SERVICE: Final = (
    ("laboratory", "lab", "lab"),
    ("radiology", "rad", "radiology"),
    ("pharmacy", "pha", "pharmacist"),
    ("billing", "bill", "billing"),
    ("information_security", "sec", "security_officer"),
)

# Common French surnames, most frequent first: a Zipf-like draw over them makes strangers share
# a family name all the time (the classic false "family" match).
SURNAMES: Final = (  # noqa: SIM905 - a word list reads better as text
    "Martin Bernard Thomas Petit Robert Richard Durand Dubois Moreau Laurent Simon Michel "
    "Lefebvre Leroy Roux David Bertrand Morel Fournier Girard Bonnet Dupont Lambert Fontaine "
    "Rousseau Vincent Muller Lefevre Faure Andre Mercier Blanc Guerin Boyer Garnier Chevalier "
    "Francois Legrand Gauthier Garcia Perrin Robin Clement Morin Nicolas Henry Roussel "
    "Mathieu Gautier Masson Marchand Duval Denis Dumont Marie Lemaire Noel Meyer Dufour "
    "Meunier Brun Blanchard Giraud Joly Riviere Lucas Brunet Gaillard Barbier Arnaud Martinez "
    "Gerard Roche Renard Schmitt Roy Leroux Colin Vidal Caron Picard Roger Fabre Aubert "
    "Lemoine Renaud Dumas Lacroix Olivier Philippe Bourgeois Pierre Benoit Rey Leclerc Payet "
    "Rolland Leclercq Guillaume Lecomte Lopez Jean Dupuy Guillot Hubert Berger Carpentier "
    "Sanchez Dupuis Moulin Louis Deschamps Huet Vasseur Perez Boucher Fleury Royer Klein "
    "Jacquet Adam Paris Poirier Marty Aubry Guyot Carre Charles Renault Charpentier Menard "
    "Maillard Baron Bertin Bailly Herve Schneider Fernandez Collet Leger Bouvier Julien "
    "Prevost Millet Perrot Daniel Cousin Germain Breton Besson Langlois Remy Pelletier "
    "Leveque Perrier Leblanc Barre Lebrun Marchal Weber Mallet Hamon Boulanger Jacob Monnier "
    "Michaud Rodriguez Guichard Gillet Etienne Grondin Poulain Tessier Chauvin Bouchet Gay "
    "Lemaitre Benard Marechal Humbert Reynaud Antoine Hoarau Perret Barthelemy Cordier Pichon "
    "Lejeune Gilbert Lamy Delaunay Pasquier"
).split()
_SYLLABLES: Final = (  # noqa: SIM905 - a word list reads better as text
    "ba bel ber bou ca cha cor da del dou fa fer ga gil gou la lan ler lou ma mar mon na nor "
    "pa pel per pou ra ren ro sa sal ser ta ter tou va vel ver vil"
).split()
_ENDINGS: Final = ("ard", "et", "in", "ot", "eau", "ier", "on", "and", "ac", "ou", "el", "y")
_STREET_TYPES: Final = ("rue", "avenue", "boulevard", "impasse", "place", "chemin", "allée")
_STREET_NAMES: Final = (
    "des Lilas",
    "Victor Hugo",
    "Pasteur",
    "de la République",
    "Jean Jaurès",
    "du Moulin",
    "des Écoles",
    "de la Gare",
    "Voltaire",
    "des Tilleuls",
    "Gambetta",
    "du Lac",
    "des Acacias",
    "Émile Zola",
    "de la Paix",
    "du Stade",
    "des Cerisiers",
    "Jules Ferry",
    "de Verdun",
    "du Marché",
    "Carnot",
    "des Peupliers",
    "de la Liberté",
    "Saint-Exupéry",
    "des Roses",
    "du Château",
    "de Lattre",
    "Louis Pergaud",
    "des Vignes",
    "de la Fontaine",
    "Molière",
    "des Jardins",
    "du Parc",
    "Lamartine",
    "des Pins",
    "de Bellevue",
)
# A few dozen postal codes around one city, the centre most frequent: neighbours are common.
POSTAL_CODES: Final = tuple(f"6900{i}" for i in range(1, 10)) + tuple(
    f"69{n}"
    for n in (
        100,
        110,
        120,
        130,
        140,
        150,
        160,
        170,
        190,
        200,
        230,
        250,
        260,
        270,
        280,
        290,
        300,
        310,
        320,
        330,
        340,
        350,
        360,
        370,
        380,
        390,
        400,
        500,
        510,
        520,
    )
)
_POSTAL_WEIGHTS: Final = tuple(1.0 / (i + 3) ** 0.8 for i in range(len(POSTAL_CODES)))
_SURNAME_WEIGHTS: Final = tuple(1.0 / (i + 1) ** 0.75 for i in range(len(SURNAMES)))
_SURNAME_CUM: Final = tuple(itertools.accumulate(_SURNAME_WEIGHTS))
_POSTAL_CUM: Final = tuple(itertools.accumulate(_POSTAL_WEIGHTS))


@dataclass(slots=True)
class Dept:
    idx: int
    name: str
    code: str
    kind: str  # ed, icu, ward, lab, radiology, pharmacist, billing, security_officer
    stations: list[tuple[str, str]] = field(default_factory=list)  # (device, ip)
    staff: list[int] = field(default_factory=list)

    @property
    def clinical(self) -> bool:
        return self.kind in {"ed", "icu", "ward"}


@dataclass(slots=True)
class User:
    idx: int
    id: str
    role: str
    dept: int
    family_name: str
    postal_code: str
    address: str
    stations: list[int]  # usual workstations, indexes into the department's
    laptop: str | None  # personal device for remote work, or None
    home_ips: list[str]
    patient: int | None = None  # own patient record, when also a patient
    relatives: list[int] = field(default_factory=list)  # patients of the same family
    # day index -> the shifts starting that day: (start, end, kind), kind in day, evening,
    # night (on the premises) or oncall (at home, called now and then)
    shifts: dict[int, list[tuple[int, int, str]]] = field(default_factory=dict)

    def works(self, day: int) -> bool:
        return any(kind != "oncall" for _s, _e, kind in self.shifts.get(day, ()))


@dataclass(slots=True)
class Patient:
    idx: int
    id: str
    family_name: str
    postal_code: str
    address: str
    vip: bool = False
    employee: int | None = None
    deceased: bool = False


@dataclass(slots=True)
class Stay:
    """An admission: the department and the attending physician are on the care list."""

    patient: int
    dept: int
    start: int
    end: int
    attending: int


@dataclass(slots=True)
class Appointment:
    patient: int
    user: int
    dept: int
    time: int
    booked: int  # day index the appointment was booked (may be negative)


@dataclass(slots=True)
class EdVisit:
    patient: int
    arrival: int
    departure: int
    admitted: bool


@dataclass(slots=True)
class Care:
    """One treating relationship, as written to the context (`user` or `dept`, never both)."""

    patient: int
    user: int | None
    dept: int | None
    start: int
    end: int | None


@dataclass(slots=True)
class World:
    days: int
    first_weekday: int  # 0 for Monday: weekday of day 0
    depts: list[Dept]
    users: list[User]
    patients: list[Patient]
    stays: list[Stay] = field(default_factory=list)
    appointments: list[Appointment] = field(default_factory=list)
    ed_visits: list[EdVisit] = field(default_factory=list)
    longterm: dict[int, list[int]] = field(default_factory=dict)  # physician -> patients
    care: list[Care] = field(default_factory=list)
    # indexes built by `index()`
    inpatients: list[list[list[tuple[int, int, int]]]] = field(default_factory=list)
    ed_by_day: list[list[EdVisit]] = field(default_factory=list)
    appts_by_user_day: dict[tuple[int, int], list[Appointment]] = field(default_factory=dict)
    appts_by_dept_day: dict[tuple[int, int], list[Appointment]] = field(default_factory=dict)
    bookings_by_dept_day: dict[tuple[int, int], list[Appointment]] = field(default_factory=dict)
    discharged_by_day: list[list[Stay]] = field(default_factory=list)
    care_by_patient: dict[int, list[Care]] = field(default_factory=dict)
    by_role: dict[str, list[int]] = field(default_factory=dict)

    def weekday(self, day: int) -> int:
        return (self.first_weekday + day) % 7

    def dept_named(self, name: str) -> Dept | None:
        return next((d for d in self.depts if d.name == name), None)

    def clinical_depts(self) -> list[Dept]:
        return [d for d in self.depts if d.clinical]

    def has_link(self, patient: int, user: int, t0: int, t1: int) -> bool:
        """Whether the user or the user's department treats the patient during [t0, t1]."""
        dept = self.users[user].dept
        for c in self.care_by_patient.get(patient, ()):
            if (
                (c.user == user or c.dept == dept)
                and c.start <= t1
                and (c.end is None or c.end >= t0)
            ):
                return True
        return False

    def under_care(self, patient: int, t0: int, t1: int) -> bool:
        """Whether anyone treats the patient during [t0, t1]."""
        return any(
            c.start <= t1 and (c.end is None or c.end >= t0)
            for c in self.care_by_patient.get(patient, ())
        )

    def ever_cared(self, patient: int) -> bool:
        return patient in self.care_by_patient


def weighted_index(rng: random.Random, cumulative: tuple[float, ...]) -> int:
    return bisect.bisect_right(cumulative, rng.random() * cumulative[-1])


def family_name(rng: random.Random) -> str:
    # One in four people carries a rarer name, invented from syllables.
    if rng.random() < 0.25:
        parts = rng.choice(_SYLLABLES) + rng.choice(_SYLLABLES) + rng.choice(_ENDINGS)
        return parts.capitalize()
    return SURNAMES[min(weighted_index(rng, _SURNAME_CUM), len(SURNAMES) - 1)]


def postal_code(rng: random.Random) -> str:
    return POSTAL_CODES[min(weighted_index(rng, _POSTAL_CUM), len(POSTAL_CODES) - 1)]


def address(rng: random.Random) -> str:
    number = int(rng.paretovariate(1.2)) if rng.random() < 0.6 else rng.randint(1, 140)
    return f"{min(number, 240)} {rng.choice(_STREET_TYPES)} {rng.choice(_STREET_NAMES)}"


def public_ip(rng: random.Random) -> str:
    """An outside address, from the ranges reserved for documentation (RFC 5737, RFC 3849)."""
    pick = rng.random()
    if pick < 0.35:
        return f"198.51.100.{rng.randint(1, 254)}"
    if pick < 0.7:
        return f"203.0.113.{rng.randint(1, 254)}"
    return f"2001:db8:{rng.randint(1, 0xFFFF):x}::{rng.randint(1, 0xFFFF):x}"


def vpn_ip(rng: random.Random) -> str:
    return f"172.16.{rng.randint(0, 15)}.{rng.randint(2, 254)}"


def new_laptop(rng: random.Random) -> str:
    return f"laptop-{rng.getrandbits(24):06x}"


def build_world(
    rng: random.Random, *, users: int, patients: int, days: int, first_weekday: int = 0
) -> World:
    depts = _departments(rng, users)
    staff = _staff(rng, depts, users)
    people = _patients(rng, patients)
    world = World(days=days, first_weekday=first_weekday, depts=depts, users=staff, patients=people)
    _link_staff_to_patients(rng, world)
    for u in world.users:
        world.by_role.setdefault(u.role, []).append(u.idx)
        depts[u.dept].staff.append(u.idx)
    _stations(rng, world)
    _rosters(rng, world)
    _care(rng, world)
    index(world)
    return world


def _departments(rng: random.Random, users: int) -> list[Dept]:
    clinical = max(5, min(len(_CLINICAL), users // 25))
    depts: list[Dept] = []
    for name, code, kind, _weight in _CLINICAL[:clinical]:
        depts.append(Dept(len(depts), name, code, kind))
    for name, code, kind in _SERVICE:
        depts.append(Dept(len(depts), name, code, kind))
    del rng
    return depts


def _role_counts(users: int) -> dict[str, int]:
    counts = {role: max(1, round(users * share)) for role, share in _ROLE_SHARE.items()}
    counts["nurse"] = max(1, users - sum(counts.values()))
    while sum(counts.values()) > users:  # tiny hospitals: take from the biggest role
        biggest = max(counts, key=lambda r: counts[r])
        counts[biggest] -= 1
    return counts


def _staff(rng: random.Random, depts: list[Dept], users: int) -> list[User]:
    clinical = [d for d in depts if d.clinical]
    weights = [w for _n, _c, _k, w in _CLINICAL[: len(clinical)]]
    service = {d.kind: d for d in depts if not d.clinical}
    assignments: list[tuple[str, int]] = []
    for role, count in _role_counts(users).items():
        if role in service:
            assignments.extend((role, service[role].idx) for _ in range(count))
            continue
        # One per department first (when there are enough), the rest by department size.
        first = [d.idx for d in clinical][:count]
        rest = rng.choices([d.idx for d in clinical], weights=weights, k=count - len(first))
        assignments.extend((role, dept) for dept in first + rest)
    ids = rng.sample(range(10_000, 99_999), len(assignments))
    rng.shuffle(assignments)
    staff = []
    for idx, (role, dept) in enumerate(assignments):
        remote = role in {"physician", "radiology", "billing", "security_officer"} or (
            role in {"pharmacist", "secretary"} and rng.random() < 0.2
        )
        laptop = new_laptop(rng) if remote and rng.random() < 0.8 else None
        staff.append(
            User(
                idx=idx,
                id=f"u{ids[idx]}",
                role=role,
                dept=dept,
                family_name=family_name(rng),
                postal_code=postal_code(rng),
                address=address(rng),
                stations=[],
                laptop=laptop,
                home_ips=[public_ip(rng) for _ in range(rng.randint(1, 2))] if laptop else [],
            )
        )
    return staff


def _patients(rng: random.Random, count: int) -> list[Patient]:
    ids = rng.sample(range(1_000_000, 9_999_999), count)
    people: list[Patient] = []
    while len(people) < count:
        # Households: a family name, an address, one to five people.
        name, code, street = family_name(rng), postal_code(rng), address(rng)
        size = rng.choices((1, 2, 3, 4, 5), weights=(35, 30, 15, 14, 6))[0]
        for _ in range(min(size, count - len(people))):
            # Not everyone at one address shares the name (partners, flatmates).
            own = name if rng.random() < 0.8 else family_name(rng)
            people.append(Patient(len(people), f"p{ids[len(people)]}", own, code, street))
    order = list(range(count))
    rng.shuffle(order)  # households must not sit next to each other in id order
    shuffled = [people[i] for i in order]
    for idx, p in enumerate(shuffled):
        p.idx = idx
        p.id = f"p{ids[idx]}"
    for p in rng.sample(shuffled, max(3, count // 1000)):
        p.vip = True
    for p in rng.sample(shuffled, max(2, count * 3 // 200)):
        p.deceased = not p.vip
    return shuffled


def _link_staff_to_patients(rng: random.Random, world: World) -> None:
    """Some staff are patients here; some have relatives or neighbours among the patients."""
    alive = [p for p in world.patients if not p.deceased and not p.vip]
    taken: set[int] = set()
    for u in world.users:
        draw = rng.random()
        if draw < 0.3:
            # Lives with patients of the hospital: same name and address as a household member.
            host = rng.choice(alive)
            u.family_name, u.postal_code, u.address = (
                host.family_name,
                host.postal_code,
                host.address,
            )
        elif draw < 0.45:
            # A relative elsewhere in the same town: same name and postal code.
            host = rng.choice(alive)
            u.family_name, u.postal_code = host.family_name, host.postal_code
        if rng.random() < 0.14:
            free = [p for p in rng.sample(alive, 8) if p.idx not in taken]
            if free:
                own = free[0]
                taken.add(own.idx)
                own.family_name, own.postal_code, own.address = (
                    u.family_name,
                    u.postal_code,
                    u.address,
                )
                own.employee = u.idx
                u.patient = own.idx
    # Relatives: the household (same name and address); failing that, when the name is rare
    # enough in the town that a same-name patient of the same postal code is likely kin, those.
    home: dict[tuple[str, str, str], list[int]] = {}
    town: dict[tuple[str, str], list[int]] = {}
    for p in world.patients:
        home.setdefault((p.family_name, p.postal_code, p.address), []).append(p.idx)
        town.setdefault((p.family_name, p.postal_code), []).append(p.idx)
    for u in world.users:
        key = (u.family_name, u.postal_code)
        u.relatives = [i for i in home.get((*key, u.address), ()) if i != u.patient]
        if not u.relatives:
            near = [i for i in town.get(key, ()) if i != u.patient]
            if 0 < len(near) <= 2:
                u.relatives = near


def _stations(rng: random.Random, world: World) -> None:
    for d in world.depts:
        n = max(2, len(d.staff) // 2 + 1)
        third = 20 + d.idx
        d.stations = [
            (f"ws-{d.code}-{i + 1:02d}", f"10.{third}.{1 + i // 200}.{10 + i % 200}")
            for i in range(n)
        ]
        if d.kind in {"ward", "icu", "ed"}:
            d.stations += [
                (f"tab-{d.code}-{i + 1:02d}", f"10.{third}.9.{10 + i}") for i in range(n // 3)
            ]
    for u in world.users:
        d = world.depts[u.dept]
        if u.role in {"nurse", "resident"} or d.kind in {"ed", "icu"}:
            # Shared ward workstations: nurses and residents use whichever is free.
            u.stations = list(range(len(d.stations)))
        else:
            u.stations = rng.sample(range(len(d.stations)), min(len(d.stations), 2))


_PITMAN: Final = (1, 1, 0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0)
_FIVE_TWO: Final = (1, 1, 1, 1, 1, 0, 0)


def _rosters(rng: random.Random, world: World) -> None:
    days = world.days
    for u in world.users:
        d = world.depts[u.dept]
        off: set[int] = set()
        if rng.random() < 0.25 and days > 10:  # holidays
            first = rng.randrange(days)
            off = set(range(first, first + rng.randint(4, 10)))
        h = rng.randint(-20, 20) * MINUTE
        if u.role == "nurse" or (u.role == "physician" and d.kind in {"ed", "icu"}):
            night = rng.random() < 0.3
            offset = rng.randrange(14)
            for day in range(days):
                if _PITMAN[(day + offset) % 14] and day not in off:
                    start = day * DAY + (19 if night else 7) * HOUR + h
                    end = start + 12 * HOUR + 15 * MINUTE
                    u.shifts[day] = [(start, end, "night" if night else "day")]
        elif u.role == "lab":
            kind = rng.choices(("day", "evening", "night"), weights=(5, 3, 2))[0]
            begin = {"day": 6.5, "evening": 14.0, "night": 21.5}[kind]
            offset = rng.randrange(7)
            for day in range(days):
                if _FIVE_TWO[(day + offset) % 7] and day not in off:
                    start = day * DAY + int(begin * HOUR) + h
                    u.shifts[day] = [(start, start + 8 * HOUR + 30 * MINUTE, kind)]
        else:
            begin, length = {
                "physician": (8.0, 10.0),
                "resident": (7.5, 11.0),
                "secretary": (8.5, 8.5),
                "pharmacist": (8.0, 9.0),
                "radiology": (8.0, 10.0),
                "billing": (9.0, 8.0),
                "security_officer": (9.0, 9.0),
            }[u.role]
            part_time = u.role == "secretary" and rng.random() < 0.3
            free_day = rng.randrange(5)
            for day in range(days):
                weekday = world.weekday(day)
                if weekday >= 5 or day in off or (part_time and weekday == free_day):
                    continue
                start = day * DAY + int(begin * HOUR) + h + rng.randint(-15, 15) * MINUTE
                end = start + int(length * HOUR) + rng.randint(-45, 60) * MINUTE
                u.shifts[day] = [(start, end, "day")]
    # Night duty: one physician (at home, on call) and one resident (on the wards) per
    # clinical department and night, in turn; radiology keeps one radiologist on call.
    for d in world.depts:
        for role in ("physician", "resident", "radiology"):
            pool = [i for i in d.staff if world.users[i].role == role]
            if not pool or (role != "radiology" and d.kind in {"ed", "icu"}):
                continue
            rng.shuffle(pool)
            for day in range(days):
                who = world.users[pool[day % len(pool)]]
                start = day * DAY + 18 * HOUR + 30 * MINUTE + rng.randint(0, 60) * MINUTE
                kind = "night" if role == "resident" else "oncall"
                today = who.shifts.setdefault(day, [])
                # The day shift of a duty day ends when the duty starts.
                today[:] = [(s, min(e, start - 10 * MINUTE), k) for s, e, k in today]
                today.append((start, day * DAY + DAY + 8 * HOUR, kind))
                if role == "resident":  # rest day after a night on the wards
                    who.shifts.pop(day + 1, None)


def _care(rng: random.Random, world: World) -> None:
    days = world.days
    end_of_period = days * DAY
    physicians_of = {
        d.idx: [i for i in d.staff if world.users[i].role == "physician"] for d in world.depts
    }
    all_physicians = world.by_role.get("physician", [])
    living = [p.idx for p in world.patients if not p.deceased]
    # Frequent flyers: a fifth of the patients get most of the care.
    frequent = rng.sample(living, max(1, len(living) // 5))

    def pick_patient() -> int:
        return rng.choice(frequent) if rng.random() < 0.5 else rng.choice(living)

    def attending(dept: int) -> int:
        pool = physicians_of.get(dept) or all_physicians
        return rng.choice(pool)

    wards = [d for d in world.depts if d.kind in {"ward", "icu"}]
    nurses = len(world.by_role.get("nurse", []))
    beds_total = max(len(wards) * 4, min(len(world.patients) // 25, nurses * 2))
    weight = {d.idx: max(1, len(d.staff)) for d in wards}
    total_weight = sum(weight.values())
    ed = world.dept_named("emergency")
    for d in wards:
        beds = max(3, beds_total * weight[d.idx] // total_weight)
        mean_los = 2.5 if d.kind == "icu" else 5.0
        for _bed in range(beds):
            t = -int(rng.uniform(0, 2 * mean_los) * DAY)
            while t < end_of_period:
                los = max(0.25, rng.expovariate(1 / mean_los))
                start = t
                end = start + int(los * DAY)
                # Discharges happen in the day, between late morning and evening.
                end = (end // DAY) * DAY + rng.randint(10 * HOUR, 18 * HOUR)
                end = max(end, start + 4 * HOUR)
                patient = pick_patient()
                world.stays.append(Stay(patient, d.idx, start, end, attending(d.idx)))
                if ed is not None and rng.random() < 0.4 and start > 0:
                    arrival = start - rng.randint(2 * HOUR, 7 * HOUR)
                    world.ed_visits.append(EdVisit(patient, arrival, start, admitted=True))
                gap = rng.choice((0, 0, 1)) * DAY + rng.randint(2 * HOUR, 12 * HOUR)
                t = (end // DAY) * DAY + gap + rng.randint(0, 6 * HOUR)
    # A VIP stays in the hospital during the period: their care team reads them legitimately.
    vips = [p.idx for p in world.patients if p.vip and not p.deceased]
    if vips and wards:
        start = rng.randint(0, max(0, days - 3)) * DAY + rng.randint(9 * HOUR, 20 * HOUR)
        ward = rng.choice(wards).idx
        world.stays.append(
            Stay(vips[0], ward, start, start + rng.randint(2, 6) * DAY, attending(ward))
        )
    _outpatients(rng, world, pick_patient, living)
    _care_list(rng, world)


def _outpatients(
    rng: random.Random, world: World, pick_patient: Callable[[], int], living: list[int]
) -> None:
    """Emergency visits, and each physician's clinic days and long-term patients."""
    days = world.days
    ed = world.dept_named("emergency")
    if ed is not None:
        per_day = max(4, len(world.patients) // 150)
        for day in range(days):
            for _ in range(max(1, int(rng.gauss(per_day, per_day / 5)))):
                hour = rng.choices(range(24), weights=_ED_HOURS)[0]
                arrival = day * DAY + hour * HOUR + rng.randint(0, HOUR - 1)
                departure = arrival + rng.randint(2 * HOUR, 9 * HOUR)
                world.ed_visits.append(EdVisit(pick_patient(), arrival, departure, admitted=False))
    for u in world.users:
        if u.role != "physician" or world.depts[u.dept].kind in {"ed", "icu"}:
            continue
        followed = rng.sample(living, min(len(living), rng.randint(10, 40)))
        world.longterm[u.idx] = followed
        clinic_days = rng.sample(range(5), 2)
        for day in range(days):
            if world.weekday(day) not in clinic_days or not u.works(day):
                continue
            slot = day * DAY + 8 * HOUR + 30 * MINUTE
            for _ in range(rng.randint(6, 14)):
                slot += rng.choice((15, 20, 20, 30)) * MINUTE
                patient = rng.choice(followed) if rng.random() < 0.4 else pick_patient()
                booked = day - rng.randint(1, 45)
                world.appointments.append(Appointment(patient, u.idx, u.dept, slot, booked))


# Emergency arrivals by hour of the day: quiet at night, busiest in the afternoon and evening.
_ED_HOURS: Final = (2, 2, 1, 1, 1, 1, 2, 3, 5, 6, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 6, 5, 4, 3)


def _care_list(rng: random.Random, world: World) -> None:
    end_of_period = world.days * DAY

    def until(t: int) -> int | None:
        return None if t >= end_of_period else t

    care = world.care
    for s in world.stays:
        care.append(Care(s.patient, None, s.dept, s.start, until(s.end)))
        care.append(Care(s.patient, s.attending, None, s.start, until(s.end)))
    ed = world.dept_named("emergency")
    ed_physicians = [i for i in (ed.staff if ed else []) if world.users[i].role == "physician"]
    if ed is not None:
        for v in world.ed_visits:
            care.append(Care(v.patient, None, ed.idx, v.arrival, v.departure))
            if ed_physicians and rng.random() < 0.5:
                care.append(
                    Care(v.patient, rng.choice(ed_physicians), None, v.arrival, v.departure)
                )
    for a in world.appointments:
        # The relationship opens when the appointment is booked and stays open a month after
        # it, for results and letters.
        start = a.booked * DAY
        end = until((a.time // DAY + 30) * DAY)
        care.append(Care(a.patient, a.user, None, start, end))
        care.append(Care(a.patient, None, a.dept, start, end))
    for physician, followed in world.longterm.items():
        for p in followed:
            care.append(Care(p, physician, None, -rng.randint(60, 2000) * DAY, None))
    care.sort(key=lambda c: (c.start, c.patient))


def index(world: World) -> None:
    days = world.days
    world.inpatients = [[[] for _ in range(days)] for _ in world.depts]
    world.discharged_by_day = [[] for _ in range(days)]
    for s in world.stays:
        for day in range(max(0, s.start // DAY), min(days, s.end // DAY + 1)):
            world.inpatients[s.dept][day].append((s.patient, s.start, s.end))
        if 0 <= s.end // DAY < days:
            world.discharged_by_day[s.end // DAY].append(s)
    world.ed_by_day = [[] for _ in range(days)]
    for v in world.ed_visits:
        for day in {v.arrival // DAY, v.departure // DAY}:
            if 0 <= day < days:
                world.ed_by_day[day].append(v)
    for a in world.appointments:
        day = a.time // DAY
        world.appts_by_user_day.setdefault((a.user, day), []).append(a)
        world.appts_by_dept_day.setdefault((a.dept, day), []).append(a)
        if 0 <= a.booked < days:
            world.bookings_by_dept_day.setdefault((a.dept, a.booked), []).append(a)
    for c in world.care:
        world.care_by_patient.setdefault(c.patient, []).append(c)

"""Baselines: what is normal for a user, for their peer group, and for a patient's community.

Security role: an access without a formal care link is not by itself misuse (consults,
coverage, laboratory and pharmacy work across departments, billing). These baselines say how
ordinary an access or a volume is *for people doing the same job*, so alerts go to the unusual
and the privacy officer's time is not spent on daily work.

- `ContextIndex`: the context as dicts and sets (care windows per user and per department,
  normalised names and addresses), built once.
- Robust statistics (median, MAD, robust z, quantiles) that a few attack days cannot drag.
- `AccessModel`: the user–patient access model. For each peer group (same role and
  department) and each department that is treating the patient at the time, the share of the
  group's accesses that go to such patients; and who else in the group touched this patient.
  This is the community idea of Chen & Malin and the collaborative-filtering idea of Menon et
  al., computed as counts so every score can be explained in a sentence.
"""

from __future__ import annotations

import bisect
import functools
import math
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from egide.detect.clock import Clock
from egide.detect.events import Context, parse_time

DAY = 86_400.0


_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]+")


@functools.lru_cache(maxsize=65_536)
def normalise(text: str | None) -> str:
    """Case, accents and punctuation folded, spaces collapsed: 'Dupont-Élie ' == 'dupont elie'.
    (Cached: names, postal codes and addresses repeat across a context.)"""
    if not text:
        return ""
    if text.isascii():  # the same result without a Python step per character
        return " ".join(_NOT_ALNUM.sub(" ", text).lower().split())
    folded = unicodedata.normalize("NFKD", text)
    kept = "".join(c if c.isalnum() else " " for c in folded if not unicodedata.combining(c))
    return " ".join(kept.lower().split())


Window = tuple[float, float]
_NO_WINDOWS: Mapping[str, tuple[Window, ...]] = MappingProxyType({})


@dataclass(slots=True)
class UserProfile:
    id: str
    role: str
    department: str
    family: str
    postal: str
    address: str

    @property
    def group(self) -> tuple[str, str]:
        return (self.role, self.department)


@dataclass(slots=True)
class PatientProfile:
    id: str
    family: str
    postal: str
    address: str
    vip: bool
    employee: str | None
    deceased: bool


@dataclass(slots=True)
class ContextIndex:
    """The context precomputed for lookups in the scoring loops."""

    users: dict[str, UserProfile] = field(default_factory=dict)
    patients: dict[str, PatientProfile] = field(default_factory=dict)
    # (user, patient) -> windows; (department, patient) -> windows
    user_care: dict[tuple[str, str], list[Window]] = field(default_factory=dict)
    dept_care: dict[tuple[str, str], list[Window]] = field(default_factory=dict)
    # patient -> (start, end with the after-care slack, department treating, end as recorded)
    # for every link, sorted by start
    patient_care: dict[str, list[tuple[float, float, str, float]]] = field(default_factory=dict)
    group_sizes: dict[tuple[str, str], int] = field(default_factory=dict)
    # The context's time zone (IANA name), if it gives one.
    timezone: str | None = None
    # department -> patient -> the windows of care links covering the department's staff
    # (the department's own links and its members'); user -> patient -> the user's own
    # windows (user_care by user); user -> their own patient records. Built on first use.
    _dept_windows: dict[str, dict[str, tuple[Window, ...]]] | None = None
    _user_windows: dict[str, dict[str, list[Window]]] | None = None
    _own_records: dict[str, frozenset[str]] | None = None
    _by_address: dict[str, list[str]] | None = None
    _by_name_postal: dict[tuple[str, str], list[str]] | None = None
    _clocks: dict[str, Clock] = field(default_factory=dict)

    def clock(self, setting: str | None) -> Clock:
        """The hospital's clock: the zone of the settings, else of the context, else UTC."""
        name = setting or self.timezone or "UTC"
        found = self._clocks.get(name)
        if found is None:
            found = self._clocks[name] = Clock(name)
        return found

    def user_windows(self, user: str) -> dict[str, list[Window]]:
        """patient -> the windows of this user's own care links (`user_care`, by user)."""
        if self._user_windows is None:
            by_user: dict[str, dict[str, list[Window]]] = {}
            for (uid, patient), windows in self.user_care.items():
                by_user.setdefault(uid, {})[patient] = windows
            self._user_windows = by_user
        return self._user_windows.get(user, {})

    def department_windows(self, department: str) -> Mapping[str, tuple[Window, ...]]:
        """patient -> the windows of the links by which `covered` answers "department" or
        "colleague" for this department (a patient absent: none). Built for every department
        at once on first use, in one pass over the links."""
        if self._dept_windows is None:
            by_dept: dict[str, dict[str, list[Window]]] = {}
            for (dept, patient), windows in self.dept_care.items():
                by_dept.setdefault(dept, {}).setdefault(patient, []).extend(windows)
            for patient, links in self.patient_care.items():
                for start, end, dept, _recorded in links:
                    by_dept.setdefault(dept, {}).setdefault(patient, []).append((start, end))
            self._dept_windows = {
                dept: {patient: tuple(w) for patient, w in per.items()}
                for dept, per in by_dept.items()
            }
        return self._dept_windows.get(department, _NO_WINDOWS)

    def employees_as_patients(self) -> dict[str, frozenset[str]]:
        """user -> the patient records that are the user's own (employee links; self-access)."""
        if self._own_records is None:
            own: dict[str, set[str]] = {}
            for patient in self.patients.values():
                if patient.employee is not None:
                    own.setdefault(patient.employee, set()).add(patient.id)
            self._own_records = {user: frozenset(ids) for user, ids in own.items()}
        return self._own_records

    def relatives_of(self, user: UserProfile) -> dict[str, str]:
        """patient -> the reason of `family_match(user, patient)` for every patient it gives
        one for (the same answers, looked up in indexes of addresses and of family names
        with postal codes instead of compared with every patient)."""
        if self._by_address is None or self._by_name_postal is None:
            by_address: dict[str, list[str]] = {}
            by_name_postal: dict[tuple[str, str], list[str]] = {}
            for p in self.patients.values():
                if p.address:
                    by_address.setdefault(p.address, []).append(p.id)
                if p.family and p.postal:
                    by_name_postal.setdefault((p.family, p.postal), []).append(p.id)
            self._by_address, self._by_name_postal = by_address, by_name_postal
        candidates = self._by_address.get(user.address, []) if user.address else []
        if user.family and user.postal:
            candidates = candidates + self._by_name_postal.get((user.family, user.postal), [])
        found: dict[str, str] = {}
        for patient_id in candidates:
            reason = family_match(user, self.patients[patient_id])
            if reason is not None:
                found[patient_id] = reason
        return found

    def user(self, user_id: str) -> UserProfile:
        found = self.users.get(user_id)
        if found is None:
            found = UserProfile(user_id, "?", "?", "", "", "")
        return found

    def covered(  # noqa: PLR0917 - called once per pair-day in the hot scoring loop
        self, user: str, department: str, patient: str, first: float, last: float, before: float
    ) -> str | None:
        """The kind of care link covering these accesses, or None.

        A link covers from `before` seconds ahead of its start (a break-the-glass in an
        emergency is followed by the admission) to `after` seconds past its end (results,
        letters and follow-up come after discharge), set by the index builder."""
        for start, end in self.user_care.get((user, patient), ()):
            if start - before <= last and first <= end:
                return "user"
        for start, end in self.dept_care.get((department, patient), ()):
            if start - before <= last and first <= end:
                return "department"
        for start, end, dept, _recorded in self.patient_care.get(patient, ()):
            if start - before > last:
                break
            if dept == department and first <= end:
                return "colleague"
        return None

    def treating(self, patient: str, first: float, last: float) -> set[str]:
        """Departments actively treating the patient around this time: admitted, in the
        emergency room, or with an open appointment or follow-up, from a day before the link
        starts to a day after it ends as recorded (empty: in no one's care). The after-care
        slack of `covered` is left out: a patient discharged ten days ago is no longer a
        ward's patient for the access model."""
        found: set[str] = set()
        for start, _end, dept, recorded in self.patient_care.get(patient, ()):
            if start - DAY > last:
                break
            if first <= recorded + DAY:
                found.add(dept)
        return found


def family_match(user: UserProfile, patient: PatientProfile) -> str | None:
    """A reason when the patient is plausibly a relative or neighbour of the user. A shared
    surname alone is not one (common names are shared by strangers): it needs the same postal
    code or address too; the same street address alone means neighbours or household."""
    same_name = bool(user.family) and user.family == patient.family
    same_address = bool(user.address) and user.address == patient.address
    same_postal = bool(user.postal) and user.postal == patient.postal
    if same_name and same_address:
        return "same family name and address as the user"
    if same_name and same_postal:
        return "same family name and postal code as the user"
    if same_address:
        return "same address as the user (a neighbour or a member of the household)"
    return None


def build_index(context: Context, *, after_end_days: float = 14.0) -> ContextIndex:
    index = ContextIndex(timezone=context.timezone)
    for u in context.users:
        index.users[u.id] = UserProfile(
            u.id,
            u.role or "?",
            u.department or "?",
            normalise(u.family_name),
            normalise(u.postal_code).replace(" ", ""),
            normalise(u.address),
        )
    for p in context.patients:
        index.patients[p.id] = PatientProfile(
            p.id,
            normalise(p.family_name),
            normalise(p.postal_code).replace(" ", ""),
            normalise(p.address),
            p.vip,
            p.employee,
            p.deceased,
        )
    sizes: dict[tuple[str, str], int] = defaultdict(int)
    for profile in index.users.values():
        sizes[profile.group] += 1
    index.group_sizes = dict(sizes)
    slack = after_end_days * DAY
    per_patient: dict[str, list[tuple[float, float, str, float]]] = defaultdict(list)
    for link in context.care:
        start = parse_time(link.start) if link.start else -math.inf
        recorded = parse_time(link.end) if link.end else math.inf
        end = recorded + slack
        if link.user is not None:
            index.user_care.setdefault((link.user, link.patient), []).append((start, end))
            dept = index.user(link.user).department
        else:
            dept = link.department or "?"
        if link.department is not None:
            index.dept_care.setdefault((link.department, link.patient), []).append((start, end))
        per_patient[link.patient].append((start, end, dept, recorded))
    for patient, links in per_patient.items():
        links.sort()
        index.patient_care[patient] = links
    return index


# --- robust statistics ----------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile by nearest rank (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass(frozen=True, slots=True)
class Robust:
    """Median and scaled MAD of a sample: a location and spread a few outliers cannot move."""

    median: float
    spread: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float], floor: float = 1.0) -> Robust:
        med = median(values)
        mad = median([abs(v - med) for v in values])
        # 1.4826 makes the MAD estimate a normal standard deviation; the floor keeps a user
        # who always does exactly the same from turning a one-record change into infinity.
        return cls(med, max(1.4826 * mad, floor, 0.1 * med), len(values))

    def z(self, value: float) -> float:
        return (value - self.median) / self.spread


# --- the user–patient access model ----------------------------------------------------------

NONE = "(no current care)"
LINKED = "(care link)"
ELSEWHERE = "(another department)"

Key = tuple[str, bool]  # (category of the patient, whether the user documented anything)


@dataclass(slots=True)
class AccessModel:
    """Counts of pair-days (user, patient, day) by peer group, by the patient's category at the
    time (`LINKED` when a care link covers the access, else each department actively treating
    the patient, else `NONE`) and by whether the user documented anything (created or updated
    a record of the patient that day); and, per patient, the users of each group who touched
    them. Consults and night cross-cover leave no care link but are common pathways of a peer
    group (physicians writing notes on another ward's patients, residents reading the
    neighbouring ward's at night); curiosity is a read-only look where peers rarely go.

    Counts are kept per user, so a share can leave out the user asking and the one peer who
    contributes most: a pathway is a group's norm only when at least two others take it (one
    colleague's misuse does not make it normal)."""

    # (group, role or user, at night) -> pair-days
    group_total: dict[tuple[tuple[str, str], bool], int] = field(
        default_factory=lambda: defaultdict(int)
    )
    role_total: dict[tuple[str, bool], int] = field(default_factory=lambda: defaultdict(int))
    user_total: dict[tuple[str, bool], int] = field(default_factory=lambda: defaultdict(int))
    # (group or role, category, documented, at night) -> user -> pair-days
    group_key: dict[tuple[tuple[str, str], str, bool, bool], dict[str, int]] = field(
        default_factory=dict
    )
    role_key: dict[tuple[str, str, bool, bool], dict[str, int]] = field(default_factory=dict)
    # user -> (their group, the patients they touched); turned into group -> patient -> the
    # users of the group who touched the patient by `patient_users`.
    _touched: dict[str, tuple[tuple[str, str], set[str]]] = field(default_factory=dict)
    _patient_users: dict[tuple[str, str], dict[str, set[str]]] | None = None
    # (group or role, at night) -> the users with pair-days then
    members: dict[Any, set[str]] = field(default_factory=lambda: defaultdict(set))
    # share() is a pure function of the counts, asked again and again for the same user and
    # pathway: answered once (the model is not added to once scoring starts).
    _shares: dict[tuple[Any, ...], tuple[float, str, str]] = field(default_factory=dict)
    _sums: dict[Any, tuple[int, dict[str, int]]] = field(default_factory=dict)
    _ordered: dict[Any, list[int]] = field(default_factory=dict)

    def add_day(
        self,
        user: UserProfile,
        patients: Iterable[str],
        per_key: Mapping[tuple[str, bool, bool], int],
        per_night: Mapping[bool, int],
    ) -> None:
        """`add` for one user's whole day at once: the patients touched, and the pair-days
        counted by (category, documented, at night) and by night. Same counts as calling
        `add` once per pair-day, with far fewer lookups."""
        self._shares.clear()
        self._sums.clear()
        self._ordered.clear()
        group, role, uid = user.group, user.role, user.id
        for night, n in per_night.items():
            self.group_total[(group, night)] += n
            self.role_total[(role, night)] += n
            self.user_total[(uid, night)] += n
            self.members[(group, night)].add(uid)
            self.members[(role, night)].add(uid)
        group_key, role_key = self.group_key, self.role_key
        for (cat, wrote, night), n in per_key.items():
            per = group_key.setdefault((group, cat, wrote, night), {})
            per[uid] = per.get(uid, 0) + n
            per = role_key.setdefault((role, cat, wrote, night), {})
            per[uid] = per.get(uid, 0) + n
        # Who touched whom is kept per user (one set update per day) and turned around per
        # group when first asked (`patient_users`): far fewer steps than one per pair-day.
        found = self._touched.get(uid)
        if found is None:
            self._touched[uid] = (group, set(patients))
        else:
            found[1].update(patients)
        self._patient_users = None

    def share(
        self,
        user: UserProfile,
        categories: Iterable[str],
        wrote: bool | None = None,
        *,
        night: bool = False,
        min_total: int = 50,
    ) -> tuple[float, str, str]:
        """How usual it is for this user's peers to access such a patient (in this way, when
        `wrote` is given, at night or by day): the largest share, over the categories, of the
        peers' pair-days at that time of day, leaving out the user's own and, for read-only
        pathways, those of one peer who reads that way far more than the others. Falls back to
        the whole role when the group has too few pair-days. Returns (share, category, who the
        peers are; "too few ..." when there is no one to compare with)."""
        # Sorted: a tie between categories names the same one on every run (set order varies
        # with hash randomisation).
        cats = sorted(categories) or [NONE]
        memo = (user.id, user.role, user.department, tuple(cats), wrote, night, min_total)
        found = self._shares.get(memo)
        if found is None:
            found = self._shares[memo] = self._share(user, cats, wrote, night, min_total)
        return found

    def _share(
        self, user: UserProfile, cats: list[str], wrote: bool | None, night: bool, min_total: int
    ) -> tuple[float, str, str]:
        flags = (True, False) if wrote is None else (wrote,)
        uid = user.id
        own_total = self.user_total.get((uid, night), 0)
        best, best_cat = 0.0, cats[0]
        total = self.group_total.get((user.group, night), 0) - own_total
        counts: Mapping[Any, dict[str, int]]
        head: Any
        if total >= min_total:
            counts, head = self.group_key, user.group
            who = f"other {user.role}s of {user.department}"
        else:
            total = self.role_total.get((user.role, night), 0) - own_total
            counts, head = self.role_key, user.role
            who = f"other {user.role}s"
            if total < min_total:
                return 0.0, best_cat, f"too few other {user.role}s to compare"
        for cat in cats:
            # The peers' pair-days this way: everyone's but the user's own, less the one
            # outlier for read-only pathways.
            n = 0
            for flag in flags:
                key = (head, cat, flag, night)
                summed, per_user = self._summary(counts, key)
                n += summed - per_user.get(uid, 0)
            if not n:
                continue
            if wrote is False:
                n -= self._outlier((head, cat, False, night), counts, uid)
            if n / total > best:
                best, best_cat = n / total, cat
        return best, best_cat, who

    def _summary(
        self, counts: Mapping[Any, dict[str, int]], key: Any
    ) -> tuple[int, dict[str, int]]:
        """(sum of the counts, the counts per user) of one (group or role, category,
        documented, at night); cached."""
        found = self._sums.get(key)
        if found is None:
            per_user = counts.get(key, {})
            found = self._sums[key] = (sum(per_user.values()), per_user)
        return found

    def _outlier(self, key: Any, counts: Mapping[Any, dict[str, int]], uid: str) -> int:
        """The count of the one peer who reads this way far more than the others (over 3 times
        the median of the rest, absent peers counting 0), else 0: one colleague's misuse must
        not make a read-only pathway the group's norm. `key` is (group or role, category,
        False, at night); the peers are its members but `uid`."""
        head, _cat, _wrote, night = key
        members = self.members[(head, night)]
        if len(members) - (uid in members) < 3:
            return 0
        per_user = self._summary(counts, key)[1]
        ordered = self._ordered.get(key)
        if ordered is None:
            # Every member's count, absent members counting 0, ascending.
            ordered = self._ordered[key] = sorted(per_user.get(u, 0) for u in members)
        rest = list(ordered)
        if uid in members:
            rest.remove(per_user.get(uid, 0))
        top = rest.pop()  # the top peer's count: the largest once the user's own is out
        typical = rest[len(rest) // 2]
        return top if top > 3 * max(typical, 1) else 0

    def export(self) -> tuple[Any, ...]:
        """The counts as plain values (`marshal` can carry them): one process's share of the
        hospital, for `absorb` in another (the accounts of the two must not overlap)."""
        return (
            dict(self.group_total),
            dict(self.role_total),
            dict(self.user_total),
            self.group_key,
            self.role_key,
            dict(self.members),
            self._touched,
        )

    def absorb(self, other: tuple[Any, ...]) -> None:
        """Add the counts `export` gave of other accounts: the model is then the one the
        pair-days of both give."""
        group_total, role_total, user_total, group_key, role_key, members, touched = other
        _add_counts(self.group_total, group_total)
        _add_counts(self.role_total, role_total)
        _add_counts(self.user_total, user_total)
        _add_per_user(self.group_key, group_key)
        _add_per_user(self.role_key, role_key)
        for key, users in members.items():
            self.members[key] |= users
        for uid, (group, patients) in touched.items():
            found = self._touched.get(uid)
            if found is None:
                self._touched[uid] = (tuple(group), set(patients))
            else:
                found[1].update(patients)
        self._shares.clear()
        self._sums.clear()
        self._ordered.clear()
        self._patient_users = None

    def patient_users(self) -> dict[tuple[str, str], dict[str, set[str]]]:
        """group -> patient -> the users of the group who touched the patient."""
        if self._patient_users is None:
            by_group: dict[tuple[str, str], dict[str, set[str]]] = {}
            for uid, (group, patients) in self._touched.items():
                per_patient = by_group.setdefault(group, {})
                for patient in patients:
                    users = per_patient.get(patient)
                    if users is None:
                        per_patient[patient] = {uid}
                    else:
                        users.add(uid)
            self._patient_users = by_group
        return self._patient_users


def _add_counts(into: dict[Any, int], counts: Mapping[Any, int]) -> None:
    for key, n in counts.items():
        into[key] = into.get(key, 0) + n


def _add_per_user(into: dict[Any, dict[str, int]], counts: Mapping[Any, dict[str, int]]) -> None:
    for key, per_user in counts.items():
        _add_counts(into.setdefault(key, {}), per_user)


def sliding_max(points: Sequence[tuple[float, int]], width: float) -> tuple[int, int, int]:
    """Largest sum of counts within any `width`-second window of time-sorted (ts, count)
    points; returns (sum, first index, last index) of that window."""
    best, best_i, best_j = 0, 0, -1
    total, i = 0, 0
    times = [p[0] for p in points]
    for j, (ts, count) in enumerate(points):
        total += count
        lo = bisect.bisect_left(times, ts - width, i, j + 1)
        while i < lo:
            total -= points[i][1]
            i += 1
        if total > best:
            best, best_i, best_j = total, i, j
    return best, best_i, best_j

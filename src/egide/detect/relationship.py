"""Relationship detectors: snooping, VIP records, coworkers, family and neighbours, self-access,
and slow exfiltration by reading many unrelated patients over days.

Security role: the classic insider misuse of health records is looking at someone one has no
reason to look at. An access is explained when a care link (the user's, their department's,
or a colleague's of the same department) covers it, or when the user's peers commonly access
patients treated where this patient is (the access model); what remains, weighed by who the
patient is (VIP, employee, relative, the user themselves), becomes a finding with reasons a
privacy officer can check.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from egide.detect.baseline import (
    DAY,
    ELSEWHERE,
    LINKED,
    NONE,
    AccessModel,
    ContextIndex,
    PatientProfile,
    UserProfile,
)
from egide.detect.cases import Finding
from egide.detect.features import PairDay, StreamState, UserDay
from egide.detect.settings import DetectSettings

_NOBODY: dict[str, set[str]] = {}
_NOT_DOCUMENTED: frozenset[str | None] = frozenset()


@dataclass(slots=True)
class Uncovered:
    ud: UserDay
    user: UserProfile
    patient: str
    pair: PairDay
    treating: frozenset[str]
    wrote: bool
    night: bool
    # Within an hour of the night's bounds (shift changes): judged by day and by night.
    twilight: bool


def build_model(  # noqa: PLR0915 - the hot scoring loop, written flat on purpose
    state: StreamState, index: ContextIndex, settings: DetectSettings
) -> tuple[AccessModel, list[Uncovered], list[Finding]]:
    """One pass over every (user, patient, day): the access model, the accesses no care link
    covers, and self-access findings (which no care link excuses).

    Runs once per pair-day (hundreds of thousands in a month of a hospital), so the care
    check of `ContextIndex.covered` is inlined (the user's own windows, then the
    department's), and what is the same for every user of a day (who treats a patient) or of
    a user's day (the counts by pathway) is computed once."""
    model = AccessModel()
    uncovered: list[Uncovered] = []
    selfs: list[Finding] = []
    before = settings.care_before_hours * 3600
    patients = index.patients
    treating_of = index.treating
    own_records = index.employees_as_patients()
    clock = index.clock(settings.timezone)
    utc = clock.utc
    hour_of = clock.hour
    night_start, night_end = settings.night_hours
    twilight_hours = {night_start - 1, night_start, night_end - 1, night_end}
    night_of = [h >= night_start or h < night_end for h in range(24)]
    twilight_of = [h in twilight_hours for h in range(24)]
    days = state.days
    # Who treats a patient is looked up once per patient and day (the whole day), not once
    # per user: a patient's day is shared by the nurse, the doctor, the laboratory...
    treating_by_day: dict[int, dict[str, frozenset[str]]] = {}
    documented_cache: dict[tuple[str, int], set[str | None]] = {}
    for key, ud in days.items():
        pairs = ud.pairs
        if not pairs:
            continue
        user = index.user(ud.user)
        uid, department = user.id, user.department
        own_windows = index.user_windows(uid)
        dept_windows = index.department_windows(department)
        own = own_records.get(uid)
        # The day's counts, added to the model at once (AccessModel.add_day): linked
        # pair-days by 2 * documented + at night, the uncovered ones by the same and the
        # departments treating the patient (expanded into categories below).
        linked_counts = [0, 0, 0, 0]
        open_counts: list[dict[frozenset[str], int]] = [{}, {}, {}, {}]
        nights = 0
        # Documenting the same day or the next (a result entered after midnight).
        documented = documented_cache.get(key)
        if documented is None:
            documented = documented_cache[key] = _documented(ud)
        later_key = (ud.user, ud.day + 1)
        later = days.get(later_key)
        more: AbstractSet[str | None] = _NOT_DOCUMENTED
        if later is not None and later.writes:
            found = documented_cache.get(later_key)
            if found is None:
                found = documented_cache[later_key] = _documented(later)
            more = found
        day = ud.day
        day_start = day * DAY
        treating_today = treating_by_day.get(day)
        if treating_today is None:
            treating_today = treating_by_day[day] = {}
        for patient_id, pair in pairs.items():
            first = pair.first
            wrote = patient_id in documented or patient_id in more
            hour = int(first % DAY) // 3600 if utc else hour_of(first)
            night = night_of[hour]
            nights += night
            if own is not None and patient_id in own:
                selfs.append(_self_finding(user, patients[patient_id], pair))
                linked_counts[2 * wrote + night] += 1
                continue
            last = pair.last
            covered = False
            for start, end in own_windows.get(patient_id, ()):
                if start - before <= last and first <= end:
                    covered = True
                    break
            else:
                for start, end in dept_windows.get(patient_id, ()):
                    if start - before <= last and first <= end:
                        covered = True
                        break
            if covered:
                linked_counts[2 * wrote + night] += 1
                continue
            treating = treating_today.get(patient_id)
            if treating is None:
                treating = treating_today[patient_id] = frozenset(
                    treating_of(patient_id, day_start, day_start + DAY)
                )
            counts = open_counts[2 * wrote + night]
            counts[treating] = counts.get(treating, 0) + 1
            uncovered.append(
                Uncovered(ud, user, patient_id, pair, treating, wrote, night, twilight_of[hour])
            )
        per_key: dict[tuple[str, bool, bool], int] = {}
        for k, count in enumerate(linked_counts):
            if count:
                per_key[(LINKED, k >= 2, k % 2 == 1)] = count
        for k, counts in enumerate(open_counts):
            wrote, night = k >= 2, k % 2 == 1
            for treating, count in counts.items():
                for cat in (*treating, ELSEWHERE) if treating else (NONE,):
                    count_key = (cat, wrote, night)
                    per_key[count_key] = per_key.get(count_key, 0) + count
        per_night = {night: n for night, n in ((True, nights), (False, len(pairs) - nights)) if n}
        model.add_day(user, pairs, per_key, per_night)
    return model, uncovered, selfs


def _documented(ud: UserDay) -> set[str | None]:
    """Patients the user created or updated a record of that day."""
    return {w[5] for w in ud.writes if w[4] != "delete"}


def _self_finding(user: UserProfile, patient: PatientProfile, pair: PairDay) -> Finding:
    return Finding(
        kind="self_access",
        severity="medium",
        score=0.7,
        user=user.id,
        patient=patient.id,
        first=pair.first,
        last=pair.last,
        start=pair.t0,
        end=pair.t1,
        events=list(pair.ids),
        reasons=[
            (
                "this user opened their own patient record through their staff account "
                f"({len(pair.ids)} access{'es' if len(pair.ids) > 1 else ''})"
            ),
            "staff see their own record through the patient portal, not the clinical system",
        ],
    )


# Habit keys: (user, documenting, department treating the patient), or (user, documenting,
# (treated elsewhere,)) for the coarse pathway (a tuple, never equal to a department's name).
HabitKey = tuple[str, bool, "str | tuple[bool]"]


def _pathway(item: Uncovered) -> tuple[bool]:
    """The coarse way of an uncovered access: whose patient (treated elsewhere or in no care);
    with the user and whether documenting, a habit key."""
    return (bool(item.treating),)


def _habits(uncovered: list[Uncovered]) -> dict[HabitKey, set[int]]:
    """(user, documenting, department or coarse pathway) -> the days this user accessed,
    without care link, patients that department was treating (or in that coarse way)."""
    # Gathered by the set of departments treating first (far fewer than the accesses), then
    # spread to each department and to the coarse pathway.
    by_treating: dict[tuple[str, bool, frozenset[str]], set[int]] = {}
    for item in uncovered:
        key = (item.user.id, item.wrote, item.treating)
        found = by_treating.get(key)
        if found is None:
            by_treating[key] = {item.ud.day}
        else:
            found.add(item.ud.day)
    days: dict[HabitKey, set[int]] = {}
    for (uid, wrote, treating), seen in by_treating.items():
        for dept in treating:
            days.setdefault((uid, wrote, dept), set()).update(seen)
        days.setdefault((uid, wrote, (bool(treating),)), set()).update(seen)
    return days


def relationship_findings(  # noqa: PLR0915 - one decision, its reasons beside it
    uncovered: list[Uncovered],
    model: AccessModel,
    index: ContextIndex,
    settings: DetectSettings,
    skip: set[tuple[str, str]],
    *,
    unexplained: set[tuple[str, int, str]] | None = None,
) -> list[Finding]:
    """Findings for uncovered accesses; `skip` holds (user, patient) pairs another detector
    owns (break-the-glass). `unexplained`, when given, receives the (user, day, patient) of
    every access neither a care link nor the peers' norms explain (for the credentials
    detector: someone else behind an account reads strangers)."""
    findings: list[Finding] = []
    snoops: dict[str, list[Finding]] = {}
    habits = _habits(uncovered)
    min_total = settings.group_min_pair_days
    patients = index.patients
    # What the peers and the user's habits say depends on the pathway only (user, whose
    # patient, documenting or not, time of day): judged once per pathway, not per access.
    norms: dict[tuple[str, frozenset[str], bool, bool, bool], _Norm] = {}
    # Relatives and neighbours of each user, and who of each group touched each patient:
    # looked up per access rather than computed.
    kin_of: dict[str, dict[str, str]] = {}
    touched = model.patient_users()
    unknown = PatientProfile("", "", "", "", False, None, False)  # noqa: FBT003
    for item in uncovered:
        user, pair, patient = item.user, item.pair, item.patient
        uid = user.id
        if skip and (uid, patient) in skip:
            continue
        memo = (uid, item.treating, item.wrote, item.night, item.twilight)
        norm = norms.get(memo)
        if norm is None:
            norm = norms[memo] = _norm(item, model, habits, min_total)
        share, cat, who, habit, documented_share = norm
        info = patients.get(patient, unknown)
        kins = kin_of.get(uid)
        if kins is None:
            kins = kin_of[uid] = index.relatives_of(user)
        kin = kins.get(patient)
        others = touched.get(user.group, _NOBODY).get(patient)
        peers = 0 if others is None else len(others) - (uid in others)
        by_peers = peers >= settings.peers_ordinary and share >= settings.affinity_ordinary / 5
        if item.wrote:
            # Documented care (a consult note, a result): ordinary along a pathway the group
            # takes, whether its members document or only read there.
            share = max(share, documented_share)
            explained = (
                share >= settings.affinity_ordinary or by_peers or habit >= settings.habit_days
            )
        elif kin is None and not info.vip and info.employee is None:
            explained = (
                share >= settings.affinity_ordinary or by_peers or habit >= settings.habit_days
            )
        else:
            # A relative's, a coworker's or a VIP's record only read: ordinary work explains it
            # only when the group reads such patients as a matter of course.
            # Groups too small to have a norm of their own are judged on the user's own
            # habit (a resident covering the neighbouring ward every night).
            small = " of " not in who
            explained = share >= settings.affinity_sensitive or (
                small and habit >= settings.habit_days
            )
        if explained:
            continue
        if unexplained is not None:
            unexplained.add((user.id, item.ud.day, item.patient))
        reasons = _reasons(item, user, share, cat, who, peers, info.deceased)
        n = len(pair.ids)
        if kin is not None:
            score = 0.85 if "family name" in kin else 0.75
            findings.append(_finding("family", "high", score, item, [kin, *reasons]))
        elif info.employee is not None:
            reasons.insert(0, "the patient is an employee of the hospital (a coworker)")
            findings.append(_finding("coworker", "high", 0.8, item, reasons))
        elif info.vip:
            reasons.insert(0, "the patient is flagged VIP (a public figure)")
            findings.append(_finding("vip", "high", 0.82, item, reasons))
        else:
            score = 0.6 + 0.2 * (1 - share / settings.affinity_ordinary)
            if not item.treating:
                score += 0.05
            if info.deceased:
                score += 0.05
            how = "documenting" if item.wrote else "reading only"
            reasons.insert(0, f"{n} access{'es' if n > 1 else ''} on this day, {how}")
            snoops.setdefault(user.id, []).append(
                _finding("snooping", "medium", min(score, 0.95), item, reasons)
            )
    for user_id, items in snoops.items():
        findings.extend(_snoop_or_exfiltrate(user_id, items, settings))
    return findings


# (share, category, who the peers are, the user's habit in days, share of any documenting)
_Norm = tuple[float, str, str, int, float]


def _norm(
    item: Uncovered,
    model: AccessModel,
    habits: dict[HabitKey, set[int]],
    min_total: int,
) -> _Norm:
    """How ordinary an uncovered access's pathway is: the peers' share of it (by day and by
    night within an hour of the night's bounds), the user's own habit of it, and, when the
    user documented, the peers' share of documenting or reading there (consults)."""
    user = item.user
    share, cat, who = model.share(
        user, item.treating, item.wrote, night=item.night, min_total=min_total
    )
    if item.twilight:
        share, cat, who = max(
            (share, cat, who),
            model.share(user, item.treating, item.wrote, night=not item.night, min_total=min_total),
        )
    habit = max(
        (len(habits.get((user.id, item.wrote, d), ())) - 1 for d in item.treating),
        default=0,
    )
    if share == 0.0 and who.startswith("too few"):
        # No peers to learn from: the user's own pathway on other days is the norm.
        habit = max(habit, len(habits.get((user.id, item.wrote, _pathway(item)), ())) - 1)
    documented_share = 0.0
    if item.wrote:
        # (documenting on other departments' patients at all counts: consults).
        cats = (*item.treating, ELSEWHERE) if item.treating else ()
        documented_share = max(
            model.share(user, cats, None, night=night, min_total=min_total)[0]
            for night in ({item.night, not item.night} if item.twilight else {item.night})
        )
    return share, cat, who, habit, documented_share


def _reasons(  # noqa: PLR0917 - private, one call site
    item: Uncovered,
    user: UserProfile,
    share: float,
    cat: str,
    who: str,
    peers: int,
    deceased: bool,
) -> list[str]:
    where = (
        "the patient was in no department's care at the time"
        if not item.treating
        else f"the patient was treated by {', '.join(sorted(item.treating))}, "
        f"not by this user's department ({user.department})"
    )
    how = "documenting" if item.wrote else "only reading"
    whom = "in no one's care" if cat == NONE else f"treated by {cat}"
    reasons = [
        "no appointment, admission or care-team link between this user and this patient",
        where,
        (
            f"there are {who}"
            if who.startswith("too few")
            else f"{_percent(share)} of the accesses by {who} are {how} on patients {whom}"
        ),
        (
            f"{peers} colleague{'s' if peers != 1 else ''} of the same role and department "
            "accessed this patient"
        ),
    ]
    if deceased:
        reasons.append("the patient is deceased")
    return reasons


def _snoop_or_exfiltrate(
    user_id: str, items: list[Finding], settings: DetectSettings
) -> list[Finding]:
    """Many unrelated patients over several days is copying, not curiosity: one exfiltration
    finding instead of a snooping finding per patient."""
    patients = {f.patient for f in items}
    days = {int(f.first // DAY) for f in items}
    if len(patients) < settings.slow_patients or len(days) < settings.slow_days:
        return items
    items.sort(key=lambda f: f.first)
    events = [e for f in items for e in f.events]
    per_day = len(patients) / len(days)
    return [
        Finding(
            kind="exfiltration",
            severity="high",
            score=min(0.95, 0.75 + 0.005 * len(patients)),
            user=user_id,
            patient=None,
            first=items[0].first,
            last=items[-1].last,
            start=items[0].start,
            end=items[-1].end,
            events=events,
            reasons=[
                (
                    f"{len(patients)} patients read over {len(days)} days (about {per_day:.0f} a "
                    "day) with no care link and no colleague of the same role and department "
                    "touching them: slow extra reading, the pattern of copying records"
                ),
                "no appointment, admission or care-team link between this user and these patients",
            ],
        )
    ]


def _finding(
    kind: str, severity: str, score: float, item: Uncovered, reasons: list[str]
) -> Finding:
    pair = item.pair
    return Finding(
        kind=kind,
        severity=severity,
        score=score,
        user=item.user.id,
        patient=item.patient,
        first=pair.first,
        last=pair.last,
        start=pair.t0,
        end=pair.t1,
        events=list(pair.ids),
        reasons=reasons,
    )


def _percent(share: float) -> str:
    if share <= 0:
        return "none"
    if share < 0.01:
        return "under 1%"
    return f"{share * 100:.0f}%"

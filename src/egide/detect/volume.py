"""Volume detectors: exfiltration bursts (exports, mass reading) and mass modification or
deletion (ransomware, sabotage).

Security role: damage by volume happens fast; a burst is judged against the user's own usual
(robust: their median and spread over all their days) and against their peers' busiest days
(a billing clerk's month-end batch is ordinary when other clerks do it too, or when this clerk
did it before), never against a fixed hospital-wide number alone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from egide.detect.baseline import ContextIndex, Robust, quantile, sliding_max
from egide.detect.cases import Finding
from egide.detect.features import Rare, StreamState, UserDay
from egide.detect.settings import DetectSettings


class Baselines:
    """Per user and per peer group: daily volumes of each measure."""

    def __init__(
        self,
        state: StreamState,
        index: ContextIndex,
        settings: DetectSettings,
        *,
        peers: Baselines | None = None,
    ) -> None:
        """`peers` (live): the baselines of the whole hospital, when `state` holds only some
        accounts; their own days come from `state`, the peer groups' from `peers`."""
        width = settings.burst_window_minutes * 60
        self.index = index
        self.settings = settings
        self.clock = index.clock(settings.timezone)
        self._bulk: dict[tuple[str, int], list[Rare]] = {}
        self._destructive: dict[tuple[str, int], list[Rare]] = {}
        self.user_days: dict[str, list[UserDay]] = defaultdict(list)
        for ud in state.days.values():
            self.user_days[ud.user].append(ud)
        # measure -> user -> per-day values
        self.values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for user, days in self.user_days.items():
            for ud in days:
                if not ud.n:
                    continue
                self.values["patients"][user].append(len(ud.pairs))
                self.values["exports"][user].append(window_sum(self.bulk(ud), width))
                self.values["writes"][user].append(window_sum(self.destructive(ud), width))
        self._group_values: dict[tuple[str, tuple[str, str]], list[tuple[str, float]]] | None = (
            None if peers is None else peers._groups()  # noqa: SLF001 - same class
        )

    def export(self) -> dict[str, dict[str, list[float]]]:
        """The daily volumes of these accounts as plain values (for `absorb` elsewhere)."""
        return {measure: dict(per_user) for measure, per_user in self.values.items()}

    def absorb(self, values: dict[str, dict[str, list[float]]]) -> None:
        """Other accounts' daily volumes (`export` of another share of the hospital): the
        peer groups are then those of both."""
        for measure, per_user in values.items():
            self.values[measure].update(per_user)
        self._group_values = None

    def _groups(self) -> dict[tuple[str, tuple[str, str]], list[tuple[str, float]]]:
        """(measure, group or ("role", role)) -> (user, daily value) of every member."""
        if self._group_values is None:
            groups: dict[tuple[str, tuple[str, str]], list[tuple[str, float]]] = {}
            for measure, per_user in self.values.items():
                for user, vals in per_user.items():
                    group = self.index.user(user).group
                    bucket = groups.setdefault((measure, group), [])
                    bucket.extend((user, v) for v in vals)
                    role_bucket = groups.setdefault((measure, ("role", group[0])), [])
                    role_bucket.extend((user, v) for v in vals)
            self._group_values = groups
        return self._group_values

    def bulk(self, ud: UserDay) -> list[Rare]:
        """The day's exports but referrals: an export of one patient whom the user treats
        (a care link covers it) is a letter or a transfer, not a copy of the records."""
        if not ud.exports:
            return ud.exports
        key = (ud.user, ud.day)
        found = self._bulk.get(key)
        if found is None:
            found = self._bulk[key] = self._bulk_of(ud)
        return found

    def _bulk_of(self, ud: UserDay) -> list[Rare]:
        profile = self.index.user(ud.user)
        before = self.settings.care_before_hours * 3600
        covered = self.index.covered
        return [
            r
            for r in ud.exports
            if r[5] is None or not covered(ud.user, profile.department, r[5], r[0], r[0], before)
        ]

    def destructive(self, ud: UserDay) -> list[Rare]:
        """The day's updates and deletes (cached: asked by the baseline and the detector)."""
        key = (ud.user, ud.day)
        found = self._destructive.get(key)
        if found is None:
            found = self._destructive[key] = _destructive(ud.writes)
        return found

    def own(self, measure: str, user: str) -> Robust:
        return Robust.of(self.values[measure].get(user, []))

    def own_other_days(self, measure: str, user: str, value: float) -> int:
        """On how many other days this user reached at least this volume."""
        vals = self.values[measure].get(user, [])
        return sum(1 for v in vals if v >= value) - 1

    def peers_high(self, measure: str, user: str) -> tuple[float, str]:
        """The peer group's high quantile of daily volume (others only); the role's when the
        group is small. Returns (value, who it describes)."""
        profile = self.index.user(user)
        q = self.settings.peer_quantile
        for key, label in (
            (profile.group, f"other {profile.role}s of {profile.department}"),
            (("role", profile.role), f"other {profile.role}s"),
        ):
            others = [v for u, v in self._groups().get((measure, key), []) if u != user]
            if len(others) >= 20:
                return quantile(others, q), label
        return 0.0, "peers (too few to compare)"


def _destructive(writes: Iterable[Rare]) -> list[Rare]:
    return [w for w in writes if w[4] in {"update", "delete"}]


def window_sum(items: list[Rare], width: float) -> int:
    if not items:
        return 0
    return sliding_max([(r[0], r[3]) for r in items], width)[0]


def volume_findings(state: StreamState, base: Baselines, settings: DetectSettings) -> list[Finding]:
    findings: list[Finding] = []
    width = settings.burst_window_minutes * 60
    for user, days in base.user_days.items():
        for ud in days:
            exports = base.bulk(ud)
            if exports:
                found = _burst(
                    "exports",
                    "exfiltration",
                    user,
                    exports,
                    base,
                    settings,
                    width,
                    settings.export_min_records,
                    "exported",
                )
                if found:
                    findings.append(found)
            destructive = base.destructive(ud)
            if destructive:
                found = _burst(
                    "writes",
                    "mass_modification",
                    user,
                    destructive,
                    base,
                    settings,
                    width,
                    settings.write_min_records,
                    "modified or deleted",
                )
                if found:
                    findings.append(found)
            if len(ud.pairs) >= settings.read_burst_min_patients:
                found = _read_burst(user, ud, base, settings)
                if found:
                    findings.append(found)
    del state
    return findings


def _burst(  # noqa: PLR0917 - private, one call site per measure
    measure: str,
    kind: str,
    user: str,
    items: list[Rare],
    base: Baselines,
    settings: DetectSettings,
    width: float,
    minimum: int,
    verb: str,
) -> Finding | None:
    items = sorted(items)
    total, i, j = sliding_max([(r[0], r[3]) for r in items], width)
    if total < minimum:
        return None
    own = base.own(measure, user)
    peers, who = base.peers_high(measure, user)
    repeated = base.own_other_days(measure, user, total * 0.7)
    fresh = own.n < 2  # no other day to compare with: a new account, a new token
    if fresh:
        # Its first day is its own baseline (a z of 0): the peers and twice the least volume
        # worth an alert decide instead, so a stolen new credential cannot copy freely.
        if total < 2 * minimum:
            return None
    elif own.z(total) < settings.burst_z or repeated >= 2:
        return None
    if total <= settings.burst_peer_factor * peers:
        return None
    window = items[i : j + 1]
    first, last = window[0], window[-1]
    clock = base.clock
    patients = {r[5] for r in window if r[5]}
    history = (
        "this account has no other day of activity to compare with"
        if fresh
        else f"this user has never {verb} records on any other day"
        if own.median == 0 and repeated <= 0
        else f"this user's usual day is about {own.median:.0f} records {verb}"
    )
    reasons = [
        f"{total} records {verb} between {clock.hhmm(first[0], first[1])} and "
        f"{clock.hhmm(last[0], last[1])}" + (f" ({len(patients)} patients)" if patients else ""),
        history,
        f"the busiest days of {who} reach about {peers:.0f} records",
    ]
    if kind == "mass_modification":
        deletes = sum(r[3] for r in window if r[4] == "delete")
        if deletes:
            reasons.insert(1, f"{deletes} of them deleted")
    purposes = sorted({r[6] for r in window if r[6]})
    if purposes:
        reasons.append(f"stated purpose: {', '.join(purposes)[:120]}")
    hour = clock.hour(first[0])
    if hour < 6 or hour >= 22:
        reasons.append("at night")
    score = min(0.98, 0.75 + 0.05 * min(own.z(total), 40) / 8)
    return Finding(
        kind=kind,
        severity="critical" if total >= 2.5 * minimum else "high",
        score=score,
        user=user,
        patient=next(iter(patients)) if len(patients) == 1 else None,
        first=first[0],
        last=last[0],
        start=first[1],
        end=last[1],
        events=[r[2] for r in window],
        reasons=reasons,
    )


def _read_burst(
    user: str, ud: UserDay, base: Baselines, settings: DetectSettings
) -> Finding | None:
    total = len(ud.pairs)
    own = base.own("patients", user)
    peers, who = base.peers_high("patients", user)
    repeated = base.own_other_days("patients", user, total * 0.7)
    if own.z(total) < settings.burst_z or repeated >= 2:
        return None
    if total <= settings.burst_peer_factor * peers:
        return None
    pairs = sorted(ud.pairs.values(), key=lambda p: p.first)
    events = [e for p in pairs for e in p.ids]
    return Finding(
        kind="exfiltration",
        severity="high",
        score=min(0.95, 0.7 + 0.05 * min(own.z(total), 40) / 8),
        user=user,
        patient=None,
        first=pairs[0].first,
        last=pairs[-1].last,
        start=pairs[0].t0,
        end=pairs[-1].t1,
        events=events,
        reasons=[
            (
                f"{total} patients' records read between "
                f"{base.clock.hhmm(pairs[0].first, pairs[0].t0)} and "
                f"{base.clock.hhmm(pairs[-1].last, pairs[-1].t1)}"
            ),
            f"this user's usual day is about {own.median:.0f} patients",
            f"the busiest days of {who} reach about {peers:.0f} patients",
        ],
    )

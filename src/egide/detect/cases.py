"""Findings (what one detector saw) and cases (what the privacy officer reviews).

Security role: a privacy officer can review only a few alerts a day, so related findings of
the same account and kind are merged into one case (one snooper, one case) while keeping all
the evidence ids and every reason; ids are derived from the evidence, so a rerun over the same
events writes the same alerts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from egide.detect.events import Alert, alert_id

SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}
MAX_REASONS = 12


@dataclass(slots=True)
class Finding:
    kind: str
    severity: str
    score: float
    user: str | None
    patient: str | None
    first: float
    last: float
    start: str
    end: str
    events: list[str]
    reasons: list[str] = field(default_factory=list)

    def to_tuple(self) -> tuple[Any, ...]:
        """Plain values, in field order (`marshal` carries them between processes)."""
        return (
            self.kind,
            self.severity,
            self.score,
            self.user,
            self.patient,
            self.first,
            self.last,
            self.start,
            self.end,
            self.events,
            self.reasons,
        )

    @classmethod
    def from_tuple(cls, values: tuple[Any, ...] | list[Any]) -> Finding:
        return cls(*values)


# Which finding hosts which when one account's findings share evidence: the intrusion, the
# sabotage or the bulk copy is the case; the unexplained reads inside it are part of it.
PRECEDENCE = (
    "credential_stuffing",
    "stolen_credentials",
    "mass_modification",
    "exfiltration",
    "break_glass_abuse",
    "self_access",
    "vip",
    "coworker",
    "family",
    "snooping",
)
_RANK = {kind: rank for rank, kind in enumerate(PRECEDENCE)}


def absorb(findings: list[Finding]) -> list[Finding]:
    """Fold each finding into a finding of the same account and a stronger kind that shares
    one of its evidence events (the reads of an intruder's session belong to the intrusion, the
    records read before a mass deletion to the deletion): one case, not one per detector."""
    by_user: dict[str | None, list[Finding]] = {}
    for finding in findings:
        by_user.setdefault(finding.user, []).append(finding)
    kept: list[Finding] = []
    for user, items in by_user.items():
        if user is None or len(items) == 1:
            kept.extend(items)
            continue
        items.sort(key=lambda f: (_RANK.get(f.kind, len(_RANK)), f.first))
        hosts: list[tuple[Finding, set[str]]] = []
        for finding in items:
            host = next(
                (
                    h
                    for h, ids in hosts
                    if h.kind != finding.kind and not ids.isdisjoint(finding.events)
                ),
                None,
            )
            if host is None:
                hosts.append((finding, set(finding.events)))
                kept.append(finding)
                continue
            ids = next(ids for h, ids in hosts if h is host)
            host.events.extend(e for e in finding.events if e not in ids)
            ids.update(finding.events)
            if finding.reasons and finding.reasons[0] not in host.reasons:
                host.reasons.append(finding.reasons[0])
    return kept


def group_cases(findings: list[Finding], *, gap_seconds: float) -> list[Alert]:
    """Merge findings of the same user and kind whose spans lie within `gap_seconds` of each
    other into one alert; alerts sorted by score (highest first), then id."""
    buckets: dict[tuple[str, str | None], list[Finding]] = {}
    for finding in findings:
        buckets.setdefault((finding.kind, finding.user), []).append(finding)
    alerts: list[Alert] = []
    for items in buckets.values():
        items.sort(key=lambda f: (f.first, f.events[0] if f.events else ""))
        case: list[Finding] = []
        case_end = 0.0
        for finding in items:
            if case and finding.first - case_end > gap_seconds:
                alerts.append(_merge(case))
                case = []
            case.append(finding)
            case_end = max(case_end, finding.last) if len(case) > 1 else finding.last
        if case:
            alerts.append(_merge(case))
    alerts.sort(key=lambda a: (-a.score, a.id))
    return alerts


def _merge(case: list[Finding]) -> Alert:
    first = min(case, key=lambda f: f.first)
    last = max(case, key=lambda f: f.last)
    events: list[str] = []
    seen: set[str] = set()
    for finding in case:
        for eid in finding.events:
            if eid not in seen:
                seen.add(eid)
                events.append(eid)
    patients = {f.patient for f in case}
    reasons: list[str] = []
    for finding in sorted(case, key=lambda f: -f.score):
        for reason in finding.reasons:
            if reason not in reasons:
                reasons.append(reason)
    if len(reasons) > MAX_REASONS:
        extra = len(reasons) - MAX_REASONS + 1
        reasons = [*reasons[: MAX_REASONS - 1], f"... and {extra} more similar observations"]
    top = max(case, key=lambda f: (SEVERITY_RANK[f.severity], f.score))
    severity = top.severity
    # Several patients or several days in one case: more suspicious than one look.
    score = min(1.0, top.score + 0.03 * (len(case) - 1))
    if len(patients) >= 3 and SEVERITY_RANK[severity] < SEVERITY_RANK["high"]:
        severity = "high"
    if len(case) > 1 and len(patients) > 1:
        reasons.insert(0, f"{len(patients)} patients in this case ({len(case)} findings)")
    kind = case[0].kind
    user = case[0].user
    return Alert(
        id=alert_id(kind, user, first.events[0] if first.events else first.start),
        kind=kind,
        severity=severity,
        score=round(score, 4),
        user=user,
        patient=next(iter(patients)) if len(patients) == 1 else None,
        start=first.start,
        end=last.end,
        events=tuple(events),
        reasons=tuple(reasons),
    )

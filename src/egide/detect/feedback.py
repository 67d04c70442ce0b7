"""The privacy officer's feedback: alerts marked as false positives quiet their look-alikes.

Security role: an officer who is shown the same harmless pattern every day stops reading the
queue, and then misses the real snooper. When the officer marks an alert as a false positive,
later cases of the same kind for the same account (and, for the kinds about one patient, the
same patient) stay quiet for `feedback_days`, unless they are stronger than the one dismissed:
a higher severity, or a score above it by `feedback_margin`. A stronger case still alerts, and
says that a weaker look-alike was dismissed, so feedback can never hide an escalation.

Feedback narrows; it never widens: it only removes or annotates alerts the detectors raised.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from egide.detect.cases import SEVERITY_RANK
from egide.detect.events import Alert, parse_time
from egide.detect.settings import DetectSettings

DAY = 86_400.0
# Kinds about one patient: a dismissal covers that account with that patient only (the
# cardiologist who consults on a ward's patient is not thereby cleared for every patient).
PATIENT_KINDS = frozenset({"coworker", "family", "self_access", "snooping", "vip"})


@dataclass(frozen=True, slots=True)
class Dismissal:
    """An alert the officer marked as a false positive."""

    alert_id: str
    kind: str
    user: str | None
    patient: str | None
    severity: str
    score: float
    end: float  # seconds since the epoch: the end of its evidence
    day: str  # the date it ended, for the reason shown to the officer

    @classmethod
    def of(cls, alert: Alert) -> Dismissal:
        return cls(
            alert_id=alert.id,
            kind=alert.kind,
            user=alert.user,
            patient=alert.patient,
            severity=alert.severity,
            score=alert.score,
            end=parse_time(alert.end),
            day=alert.end[:10],
        )


class Feedback:
    """The officer's dismissals, indexed by (kind, user)."""

    def __init__(self, dismissals: Iterable[Dismissal] = ()) -> None:
        self._by_key: dict[tuple[str, str | None], list[Dismissal]] = {}
        for item in dismissals:
            self._by_key.setdefault((item.kind, item.user), []).append(item)
        self.ids = frozenset(d.alert_id for items in self._by_key.values() for d in items)

    def __len__(self) -> int:
        return len(self.ids)

    def apply(self, alerts: Sequence[Alert], settings: DetectSettings) -> list[Alert]:
        """The alerts the officer still needs to see: look-alikes of a dismissed alert
        removed, stronger ones annotated. An alert that is itself dismissed is kept (its
        evidence may still grow; the store keeps its status)."""
        if not self._by_key:
            return list(alerts)
        kept: list[Alert] = []
        for alert in alerts:
            verdict = self._judge(alert, settings)
            if verdict is not None:
                kept.append(verdict)
        return kept

    def _judge(self, alert: Alert, settings: DetectSettings) -> Alert | None:
        if alert.id in self.ids or alert.user is None:
            return alert
        start = parse_time(alert.start)
        stronger: list[Dismissal] = []
        for item in self._by_key.get((alert.kind, alert.user), ()):
            if alert.kind in PATIENT_KINDS and item.patient != alert.patient:
                continue
            # Only what comes after (or overlaps) the dismissed evidence, for a while.
            if start < item.end - settings.case_gap_days * DAY:
                continue
            if start > item.end + settings.feedback_days * DAY:
                continue
            if (
                SEVERITY_RANK[alert.severity] <= SEVERITY_RANK[item.severity]
                and alert.score <= item.score + settings.feedback_margin
            ):
                return None  # a look-alike of what the officer found harmless
            stronger.append(item)
        if not stronger:
            return alert
        latest = max(stronger, key=lambda d: d.end)
        note = (
            f"a similar, weaker alert ({latest.alert_id}, {latest.day}) was marked a false "
            "positive; this one is stronger"
        )
        return replace(alert, reasons=(*alert.reasons, note))

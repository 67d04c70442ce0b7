"""The detection engine: events in, alerts out, in batch or in micro-batches.

Security role: the one entry point that runs every detector over the same aggregates and
groups their findings into cases, so the CLI (batch over files) and, later, the live feed from
the ledger (micro-batches) judge behaviour identically.

`Detector` keeps all state in the object: `feed` folds a batch of events into the aggregates
(and, with `settings.live`, scores whenever a day closes, returning alerts not returned
before); `finish` scores everything and returns the final alerts. `detect` is the batch
shorthand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from egide.detect.baseline import ContextIndex, build_index
from egide.detect.breakglass import break_glass_findings
from egide.detect.cases import Finding, absorb, group_cases
from egide.detect.credentials import failure_findings, stolen_findings
from egide.detect.events import Alert, BadLine, Context, Event, Record
from egide.detect.features import DAY, StreamState, as_records, ingest, ingest_file, no_gc
from egide.detect.relationship import build_model, relationship_findings
from egide.detect.settings import DetectSettings
from egide.detect.volume import Baselines, volume_findings


@dataclass(frozen=True, slots=True)
class Summary:
    events: int
    user_days: int
    unknown_actions: int


class Detector:
    """Stateful detector over one stream of events (in time order)."""

    def __init__(self, context: Context, settings: DetectSettings | None = None) -> None:
        self.settings = settings or DetectSettings()
        self.index: ContextIndex = build_index(
            context, after_end_days=self.settings.care_after_days
        )
        self.state = StreamState()
        self._emitted: dict[str, Alert] = {}
        self._scored_day: int | None = None

    def feed(self, events: Iterable[Event | Record]) -> list[Alert]:
        """Fold events in; in live mode, alerts new since the last call once a day closed."""
        ingest(self.state, as_records(events))
        return self._live_alerts() if self.settings.live else []

    def feed_records(self, records: Iterable[Record]) -> int:
        """Fold checked records (events.read_records); returns how many."""
        return ingest(self.state, records)

    def feed_file(
        self,
        path: Path,
        *,
        on_bytes: Callable[[int], object] | None = None,
        on_bad: Callable[[BadLine], object] | None = None,
    ) -> int:
        """The fast path: read, check and fold an events file (features.ingest_file); bad
        lines go to `on_bad` with their line numbers. Returns how many events were folded."""
        return ingest_file(self.state, path, on_bytes=on_bytes, on_bad=on_bad)

    def finish(self) -> list[Alert]:
        """Score everything seen; the complete, sorted list of alerts."""
        alerts = self.score()
        self._emitted = {a.id: a for a in alerts}
        return alerts

    def summary(self) -> Summary:
        return Summary(self.state.events, len(self.state.days), self.state.unknown_actions)

    def score(self) -> list[Alert]:
        with no_gc():  # scoring builds many small objects and no cycles
            return self._score()

    def _score(self) -> list[Alert]:
        state, index, settings = self.state, self.index, self.settings
        findings: list[Finding] = []
        bg_findings, bg_pairs = break_glass_findings(state, index, settings)
        findings += bg_findings
        model, uncovered, selfs = build_model(state, index, settings)
        findings += selfs
        unexplained: set[tuple[str, int, str]] = set()
        findings += relationship_findings(
            uncovered, model, index, settings, bg_pairs, unexplained=unexplained
        )
        findings += volume_findings(state, Baselines(state, index, settings), settings)
        findings += failure_findings(state, settings)
        findings += stolen_findings(state, index, settings, unexplained)
        return group_cases(absorb(findings), gap_seconds=settings.case_gap_days * DAY)

    def _live_alerts(self) -> list[Alert]:
        last_day = int(self.state.last_ts // DAY)
        if self._scored_day is not None and last_day <= self._scored_day:
            return []
        self._scored_day = last_day
        fresh = [a for a in self.score() if self._emitted.get(a.id) != a]
        self._emitted.update((a.id, a) for a in fresh)
        return fresh


def detect(
    events: Iterable[Event | Record],
    context: Context,
    *,
    settings: DetectSettings | None = None,
) -> list[Alert]:
    """Batch detection: every event, then every alert (sorted by score, highest first)."""
    detector = Detector(context, settings)
    detector.feed(events)
    return detector.finish()

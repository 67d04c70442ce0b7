"""The detection engine: events in, alerts out, in batch or live in micro-batches.

Security role: the one entry point that runs every detector over the same aggregates and
groups their findings into cases, so the CLI (batch over files) and the live feed from the
ledger (micro-batches, `incidents.live`) judge behaviour identically.

`Detector` keeps all state in the object. Batch: `feed` (or `feed_file`) folds events into
the aggregates and `finish` scores everything once. Live: `update` folds a micro-batch and
returns the alerts that are new or have changed since the last call; to stay fast on weeks
of history it re-judges only the accounts the batch touched, against a hospital-wide access
model rebuilt at most every `live_model_minutes` of stream time (everything else is cheap and
computed whole). `forget_before` bounds the memory to a sliding window, `set_context` takes a
fresher context (new admissions, new staff), and `set_feedback` the officer's dismissals.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from egide.detect import parallel as two
from egide.detect.baseline import AccessModel, ContextIndex, build_index
from egide.detect.breakglass import break_glass_findings
from egide.detect.cases import Finding, absorb, group_cases
from egide.detect.credentials import (
    History,
    brute_force_findings,
    build_history,
    failure_findings,
    logins_of,
    stolen_findings,
    stuffing_findings,
    stuffing_windows,
)
from egide.detect.events import Alert, BadLine, Context, Event, Record, parse_time
from egide.detect.features import (
    DAY,
    Failure,
    StreamState,
    as_records,
    ingest,
    ingest_file,
    no_gc,
    split_point,
)
from egide.detect.feedback import Dismissal, Feedback
from egide.detect.relationship import build_model, relationship_findings
from egide.detect.settings import DetectSettings
from egide.detect.volume import Baselines, volume_findings

NO_CARE_ROLES = frozenset({"service"})
# The share of a file the first process reads when both processes also judge (run_file):
# after reading, the two do the same work (measured on 1 M simulated events).
JUDGED_FIRST_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class Summary:
    events: int
    user_days: int
    unknown_actions: int


@dataclass(slots=True)
class _Model:
    """What the last full scoring learned of the whole hospital (live mode): the access
    model, the peer groups' volumes, the devices and networks in use."""

    model: AccessModel
    at: float  # stream time it was built at
    day: int
    baselines: Baselines | None = None
    history: History | None = None


class Detector:
    """Stateful detector over one stream of events (in time order)."""

    def __init__(
        self,
        context: Context,
        settings: DetectSettings | None = None,
        *,
        feedback: Iterable[Dismissal] = (),
    ) -> None:
        self.settings = settings or DetectSettings()
        self.index: ContextIndex = build_index(
            context, after_end_days=self.settings.care_after_days
        )
        self.state = StreamState()
        self.feedback = Feedback(feedback)
        self._emitted: dict[str, Alert] = {}
        self._model: _Model | None = None
        # Set by run_file when the file was judged in two processes (see there).
        self._spent: Summary | None = None

    # --- batch -------------------------------------------------------------------------------

    def feed(self, events: Iterable[Event | Record]) -> None:
        """Fold events in (checked as lines of an events file; DetectFormatError on the first
        that does not follow the format)."""
        self._check_whole()
        ingest(self.state, as_records(events))

    def feed_records(self, records: Iterable[Record]) -> int:
        """Fold checked records (events.read_records); returns how many."""
        self._check_whole()
        return ingest(self.state, records)

    def feed_file(
        self,
        path: Path,
        *,
        on_bytes: Callable[[int], object] | None = None,
        on_bad: Callable[[BadLine], object] | None = None,
    ) -> int:
        """The fast path: read, check and fold an events file (features.ingest_file); bad
        lines go to `on_bad` with their line numbers. Returns the number of events folded."""
        self._check_whole()
        return ingest_file(self.state, path, on_bytes=on_bytes, on_bad=on_bad)

    def run_file(
        self,
        path: Path,
        *,
        on_bytes: Callable[[int], object] | None = None,
        on_bad: Callable[[BadLine], object] | None = None,
        on_read: Callable[[], object] | None = None,
        split: int | None = None,
    ) -> list[Alert]:
        """Batch in one call (`egide detect run`): the alerts `feed_file` then `finish` give.

        A large file on a machine of two cores or more is read *and judged* by two processes
        (`parallel.score_split`), each over the accounts given to it, so that scoring shares
        the cores as reading does. The detector then holds only its share of the accounts'
        days: it answers `summary` (for the whole file) and nothing more. `on_read()` once
        the whole file is read (scoring goes on: a progress bar's stage). `split` (tests)
        forces the two processes and where the file is divided. Should the second process
        be lost, the file is read and judged again here, in one process."""
        self._check_whole()
        if split is None and not self.state.days and not self.state.failures:
            split = split_point(path, first_share=JUDGED_FIRST_SHARE)
        if split is None or self.state.days or self.state.failures:
            self.feed_file(path, on_bytes=on_bytes, on_bad=on_bad)
            if on_read is not None:
                on_read()
            return self.finish()
        reported = [0]  # the last line number passed to on_bad
        counted = [0]  # the bytes passed to on_bytes
        told = [False]

        def read() -> None:
            if on_read is not None and not told[0]:
                told[0] = True
                on_read()

        def bad_line(line: BadLine) -> None:
            reported[0] = line.line_no
            if on_bad is not None:
                on_bad(line)

        def progress(n: int) -> None:
            counted[0] += n
            if on_bytes is not None:
                on_bytes(n)

        settings = self.settings
        # This process's stuffing windows (from every failure, which both processes hold):
        # used again to combine the verdicts.
        windows_here: list[list[tuple[str, list[Failure]]]] = []

        def judge(
            view: StreamState, owned: Callable[[str], bool], exchange: two.Exchange
        ) -> tuple[Any, ...]:
            # Every finding about these accounts but credential stuffing's (which spans
            # accounts: judged here once from both processes' sign-ins), as plain values.
            findings = self._findings(view, None, exchange=exchange)
            windows = stuffing_windows(view.failures, settings)
            windows_here.append(windows)
            guessed = brute_force_findings(view, windows, settings, owned)
            return (
                [f.to_tuple() for f in findings],
                [f.to_tuple() for f in guessed],
                logins_of(view, windows, settings),
            )

        with no_gc():
            result = two.score_split(
                self.state,
                path,
                split,
                judge,
                on_bytes=progress,
                on_bad=bad_line,
                on_read=read,
            )
            if result is not None:
                mine, theirs, user_days = result
                alerts = self._alerts(self._both(mine, theirs, windows_here[0]))
                # What remains of the aggregates lives as long as the detector: out of the
                # cycle collector's reach, as after `ingest_file`.
                gc.freeze()
        if result is None:
            self._read_again(path, reported[0], counted[0], bad_line, progress)
            read()
            return self.finish()
        self._emitted = {a.id: a for a in alerts}
        self._spent = Summary(self.state.events, user_days, self.state.unknown_actions)
        return alerts

    def _both(
        self,
        mine: tuple[Any, ...],
        theirs: tuple[Any, ...],
        windows: list[tuple[str, list[Failure]]],
    ) -> list[Finding]:
        """The two processes' verdicts (run_file) as the findings one process gives, in its
        order: each account's own findings, then credential stuffing (judged here from the
        stuffing `windows` and both processes' sign-ins), then brute force (cases keep that
        order in a tie)."""
        found = [Finding.from_tuple(f) for f in mine[0] + theirs[0]]
        found += stuffing_findings(windows, mine[2] + theirs[2], self.settings)
        found += [Finding.from_tuple(f) for f in mine[1] + theirs[1]]
        return found

    def _read_again(
        self,
        path: Path,
        reported: int,
        counted: int,
        on_bad: Callable[[BadLine], object],
        on_bytes: Callable[[int], object],
    ) -> None:
        """The file read here alone after the worker of run_file was lost: lines up to
        `reported` were passed to on_bad already, `counted` bytes to on_bytes (the progress
        moves on from there)."""
        self.state = StreamState()
        seen = [0]

        def again(line: BadLine) -> None:
            if line.line_no > reported:
                on_bad(line)

        def more(n: int) -> None:
            seen[0] += n
            extra = min(n, seen[0] - counted)
            if extra > 0:
                on_bytes(extra)

        ingest_file(self.state, path, on_bad=again, on_bytes=more, parallel=False)

    def _check_whole(self) -> None:
        if self._spent is not None:
            msg = "this detector judged a file in two processes and holds only its share of it"
            raise RuntimeError(msg)

    def finish(self) -> list[Alert]:
        """Score everything seen; the complete, sorted list of alerts."""
        alerts = self.score()
        self._emitted = {a.id: a for a in alerts}
        return alerts

    def summary(self) -> Summary:
        if self._spent is not None:
            return self._spent
        return Summary(self.state.events, len(self.state.days), self.state.unknown_actions)

    def score(self) -> list[Alert]:
        """Every alert of the state, sorted (all accounts, a fresh access model)."""
        self._check_whole()
        with no_gc():  # scoring builds many small objects and no cycles
            return self._score(None)

    # --- live --------------------------------------------------------------------------------

    def update(self, events: Iterable[Event | Record]) -> list[Alert]:
        """Live: fold a micro-batch (in time order, after what was fed before) and return the
        alerts that are new or changed since the last call (a case whose evidence grew comes
        back with the same id), sorted."""
        self._check_whole()
        records = list(as_records(events))
        ingest(self.state, records)
        touched = {r["user"] for r in records}
        with no_gc():
            model = self._model
            last = self.state.last_ts
            refresh = self.settings.live_model_minutes * 60
            if model is None or last - model.at >= refresh or int(last // DAY) != model.day:
                alerts = self._score(None, live=True)
            elif touched:
                alerts = self._score(touched, live=True)
            else:
                alerts = []
        fresh = [a for a in alerts if self._emitted.get(a.id) != a]
        self._emitted.update((a.id, a) for a in fresh)
        return fresh

    def warm(self, events: Iterable[Event | Record]) -> list[Alert]:
        """Live: fold history (the window before now) and score it whole; its alerts count as
        returned, so the next `update` returns only what is new. Returns them (a restarted
        server stores them again under the same ids, which changes nothing stored)."""
        self.feed(events)
        alerts = self.score()
        self._emitted.update((a.id, a) for a in alerts)
        return alerts

    def retract(self, alert_ids: Iterable[str]) -> None:
        """Alerts returned but not delivered (their store refused them): returned again the
        next time they are scored."""
        for alert_id in alert_ids:
            self._emitted.pop(alert_id, None)

    def set_context(self, context: Context, *, keep_model: bool = False) -> None:
        """A fresher context (new care links, staff, patients); the next update judges with
        it. The hospital-wide model (the peers' shares, volumes, devices in use) is rebuilt
        at the next update, or, with `keep_model` (live, as admissions come and go), at its
        usual time (`live_model_minutes`, a new day): rebuilding it means judging every
        account again, seconds on weeks of a large hospital, and one admission changes
        little of what peers do. The accounts an update touches are always judged with the
        fresh context."""
        self.index = build_index(context, after_end_days=self.settings.care_after_days)
        if not keep_model:
            self._model = None

    def set_feedback(self, dismissals: Iterable[Dismissal]) -> None:
        """The officer's current dismissals (replacing the previous set); the next update
        scores every account again, so what a withdrawn dismissal hid comes back."""
        self.feedback = Feedback(dismissals)
        self._model = None

    def forget_before(self, cutoff: float) -> int:
        """Drop the aggregates of days before `cutoff` (seconds since the epoch) and the
        failures before it: the live window. Returns how many user-days were dropped."""
        first_day = int(cutoff // DAY)
        state = self.state
        old = [key for key in state.days if key[1] < first_day]
        for key in old:
            del state.days[key]
        for user in [u for u, ud in state.current.items() if ud.day < first_day]:
            del state.current[user]
        state.failures = [f for f in state.failures if f.ts >= cutoff]
        self._emitted = {k: a for k, a in self._emitted.items() if parse_time(a.end) >= cutoff}
        if old:
            self._model = None
        return len(old)

    # --- scoring -----------------------------------------------------------------------------

    def _score(self, only: set[str] | None, *, live: bool = False) -> list[Alert]:
        """Alerts of every account (`only` None: also rebuilds the access model), or of the
        accounts in `only` against the last model. Findings about sign-in failures span
        accounts (one address, many accounts) and are always computed whole."""
        state = self.state
        view = state if only is None else _view(state, only)
        findings = self._findings(view, only, live=live)
        findings += failure_findings(state, self.settings)
        return self._alerts(findings)

    def _alerts(self, findings: list[Finding]) -> list[Alert]:
        """Findings grouped into cases, the officer's dismissals applied."""
        settings = self.settings
        alerts = group_cases(absorb(findings), gap_seconds=settings.case_gap_days * DAY)
        return self.feedback.apply(alerts, settings)

    def _findings(
        self,
        view: StreamState,
        only: set[str] | None,
        *,
        live: bool = False,
        exchange: two.Exchange | None = None,
    ) -> list[Finding]:
        """Every finding about the accounts of `view` but the sign-in failures'.

        `only` None: `view` is the whole stream, or (with `exchange`) one process's share of
        its accounts, all their days; the hospital-wide parts (access model, peer volumes,
        devices and networks) are learned from it, or from it and what `exchange` returns for
        the other share. `only` given: those accounts against the last model."""
        state, index, settings = self.state, self.index, self.settings
        findings: list[Finding] = []
        bg_findings, bg_pairs = break_glass_findings(view, index, settings)
        findings += bg_findings
        built, uncovered, selfs = build_model(view, index, settings)
        # A service account (an interface engine, a billing export, a backend app) has no
        # care relationship by nature: the relationship detectors leave it alone, while its
        # volumes, devices and addresses are judged like anyone's.
        uncovered = [u for u in uncovered if u.user.role not in NO_CARE_ROLES]
        # Volumes compare with the peers' days and sessions with the whole hospital's
        # devices and networks: live, those come from the last full scoring, and the touched
        # accounts' own history from now.
        if only is None:
            baselines = Baselines(view, index, settings)
            history = build_history(view, index, settings)
            if exchange is not None:
                theirs = exchange((built.export(), baselines.export(), history.export()))
                built.absorb(theirs[0])
                baselines.absorb(theirs[1])
                history.absorb(theirs[2])
            self._model = _Model(
                built, state.last_ts, int(state.last_ts // DAY), baselines, history
            )
            model = built
        else:
            cached = self._model
            assert cached is not None
            assert cached.history is not None
            model = cached.model
            baselines = Baselines(view, index, settings, peers=cached.baselines)
            history = cached.history
            history.refresh(state, view)
        findings += selfs
        unexplained: set[tuple[str, int, str]] = set()
        related = relationship_findings(
            uncovered, model, index, settings, bg_pairs, unexplained=unexplained
        )
        if live:
            # What explains an access without care link often comes later the same day or
            # the next (the note written after the look, a colleague taking over): live,
            # such findings wait until that day is over, so the officer sees what a batch
            # run would, not every morning's first look.
            ripe = int(state.last_ts // DAY) - settings.live_settle_days
            related = [f for f in related if int(f.last // DAY) < ripe]
        findings += related
        findings += volume_findings(view, baselines, settings)
        findings += stolen_findings(view, index, settings, unexplained, history=history)
        return findings


def _view(state: StreamState, users: set[str]) -> StreamState:
    """The state restricted to some accounts' days (shared objects, nothing copied)."""
    return StreamState(
        days={key: ud for key, ud in state.days.items() if key[0] in users},
        failures=state.failures,
        events=state.events,
        first_ts=state.first_ts,
        last_ts=state.last_ts,
    )


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

"""Live behavioural detection: every ledger entry flows to the detector, in micro-batches.

Security role: this is where the audit trail becomes protection. The server calls `step`
every `detect_interval_seconds`; each step reads the ledger entries committed since the last
one, turns them into access events (DESIGN.md, "Access event"; the ledger's canonical JSON
already is one), feeds them to `detect.Detector.update`, stores the alerts that are new or
whose evidence grew (`alerts.record_detected`: the officer's triage is kept), and applies the
administrator's response to an account whose alert just became critical
(`identity.containment`). The officer's false positives go back into the detector
(`detect.feedback`), so a look-alike of a dismissed alert stays quiet.

What the detector remembers is bounded: `detect_window_days` of history, learned again from
the ledger when the server starts (so a restart loses nothing, and alerts found again keep
their ids: nothing is duplicated or reopened). Care links, staff and patients come from the
database (`incidents.context`) and are refreshed before judging a batch that changed them, so
the read that follows an admission is judged with the admission known.

Entries become visible in commit order, not in `seq` order (PostgreSQL hands out sequence
numbers before commit, and a batch Bundle may hold its numbers for as long as it runs): a seq
skipped over is looked for again until every transaction that was running when it was first
missed has ended (PostgreSQL's snapshot xmin has passed the xmax of then); only a rolled-back
transaction leaves a hole for ever. SQLite writers are serialised, so there a hole can only
be a rollback, forgotten after `GAP_SECONDS`.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from egide.core.errors import EgideError
from egide.core.settings import Settings
from egide.db.engine import transaction
from egide.db.lease import Lease
from egide.detect.engine import Detector
from egide.detect.events import ACTIONS, Alert, Context, Record, format_time
from egide.detect.feedback import Dismissal
from egide.detect.settings import DetectSettings
from egide.identity.containment import contain
from egide.incidents.alerts import DETECTOR, Status, note_response, record_detected
from egide.incidents.alerts import Alert as StoredAlert
from egide.incidents.context import ContextBuilder
from egide.incidents.models import AlertRow
from egide.ledger.models import LedgerEntry
from egide.records.links import LINKED_TYPES
from egide.records.repository import RecordServices

logger = logging.getLogger("egide.detect.live")

BATCH_MAX = 5000  # entries read per query; a backlog is worked through in several
GAP_SECONDS = 10.0
FEEDBACK_SECONDS = 2.0
CONTEXT_SECONDS = 600.0  # a full refresh of the context at least this often
FORGET_SECONDS = 60.0
# A response acts on what is happening: an alert whose evidence ended longer ago than this
# (found again at start-up, or after an outage) is stored, not acted on.
RESPONSE_FRESH = dt.timedelta(hours=1)
_ACTIONS = frozenset(ACTIONS)
UNKNOWN_USER = "unknown"  # failed sign-ins naming no account
# Writes of these change who treats whom, or who is who: the context is rebuilt first.
_CONTEXT_TYPES = LINKED_TYPES | {"Patient", "Practitioner", "PractitionerRole", "RelatedPerson"}
_STAFF_ACTIONS = frozenset(
    {
        "account_create",
        "account_disable",
        "account_enable",
        "account_role_change",
        "token_create",
        "token_revoke",
    }
)
_GRANT_ACTIONS = frozenset({"access_grant", "access_grant_end", "break_glass", "break_glass_end"})
_WRITES = frozenset({"create", "update", "delete"})


@dataclass
class StepReport:
    """What one step did (for logs, tests and the latency bench)."""

    entries: int = 0
    events: int = 0
    alerts: list[str] = field(default_factory=list)  # ids stored (new or grown)
    responses: list[str] = field(default_factory=list)
    context_rebuilt: bool = False
    # Another process of the installation holds the detection lease: this one waits.
    standby: bool = False


def access_event(entry: dict[str, Any]) -> Record | None:
    """A ledger entry as an access event for detection, or None when detection has no use
    for it: acts of Égide's own jobs (`system:*`: seeding, maintenance, this detector),
    administrative acts, entries without an actor, and the officer's reads of an alert's
    evidence (the review itself, each naming its alert). Service accounts and API clients are
    judged like anyone: a stolen integration credential is an insider too.

    Failed sign-ins for unknown accounts are kept under one user, `unknown`: guessing at
    names is one case however many addresses it comes from (and no address, however odd,
    becomes an account id)."""
    action = entry.get("action")
    if action not in _ACTIONS:
        return None
    user, role = entry.get("user"), entry.get("role")
    if isinstance(user, str) and user.startswith("system:"):
        return None
    if user == "anonymous" or role == "anonymous":
        if action not in {"login_failed", "mfa_failed"}:
            return None
        user = UNKNOWN_USER
    if not isinstance(user, str) or not user:
        return None
    if role == "security_officer" and any(
        isinstance(r, str) and r.startswith("evidence of alert ") for r in entry.get("reasons", ())
    ):
        return None
    return {
        "id": entry["id"],
        "time": entry["time"],
        "user": user,
        "action": action,
        "outcome": entry.get("outcome") or "success",
        "patient": entry.get("patient"),
        "resource_type": entry.get("resource_type"),
        "count": entry.get("count", 1),
        "ip": entry.get("ip"),
        "device": entry.get("device"),
        "purpose": entry.get("purpose"),
    }


@dataclass
class _Changes:
    """What a batch of entries changed in the context."""

    staff: bool = False
    practitioners: set[str] = field(default_factory=set)
    patients: set[str] = field(default_factory=set)
    links_of: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return self.staff or bool(self.practitioners or self.patients or self.links_of)


def _changes(entries: Iterable[dict[str, Any]]) -> _Changes:
    found = _Changes()
    for entry in entries:
        action, kind = entry.get("action"), entry.get("resource_type")
        patient, resource_id = entry.get("patient"), entry.get("resource_id")
        if entry.get("outcome", "success") != "success":
            continue
        if action in _STAFF_ACTIONS:
            found.staff = True
        elif action in _GRANT_ACTIONS and patient:
            found.links_of.add(patient)
        elif action in _WRITES and kind in _CONTEXT_TYPES:
            if kind in {"PractitionerRole", "RelatedPerson"}:
                found.staff = True  # departments and guardians are memberships
            if kind == "Practitioner" and resource_id:
                found.practitioners.add(resource_id)
            if kind == "Patient" and resource_id:
                found.patients.add(resource_id)
            if patient:
                found.links_of.add(patient)
    return found


class LiveDetection:
    """The ledger-to-detector feed of one server process. `step` is safe to call from any
    thread (steps never overlap)."""

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        records: RecordServices,
        settings: Settings,
        detect_settings: DetectSettings | None = None,
        context_source: Callable[[Session], Context] | None = None,
        lease: Lease | None = None,
    ) -> None:
        """`context_source` replaces the context built from the database (the latency
        benchmark judges a simulated hospital whose staff and patients are not stored).
        `lease`: one detector per installation (`db.lease`); a process without it waits, and
        takes over (learning the window anew) when the holder is gone."""
        self.session_factory = session_factory
        self._context_source = context_source
        self._builder = ContextBuilder(services=records, clock=records.clock)
        self.records = records
        self.settings = settings
        self.detect_settings = detect_settings or DetectSettings()
        self.detector: Detector | None = None
        self._lock = threading.Lock()
        self._max_seen = 0  # the highest seq read
        # Seqs skipped over -> when first missed: PostgreSQL's snapshot xmax then, or (SQLite)
        # the monotonic time.
        self._missing: dict[int, float] = {}
        self._last_feedback = self._last_context = self._last_forget = 0.0
        self._lease = lease

    # --- the step ----------------------------------------------------------------------------

    def step(self) -> StepReport:
        """Read what the ledger gained, judge it, store and act on the alerts."""
        with self._lock:
            report = StepReport()
            if self._lease is not None and not self._lease.try_hold():
                # Another process detects for the installation (or this one lost the lease
                # with its database connection): what was learned here is dropped, to be
                # learned anew from the ledger if the lease comes back.
                self.detector = None
                report.standby = True
                return report
            if self.detector is None:
                self._start(report)
            detector = self.detector
            assert detector is not None
            try:
                self._judge(detector, report)
            except Exception:
                # Whatever went wrong, nothing is lost: the next step learns the window
                # again from the ledger and stores what it finds under the same ids.
                self.detector = None
                raise
            return report

    def close(self) -> None:
        """Give the lease up (server shutdown): another process may detect at once."""
        with self._lock:
            if self._lease is not None:
                self._lease.release()
            self.detector = None

    def _judge(self, detector: Detector, report: StepReport) -> None:
        now = time.monotonic()
        with self.session_factory() as session:
            entries = self._read(session)
            report.entries = len(entries)
            changed = _changes(entries)
            if now - self._last_context >= CONTEXT_SECONDS:
                detector.set_context(self._full_context(session))
                self._last_context = now
                report.context_rebuilt = True
            elif changed:
                # Before judging: the read that follows an admission sees the admission.
                detector.set_context(self._updated_context(session, changed), keep_model=True)
                report.context_rebuilt = True
            # The officer's triage is ledgered (alert_update): it reaches the detector in the
            # step that sees it; a timer catches anything else.
            triaged = any(e.get("action") == "alert_update" for e in entries)
            if triaged or now - self._last_feedback >= FEEDBACK_SECONDS:
                self._feedback(session, detector)
                self._last_feedback = now
            session.commit()  # the context's audit entries (records.demographics)
        events = [e for e in map(access_event, entries) if e is not None]
        report.events = len(events)
        alerts = detector.update(events) if events else []
        if now - self._last_forget >= FORGET_SECONDS:
            cutoff = self.records.clock.now() - dt.timedelta(days=self.settings.detect_window_days)
            detector.forget_before(cutoff.timestamp())
            self._last_forget = now
        if alerts:
            self._store(alerts, report)

    def _start(self, report: StepReport) -> None:
        """Learn the window of history from the ledger; store what it finds (already stored
        alerts are found again under their ids and change nothing the officer did)."""
        cutoff = self.records.clock.now() - dt.timedelta(days=self.settings.detect_window_days)
        with self.session_factory() as session:
            detector = Detector(self._full_context(session), self.detect_settings)
            self._last_context = time.monotonic()
            self._feedback(session, detector)
            session.commit()
            last = session.scalar(select(LedgerEntry.seq).order_by(LedgerEntry.seq.desc()))
            self._max_seen = last or 0
            self._missing.clear()
            self._holes_below(session, self._max_seen)
            history = map(access_event, self._history(session, cutoff, self._max_seen))
            alerts = detector.warm(e for e in history if e is not None)
        self.detector = detector
        report.context_rebuilt = True
        if alerts:
            self._store(alerts, report, warm=True)

    # --- reading the ledger ------------------------------------------------------------------

    def _history(
        self, session: Session, cutoff: dt.datetime, upto: int
    ) -> Iterator[dict[str, Any]]:
        rows = session.execute(
            select(LedgerEntry.canonical)
            .where(LedgerEntry.time >= cutoff, LedgerEntry.seq <= upto)
            .order_by(LedgerEntry.seq)
            .execution_options(yield_per=2000)
        )
        # Commit order is time order to within a transaction's length: close enough for
        # the aggregates (and streaming keeps weeks of history out of memory).
        for (canonical,) in rows:
            yield orjson.loads(canonical)

    def _read(self, session: Session) -> list[dict[str, Any]]:
        rows = list(
            session.execute(
                select(LedgerEntry.seq, LedgerEntry.canonical)
                .where(LedgerEntry.seq > self._max_seen)
                .order_by(LedgerEntry.seq)
                .limit(BATCH_MAX)
            )
        )
        if self._missing:
            # Holes left behind: committed late, or rolled back (then never coming).
            late = list(
                session.execute(
                    select(LedgerEntry.seq, LedgerEntry.canonical).where(
                        LedgerEntry.seq.in_(sorted(self._missing))
                    )
                )
            )
            for seq, _ in late:
                self._missing.pop(seq, None)
            rows = late + rows
            self._forget_settled_holes(session)
        mark = self._mark(session)
        expected = self._max_seen + 1
        for seq, _ in sorted(r for r in rows if r[0] > self._max_seen):
            for hole in range(expected, seq):
                self._missing.setdefault(hole, mark)
            expected = seq + 1
            self._max_seen = seq
        entries = [orjson.loads(canonical) for _, canonical in rows]
        entries.sort(key=lambda e: e["time"])
        return entries

    def _mark(self, session: Session) -> float:
        """When a hole is first seen: on PostgreSQL the first transaction id not yet
        started (every transaction that could still fill the hole has a smaller one)."""
        if session.get_bind().dialect.name == "postgresql":
            value = session.execute(
                text("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
            ).scalar_one()
            return float(value)
        return time.monotonic()

    def _forget_settled_holes(self, session: Session) -> None:
        """Drop the holes no running transaction can fill any more (rolled back)."""
        if session.get_bind().dialect.name == "postgresql":
            oldest = float(
                session.execute(
                    text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
                ).scalar_one()
            )
            settled = [seq for seq, xmax in self._missing.items() if oldest >= xmax]
        else:
            now = time.monotonic()
            settled = [seq for seq, since in self._missing.items() if now - since >= GAP_SECONDS]
        for seq in settled:
            del self._missing[seq]

    def _holes_below(self, session: Session, last: int) -> None:
        """At start: entries numbered before the last committed one but not committed yet
        (PostgreSQL) are holes to watch like any other."""
        if last <= 0 or session.get_bind().dialect.name != "postgresql":
            return
        low = max(0, last - BATCH_MAX)
        present = set(
            session.scalars(
                select(LedgerEntry.seq).where(LedgerEntry.seq > low, LedgerEntry.seq <= last)
            )
        )
        mark = self._mark(session)
        for seq in range(low + 1, last + 1):
            if seq not in present:
                self._missing.setdefault(seq, mark)

    # --- context and feedback ----------------------------------------------------------------

    def _full_context(self, session: Session) -> Context:
        if self._context_source is not None:
            return self._context_source(session)
        return self._builder.full(session)

    def _updated_context(self, session: Session, changed: _Changes) -> Context:
        if self._context_source is not None:
            return self._context_source(session)
        return self._builder.update(
            session,
            staff=changed.staff,
            practitioners=changed.practitioners,
            patients=changed.patients,
            links_of=changed.links_of,
        )

    def _feedback(self, session: Session, detector: Detector) -> None:
        cutoff = self.records.clock.now() - dt.timedelta(
            days=self.settings.detect_window_days + self.detect_settings.feedback_days
        )
        rows = session.scalars(
            select(AlertRow).where(
                AlertRow.status == Status.FALSE_POSITIVE.value, AlertRow.end_at >= cutoff
            )
        ).all()
        ids = frozenset(r.id for r in rows)
        if ids == detector.feedback.ids:
            return  # unchanged: the model is not rebuilt for nothing
        detector.set_feedback(_dismissal(r) for r in rows)

    # --- storing and acting ------------------------------------------------------------------

    def _store(self, alerts: Iterable[Alert], report: StepReport, *, warm: bool = False) -> None:
        if self._lease is not None and not self._lease.try_hold():
            # The lease went while judging (a long start, a lost connection): another
            # process may be detecting already, and alone may store and contain. What was
            # found here, it finds too.
            self.detector = None
            report.standby = True
            return
        clock = self.records.clock
        now = clock.now()
        actions = list(self.settings.detect_response)
        refused: list[str] = []
        with transaction(self.session_factory) as session:
            for alert in alerts:
                try:
                    with session.begin_nested():  # one bad alert does not lose the others
                        recorded = record_detected(session, alert.to_json(), clock=clock)
                except (EgideError, IntegrityError):
                    # Refused (or stored meanwhile by another server process): judged
                    # again at the next step rather than lost.
                    logger.exception("alert %s could not be stored", alert.id)
                    refused.append(alert.id)
                    continue
                report.alerts.append(recorded.alert.id)
                stored = recorded.alert
                if (
                    actions
                    and recorded.became_critical
                    and stored.user is not None
                    and now - stored.end <= RESPONSE_FRESH
                ):
                    self._respond(session, stored, actions, report)
        if refused and self.detector is not None:
            self.detector.retract(refused)
        if warm:
            logger.info("live detection started; %d alerts in the window", len(report.alerts))

    def _respond(
        self, session: Session, stored: StoredAlert, actions: list[str], report: StepReport
    ) -> None:
        """The administrator's response, in its own savepoint: a failure is logged and the
        alert stays stored (the officer still sees it), never a step that fails for ever."""
        clock = self.records.clock
        assert stored.user is not None
        try:
            with session.begin_nested():
                done = contain(
                    session,
                    user_id=stored.user,
                    kind=stored.kind,
                    actions=actions,
                    reason=f"critical alert {stored.id} ({stored.kind})",
                    clock=clock,
                    actor=DETECTOR,
                )
                if done:
                    note_response(session, alert_id=stored.id, done=done)
        except Exception:
            logger.exception("the automatic response to alert %s failed", stored.id)
            return
        report.responses.extend(done)


def _dismissal(row: AlertRow) -> Dismissal:
    end = row.end_at.astimezone(dt.UTC)
    return Dismissal(
        alert_id=row.id,
        kind=row.kind,
        user=row.user_id,
        patient=row.patient_id,
        severity=row.severity,
        score=row.score,
        end=end.timestamp(),
        day=format_time(end.timestamp())[:10],
    )

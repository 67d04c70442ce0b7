"""What detection remembers of the event stream: per user and day, the patients touched, the
sessions (device or address), the hours, the volumes, and the rare events (exports, writes,
break-the-glass, sign-in failures) kept whole.

Security role: these aggregates are the only memory of the stream, so every alert's evidence
(event ids, time span) must be recoverable from them: each pair (user, patient, day) and each
session keeps the ids of its events.

Speed role: `fold` runs once per event and is the hot loop of `egide detect run`; it is
written flat (local names, no per-event objects beyond one id appended to two lists) because
every attribute access there costs on millions of events. `ingest_file` feeds it straight from
the file (lines parsed and their fields taken out in C, see `fold_lines`; a large file in two
processes at once, see `parallel`); `ingest` feeds it records. Both check every event as
`events.check_record` does.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import msgspec
import orjson

from egide.detect.events import (
    OUTCOMES,
    BadLine,
    DetectFormatError,
    Record,
    bad_json,
    check_record,
    read_chunks,
    timestamp,
)

DAY = 86_400.0
# Actions that touch a patient's data (the access model and relationship detectors).
ACCESS_ACTIONS = frozenset(
    {"read", "search", "create", "update", "delete", "export", "break_glass"}
)
WRITE_ACTIONS = frozenset({"create", "update", "delete"})
AUTH_ACTIONS = frozenset({"login", "login_failed", "mfa_failed", "logout"})


class PairDay:
    """One user's accesses to one patient in one day."""

    __slots__ = ("first", "ids", "last", "t0", "t1")

    def __init__(self, ts: float, time: str, eid: str) -> None:
        self.first = ts
        self.last = ts
        self.t0 = time
        self.t1 = time
        self.ids = [eid]


class Session:
    """One user's activity from one device (or address when no device) in one day."""

    __slots__ = (
        "device",
        "first",
        "ids",
        "ip",
        "ips",
        "last",
        "n",
        "patients",
        "t0",
        "t1",
    )

    def __init__(self, device: str | None, ip: str | None, ts: float, time: str) -> None:
        self.device = device
        self.ip = ip
        self.ips: set[str] = set()
        self.first = ts
        self.last = ts
        self.t0 = time
        self.t1 = time
        self.ids: list[str] = []
        self.n = 0
        self.patients: set[str] = set()
        # The local hours it spans are derived when judged (clock.Clock.span_hours): keeping
        # them per event costs too much.


SessionFactory = Callable[[str | None, str | None, float, str], Session]

# (ts, time, id, count, action or purpose...) tuples for the rare events kept whole.
Rare = tuple[float, str, str, int, str, str | None, str | None]


@dataclass(slots=True)
class UserDay:
    """Everything one account did in one UTC day."""

    user: str
    day: int
    n: int = 0
    records: int = 0
    # Accesses per UTC hour (clock.Clock.day_hours gives them by the hospital's hours).
    hours: list[int] = field(default_factory=lambda: [0] * 24)
    pairs: dict[str, PairDay] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)
    # Rare events kept whole: time, id, count, action, patient and purpose of each.
    exports: list[Rare] = field(default_factory=list)
    writes: list[Rare] = field(default_factory=list)
    break_glass: list[Rare] = field(default_factory=list)
    # Sign-ins: time, id, "login"/"logout"/"failed", address and device of each.
    auth: list[Rare] = field(default_factory=list)
    other: int = 0


@dataclass(slots=True)
class Failure:
    """A failed sign-in (login_failed, mfa_failed, or a login whose outcome is not success)."""

    ts: float
    time: str
    id: str
    user: str
    ip: str | None
    device: str | None


@dataclass(slots=True)
class StreamState:
    """All aggregates of the stream so far."""

    days: dict[tuple[str, int], UserDay] = field(default_factory=dict)
    current: dict[str, UserDay] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    events: int = 0
    unknown_actions: int = 0
    first_ts: float | None = None
    last_ts: float = 0.0

    def userday(self, user: str, day: int) -> UserDay:
        key = (user, day)
        found = self.days.get(key)
        if found is None:
            found = self.days[key] = UserDay(user, day)
        self.current[user] = found
        return found


def ingest(state: StreamState, records: Iterable[Record]) -> int:
    """Fold records into `state`; returns how many. Each is checked as a line of an events file
    would be (DetectFormatError on the first that does not follow the format)."""
    bad: list[BadLine] = []
    n = fold(state, map(_fields, records), 1, bad, stop_at_bad=True)
    if bad:
        raise DetectFormatError(bad[0].message)
    return n


# Files from this size on are read by two processes (one per core of a small server); below
# it, starting the second one costs more than it saves.
PARALLEL_MIN_BYTES = 8 << 20
# The share of the file the first process folds: the second also packs its state for the
# transfer, the first unpacks and merges it (measured on 1 M simulated events). From a gzip
# file, the second also decompresses the first part to skip it (about 0.3 s per 200 MB).
FIRST_SHARE = 0.53
FIRST_SHARE_GZIP = 0.56
# From this many events folded by one call, the state is frozen for the collector (gc.freeze).
FREEZE_MIN_EVENTS = 100_000


def ingest_file(
    state: StreamState,
    path: Path,
    *,
    on_bytes: Callable[[int], object] | None = None,
    on_bad: Callable[[BadLine], object] | None = None,
    chunk_bytes: int = 1 << 20,
    split: int | None = None,
    parallel: bool = True,
) -> int:
    """Read, check and fold every line of a `.jsonl` or `.jsonl.gz` events file (the fast path
    of `egide detect run`): a line that is not a valid event is passed to `on_bad` as a BadLine
    with its 1-based line number, in file order; blank lines are skipped. `on_bytes(n)` as
    bytes are read (uncompressed), for a progress bar. Returns the number of events folded.

    A large file (PARALLEL_MIN_BYTES) is read in two parts at once where the system can fork
    (`parallel.ingest_split`): this process folds the lines beginning before the offset
    `split` (uncompressed bytes; by default FIRST_SHARE of the file), a forked worker the rest
    into a state of its own, merged here afterwards in file order, so the state is the one
    reading in one pass gives. `split` given forces the two parts (tests set it at any line;
    0 or past the end leaves one part empty); `parallel=False` keeps to one process. With two
    parts, the bad lines of the second are reported once the first is folded."""
    from egide.detect import parallel as two  # noqa: PLC0415 - it imports this module

    if parallel and split is None:
        split = split_point(path)
    n = 0
    with no_gc():
        if parallel and split is not None and two.can_fork():
            n = two.ingest_split(
                state, path, split, on_bytes=on_bytes, on_bad=on_bad, chunk_bytes=chunk_bytes
            )
        else:
            for first_line, lines in read_chunks(path, on_bytes=on_bytes, chunk_bytes=chunk_bytes):
                n += fold_lines(state, lines, first_line, on_bad)
        if n >= FREEZE_MIN_EVENTS:
            # The aggregates of a large file live as long as the detector and hold no cycles:
            # moved out of the cycle collector's reach (its permanent generation), or its next
            # passes over these millions of containers (young, middle, then every generation)
            # cost about a second per million events. Whatever else is alive now is moved too
            # (only garbage cycles existing at this instant would then never be collected).
            gc.freeze()
    return n


def split_point(path: Path, *, first_share: float | None = None) -> int | None:
    """Where two processes divide an events file (uncompressed bytes), or None when one
    reads it: the system cannot fork, there is one core, or the file is too small for the
    second process to pay for itself. `first_share`: the share of the first process
    (FIRST_SHARE or FIRST_SHARE_GZIP by default)."""
    from egide.detect import parallel as two  # noqa: PLC0415 - it imports this module

    if not (two.can_fork() and two.cores() >= 2):
        return None
    size = two.file_size(path)
    if size < PARALLEL_MIN_BYTES:
        return None
    gz = path.suffix == ".gz"
    return int(size * (first_share or (FIRST_SHARE_GZIP if gz else FIRST_SHARE)))


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """The cycle collector paused: folding creates millions of small containers that live
    until scoring (none of them in cycles), and the collector's passes over them cost about a
    third of the fold. Restored as it was, whatever happens."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def fold_lines(
    state: StreamState,
    lines: list[bytes],
    first_line: int,
    on_bad: Callable[[BadLine], object] | None = None,
    *,
    session: SessionFactory | None = None,
) -> int:
    """Parse, check and fold one chunk of lines (line number `first_line` is lines[0]); bad
    lines go to `on_bad`, in order.

    The common line (a JSON object with the format's fields and no other, of the format's
    types and values) is decoded straight into a checked `Fields` without a Python-level call:
    `map(DECODE_LINE, lines)`. A line that stops that pipeline (not JSON, not an object, a
    field missing, unknown, of another type or value) is parsed on its own with `orjson` and
    folded with every check of `fold` (so it is judged as `events.check_record` judges it),
    and the pipeline resumes after it on the same iterator."""
    loads = orjson.loads
    it = iter(lines)
    k = 0  # index in `lines` of the next line to fold
    before = state.events  # fold counts what it folded even when its source raises
    while True:
        bad: list[BadLine] = []
        position = [0]
        try:
            fold(
                state,
                map(DECODE_LINE, it),
                first_line + k,
                bad,
                position,
                session=session,
                decoded=True,
            )
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            # lines[k + position[0]] stopped the pipeline (ValidationError is a DecodeError);
            # judged alone, then the pipeline resumes after it.
            _report(bad, on_bad)
            k += position[0]
            line = lines[k]
            k += 1
            try:
                raw = loads(line)
            except orjson.JSONDecodeError:
                if line.strip():
                    _report([bad_json(first_line + k - 1, line)], on_bad)
                continue
            if type(raw) is not dict:
                _report([BadLine(first_line + k - 1, "not a JSON object")], on_bad)
                continue
            bad = []
            fold(state, iter((_fields(raw),)), first_line + k - 1, bad, session=session)
            _report(bad, on_bad)
            continue
        _report(bad, on_bad)
        return state.events - before


def _report(bad: list[BadLine], on_bad: Callable[[BadLine], object] | None) -> None:
    if on_bad is not None:
        for item in bad:
            on_bad(item)


# `Fields` takes no count above this (msgspec's bound must fit an int64): orjson reads larger
# integers as floats from 2**64 on, which `fold` does not take as a count; from 2**63 on the
# line goes through orjson, so both parsers agree on every line `Fields` takes.
_MAX_COUNT = 2**63 - 1
_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class Fields(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """One access event's fields (the format in DESIGN.md), in the order `fold` takes them.

    Decoded from a line by `DECODE_LINE`, which checks in C what `fold` checks of each field
    but the time (non-empty id, user and action, strings or null elsewhere, a known outcome, a
    non-negative integer count), so `fold` takes it as checked; or built unchecked from a
    parsed record by `_fields`, for `fold` to check. The decoder takes a subset of the lines
    `orjson.loads` takes, with the same values: no unknown field (msgspec skips one without
    checking its text as strictly), no integer beyond orjson's. Any other line goes through
    `orjson` and `fold`'s checks, so the decoder decides nothing but speed
    (`test_detect_decode.py` and `test_detect_fastpath.py` hold both to that)."""

    id: _NonEmpty
    time: str
    user: _NonEmpty
    action: _NonEmpty
    outcome: Literal["success", "denied", "error"] | None = "success"
    patient: str | None = None
    resource_type: str | None = None
    count: Annotated[int, msgspec.Meta(ge=0, le=_MAX_COUNT)] = 1
    ip: str | None = None
    device: str | None = None
    purpose: str | None = None


DECODE_LINE = msgspec.json.Decoder(Fields).decode
# A Struct's constructor does not check types: `Fields` made from whatever a record holds.
_unchecked = cast("Callable[..., Fields]", Fields)
FIELDS = Fields.__struct_fields__


def _fields(raw: Any) -> Fields:
    """A record's fields (absent ones as the format's defaults: None, outcome "success",
    count 1), unchecked."""
    if type(raw) is not dict:
        msg = "not a JSON object"
        raise DetectFormatError(msg)
    get = raw.get
    return _unchecked(
        get("id"),
        get("time"),
        get("user"),
        get("action"),
        get("outcome", "success"),
        get("patient"),
        get("resource_type"),
        get("count", 1),
        get("ip"),
        get("device"),
        get("purpose"),
    )


# Timestamps of the `YYYY-MM-DDTHH:MM:SSZ` form: minute prefix ("2026-03-01T10:42:") -> its
# seconds since the epoch, UTC day and UTC hour (a minute is within one hour), filled from
# timestamps `events.timestamp` parsed and checked in full (so a prefix here is a valid one),
# and the seconds suffix ("05Z") -> seconds.
_MINUTES: dict[str, tuple[float, int, int]] = {}
MAX_MINUTES = 200_000  # bounded: a long file does not grow it without limit (~140 days)
_SECONDS = {f"{s:02d}Z": s for s in range(60)}
_OUTCOMES = (*OUTCOMES, None)


def fold(  # noqa: PLR0915 - the hot loop, written flat on purpose
    state: StreamState,
    items: Iterator[Fields],
    first_line: int,
    bad: list[BadLine],
    position: list[int] | None = None,
    *,
    stop_at_bad: bool = False,
    session: SessionFactory | None = None,
    decoded: bool = False,
) -> int:
    """Check and fold events, each a `Fields`, into `state`; returns how many
    were folded.

    Each is checked as `events.check_record` would (the fields' types inline; anything unusual
    goes through `check_record` itself, for the verdict and its message); one that fails
    becomes a BadLine in `bad`, numbered from `first_line`. `position[0]` receives how many
    items were taken from `items`, also when taking one raised (the caller then knows which
    line did). `session` makes the Session of a (user, day, device) first seen (the parallel
    reader's worker records where each began). `decoded`: every item comes from
    `DECODE_LINE`, its fields checked already but the time."""
    new_session = session or Session
    current = state.current
    get_day = state.userday
    access = ACCESS_ACTIONS
    writes = WRITE_ACTIONS
    auth = AUTH_ACTIONS
    failures = state.failures
    minutes = _MINUTES
    seconds_of = _SECONDS
    outcomes = _OUTCOMES
    n = 0
    unknown = 0
    last_ts = state.last_ts
    first_ts = state.first_ts
    index = 0
    try:
        for item in items:
            index += 1
            eid = item.id
            time = item.time
            user = item.user
            action = item.action
            outcome = item.outcome
            patient = item.patient
            resource_type = item.resource_type
            count: Any = item.count  # anything in an unchecked record, until checked
            ip = item.ip
            device = item.device
            purpose = item.purpose
            ts: float | None = None
            if decoded or (
                type(eid) is str
                and type(time) is str
                and type(user) is str
                and type(action) is str
                and eid
                and user
                and action
                and (patient is None or type(patient) is str)
                and (ip is None or type(ip) is str)
                and (device is None or type(device) is str)
                and (purpose is None or type(purpose) is str)
                and (resource_type is None or type(resource_type) is str)
                and (outcome == "success" or outcome in outcomes)
                and type(count) is int
                and count >= 0
            ):
                # The common `YYYY-MM-DDTHH:MM:SSZ` form: a minute seen before plus seconds.
                minute = minutes.get(time[:17])
                sec = seconds_of.get(time[17:])
                if minute is not None and sec is not None:
                    base, day, hour = minute
                    ts = base + sec
                elif sec is not None and time[16] == ":" and len(minutes) < MAX_MINUTES:
                    # A minute not seen yet: the timestamp parsed as `check_record` would
                    # (every other field passed above), then remembered.
                    try:
                        ts = timestamp(time)
                    except DetectFormatError:
                        pass  # judged below by check_record, for its message
                    else:
                        day = int(ts // DAY)
                        hour = int(ts % DAY) // 3600
                        minutes[time[:17]] = (ts - sec, day, hour)
            if ts is None:
                try:
                    fields: tuple[Any, ...] = (eid, time, user, action, outcome, patient)
                    fields += (resource_type, count, ip, device, purpose)
                    checked = check_record(dict(zip(FIELDS, fields, strict=True)))
                except DetectFormatError as exc:
                    bad.append(BadLine(first_line + index - 1, str(exc)))
                    if stop_at_bad:
                        break
                    continue
                ts = checked["_ts"]
                day = int(ts // DAY)
                hour = int(ts % DAY) // 3600
                sec = seconds_of.get(time[17:])
                if sec is not None and time[16] == ":" and len(minutes) < MAX_MINUTES:
                    minutes[time[:17]] = (ts - sec, day, hour)
                if count is None:  # null: the default (a null count used to stop the run)
                    count = 1
            n += 1
            if first_ts is None:
                first_ts = ts
            if ts > last_ts:  # noqa: PLR1730 - no call in the hot loop
                last_ts = ts
            ud = current.get(user)
            if ud is None or ud.day != day:
                ud = get_day(user, day)
            if action in access:
                if outcome != "success":
                    ud.other += 1
                    continue
                ud.n += 1
                ud.records += count
                ud.hours[hour] += 1
                skey = device or ip or "-"
                sess = ud.sessions.get(skey)
                if sess is None:
                    sess = ud.sessions[skey] = new_session(device, ip, ts, time)
                sess.last = ts
                sess.t1 = time
                sess.ids.append(eid)
                sess.n += 1
                if ip is not None and ip != sess.ip:
                    sess.ips.add(ip)
                if patient is not None:
                    sess.patients.add(patient)
                    pair = ud.pairs.get(patient)
                    if pair is None:
                        ud.pairs[patient] = PairDay(ts, time, eid)
                    else:
                        pair.last = ts
                        pair.t1 = time
                        pair.ids.append(eid)
                if action != "read" and action != "search":  # noqa: PLR1714 - hot path
                    rare: Rare = (ts, time, eid, count, action, patient, purpose)
                    if action == "export":
                        ud.exports.append(rare)
                    elif action in writes:
                        ud.writes.append(rare)
                    else:
                        ud.break_glass.append(rare)
            elif action in auth:
                ok = outcome == "success" and (action == "login" or action == "logout")  # noqa: PLR1714
                ud.auth.append((ts, time, eid, 0, action if ok else "failed", ip, device))
                if not ok:
                    failures.append(Failure(ts, time, eid, user, ip, device))
                elif action == "login":
                    skey = device or ip or "-"
                    sess = ud.sessions.get(skey)
                    if sess is None:
                        sess = ud.sessions[skey] = new_session(device, ip, ts, time)
                    sess.last = ts
                    sess.t1 = time
                    sess.ids.append(eid)
            else:
                ud.other += 1
                unknown += 1
    finally:
        if position is not None:
            position[0] = index
        state.events += n
        state.unknown_actions += unknown
        state.first_ts = first_ts
        state.last_ts = last_ts
    return n


def as_records(items: Iterable[Any]) -> Iterable[Record]:
    """Event objects or records -> records (the engine's input form)."""
    for item in items:
        yield item if isinstance(item, dict) else item.to_record()

"""The three formats detection shares with other rooms (DESIGN.md, "Formats shared by several
rooms"): access events in, a detection context in, alerts out.

Security role: this is the boundary where outside files (an EHR's audit export, the ledger's
feed) enter detection. Nothing here trusts a line: a line that is not a JSON object with the
required fields of the right types becomes a `BadLine` with its line number, which the caller
reports or refuses; it is never skipped silently. Unknown actions are kept (detectors that do not
know them ignore them), and unknown extra fields are ignored, as the format says.

Speed matters (millions of events per run), so the readers yield plain dicts checked in place
(`Record`), the form the engine's hot loop consumes; `Event` is the typed view for callers that
build or inspect events one at a time.
"""

from __future__ import annotations

import datetime as dt
import functools
import gzip
import hashlib
import io
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Annotated, Any

import msgspec
import orjson

from egide.core.errors import EgideError
from egide.detect.clock import UnknownZoneError, zone

ACTIONS = (
    "login",
    "login_failed",
    "mfa_failed",
    "logout",
    "read",
    "search",
    "create",
    "update",
    "delete",
    "export",
    "break_glass",
)
OUTCOMES = ("success", "denied", "error")
SEVERITIES = ("low", "medium", "high", "critical")
KINDS = (
    "snooping",
    "vip",
    "coworker",
    "family",
    "self_access",
    "exfiltration",
    "stolen_credentials",
    "credential_stuffing",
    "mass_modification",
    "break_glass_abuse",
)

Record = dict[str, Any]
"""An access event as parsed from its line (the DESIGN field names), already checked."""


class DetectFormatError(EgideError):
    """A context or event that does not follow the shared format (one-line message)."""


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line of an events file that was not a valid access event: reported, never silent."""

    line_no: int
    message: str


@dataclass(frozen=True, slots=True)
class Event:
    """One access event (DESIGN.md, "Access event")."""

    id: str
    time: str
    user: str
    action: str
    outcome: str = "success"
    patient: str | None = None
    resource_type: str | None = None
    count: int = 1
    ip: str | None = None
    device: str | None = None
    purpose: str | None = None

    def to_record(self) -> Record:
        return {
            "id": self.id,
            "time": self.time,
            "user": self.user,
            "action": self.action,
            "outcome": self.outcome,
            "patient": self.patient,
            "resource_type": self.resource_type,
            "count": self.count,
            "ip": self.ip,
            "device": self.device,
            "purpose": self.purpose,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Event:
        checked = check_record(dict(record))
        return cls(
            id=checked["id"],
            time=checked["time"],
            user=checked["user"],
            action=checked["action"],
            outcome=checked.get("outcome", "success"),
            patient=checked.get("patient"),
            resource_type=checked.get("resource_type"),
            count=checked.get("count", 1),
            ip=checked.get("ip"),
            device=checked.get("device"),
            purpose=checked.get("purpose"),
        )


def parse_event(line: str | bytes) -> Event:
    """One line of the events format -> Event; DetectFormatError says what is wrong."""
    try:
        raw = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        msg = f"not JSON: {exc}"
        raise DetectFormatError(msg) from None
    if not isinstance(raw, dict):
        msg = "not a JSON object"
        raise DetectFormatError(msg)
    return Event.from_record(raw)


def serialise_event(event: Event) -> bytes:
    """Event -> one line (no newline). Defaults are written out, so outside readers need not
    know them."""
    return orjson.dumps(event.to_record())


_REQUIRED_STR = ("id", "time", "user", "action")
_OPTIONAL_STR = ("patient", "resource_type", "ip", "device", "purpose")


def check_record(raw: Record) -> Record:
    """Check a parsed line against the format, in place; raise DetectFormatError otherwise.

    Adds `_ts` (seconds since the epoch) for the engine, so the timestamp is parsed once.
    Written flat because it runs once per event."""
    eid, time, user, action = raw.get("id"), raw.get("time"), raw.get("user"), raw.get("action")
    if not (
        type(eid) is str
        and type(time) is str
        and type(user) is str
        and type(action) is str
        and eid
        and user
        and action
    ):
        for name in _REQUIRED_STR:
            value = raw.get(name)
            if type(value) is not str or not value:
                msg = f"field {name!r} must be a non-empty string"
                raise DetectFormatError(msg)
    for name in _OPTIONAL_STR:
        value = raw.get(name)
        if value is not None and type(value) is not str:
            msg = f"field {name!r} must be a string or null"
            raise DetectFormatError(msg)
    outcome = raw.get("outcome")
    if outcome is not None and outcome not in OUTCOMES:
        msg = f"field 'outcome' must be one of {', '.join(OUTCOMES)}"
        raise DetectFormatError(msg)
    count = raw.get("count")
    if count is not None and (type(count) is not int or count < 0):
        msg = "field 'count' must be a non-negative integer"
        raise DetectFormatError(msg)
    raw["_ts"] = timestamp(time)  # type: ignore[arg-type]
    return raw


MINUTES: dict[str, float] = {}
"""RFC 3339 minute prefix ('2026-03-01T10:42') -> its seconds since the epoch (a cache)."""


def timestamp(value: str) -> float:
    """Seconds since the epoch of an RFC 3339 timestamp, fast for the common `...:SSZ` form:
    the minute prefix is parsed once and cached, the seconds added (events are in time order,
    so one minute's events share a cache entry). Other forms go through `parse_time`."""
    if len(value) == 20 and value[19] == "Z" and value[16] == ":":
        base = MINUTES.get(value[:16])
        # Only "00" to "59" (str.isdigit would take "75", "²³" or Arabic-Indic digits, which
        # parse_time refuses: a time's verdict must not depend on the minutes seen before).
        seconds = _SECONDS.get(value[17:19])
        if base is not None and seconds is not None:
            return base + seconds
        full = parse_time(value)  # DetectFormatError on what the cache must not take
        if seconds is not None:
            if len(MINUTES) > 200_000:  # bounded: a long file never grows it without limit
                MINUTES.clear()
            MINUTES[value[:16]] = full - seconds
        return full
    return parse_time(value)


_SECONDS = {f"{s:02d}": s for s in range(60)}


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@functools.lru_cache(maxsize=65_536)
def parse_time(value: str) -> float:
    """RFC 3339 timestamp with offset -> seconds since the epoch (UTC). (Cached: a context
    repeats the same times, checked when read and used when indexed.)"""
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        msg = f"time {value[:40]!r} is not an RFC 3339 timestamp"
        raise DetectFormatError(msg) from None
    if parsed.tzinfo is None or value[10:11] not in {"T", "t", " "}:
        msg = f"time {value[:40]!r} is not an RFC 3339 timestamp with an offset (Z or +hh:mm)"
        raise DetectFormatError(msg)
    return (parsed - _EPOCH).total_seconds()


def format_time(seconds: float) -> str:
    """Seconds since the epoch -> RFC 3339 in UTC with a Z."""
    return (_EPOCH + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- reading events files -------------------------------------------------------------------


def open_lines(path: Path) -> IO[bytes]:
    """The file's bytes, gunzipped when it ends in .gz (OSError if missing or unreadable)."""
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def read_chunks(
    path: Path,
    *,
    on_bytes: Callable[[int], object] | None = None,
    chunk_bytes: int = 1 << 20,
    start: int = 0,
    end: int | None = None,
) -> Iterator[tuple[int, list[bytes]]]:
    """The lines of a `.jsonl` or `.jsonl.gz` file in chunks: (1-based number of the chunk's
    first line, its lines, each with its newline but the file's last when it has none: see
    `without_newline`). Reading in chunks and splitting them keeps
    per-line overhead low; `on_bytes(n)` is called with the (uncompressed) bytes of each chunk
    once its lines were handed over, for a progress bar.

    `start` and `end` (uncompressed byte offsets) take a part of the file: the lines that
    *begin* at or after `start` and before `end`, numbered from 1 within the part. Two parts
    split at the same offset hold every line exactly once, whatever the offset (the parallel
    reader of `features.ingest_file`); only the part's own bytes are passed to `on_bytes`."""
    line_no = 1
    if end is not None and end <= start:
        return
    with open_lines(path) as handle:
        pos = 0  # uncompressed offset of the first byte of the next chunk
        pending = b""
        if start > 0:
            found = _skip_to_line(handle, start, chunk_bytes)
            if found is None:
                return
            pos, pending = found
        tail = b""
        while True:
            if pending:
                chunk, pending = pending, b""
            else:
                chunk = handle.read(chunk_bytes)
            if not chunk:
                break
            data = tail + chunk
            base = pos - len(tail)
            pos += len(chunk)
            if end is not None and pos >= end:
                # The part ends with the line holding byte end - 1 (a line begun before end).
                cut = data.find(b"\n", max(end - 1 - base, 0))
                if cut >= 0:
                    yield line_no, io.BytesIO(data[: cut + 1]).readlines()
                    if on_bytes is not None:
                        on_bytes(len(chunk) - (len(data) - cut - 1))
                    return
            # Split by BytesIO (memchr), about four times faster than bytes.split.
            lines = io.BytesIO(data).readlines()
            tail = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
            if lines:
                yield line_no, lines
                line_no += len(lines)
            if on_bytes is not None:
                on_bytes(len(chunk))
        if tail.strip():
            yield line_no, [tail]


def _skip_to_line(handle: IO[bytes], start: int, chunk_bytes: int) -> tuple[int, bytes] | None:
    """Move past the bytes before the first line beginning at or after `start` (> 0): returns
    that line's offset and the bytes already read from it on, or None when there is no such
    line. A gzip handle decompresses what it skips (it cannot seek otherwise)."""
    handle.seek(start - 1)
    pos = start - 1
    while True:
        chunk = handle.read(chunk_bytes)
        if not chunk:
            return None
        found = chunk.find(b"\n")
        if found >= 0:
            return pos + found + 1, chunk[found + 1 :]
        pos += len(chunk)


def read_records(
    path: Path, *, on_bytes: Callable[[int], object] | None = None, chunk_bytes: int = 1 << 20
) -> Iterator[Record | BadLine]:
    """Stream the events of a `.jsonl` or `.jsonl.gz` file: a checked dict per line, or a
    BadLine (1-based line number) for a line that is not a valid event. Blank lines are skipped.

    `on_bytes(n)` is called with the number of (uncompressed) bytes consumed after each chunk,
    for a progress bar. (`features.ingest_file` is the faster path that folds as it reads.)"""
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    for first, lines in read_chunks(path, on_bytes=on_bytes, chunk_bytes=chunk_bytes):
        for line_no, line in enumerate(lines, first):
            try:
                raw = loads(line)
            except decode_error:
                if line.strip():
                    yield bad_json(line_no, line)
                continue
            if type(raw) is not dict:
                yield BadLine(line_no, "not a JSON object")
                continue
            try:
                yield check_record(raw)
            except DetectFormatError as exc:
                yield BadLine(line_no, str(exc))


def without_newline(line: bytes) -> bytes:
    """A line of `read_chunks` without its newline (JSON takes it as whitespace; a message
    quoting the line or a position in it must not)."""
    return line[:-1] if line.endswith(b"\n") else line


def bad_json(line_no: int, line: bytes) -> BadLine:
    """The BadLine of a line orjson refuses, with orjson's reason."""
    try:
        orjson.loads(without_newline(line))
    except orjson.JSONDecodeError as exc:
        return BadLine(line_no, f"not JSON ({exc})")
    return BadLine(line_no, "not JSON")  # pragma: no cover - loads failed just before


# --- context --------------------------------------------------------------------------------


# An id or a patient reference: non-empty (checked when a document is decoded).
_Id = Annotated[str, msgspec.Meta(min_length=1)]


# The entries of a context are msgspec structs, so a common document is decoded straight into
# them (`context_from_bytes`): the field types are the format's, and no unknown field is taken
# (msgspec skips one without checking its text as strictly as orjson). Built from Python, they
# check nothing (as the frozen dataclasses they replaced).
class UserInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    id: _Id
    role: str | None = None
    department: str | None = None
    family_name: str | None = None
    postal_code: str | None = None
    address: str | None = None


class PatientInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    id: _Id
    family_name: str | None = None
    postal_code: str | None = None
    address: str | None = None
    vip: bool = False
    employee: str | None = None
    deceased: bool = False


class CareLink(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """A treating relationship: a user or a whole department, from start to end (open if
    None)."""

    patient: _Id
    user: str | None = None
    department: str | None = None
    start: str | None = None
    end: str | None = None


@dataclass(frozen=True, slots=True)
class Context:
    """The detection context (DESIGN.md, "Detection context")."""

    users: tuple[UserInfo, ...] = ()
    patients: tuple[PatientInfo, ...] = ()
    care: tuple[CareLink, ...] = ()
    # The hospital's time zone (IANA name), optional: the clock hours are judged by.
    timezone: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            **({"timezone": self.timezone} if self.timezone is not None else {}),
            "users": [_asdict(u) for u in self.users],
            "patients": [_asdict(p) for p in self.patients],
            "care": [
                {
                    "patient": c.patient,
                    **({"user": c.user} if c.user is not None else {}),
                    **({"department": c.department} if c.department is not None else {}),
                    "start": c.start,
                    "end": c.end,
                }
                for c in self.care
            ],
        }


def _asdict(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__struct_fields__}


def _opt_str(item: Mapping[str, Any], name: str, where: str) -> str | None:
    value = item.get(name)
    if value is None or type(value) is str:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # postal codes are sometimes written as numbers
    if not isinstance(value, str):
        msg = f"context {where}: field {name!r} must be a string or null"
        raise DetectFormatError(msg)
    return value


def _req_str(item: Mapping[str, Any], name: str, where: str) -> str:
    value = _opt_str(item, name, where)
    if not value:
        msg = f"context {where}: field {name!r} is required"
        raise DetectFormatError(msg)
    return value


def _list(doc: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    items = doc.get(name, [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        msg = f"context: {name!r} must be a list of objects"
        raise DetectFormatError(msg)
    return items


# The fields of each kind of context entry, in the order the entry's class takes them.
_USER_FIELDS = ("id", "role", "department", "family_name", "postal_code", "address")
_PATIENT_FIELDS = ("id", "family_name", "postal_code", "address", "employee")
_CARE_FIELDS = ("patient", "user", "department", "start", "end")
_TEXT = frozenset({str, type(None)})


def _texts(item: Mapping[str, Any], fields: tuple[str, ...]) -> tuple[Any, ...] | None:
    """The entry's fields when each is a string or null and the first a non-empty string
    (the common entry, checked without a Python step per field); None for the careful path."""
    get = item.get
    values = tuple(map(get, fields))
    if values[0] and _TEXT.issuperset(map(type, values)):
        return values
    return None


class _Document(msgspec.Struct, forbid_unknown_fields=True):
    """The common context document: `context_from_bytes` decodes it in about a tenth of the
    time parsing it into dicts and checking those takes. Any other document (an entry with a
    field of another type, a postal code written as a number, an unknown field...) goes
    through `context_from_json`, which decides what is accepted and with which message: this
    path decides nothing but speed (`tests/unit/detect/test_detect_context.py`)."""

    users: list[UserInfo] = []
    patients: list[PatientInfo] = []
    care: list[CareLink] = []
    timezone: Any = None


_DECODE_CONTEXT = msgspec.json.Decoder(_Document).decode


def context_from_bytes(data: bytes, *, name: str = "context") -> Context:
    """A context document's bytes -> Context; DetectFormatError on a malformed one (not JSON:
    named `name` in the message; otherwise as `context_from_json`)."""
    try:
        doc = _DECODE_CONTEXT(data)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            msg = f"{name}: not JSON ({exc})"
            raise DetectFormatError(msg) from None
        return context_from_json(parsed)
    care = tuple(doc.care)
    checked: set[str | None] = {None}  # times found valid (a context repeats the same ones)
    for i, link in enumerate(care):
        if (
            (link.user is None and link.department is None)
            or link.start not in checked
            or link.end not in checked
        ):
            _check_care(link.user, link.department, link.start, link.end, i)
            checked.add(link.start)
            checked.add(link.end)
    return Context(
        users=tuple(doc.users),
        patients=tuple(doc.patients),
        care=care,
        timezone=_timezone(doc.timezone),
    )


def _check_care(
    user: str | None, department: str | None, start: str | None, end: str | None, i: int
) -> None:
    """A care link needs a user or a department, and its times must be RFC 3339."""
    if user is None and department is None:
        msg = f"context care[{i}]: a care link needs a user or a department"
        raise DetectFormatError(msg)
    for stamp in (start, end):
        if stamp is not None:
            try:
                parse_time(stamp)
            except DetectFormatError as exc:
                msg = f"context care[{i}]: {exc}"
                raise DetectFormatError(msg) from None


def context_from_json(doc: Any) -> Context:
    """A parsed context document -> Context; DetectFormatError on a malformed one."""
    if not isinstance(doc, dict):
        msg = "context: the document must be a JSON object with users, patients and care"
        raise DetectFormatError(msg)
    users = []
    for i, u in enumerate(_list(doc, "users")):
        found = _texts(u, _USER_FIELDS)
        if found is not None:
            users.append(UserInfo(*found))
            continue
        where = f"users[{i}]"
        users.append(
            UserInfo(
                id=_req_str(u, "id", where),
                role=_opt_str(u, "role", where),
                department=_opt_str(u, "department", where),
                family_name=_opt_str(u, "family_name", where),
                postal_code=_opt_str(u, "postal_code", where),
                address=_opt_str(u, "address", where),
            )
        )
    patients = []
    for i, p in enumerate(_list(doc, "patients")):
        found = _texts(p, _PATIENT_FIELDS)
        if found is not None:
            pid, family, postal, address, employee = found
        else:
            where = f"patients[{i}]"
            pid = _req_str(p, "id", where)
            family = _opt_str(p, "family_name", where)
            postal = _opt_str(p, "postal_code", where)
            address = _opt_str(p, "address", where)
            employee = _opt_str(p, "employee", where)
        patients.append(
            PatientInfo(
                id=pid,
                family_name=family,
                postal_code=postal,
                address=address,
                vip=bool(p.get("vip") or False),
                employee=employee,
                deceased=bool(p.get("deceased") or False),
            )
        )
    care = []
    for i, c in enumerate(_list(doc, "care")):
        found = _texts(c, _CARE_FIELDS)
        if found is not None and (found[1] is not None or found[2] is not None):
            patient, user, department, start, end = found
        else:
            where = f"care[{i}]"
            user, department = _opt_str(c, "user", where), _opt_str(c, "department", where)
            start, end = (
                (_opt_str(c, "start", where), _opt_str(c, "end", where))
                if user is not None or department is not None
                else (None, None)  # refused just below, before the times are looked at
            )
        _check_care(user, department, start, end, i)
        if found is None:
            patient = _req_str(c, "patient", f"care[{i}]")
        care.append(
            CareLink(patient=patient, user=user, department=department, start=start, end=end)
        )
    return Context(
        users=tuple(users),
        patients=tuple(patients),
        care=tuple(care),
        timezone=_timezone(doc.get("timezone")),
    )


def _timezone(value: Any) -> str | None:
    """The context's optional "timezone": an IANA zone name known to this system."""
    if value is None:
        return None
    if not isinstance(value, str):
        msg = "context: 'timezone' must be an IANA time zone name such as Europe/Paris"
        raise DetectFormatError(msg)
    try:
        zone(value)
    except UnknownZoneError as exc:
        msg = f"context: {exc}"
        raise DetectFormatError(msg) from None
    return value


def load_context(path: Path) -> Context:
    """Read a context file (OSError if unreadable, DetectFormatError if malformed)."""
    return context_from_bytes(path.read_bytes(), name=f"context {path}")


# --- alerts ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert (DESIGN.md, "Alert")."""

    id: str
    kind: str
    severity: str
    score: float
    user: str | None
    patient: str | None
    start: str
    end: str
    events: tuple[str, ...]
    reasons: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "severity": self.severity,
            "score": self.score,
            "user": self.user,
            "patient": self.patient,
            "start": self.start,
            "end": self.end,
            "events": list(self.events),
            "reasons": list(self.reasons),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Alert:
        try:
            alert = cls(
                id=str(doc["id"]),
                kind=str(doc["kind"]),
                severity=str(doc["severity"]),
                score=float(doc["score"]),
                user=doc.get("user"),
                patient=doc.get("patient"),
                start=str(doc["start"]),
                end=str(doc["end"]),
                events=tuple(str(e) for e in doc.get("events", [])),
                reasons=tuple(str(r) for r in doc.get("reasons", [])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"alert: missing or malformed field ({exc})"
            raise DetectFormatError(msg) from None
        if alert.severity not in SEVERITIES or not 0.0 <= alert.score <= 1.0:
            msg = "alert: severity or score out of range"
            raise DetectFormatError(msg)
        return alert


def alert_id(kind: str, user: str | None, first_event: str) -> str:
    """Deterministic: the same evidence gives the same id, so reruns write the same file."""
    digest = hashlib.sha256(f"{kind}\x1f{user or ''}\x1f{first_event}".encode()).hexdigest()
    return f"al-{digest[:20]}"


def write_alerts(path: Path, alerts: Iterable[Alert]) -> int:
    n = 0
    with path.open("wb") as handle:
        for alert in alerts:
            handle.write(orjson.dumps(alert.to_json()) + b"\n")
            n += 1
    return n


def read_alerts(path: Path) -> list[Alert]:
    alerts = []
    with path.open("rb") as handle:
        for no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                alerts.append(Alert.from_json(orjson.loads(line)))
            except (orjson.JSONDecodeError, DetectFormatError, AttributeError) as exc:
                msg = f"{path}: line {no}: {exc}"
                raise DetectFormatError(msg) from None
    return alerts

"""The typed decoder of event lines (`features.DECODE_LINE`, a msgspec `Fields` struct) is a
speed path only: whatever it takes, `orjson.loads` followed by the format's checks
(`features._fields`, `events.check_record`) must take too, with the same values of the same
types. A line it refuses is parsed again with orjson and judged by the old checks, so refusing
too much costs time but never changes a verdict; taking a line the reference would read
otherwise (another value, 1 for 1.0, a float for a large integer, the first of two objects)
would fold a different event, or one the format refuses, without anyone noticing.

So: a property test over hand-written JSON lines (duplicate and escaped keys, unknown fields,
odd values and bytes), the outcome values of `Fields` tied to `events.OUTCOMES`, the lines the
decoder must keep refusing, and a file whose lines the decoder refuses but the format takes,
all folded as events."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from egide.detect import events, features
from egide.detect.engine import Detector
from egide.detect.events import BadLine, Context, DetectFormatError, read_records
from egide.detect.features import StreamState
from tests.unit.detect.detect_world import line_event, state_view

VALID_TIME = "2026-03-02T10:00:00Z"

# --- hand-written JSON ----------------------------------------------------------------------


def _escape(char: str, upper: bool) -> str:
    """`char` as \\u escapes (a surrogate pair beyond the BMP)."""
    code = ord(char)
    if code > 0xFFFF:
        code -= 0x10000
        units = [0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF)]
    else:
        units = [code]
    text = "".join(f"\\u{unit:04x}" for unit in units)
    return text.upper().replace("\\U", "\\u") if upper else text


def _quote(text: str, escaped: list[bool], upper: bool = False) -> bytes:
    """`text` as a JSON string token; the characters flagged in `escaped` (cycled) as \\u
    escapes, the others raw where JSON allows it."""
    out = ['"']
    for i, char in enumerate(text):
        if escaped and escaped[i % len(escaped)]:
            out.append(_escape(char, upper))
        elif char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20:
            out.append(_escape(char, upper))
        else:
            out.append(char)
    out.append('"')
    return "".join(out).encode()


@st.composite
def _strings(
    draw: st.DrawFn, text: st.SearchStrategy[str] | None = None, *, lone: bool = True
) -> bytes:
    """A JSON string token: raw UTF-8 or escapes; with `lone`, sometimes a lone surrogate
    escape (which no parser should take)."""
    value = draw(text if text is not None else st.text(max_size=12))
    escaped = draw(st.lists(st.booleans(), max_size=4))
    token = _quote(value, escaped, upper=draw(st.booleans()))
    if lone and draw(st.integers(0, 19)) == 0:
        surrogate = draw(st.sampled_from([b"\\ud800", b"\\udbff", b"\\udc00", b"\\udfff"]))
        at = draw(st.integers(1, len(token) - 1))
        if token[at - 1 : at] != b"\\":
            token = token[:at] + surrogate + token[at:]
    return token


def _number(n: int) -> bytes:
    return str(n).encode()


_BOUNDS = [0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**63 + 1, 2**64 - 1, 2**64, 2**64 + 1]
_BOUNDS += [-(2**63), -(2**63) - 1, -(2**64), 2**70, 10**30]
_INTEGERS = st.one_of(
    st.sampled_from(_BOUNDS), st.integers(-(2**70), 2**70), st.integers(0, 20)
).map(_number)
_NUMBER_TEXTS = [b"-0", b"1.0", b"0.0", b"-0.0", b"1e2", b"1E2", b"1e0", b"2.5", b"1e999"]
_NUMBER_TEXTS += [b"-1e999", b"1e-999", b"9223372036854775807.0", b"1e18"]
_FLOATS = st.one_of(
    st.sampled_from(_NUMBER_TEXTS),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: repr(x).encode()),
)
# A string token of raw bytes: invalid UTF-8 (or a raw control character) now and then.
_RAW_STRINGS = st.binary(max_size=6).map(
    lambda raw: b'"' + raw.replace(b"\\", b"").replace(b'"', b"").replace(b"\n", b"") + b'"'
)
_SCALARS = st.one_of(
    st.sampled_from([b"null", b"true", b"false"]), _INTEGERS, _FLOATS, _strings(), _RAW_STRINGS
)
_ARRAYS = st.lists(_SCALARS, max_size=3).map(lambda xs: b"[" + b",".join(xs) + b"]")
_OBJECTS = st.lists(st.tuples(_strings(), st.one_of(_SCALARS, _ARRAYS)), max_size=3).map(
    lambda kv: b"{" + b",".join(k + b":" + v for k, v in kv) + b"}"
)
_ANY_VALUE = st.one_of(_SCALARS, _ARRAYS, _OBJECTS)

_VALID_TIMES = st.one_of(
    st.sampled_from([VALID_TIME, "2026-03-02T23:59:59Z", "2026-03-02T12:00:05+02:00"]),
    st.builds(
        "2026-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}Z".format,
        st.integers(1, 12),
        st.integers(1, 28),
        st.integers(0, 23),
        st.integers(0, 59),
        st.integers(0, 59),
    ),
)
# Strings the decoder takes as a time (it leaves the timestamp to `fold`).
_TIMES = st.one_of(
    _VALID_TIMES,
    st.sampled_from(["2026-03-02T10:00:05.250Z", "2026-03-02T10:99:00Z", "yesterday", ""]),
    st.text(max_size=20),
)
_NAMES = st.one_of(
    st.text(min_size=1, max_size=8), st.sampled_from(["u1", "é", "😀", "a\\b", 'q"'])
)
_ACTIONS = st.sampled_from(["read", "login", "update", "export", "break_glass", "x"])
_GOOD_OPTIONAL = st.one_of(st.just(b"null"), _strings(_NAMES, lone=False), _strings(lone=False))
_GOOD_COUNTS = st.one_of(
    st.integers(0, 5), st.sampled_from([2**31, 2**53 + 1, 2**63 - 2, 2**63 - 1])
).map(_number)
# Values of each field the format takes (any time string: `fold` checks the timestamp).
_GOOD: dict[str, st.SearchStrategy[bytes]] = {
    "id": _strings(_NAMES, lone=False),
    "time": _strings(_TIMES, lone=False),
    "user": _strings(_NAMES, lone=False),
    "action": _strings(_ACTIONS, lone=False),
    "outcome": st.one_of(_strings(st.sampled_from(events.OUTCOMES), lone=False), st.just(b"null")),
    "patient": _GOOD_OPTIONAL,
    "resource_type": _GOOD_OPTIONAL,
    "count": _GOOD_COUNTS,
    "ip": _GOOD_OPTIONAL,
    "device": _GOOD_OPTIONAL,
    "purpose": _GOOD_OPTIONAL,
}
_OPTIONAL = st.one_of(st.just(b"null"), _strings(_NAMES), _strings())
# Plausible values of each field: often of the format, often not quite.
_PLAUSIBLE: dict[str, st.SearchStrategy[bytes]] = {
    "id": _strings(st.one_of(_NAMES, st.just(""))),
    "time": _strings(_TIMES),
    "user": _strings(st.one_of(_NAMES, st.just(""))),
    "action": _strings(st.one_of(_ACTIONS, st.just(""))),
    "outcome": st.one_of(
        _strings(st.sampled_from(["success", "denied", "error", "maybe", "Success", ""])),
        st.just(b"null"),
    ),
    "patient": _OPTIONAL,
    "resource_type": _OPTIONAL,
    "count": st.one_of(_GOOD_COUNTS, _INTEGERS, _FLOATS, st.sampled_from([b"true", b"null"])),
    "ip": _OPTIONAL,
    "device": _OPTIONAL,
    "purpose": _OPTIONAL,
}
# Values next to the edge of what the format takes, per kind of field.
_NEAR_TEXT = [b'""', b"null", b"1", b"1.0", b"true", b"false", b"[]", b"{}", b'["a"]']
_NEAR_TEXT += [b'"\\ud800"', b'"a\\udc00"', b'"\xff"', b'"\xc0\xaf"', b'"\xed\xa0\x80"', b'"\t"']
# (msgspec reads an integer of any size as an int, orjson from 2**64 on as a float.)
_NEAR_COUNTS = [_number(n) for n in (2**64, 2**63, 2**64 + 1, 2**70, 2**63 - 1, 2**64 - 1)]
_NEAR_COUNTS += [b"1.0", b"1e2", b"true", b"0.0", b"-0.0", b"1E2", b"false", b"null", b"-0", b"0"]
_NEAR_COUNTS += [b'"1"', b"-1", b"[]", b"{}", b"9223372036854775807.0", b"1e999", b"0e0"]
_NEAR_OUTCOMES = [b'"maybe"', b'"Success"', b'""', b'"success "', b'"\\u0073uccess"', b"0"]
_NEAR_OUTCOMES += [b"true", b"[]", b'"denied\\u0000"', b"null", b'"error"']
_NEAR: dict[str, st.SearchStrategy[bytes]] = {
    name: st.sampled_from(_NEAR_TEXT) for name in features.FIELDS if name != "count"
}
_NEAR["count"] = st.sampled_from(_NEAR_COUNTS)
_NEAR["outcome"] = st.sampled_from(_NEAR_OUTCOMES + _NEAR_TEXT)

# What an unknown field may hold: a decoder that skips it must still check it as orjson does.
_NEAR_UNKNOWN = [*_NEAR_TEXT, b"1e999", b"-1e999", b'{"a":"\\ud800"}', b'["\xff"]', b"NaN"]
_NEAR_UNKNOWN += [_number(2**64), b"Infinity", b"01", b"1.", b".5", b"tru", b'"\\x"', b"[1,]"]
_UNKNOWN_VALUES = st.one_of(st.sampled_from(_NEAR_UNKNOWN), _ANY_VALUE)


def _odd_value(name: str) -> st.SearchStrategy[bytes]:
    """Another value for the field `name`: near the edge of the format, plausible, or any."""
    if name not in _NEAR:
        return _UNKNOWN_VALUES
    return st.one_of(_NEAR[name], _NEAR[name], _PLAUSIBLE[name], _ANY_VALUE)


_REQUIRED = ("id", "time", "user", "action")
_KEYS = st.one_of(
    st.sampled_from([*features.FIELDS, "extra", "ID", "user ", "_ts", "", "coünt"]),
    st.text(max_size=6),
)
_MUTATION_BYTES = b'{}[]",:\\ \t\r\x00\xff'


@st.composite
def _key(draw: st.DrawFn, name: str) -> bytes:
    """A key token: mostly plain, sometimes with characters written as escapes."""
    if draw(st.integers(0, 4)) == 0:
        escaped = draw(st.lists(st.booleans(), min_size=1, max_size=3))
        return _quote(name, escaped, upper=draw(st.booleans()))
    return _quote(name, [])


def _mutate(draw: st.DrawFn, line: bytes) -> bytes:
    """`line` with one byte flipped, one inserted, or cut short."""
    how = draw(st.integers(0, 2))
    if not line:
        return b"\x00" if how else line
    if how == 0:
        at = draw(st.integers(0, len(line) - 1))
        flipped = line[at] ^ draw(st.integers(1, 255))
        return line[:at] + bytes([flipped]) + line[at + 1 :]
    if how == 1:
        at = draw(st.integers(0, len(line)))
        inserted = draw(st.sampled_from(_MUTATION_BYTES))
        return line[:at] + bytes([inserted]) + line[at:]
    return line[: draw(st.integers(0, len(line) - 1))]


_DEFECTS = 9
# The fields given another value: the count and the outcome, of the most varied values, more.
_TARGETS = (*features.FIELDS, "count", "count", "outcome")


@st.composite
def _lines(draw: st.DrawFn) -> bytes:
    """An event-like JSON line, written pair by pair: a valid event (fields in any order, keys
    sometimes escaped, a field sometimes written twice) with none, one or several defects: a
    field of another value, a field missing, an unknown field, a field written twice with
    another value, two objects, bytes around the object, a byte flipped, inserted or cut."""
    pairs = [  # name, key token, value token
        (name, draw(_key(name)), draw(_GOOD[name]))
        for name in draw(st.permutations(features.FIELDS))
        if name in _REQUIRED or draw(st.booleans())
    ]
    if draw(st.integers(0, 4)) == 0:  # a field written twice, valid both times
        name = draw(st.sampled_from(features.FIELDS))
        pair = (name, draw(_key(name)), draw(_GOOD[name]))
        pairs.insert(draw(st.integers(0, len(pairs))), pair)
    how_many = draw(st.sampled_from([0, 0, 1, 1, 1, 2]))  # no defect in a good share
    # Half of them a field of another value, the defect most likely to slip through.
    kinds = st.sampled_from([1] * (_DEFECTS - 1) + list(range(2, _DEFECTS + 1)))
    defects = draw(st.lists(kinds, min_size=how_many, max_size=how_many))
    byte_defects: list[int] = []
    for defect in defects:
        if defect == 1:  # a field of another value (in place, or added when absent)
            name = draw(st.sampled_from(_TARGETS))
            pair = (name, draw(_key(name)), draw(_odd_value(name)))
            at = next((i for i, (n, _, _) in enumerate(pairs) if n == name), None)
            if at is None:
                pairs.insert(draw(st.integers(0, len(pairs))), pair)
            else:
                pairs[at] = pair
        elif defect == 2 and pairs:  # a field missing
            del pairs[draw(st.integers(0, len(pairs) - 1))]
        elif defect == 3:  # an unknown field
            name = draw(_KEYS)
            pair = (name, draw(_key(name)), draw(_UNKNOWN_VALUES))
            pairs.insert(draw(st.integers(0, len(pairs))), pair)
        elif defect == 4:  # a known field written twice, once with another value
            name = draw(st.sampled_from(features.FIELDS))
            pair = (name, draw(_key(name)), draw(_odd_value(name)))
            pairs.insert(draw(st.integers(0, len(pairs))), pair)
        else:
            byte_defects.append(defect)
    space = draw(st.sampled_from([b"", b"", b"", b" ", b"\t", b"\r"]))
    line = b"{" + (b"," + space).join(k + b":" + space + v for _, k, v in pairs) + b"}"
    for defect in byte_defects:
        if defect == 5:  # two objects on the line
            line += draw(st.sampled_from([b"", b" ", b"\r", b"\t"])) + line
        elif defect == 6:  # whitespace, a byte order mark or a stray byte around the object
            line = draw(st.sampled_from([b"", b" ", b"\t", b"\xef\xbb\xbf"])) + line
            line += draw(st.sampled_from([b"", b" ", b"\r", b"\t", b"\x0c", b"\x00", b","]))
        else:  # a byte flipped, inserted or cut
            line = _mutate(draw, line)
    return line.replace(b"\n", b"")  # a line of a file: a flipped byte may have made one


# --- the property ---------------------------------------------------------------------------


def _typed(fields: features.Fields) -> list[tuple[type, Any]]:
    return [(type(value), value) for value in msgspec.structs.astuple(fields)]


def _reference_verdict(line: bytes) -> tuple[bool, str | None]:
    """(folded?, message of the BadLine) as `read_records` judges the line."""
    try:
        raw = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False, events.bad_json(1, line).message if line.strip() else None
    if type(raw) is not dict:
        return False, "not a JSON object"
    try:
        events.check_record(raw)
    except DetectFormatError as exc:
        return False, str(exc)
    return True, None


@settings(max_examples=1000, deadline=None)
@given(line=_lines())
def test_the_decoder_takes_only_what_orjson_and_the_checks_take(line: bytes) -> None:
    try:
        decoded = features.DECODE_LINE(line)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        event(f"refused: {type(exc).__name__}")
        return
    event("accepted")
    parsed = orjson.loads(line)  # raises (fails the test) where orjson refuses the line
    assert type(parsed) is dict
    assert _typed(features._fields(parsed)) == _typed(decoded)
    record = dict(zip(features.FIELDS, msgspec.structs.astuple(decoded), strict=True))
    # Only the timestamp is left to `fold`: every other field must pass as it is.
    assert type(decoded.time) is str
    try:
        events.timestamp(decoded.time)
    except DetectFormatError:
        event("accepted, time not valid")
        record["time"] = VALID_TIME
    events.check_record(record)


@settings(max_examples=300, deadline=None)
@given(line=_lines())
def test_fold_lines_judges_a_line_as_read_records(line: bytes) -> None:
    state = StreamState()
    bad: list[BadLine] = []
    n = features.fold_lines(state, [line], 1, bad.append)
    folded, message = _reference_verdict(line)
    assert n == int(folded)
    assert [b.message for b in bad] == ([] if message is None else [message])


def test_the_generated_lines_are_taken_and_refused() -> None:
    """The property above is worth something only if the decoder takes many of the lines."""
    taken = refused = 0

    @settings(max_examples=400, deadline=None, database=None)
    @given(line=_lines())
    def count(line: bytes) -> None:
        nonlocal taken, refused
        try:
            features.DECODE_LINE(line)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            refused += 1
        else:
            taken += 1

    count()
    assert taken >= 80, (taken, refused)
    assert refused >= 80, (taken, refused)


# --- the struct and the format --------------------------------------------------------------


def _literal_values(kind: msgspec.inspect.Type) -> list[object]:
    if isinstance(kind, msgspec.inspect.UnionType):
        return [value for member in kind.types for value in _literal_values(member)]
    if isinstance(kind, msgspec.inspect.LiteralType):
        return list(kind.values)
    if isinstance(kind, msgspec.inspect.NoneType):
        return [None]
    pytest.fail(f"unexpected type in the outcome field: {kind!r}")


def test_the_outcomes_of_the_struct_are_the_formats() -> None:
    info = msgspec.inspect.type_info(features.Fields)
    assert isinstance(info, msgspec.inspect.StructType)
    outcome = next(f for f in info.fields if f.name == "outcome")
    values = _literal_values(outcome.type)
    assert len(values) == len(set(values))
    assert set(values) == {*events.OUTCOMES, None}
    assert outcome.default == "success"


# --- lines the decoder must refuse ----------------------------------------------------------


_event = line_event


def _line(i: int, **changes: object) -> bytes:
    return orjson.dumps(_event(i, **changes))


def _count(i: int, text: bytes) -> bytes:
    return _line(i, count=0).replace(b'"count":0', b'"count":' + text)


def _extra(i: int, text: bytes) -> bytes:
    return _line(i)[:-1] + b',"extra":' + text + b"}"


ONE = _line(1)
MUST_REFUSE: dict[str, bytes] = {
    "two objects": ONE + ONE,
    "two objects, a space": ONE + b" " + ONE,
    "two objects, a CR": ONE + b"\r" + ONE,
    "an unknown field": _extra(2, b"1"),
    "an unknown field with invalid UTF-8": _extra(3, b'"\xff\xfe"'),
    "an unknown field of 1e999": _extra(4, b"1e999"),
    "an unknown field with a lone surrogate": _extra(5, b'"\\ud800"'),
    "count 2**63": _count(6, str(2**63).encode()),
    "count 2**64 - 1": _count(7, str(2**64 - 1).encode()),
    "count 2**64": _count(8, str(2**64).encode()),
    "count 2**70": _count(9, str(2**70).encode()),
    "count 1.0": _count(10, b"1.0"),
    "count 1e2": _count(11, b"1e2"),
    "count true": _count(12, b"true"),
    "count false": _count(13, b"false"),
    "count -1": _count(14, b"-1"),
    "count null": _count(15, b"null"),
    "an empty user": _line(16, user=""),
    "an unknown outcome": _line(17, outcome="maybe"),
    "a patient not a string": _line(18, patient=7),
    "invalid UTF-8 in the user": _line(19).replace(b'"user":"u', b'"user":"\xffu'),
    "a byte order mark": b"\xef\xbb\xbf" + _line(20),
    "no field": b"{}",
}


@pytest.mark.parametrize("line", MUST_REFUSE.values(), ids=MUST_REFUSE.keys())
def test_the_decoder_refuses(line: bytes) -> None:
    with pytest.raises((msgspec.DecodeError, UnicodeDecodeError)):
        features.DECODE_LINE(line)


def test_the_decoder_takes_the_largest_count_and_a_null_outcome() -> None:
    decoded = features.DECODE_LINE(_count(1, str(2**63 - 1).encode()))
    assert decoded.count == 2**63 - 1
    assert type(decoded.count) is int
    assert features.DECODE_LINE(_line(2, outcome=None)).outcome is None
    assert features.DECODE_LINE(_line(3).replace(b'"id"', b'"\\u0069d"')).id == "e3"


# --- end to end -----------------------------------------------------------------------------

# Valid events (the format takes them) that the decoder refuses: they take the slow way.
VALID_REFUSED: list[bytes] = [
    _count(1001, str(2**63).encode()),
    _count(1002, str(2**64 - 1).encode()),
    _count(1003, b"null"),
    b'{"user":5,' + _line(1004)[1:],  # the last "user" counts
    b'{"user":"",' + _line(1005)[1:],
    b'{"count":1.5,' + _line(1006)[1:],
    b'{"outcome":"maybe",' + _line(1007, outcome="error")[1:],
    _extra(1008, b'{"nested":[1,2.5,null]}'),
    _extra(1009, str(2**70).encode()),
]
# Valid events the decoder takes at its limits.
VALID_TAKEN: list[bytes] = [
    _count(1010, str(2**63 - 1).encode()),
    _line(1011).replace(b'"id"', b'"\\u0069d"'),
    _line(1012, outcome=None),
    _line(1013)[:-1] + b',"device":"ws-9"}',  # the last "device" counts
    b" " + _line(1014) + b"\r",
]


@pytest.mark.parametrize("name", ["events.jsonl", "events.jsonl.gz"])
def test_lines_the_decoder_refuses_are_folded_as_events(tmp_path: Path, name: str) -> None:
    for line in VALID_REFUSED + VALID_TAKEN:
        assert _reference_verdict(line) == (True, None), line
        assert _takes(features.DECODE_LINE, line) == (line in VALID_TAKEN), line

    lines = [_line(i) for i in range(300)]
    for k, odd in enumerate(VALID_REFUSED + VALID_TAKEN):
        lines.insert(7 + 19 * k, odd)
    data = b"\n".join(lines) + b"\n"
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)

    good: list[events.Record] = []
    for item in read_records(path):
        assert not isinstance(item, BadLine), item
        good.append(item)
    assert len(good) == 300 + len(VALID_REFUSED) + len(VALID_TAKEN)
    slow = Detector(Context())
    slow.feed_records(good)

    fast = Detector(Context())
    bad: list[BadLine] = []
    n = features.ingest_file(fast.state, path, on_bad=bad.append, parallel=False)
    assert bad == []
    assert n == len(good)
    assert state_view(fast.state) == state_view(slow.state)
    assert fast.finish() == slow.finish()


def _takes(decode: Callable[[bytes], object], line: bytes) -> bool:
    try:
        decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return False
    return True

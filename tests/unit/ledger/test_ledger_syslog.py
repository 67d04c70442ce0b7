"""RFC 5424 formatting of ledger events: known answers, escaping, and a grammar property.

Every message is parsed back with a parser written here from the RFC 5424 section 6 ABNF, not
with anything from `egide`, so the tests check the grammar rather than echo the code.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from egide.ledger.syslog import (
    FACILITY_AUTHPRIV,
    ExportError,
    format_event,
    frame,
    local_hostname,
)

# --- an RFC 5424 parser, from the ABNF of section 6 -------------------------------------------
# PRINTUSASCII = %d33-126; SD-NAME = 1*32PRINTUSASCII except '=', SP, ']', '"'.
_PRINTUS = rb"[\x21-\x7e]"
_SD_NAME = rb"[\x21\x23-\x3c\x3e-\x5c\x5e-\x7e]{1,32}"
# PARAM-VALUE: '"', '\' and ']' MUST be escaped; we accept only those escapes, so a stray
# backslash or an unescaped ']' or '"' fails the parse.
_PARAM_VALUE = rb'(?:[^"\\\]]|\\["\\\]])*'
_SD_PARAM = _SD_NAME + rb'="' + _PARAM_VALUE + rb'"'
_SD_ELEMENT = rb"\[" + _SD_NAME + rb"(?: " + _SD_PARAM + rb")*\]"
_TIMESTAMP = (
    rb"-|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
    rb"(?:Z|[+-][0-9]{2}:[0-9]{2})"
)
SYSLOG_MSG = re.compile(
    rb"<(?P<pri>[0-9]{1,3})>(?P<version>[1-9][0-9]{0,2}) "
    rb"(?P<timestamp>" + _TIMESTAMP + rb") "
    rb"(?P<hostname>-|" + _PRINTUS + rb"{1,255}) "
    rb"(?P<app>-|" + _PRINTUS + rb"{1,48}) "
    rb"(?P<procid>-|" + _PRINTUS + rb"{1,128}) "
    rb"(?P<msgid>-|" + _PRINTUS + rb"{1,32}) "
    rb"(?P<sd>-|(?:" + _SD_ELEMENT + rb")+)"
    rb"(?: (?P<msg>.*))?",
    re.DOTALL,
)
_ELEMENT_RE = re.compile(rb"\[(" + _SD_NAME + rb")((?: " + _SD_PARAM + rb")*)\]")
_PARAM_RE = re.compile(rb"(" + _SD_NAME + rb')="(' + _PARAM_VALUE + rb')"')
_UNESCAPE_RE = re.compile(rb'\\(["\\\]])')


def parse(message: bytes) -> dict[str, Any]:
    """Split a SYSLOG-MSG into its fields; fail the test when it is not RFC 5424."""
    match = SYSLOG_MSG.fullmatch(message)
    assert match is not None, f"not RFC 5424: {message!r}"
    pri = int(match["pri"])
    assert 0 <= pri <= 191
    assert match["pri"] == str(pri).encode()  # PRIVAL has no leading zeros
    elements: dict[str, dict[str, str]] = {}
    if match["sd"] != b"-":
        for element in _ELEMENT_RE.finditer(match["sd"]):
            params = {
                name.decode("ascii"): _UNESCAPE_RE.sub(rb"\1", value).decode("utf-8")
                for name, value in _PARAM_RE.findall(element[2])
            }
            elements[element[1].decode("ascii")] = params
    msg = match["msg"]
    return {
        "facility": pri // 8,
        "severity": pri % 8,
        "version": match["version"],
        "timestamp": match["timestamp"].decode(),
        "hostname": match["hostname"].decode(),
        "app": match["app"].decode(),
        "procid": match["procid"].decode(),
        "msgid": match["msgid"].decode(),
        "sd": elements,
        "msg": msg,
    }


def event_json(parsed: dict[str, Any]) -> Any:
    msg = parsed["msg"]
    assert msg.startswith(b"\xef\xbb\xbf"), "MSG must be MSG-UTF8 (BOM first)"
    return json.loads(msg[3:].decode("utf-8"))


EVENT: dict[str, Any] = {
    "id": "01HZX3K9Q0ABCDEF",
    "time": "2026-03-02T08:15:02.123456Z",
    "user": "u-claire",
    "role": "clinician",
    "action": "read",
    "outcome": "success",
    "patient": "p-0042",
    "resource_type": "Observation",
    "resource_id": "obs-7",
    "count": 1,
    "ip": "10.0.0.7",
    "device": None,
    "purpose": None,
    "request_id": "req-1",
    "reasons": ["care-team"],
    "seq": 42,
}


def test_known_answer() -> None:
    message = format_event(EVENT, hostname="vault.example.org", procid="4242")
    expected_json = json.dumps(EVENT, ensure_ascii=False, separators=(",", ":")).encode()
    assert message == (
        b"<110>1 2026-03-02T08:15:02.123456Z vault.example.org egide 4242 read "
        b'[egide@32473 id="01HZX3K9Q0ABCDEF" seq="42" user="u-claire" role="clinician" '
        b'outcome="success" patient="p-0042" resource_type="Observation" '
        b'resource_id="obs-7" count="1" ip="10.0.0.7" request_id="req-1"] '
        b"\xef\xbb\xbf" + expected_json
    )
    parsed = parse(message)
    assert parsed["facility"] == 13  # log audit
    assert parsed["severity"] == 6
    assert event_json(parsed) == EVENT


@pytest.mark.parametrize(
    ("action", "outcome", "severity"),
    [
        ("read", "success", 6),
        ("read", "denied", 4),
        ("update", "error", 3),
        ("read", None, 6),  # DESIGN.md: success is the default outcome
        ("read", "weird", 4),  # unknown outcome: warning, never quieter
        ("login_failed", "success", 5),
        ("mfa_failed", "success", 5),
        ("break_glass", "success", 5),
        ("login_failed", "denied", 4),  # "at least notice": warning stays warning
        ("login_failed", "error", 3),
    ],
)
def test_severity_by_outcome(action: str, outcome: str | None, severity: int) -> None:
    event = {**EVENT, "action": action, "outcome": outcome}
    parsed = parse(format_event(event, hostname="h"))
    assert parsed["severity"] == severity
    assert parsed["facility"] == 13


def test_facility_and_enterprise_number_are_configurable() -> None:
    message = format_event(EVENT, hostname="h", facility=FACILITY_AUTHPRIV, enterprise_id="99999.1")
    parsed = parse(message)
    assert parsed["facility"] == 10
    assert message.startswith(b"<86>1 ")
    assert list(parsed["sd"]) == ["egide@99999.1"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hostname": ""},
        {"hostname": "has space"},
        {"hostname": "é.example"},
        {"hostname": "h" * 256},
        {"hostname": "h", "app_name": "a" * 49},
        {"hostname": "h", "procid": "p\n1"},
        {"hostname": "h", "facility": 24},
        {"hostname": "h", "enterprise_id": "32473 x"},
        {"hostname": "h", "enterprise_id": "1" * 30},  # SD-ID would exceed 32 characters
    ],
)
def test_bad_header_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ExportError) as info:
        format_event(EVENT, **kwargs)
    assert "\n" not in str(info.value)


def test_sd_values_escape_quote_backslash_and_bracket() -> None:
    nasty = 'a"b\\c]d [x="y"]'
    message = format_event({**EVENT, "patient": nasty, "user": "\\"}, hostname="h")
    assert b'patient="a\\"b\\\\c\\]d [x=\\"y\\"\\]"' in message
    assert b'user="\\\\"' in message
    parsed = parse(message)
    params = parsed["sd"]["egide@32473"]
    assert params["patient"] == nasty
    assert params["user"] == "\\"
    assert event_json(parsed)["patient"] == nasty


def test_values_cannot_inject_a_line_or_a_second_element() -> None:
    forged = 'p-1\n<110>1 2026-01-01T00:00:00Z evil egide - read [egide@32473 user="admin"]'
    message = format_event({**EVENT, "patient": forged, "user": "u\r\x00"}, hostname="h")
    assert b"\n" not in message
    assert b"\r" not in message
    assert b"\x00" not in message
    parsed = parse(message)
    params = parsed["sd"]["egide@32473"]
    assert list(parsed["sd"]) == ["egide@32473"]
    assert params["user"] == "u#013#000"  # RFC 5424 8.2 style, not a raw control character
    assert params["patient"].startswith("p-1#010<110>1")
    assert event_json(parsed)["patient"] == forged  # MSG keeps the exact value


def test_non_ascii_patient_id() -> None:
    patient = "Élodie-Ωμέγα-患者-🩺"
    parsed = parse(format_event({**EVENT, "patient": patient}, hostname="h"))
    assert parsed["sd"]["egide@32473"]["patient"] == patient
    assert event_json(parsed)["patient"] == patient


def test_lone_surrogate_still_gives_valid_utf8() -> None:
    event = {**EVENT, "patient": "p\udc80"}
    message = format_event(event, hostname="h")
    message.decode("utf-8")  # strict: valid UTF-8 throughout
    parsed = parse(message)
    assert parsed["sd"]["egide@32473"]["patient"].startswith("p\ufffd")
    assert event_json(parsed)["patient"] == "p\udc80"


def test_missing_fields_become_nilvalue_or_are_left_out() -> None:
    parsed = parse(format_event({"id": "e1"}, hostname="h", procid=None))
    assert parsed["timestamp"] == "-"
    assert parsed["procid"] == "-"
    assert parsed["msgid"] == "-"
    assert parsed["severity"] == 6
    # No NILVALUE inside SD-PARAMs in RFC 5424: absent fields are simply not there.
    assert parsed["sd"] == {"egide@32473": {"id": "e1"}}
    assert event_json(parsed) == {"id": "e1"}
    parsed = parse(format_event({}, hostname="-", app_name="-"))
    assert parsed["hostname"] == "-"
    assert parsed["app"] == "-"
    assert parsed["sd"] == {"egide@32473": {}}
    assert event_json(parsed) == {}


@pytest.mark.parametrize(
    ("time", "timestamp"),
    [
        ("2026-03-02T09:15:02+01:00", "2026-03-02T08:15:02Z"),
        ("2026-03-01T23:30:00.5-02:00", "2026-03-02T01:30:00.500000Z"),
        (dt.datetime(2026, 3, 2, 8, 15, tzinfo=dt.UTC), "2026-03-02T08:15:00Z"),
        ("2026-03-02T08:15:02", "-"),  # no offset: never guessed
        ("yesterday", "-"),
        (1772439302, "-"),
    ],
)
def test_timestamp_is_utc_or_nil(time: object, timestamp: str) -> None:
    parsed = parse(format_event({**EVENT, "time": time}, hostname="h"))
    assert parsed["timestamp"] == timestamp


def test_msgid_is_printable_ascii_of_at_most_32() -> None:
    parsed = parse(format_event({**EVENT, "action": "lecture du dossier é" * 3}, hostname="h"))
    assert parsed["msgid"] == "lecture_du_dossier__lecture_du_d"
    assert event_json(parsed)["action"] == "lecture du dossier é" * 3


def test_frame_is_octet_counting() -> None:
    message = format_event({**EVENT, "patient": "é"}, hostname="h")
    framed = frame(message)
    length, _, rest = framed.partition(b" ")
    assert int(length) == len(message)  # octets, not characters
    assert rest == message
    with pytest.raises(ExportError):
        frame(b"")


# --- property: whatever the event, the message parses ------------------------------------------
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
_offsets = st.integers(-1439, 1439).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
_times = st.datetimes(timezones=_offsets).map(lambda d: d.isoformat()) | st.text()
_fields = [
    "id",
    "time",
    "user",
    "role",
    "action",
    "outcome",
    "patient",
    "resource_type",
    "resource_id",
    "count",
    "ip",
    "device",
    "purpose",
    "request_id",
    "reasons",
    "seq",
]
_events = st.fixed_dictionaries(
    {}, optional={name: (_times if name == "time" else _json) for name in _fields}
).flatmap(
    lambda known: st.dictionaries(st.text(), _json, max_size=3).map(
        lambda extra: {**extra, **known}
    )
)


@given(event=_events)
def test_any_event_gives_a_message_that_parses(event: dict[str, Any]) -> None:
    message = format_event(event, hostname="vault.example.org", procid="1")
    message.decode("utf-8")
    parsed = parse(message)
    assert parsed["severity"] in {3, 4, 5, 6}
    assert event_json(parsed) == event
    params = parsed["sd"]["egide@32473"]
    for name in ("id", "user", "patient", "ip"):
        value = event.get(name)
        if value is None:
            assert name not in params
        elif isinstance(value, str):
            expected = re.sub(r"[\x00-\x1f\x7f]", lambda m: f"#{ord(m.group()):03d}", value)
            assert params[name] == expected


@given(when=st.datetimes(timezones=_offsets))
def test_timestamp_is_the_same_instant_in_utc(when: dt.datetime) -> None:
    parsed = parse(format_event({"time": when.isoformat()}, hostname="h"))
    try:
        when.astimezone(dt.UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00 has no UTC year 1 to land in
        assert parsed["timestamp"] == "-"
        return
    assert parsed["timestamp"].endswith("Z")
    assert dt.datetime.fromisoformat(parsed["timestamp"]) == when


@pytest.mark.parametrize(
    "broken",
    [
        b'<110>1 - h egide - read [egide@32473 patient="a]b"] x',  # unescaped ]
        b'<110>1 - h egide - read [egide@32473 patient="a"b"] x',  # unescaped "
        b'<110>1 - h egide - read [egide@32473 patient="a\\b"] x',  # lone backslash
        b"<110>1 - h egide - read [egide 32473] x",  # SP in SD-NAME
        b"<0110>1 - h egide - read - x",  # leading zero in PRIVAL
        b"<110>1 - h egide - " + b"r" * 33 + b" - x",  # MSGID longer than 32
    ],
)
def test_the_test_parser_rejects_broken_messages(broken: bytes) -> None:
    with pytest.raises(AssertionError):
        parse(broken)


def test_local_hostname_is_a_valid_header_field() -> None:
    parsed = parse(format_event(EVENT, hostname=local_hostname()))
    assert parsed["hostname"] == local_hostname()

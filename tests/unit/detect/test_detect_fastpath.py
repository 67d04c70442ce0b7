"""The fast reading path (`Detector.feed_file`: parse, check and fold in one pass) judges every
line as `read_records` does: the same bad lines with the same numbers and messages, in order,
and the same aggregates from the good ones, whatever the odd lines around them."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from egide.detect.engine import Detector
from egide.detect.events import BadLine, Context, DetectFormatError, read_records
from egide.detect.features import StreamState
from tests.unit.detect.detect_world import line_event, state_view

_event = line_event


def _count(i: int, text: bytes) -> bytes:
    """An event line whose count is written `text` (orjson writes no integer from 2**64)."""
    return orjson.dumps(_event(i, count=0)).replace(b'"count":0', b'"count":' + text)


_ONE = orjson.dumps(_event(919))

ODD_LINES: list[bytes] = [
    b"{not json",
    b"",
    b"   ",
    b"[1, 2]",
    b'"a string"',
    b"42",
    orjson.dumps({"time": "2026-03-02T10:00:00Z", "user": "u", "action": "read"}),
    orjson.dumps(_event(900, user="")),
    orjson.dumps(_event(901, patient=7)),
    orjson.dumps(_event(902, outcome="maybe")),
    orjson.dumps(_event(903, count=-1)),
    orjson.dumps(_event(904, count=True)),
    orjson.dumps(_event(905, count=None)),
    orjson.dumps(_event(906, outcome=None)),
    orjson.dumps(_event(907, time="yesterday")),
    orjson.dumps(_event(908, time="2026-03-02T10:99:00Z")),
    orjson.dumps(_event(909, time="2026-03-02T12:00:05+02:00")),
    orjson.dumps(_event(910, time="2026-03-02T10:00:05.250Z")),
    orjson.dumps(_event(911, time="2026-03-02T10:00:75Z")),
    orjson.dumps({"id": "e912", "time": "2026-03-02T10:01:00Z", "user": "u1", "action": "read"}),
    orjson.dumps({**_event(913), "extra": [1, 2]}),
    orjson.dumps({"purpose": "x", **_event(914)}),
    orjson.dumps(_event(915, action="teleport")),
    orjson.dumps(_event(916, ip=None, device=None)),
    # The boundary of the decoder (`features.DECODE_LINE`): lines it refuses are judged as
    # orjson and `check_record` judge them, whatever the decoder would have made of them.
    _ONE + _ONE,
    _ONE + b" " + _ONE,
    _ONE + b"\r" + _ONE,
    _count(920, b"9223372036854775807"),  # 2**63 - 1: the decoder's largest
    _count(921, b"9223372036854775808"),  # 2**63: an int for orjson, a valid count
    _count(922, b"18446744073709551615"),  # 2**64 - 1: idem
    _count(923, b"18446744073709551616"),  # 2**64: a float for orjson, not a count
    _count(924, b"1180591620717411303424"),  # 2**70: idem
    _count(925, b"1.0"),
    _count(926, b"1e2"),
    b'{"user":5,' + orjson.dumps(_event(927))[1:],  # the last "user" counts: valid
    orjson.dumps(_event(928))[:-1] + b',"user":5}',  # the last "user" counts: not valid
    orjson.dumps(_event(929))[:-1] + b',"extra":"\xff\xfe"}',  # invalid UTF-8
    orjson.dumps(_event(930))[:-1] + b',"extra":1e999}',
    orjson.dumps(_event(931))[:-1] + b',"extra":"\\ud800"}',  # a lone surrogate
    orjson.dumps(_event(932)).replace(b'"id"', b'"\\u0069d"'),
    orjson.dumps(_event(933, user="u\tx")).replace(b"\\t", b"\t"),  # a raw tab
    orjson.dumps(_event(934)).replace(b'"user":"u', b'"user":"\xffu'),
    b"\xef\xbb\xbf" + orjson.dumps(_event(935)),  # a UTF-8 byte order mark
    orjson.dumps(_event(936)) + b"\r",
    orjson.dumps(_event(937, outcome=None)),
    b"{}",
]


def _write(path: Path, *, tail: bytes) -> None:
    lines = [orjson.dumps(_event(i)) for i in range(400)]
    for k, odd in enumerate(ODD_LINES):
        lines.insert(5 + 13 * k, odd)
    data = b"\n".join(lines) + b"\n" + tail
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


@pytest.mark.parametrize("tail", [b"", b"{broken tail", orjson.dumps(_event(999))])
@pytest.mark.parametrize("name", ["events.jsonl", "events.jsonl.gz"])
@pytest.mark.parametrize("chunk", [64, 1 << 20])
def test_feed_file_judges_lines_as_read_records(
    tmp_path: Path, tail: bytes, name: str, chunk: int
) -> None:
    path = tmp_path / name
    _write(path, tail=tail)
    slow = Detector(Context())
    expected_bad: list[BadLine] = []
    good = []
    for item in read_records(path, chunk_bytes=chunk):
        if isinstance(item, BadLine):
            expected_bad.append(item)
        else:
            good.append(item)
    slow.feed_records(good)
    fast = Detector(Context())
    bad: list[BadLine] = []
    from egide.detect.features import ingest_file  # noqa: PLC0415 - the chunked reader

    n = ingest_file(fast.state, path, on_bad=bad.append, chunk_bytes=chunk)
    assert bad == expected_bad
    # 28: seconds "75" (line 911) are refused since the minute cache no longer takes them.
    assert len(bad) == 28 + (tail == b"{broken tail")
    assert n == len(good)
    assert state_view(fast.state) == state_view(slow.state)
    assert fast.finish() == slow.finish()


def test_feed_records_refuses_a_bad_record() -> None:
    detector = Detector(Context())
    with pytest.raises(DetectFormatError, match="'user'"):
        detector.feed_records([_event(1, user=None)])


def test_odd_lines_are_single_lines() -> None:
    assert all(b"\n" not in line for line in ODD_LINES)


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_a_bad_lines_message_is_orjsons_on_the_line_alone(tmp_path: Path, newline: bytes) -> None:
    """Lines are split with their newline kept: a message quoting a position in the line is
    still orjson's on the line without it, in the middle of the file as at its end."""
    broken = b'{"id": "e1", "time":'
    path = tmp_path / "events.jsonl"
    path.write_bytes(broken + newline + orjson.dumps(_event(2)) + newline + broken)
    expected = []
    for line in (broken + newline.removesuffix(b"\n"), broken):
        with pytest.raises(orjson.JSONDecodeError) as caught:
            orjson.loads(line)
        expected.append(f"not JSON ({caught.value})")
    found = [item for item in read_records(path) if isinstance(item, BadLine)]
    assert found == [BadLine(1, expected[0]), BadLine(3, expected[1])]
    fast: list[BadLine] = []
    from egide.detect.features import ingest_file  # noqa: PLC0415 - as above

    assert ingest_file(StreamState(), path, on_bad=fast.append) == 1
    assert fast == found

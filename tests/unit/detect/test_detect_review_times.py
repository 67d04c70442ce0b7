"""A time's verdict does not depend on the minutes seen before (found by a review).

`events.timestamp` (used by `check_record`, so by `read_records` and by `fold`'s slow branch)
used to take a time of the `YYYY-MM-DDTHH:MM:SSZ` shape from its minute cache whenever the
minute was seen before and `seconds.isdigit()`: seconds 60-99 and non-ASCII digits were then
accepted (though `parse_time` refuses them), and digits `int` cannot read (superscripts)
crashed the run with a ValueError. A line's verdict depended on the lines (and files) read
before it in the process, and on which process of a split run read it. The cache now takes
"00" to "59" only; anything else is parsed in full."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from egide.detect import events, features
from egide.detect.events import BadLine, read_records
from egide.detect.features import StreamState, ingest_file


def _clear_caches() -> None:
    events.MINUTES.clear()
    features._MINUTES.clear()
    events.parse_time.cache_clear()


def _line(i: int, time: str) -> bytes:
    return orjson.dumps({"id": f"e{i}", "time": time, "user": "u1", "action": "read"})


def _refused(time: str) -> str:
    with pytest.raises(events.DetectFormatError) as caught:
        events.parse_time(time)
    return str(caught.value)


@pytest.mark.parametrize("reader", ["read_records", "ingest_file"])
def test_superscript_seconds_after_a_seen_minute_are_a_bad_line(
    tmp_path: Path, reader: str
) -> None:
    _clear_caches()
    odd = "2026-03-02T10:00:²³Z"
    path = tmp_path / "events.jsonl"
    path.write_bytes(_line(1, "2026-03-02T10:00:05Z") + b"\n" + _line(2, odd) + b"\n")
    bad: list[BadLine] = []
    if reader == "read_records":
        bad = [item for item in read_records(path) if isinstance(item, BadLine)]
    else:
        ingest_file(StreamState(), path, on_bad=bad.append, parallel=False)
    assert bad == [BadLine(2, _refused(odd))]


@pytest.mark.parametrize(
    "odd", ["2026-03-02T10:00:75Z", "2026-03-02T10:00:99Z", "2026-03-02T10:00:١٥Z"]
)
def test_a_time_parse_time_refuses_stays_refused_after_its_minute_was_seen(
    tmp_path: Path, odd: str
) -> None:
    _clear_caches()
    path = tmp_path / "events.jsonl"
    path.write_bytes(_line(1, "2026-03-02T10:00:05Z") + b"\n" + _line(2, odd) + b"\n")
    expected = [BadLine(2, _refused(odd))]
    assert [item for item in read_records(path) if isinstance(item, BadLine)] == expected
    _clear_caches()
    bad: list[BadLine] = []
    assert ingest_file(StreamState(), path, on_bad=bad.append, parallel=False) == 1
    assert bad == expected


def test_a_split_run_judges_a_line_as_one_process(tmp_path: Path) -> None:
    lines = [_line(i, f"2026-03-02T10:00:{i:02d}Z") for i in range(20)]
    lines.append(_line(99, "2026-03-02T10:00:75Z"))  # the minute was seen in the first part
    data = b"\n".join(lines) + b"\n"
    path = tmp_path / "events.jsonl"
    path.write_bytes(data)
    split = data.rindex(b"\n", 0, data.index(b'"e99"')) + 1  # the odd line alone in part 2

    _clear_caches()  # the worker is forked with the parent's caches
    split_bad: list[BadLine] = []
    n_split = ingest_file(StreamState(), path, split=split, on_bad=split_bad.append)
    _clear_caches()
    one_bad: list[BadLine] = []
    n_one = ingest_file(StreamState(), path, on_bad=one_bad.append, parallel=False)
    assert (n_split, split_bad) == (n_one, one_bad)

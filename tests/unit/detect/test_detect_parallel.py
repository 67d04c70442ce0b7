"""Reading an events file in two processes (`features.ingest_file` with a split,
`parallel.ingest_split`) gives exactly what one pass gives: the same aggregates field by field
(evidence ids in order, spans, sessions with their addresses, failures, counts), the same bad
lines under the same numbers and in file order, the same alerts, wherever the file is split:
at every line of small files (odd lines and sessions across the split included), in a gzip
file, in a file of one line or none, and at random points of random streams (Hypothesis)."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from egide.detect import parallel
from egide.detect.engine import Detector
from egide.detect.events import BadLine, Context, read_chunks
from egide.detect.features import PARALLEL_MIN_BYTES, StreamState, fold_lines, ingest_file
from tests.unit.detect.detect_world import state_view, typed

pytestmark = pytest.mark.skipif(not parallel.can_fork(), reason="needs os.fork")


def _event(i: int, **changes: object) -> dict[str, object]:
    event: dict[str, object] = {
        "id": f"e{i}",
        "time": f"2026-03-02T{10 + i // 60 % 12:02d}:{i % 60:02d}:{(7 * i) % 60:02d}Z",
        "user": f"u{i % 3}",
        "action": ("read", "login", "update", "export", "login_failed", "read")[i % 6],
        "outcome": "success",
        "patient": f"p{i % 7}",
        "resource_type": "Observation",
        "count": 1 + i % 4,
        "ip": f"10.0.{i % 2}.{i % 5}",
        "device": f"ws-{i % 2}",
        "purpose": None,
    }
    event.update(changes)
    return event


ODD = [
    b"{not json",
    b"",
    b"[1, 2]",
    orjson.dumps(_event(900, user="")),
    orjson.dumps(_event(901, time="2026-03-02T12:00:05+02:00")),
    orjson.dumps({"id": "e902", "time": "2026-03-02T10:01:00Z", "user": "u1", "action": "read"}),
    orjson.dumps(_event(903, count=-1)),
    orjson.dumps(_event(904, action="teleport")),
]


def _lines() -> list[bytes]:
    """Events of three users on two devices (sessions spanning any split), a second day,
    sign-in failures, and odd lines among them; a session whose device changes address, and
    one that a login (from another address) reopens before reads from that address."""
    lines = [orjson.dumps(_event(i)) for i in range(48)]
    for k, odd in enumerate(ODD):
        lines.insert(3 + 6 * k, odd)
    lines += [
        orjson.dumps(_event(60, action="login", ip="192.0.2.1", user="u0", device="ws-0")),
        orjson.dumps(_event(61, action="read", ip="192.0.2.1", user="u0", device="ws-0")),
        orjson.dumps(_event(62, action="read", ip="192.0.2.2", user="u0", device="ws-0")),
        orjson.dumps(_event(63, action="login", ip="192.0.2.9", user="u1", device="ws-9")),
        orjson.dumps(_event(64, action="read", ip="192.0.2.9", user="u1", device="ws-9")),
        orjson.dumps(_event(65, time="2026-03-03T01:00:00Z")),
        orjson.dumps(_event(66, time="2026-03-03T01:00:09Z", device=None, ip=None)),
    ]
    return lines


def _one_pass(path: Path, state: StreamState | None = None) -> tuple[StreamState, list[BadLine]]:
    """The reference: one process, one pass over the file."""
    state = state or StreamState()
    bad: list[BadLine] = []
    for first, lines in read_chunks(path):
        fold_lines(state, lines, first, bad.append)
    return state, bad


def _split(
    path: Path, split: int, state: StreamState | None = None, *, chunk: int = 1 << 20
) -> tuple[StreamState, list[BadLine], int, int]:
    state = state or StreamState()
    bad: list[BadLine] = []
    read = [0]

    def on_bytes(n: int) -> None:
        read[0] += n

    n = ingest_file(
        state, path, split=split, on_bad=bad.append, on_bytes=on_bytes, chunk_bytes=chunk
    )
    return state, bad, n, read[0]


def _write(path: Path, lines: list[bytes], *, end: bytes = b"\n") -> bytes:
    data = b"\n".join(lines) + end
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return data


def test_every_split_point_gives_the_one_pass_state(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    data = _write(path, _lines())
    expected, expected_bad = _one_pass(path)
    assert len(expected_bad) == 4  # the blank line is skipped, not bad
    starts = [0] + [i + 1 for i, b in enumerate(data) if b == ord("\n")]
    # Every line start, a point inside a line, the very end and past it.
    for split in [*starts, starts[10] + 5, len(data) - 1, len(data) + 100]:
        state, bad, n, read = _split(path, split)
        assert bad == expected_bad, split
        assert state_view(state) == state_view(expected), split
        assert n == expected.events
        assert read == len(data)


def test_small_chunks_and_a_state_already_fed(tmp_path: Path) -> None:
    """The split with chunks smaller than a line, into a state holding earlier events (the
    same users and day: sessions and pairs continue across both)."""
    earlier = tmp_path / "earlier.jsonl"
    _write(earlier, [orjson.dumps(_event(i)) for i in range(100, 112)])
    path = tmp_path / "events.jsonl"
    data = _write(path, _lines())
    expected, _ = _one_pass(path, _one_pass(earlier)[0])
    for split in (1, len(data) // 3, len(data) // 2, len(data) - 40):
        state, _, _, _ = _split(path, split, _one_pass(earlier)[0], chunk=64)
        assert state_view(state) == state_view(expected), split


def test_alerts_are_the_same(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    data = _write(path, _lines())
    one = Detector(Context())
    _one_pass(path, one.state)
    two = Detector(Context())
    _split(path, len(data) // 2, two.state)
    assert two.finish() == one.finish()


@pytest.mark.parametrize("end", [b"\n", b"", b"\n\n"])
def test_gzip_file_split_anywhere(tmp_path: Path, end: bytes) -> None:
    path = tmp_path / "events.jsonl.gz"
    data = _write(path, _lines(), end=end)
    expected, expected_bad = _one_pass(path)
    for split in (1, 200, len(data) // 2, len(data) - 3):
        state, bad, _, read = _split(path, split, chunk=128)
        assert bad == expected_bad
        assert state_view(state) == state_view(expected)
        assert read == len(data)


def test_tiny_and_empty_files(tmp_path: Path) -> None:
    one = tmp_path / "one.jsonl"
    line = orjson.dumps(_event(1))
    one.write_bytes(line)  # no newline at the end
    for split in (0, 1, len(line) - 1, len(line), len(line) + 1):
        state, bad, n, _ = _split(one, split)
        assert (n, bad) == (1, [])
        assert state_view(state) == state_view(_one_pass(one)[0])
    bad_only = tmp_path / "bad.jsonl"
    bad_only.write_bytes(b"\n{oops\n")
    for split in (0, 1, 2, 7):
        assert _split(bad_only, split)[1] == _one_pass(bad_only)[1]
        assert [b.line_no for b in _split(bad_only, split)[1]] == [2]
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    state, bad, n, read = _split(empty, 0)
    assert (n, bad, read, state.days) == (0, [], 0, {})


def test_a_large_file_is_split_by_itself(tmp_path: Path) -> None:
    """Above PARALLEL_MIN_BYTES the default reading takes two processes; same state."""
    path = tmp_path / "events.jsonl"
    line = orjson.dumps(_event(0))
    repeat = PARALLEL_MIN_BYTES // (len(line) * 60) + 2
    lines = [
        orjson.dumps(
            _event(
                i,
                time=f"2026-03-{2 + k % 20:02d}T{10 + i // 60 % 12:02d}:{i % 60:02d}:00Z",
                id=f"e{k}-{i}",
            )
        )
        for k in range(repeat)
        for i in range(60)
    ]
    data = _write(path, lines)
    assert len(data) >= PARALLEL_MIN_BYTES
    expected, _ = _one_pass(path)
    state = StreamState()
    assert ingest_file(state, path) == expected.events
    assert state_view(state) == state_view(expected)


@st.composite
def _streams(draw: st.DrawFn) -> list[bytes]:
    n = draw(st.integers(1, 40))
    lines = []
    for i in range(n):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            lines.append(draw(st.sampled_from(ODD)))
            continue
        lines.append(
            orjson.dumps(
                _event(
                    i,
                    user=draw(st.sampled_from(["u0", "u1"])),
                    action=draw(st.sampled_from(["read", "login", "update", "login_failed"])),
                    patient=draw(st.sampled_from(["p0", "p1", None])),
                    ip=draw(st.sampled_from(["10.0.0.1", "10.0.0.2", None])),
                    device=draw(st.sampled_from(["ws-0", "ws-1", None])),
                    time=f"2026-03-0{draw(st.integers(2, 3))}T10:{i:02d}:00Z",
                )
            )
        )
    return lines


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=_streams(), where=st.floats(0.0, 1.0))
def test_random_streams_and_split_points(tmp_path: Path, lines: list[bytes], where: float) -> None:
    path = tmp_path / "events.jsonl"
    data = _write(path, lines)
    expected, expected_bad = _one_pass(path)
    state, bad, _, _ = _split(path, int(len(data) * where))
    assert bad == expected_bad
    assert state_view(state) == state_view(expected)


def test_the_state_codec_gives_back_every_type(tmp_path: Path) -> None:
    """A packed state crosses in msgpack and comes back with its tuples, sets, floats and
    ints as they were (`typed` tells 1 from 1.0 and a tuple from a list)."""
    path = tmp_path / "events.jsonl"
    _write(path, _lines())
    state, bad = _one_pass(path)
    message = ([(b.line_no, b.message) for b in bad], parallel.pack(state, {}))
    data = parallel.dumps_state(*message)
    assert data[:1] == b"P"  # msgpack
    assert typed(parallel.loads(data)) == typed(message)
    assert typed(parallel.loads(parallel.dumps(message))) == typed(message)  # marshal


def test_counts_beyond_64_bits_cross_in_marshal(tmp_path: Path) -> None:
    """A count the format takes but whose sum overflows msgpack's integers (two accesses of
    2**64 - 1 records each in one user-day): the state crosses in marshal, and the split
    state is still the one-pass state."""
    huge = 2**64 - 1
    lines = [orjson.dumps(_event(i, action="read")) for i in range(6)]
    lines[1] = orjson.dumps(_event(1, action="read", count=huge, user="u0"))
    lines[4] = orjson.dumps(_event(4, action="read", count=huge, user="u0"))
    path = tmp_path / "events.jsonl"
    data = _write(path, lines)
    expected, expected_bad = _one_pass(path)
    assert expected_bad == []
    assert sum(ud.records for ud in expected.days.values()) > huge
    packed = parallel.pack(expected, {})
    assert parallel.dumps_state([], packed)[:1] == b"M"
    for split in (0, len(data) // 2, len(data)):
        state, bad, _, _ = _split(path, split)
        assert bad == []
        assert state_view(state) == state_view(expected), split

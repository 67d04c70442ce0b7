"""Reading *and judging* an events file in two processes (`Detector.run_file`,
`parallel.score_split`) gives exactly what one process gives: the same alerts (ids, evidence,
reasons, order), the same bad lines under the same numbers in file order, the same summary,
wherever the file is divided; and when the second process is lost at any stage, the file is
judged again in one process with every bad line reported once. `merge_before` (the worker
putting the parent's earlier part in front of its own) gives the one-pass state field by
field at every split point."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from egide.detect import engine, parallel
from egide.detect.engine import Detector
from egide.detect.events import BadLine, Context, UserInfo, load_context, read_chunks
from egide.detect.features import StreamState, fold_lines
from egide.detect.simulate import simulate, write_simulation
from tests.unit.detect.detect_world import state_view

pytestmark = pytest.mark.skipif(not parallel.can_fork(), reason="needs os.fork")

# Accounts of both processes: owner("u0") == 0 and owner("u4") == 1.
PARENTS, WORKERS = "u0", "u4"


def test_the_accounts_used_here_belong_to_both_processes() -> None:
    assert (parallel.owner(PARENTS), parallel.owner(WORKERS)) == (0, 1)


def _event(i: int, **changes: object) -> dict[str, object]:
    event: dict[str, object] = {
        "id": f"e{i}",
        "time": f"2026-03-02T{10 + i // 60 % 12:02d}:{i % 60:02d}:{(7 * i) % 60:02d}Z",
        "user": (PARENTS, WORKERS)[i % 2],
        "action": ("read", "login", "update", "export", "login_failed", "read", "read")[i % 7],
        "outcome": "success",
        "patient": f"p{i % 5}",
        "resource_type": "Observation",
        "count": 1 + i % 4,
        "ip": f"10.0.{i % 3}.{i % 4}",
        "device": f"ws-{i % 3}",
        "purpose": None,
    }
    event.update(changes)
    return event


ODD = [b"{not json", b"", b"[1, 2]", orjson.dumps(_event(900, count=-1))]


def _lines() -> list[bytes]:
    """Two accounts (one per process) on three devices whose addresses change, a second day,
    failures, odd lines; sessions and pairs run across any split point."""
    lines = [orjson.dumps(_event(i)) for i in range(40)]
    for k, odd in enumerate(ODD):
        lines.insert(5 + 9 * k, odd)
    lines += [
        orjson.dumps(_event(60, user=WORKERS, action="login", ip="192.0.2.1", device="ws-0")),
        orjson.dumps(_event(61, user=WORKERS, ip="192.0.2.2", device="ws-0")),
        orjson.dumps(_event(62, time="2026-03-03T01:00:00Z")),
        orjson.dumps(_event(63, time="2026-03-03T01:00:09Z", device=None, ip=None)),
    ]
    return lines


def _write(path: Path, lines: list[bytes]) -> bytes:
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(data)
    return data


def _one_pass(path: Path) -> tuple[StreamState, list[BadLine]]:
    state = StreamState()
    bad: list[BadLine] = []
    for first, lines in read_chunks(path):
        fold_lines(state, lines, first, bad.append)
    return state, bad


def _starts(data: bytes) -> list[int]:
    return [0] + [i + 1 for i, b in enumerate(data) if b == ord("\n")]


def test_merge_before_gives_the_one_pass_state_at_every_split(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    data = _write(path, _lines())
    expected, _ = _one_pass(path)
    counter = mmap.mmap(-1, 8)
    for split in [*_starts(data), len(data) + 10]:
        earlier = StreamState()
        for first, lines in read_chunks(path, end=split):
            fold_lines(earlier, lines, first)
        later, first_ip, _ = parallel._fold_rest(path, split, 1 << 20, counter)
        added = parallel.merge_before(later, parallel.pack(earlier, {}), first_ip)
        assert added == earlier.events
        assert state_view(later) == state_view(expected), split


def _judged(
    detector: Detector, path: Path, split: int | None = None
) -> tuple[list[object], list[BadLine], object]:
    bad: list[BadLine] = []
    read = [0]
    alerts = detector.run_file(path, on_bad=bad.append, on_read=lambda: read.append(1), split=split)
    assert read == [0, 1]  # told once that reading is over
    return list(alerts), bad, detector.summary()


def _reference(context: Context, path: Path) -> tuple[list[object], list[BadLine], object]:
    detector = Detector(context)
    bad: list[BadLine] = []
    detector.feed_file(path, on_bad=bad.append)
    return list(detector.finish()), bad, detector.summary()


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> tuple[Context, Path, bytes]:
    """A small simulated hospital with its injected attacks, and odd lines among its events:
    alerts of many kinds, accounts of both processes."""
    root = tmp_path_factory.mktemp("hospital")
    summary = write_simulation(simulate(users=40, patients=400, days=6, seed=11), root)
    lines = summary.events_path.read_bytes().splitlines()
    for k, odd in enumerate(ODD):
        lines.insert(len(lines) * (2 * k + 1) // 8, odd)
    path = root / "events.jsonl"
    data = _write(path, lines)
    return load_context(summary.context_path), path, data


def test_run_file_judges_as_one_process_wherever_the_file_is_divided(
    hospital: tuple[Context, Path, bytes],
) -> None:
    context, path, data = hospital
    expected = _reference(context, path)
    assert len(expected[0]) >= 5  # enough alerts to compare
    assert {a.user for a in expected[0]} & {u.id for u in context.users}
    starts = _starts(data)
    for split in (0, 1, starts[len(starts) // 3] + 7, len(data) // 2, starts[-2], len(data) + 1):
        assert _judged(Detector(context), path, split) == expected, split


def test_a_large_file_is_judged_in_two_processes_by_itself(
    hospital: tuple[Context, Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without `split`, a file over the size limit takes two processes (seen by the worker
    starting), with the same result."""
    context, path, data = hospital
    monkeypatch.setattr("egide.detect.features.PARALLEL_MIN_BYTES", len(data) // 2)
    forks: list[int] = []
    real = parallel.score_split

    def counted(*args: object, **kwargs: object) -> object:
        forks.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(parallel, "score_split", counted)
    assert _judged(Detector(context), path) == _reference(context, path)
    assert forks == ([1] if parallel.cores() >= 2 else [])


def _fail_in_worker(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> None:
    """`<module>.<name>` raises in the forked worker only."""
    parent = os.getpid()
    real = getattr(module, name)

    def failing(*args: object, **kwargs: object) -> object:
        if os.getpid() != parent:
            raise MemoryError
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, failing)


@pytest.mark.parametrize(
    ("module", "stage"),
    [
        (parallel, "_fold_rest"),
        (parallel, "merge_before"),
        (parallel, "_share"),
        (engine, "brute_force_findings"),
        (parallel, "_write_all"),
    ],
)
def test_a_lost_worker_at_any_stage_changes_nothing(
    hospital: tuple[Context, Path, bytes],
    monkeypatch: pytest.MonkeyPatch,
    module: object,
    stage: str,
) -> None:
    """The worker fails while reading, while taking the parent's days, before judging,
    after swapping its share of the model, or cannot write at all: the file is judged again
    here, each bad line reported once, in order, the progress complete, and no process is
    left behind."""
    context, path, data = hospital
    expected = _reference(context, path)
    _fail_in_worker(monkeypatch, module, stage)
    progress: list[int] = []
    bad: list[BadLine] = []
    alerts = Detector(context).run_file(
        path, on_bad=bad.append, on_bytes=progress.append, split=len(data) // 2
    )
    assert (list(alerts), bad) == expected[:2]
    assert sum(progress) == len(data)
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


def test_a_failure_here_stops_the_worker(hospital: tuple[Context, Path, bytes]) -> None:
    """A bad line in strict mode (the callback raises) ends the run at once; the worker is
    stopped and reaped."""
    context, path, data = hospital

    class Strict(Exception):
        pass

    def strict(line: BadLine) -> None:
        raise Strict(line.line_no)

    with pytest.raises(Strict):
        Detector(context).run_file(path, on_bad=strict, split=len(data) - 10)
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


def test_a_judged_detector_is_spent(hospital: tuple[Context, Path, bytes]) -> None:
    """It holds only its share of the accounts: feeding or scoring it again would judge half
    a hospital, so it refuses; its summary still counts the whole file."""
    context, path, data = hospital
    detector = Detector(context)
    detector.run_file(path, split=len(data) // 2)
    assert detector.summary() == _reference(context, path)[2]
    for again in (
        detector.finish,
        lambda: detector.feed([]),
        lambda: detector.update([]),
        lambda: detector.feed_file(path),
        lambda: detector.run_file(path),
    ):
        with pytest.raises(RuntimeError, match="share"):
            again()


def test_a_fed_detector_runs_a_file_in_one_process(tmp_path: Path) -> None:
    """Events fed before belong to every account: no division then."""
    path = tmp_path / "events.jsonl"
    data = _write(path, _lines())
    detector = Detector(Context())
    detector.feed([_event(1000)])
    alerts = detector.run_file(path, split=len(data) // 2)
    reference = Detector(Context())
    reference.feed([_event(1000)])
    reference.feed_file(path)
    assert alerts == reference.finish()
    assert detector.summary() == reference.summary()
    assert detector.summary().events == _one_pass(path)[0].events + 1
    assert detector.finish() == alerts  # not spent: it holds every account


@st.composite
def _streams(draw: st.DrawFn) -> list[bytes]:
    n = draw(st.integers(1, 40))
    lines = []
    for i in range(n):
        if draw(st.integers(0, 9)) == 0:
            lines.append(draw(st.sampled_from(ODD)))
            continue
        lines.append(
            orjson.dumps(
                _event(
                    i,
                    user=draw(st.sampled_from([PARENTS, WORKERS, "u5"])),
                    action=draw(
                        st.sampled_from(["read", "login", "update", "export", "login_failed"])
                    ),
                    patient=draw(st.sampled_from(["p0", "p1", None])),
                    ip=draw(st.sampled_from(["10.0.0.1", "10.0.0.2", None])),
                    device=draw(st.sampled_from(["ws-0", "ws-1", None])),
                    time=f"2026-03-0{draw(st.integers(2, 3))}T10:{i:02d}:00Z",
                )
            )
        )
    return lines


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=_streams(), where=st.floats(0.0, 1.0))
def test_random_streams_and_split_points(tmp_path: Path, lines: list[bytes], where: float) -> None:
    path = tmp_path / "events.jsonl"
    data = _write(path, lines)
    assert _judged(Detector(Context()), path, int(len(data) * where)) == _reference(Context(), path)


def _names(process: int, n: int, prefix: str) -> list[str]:
    """`n` account ids judged by `process` of a split run."""
    found = [f"{prefix}{i}" for i in range(200) if parallel.owner(f"{prefix}{i}") == process]
    return found[:n]


def _file(tmp_path: Path, events: list[dict[str, object]]) -> tuple[Path, int]:
    events.sort(key=lambda e: str(e["time"]))
    lines = [orjson.dumps({**e, "id": f"e{i}"}) for i, e in enumerate(events)]
    path = tmp_path / "events.jsonl"
    data = _write(path, lines)
    return path, len(data) // 2


def _at(day: int, hour: int, minute: int = 0) -> str:
    return f"2026-03-{day:02d}T{hour:02d}:{minute:02d}:00Z"


def test_peer_volumes_of_the_other_process_count(tmp_path: Path) -> None:
    """A clerk's month-end export is ordinary because the other clerks, all judged by the
    other process, export as much every day: no alert either way; judged on one share of
    the peers only, it would be one."""
    clerk = _names(0, 1, "clerk")[0]
    others = _names(1, 4, "clerk")
    context = Context(
        users=tuple(UserInfo(u, "clerk", "billing") for u in [clerk, *others]),
    )
    base = {"action": "export", "resource_type": "Claim", "ip": "10.2.0.1", "device": "ws-b"}
    events: list[dict[str, object]] = [
        {**base, "time": _at(day, 9), "user": clerk, "count": 1} for day in range(2, 8)
    ]
    events.append({**base, "time": _at(8, 9), "user": clerk, "count": 55})
    events += [
        {**base, "time": _at(day, 10, k), "user": other, "count": 60}
        for day in range(2, 9)
        for k, other in enumerate(others)
    ]
    path, half = _file(tmp_path, events)
    expected = _reference(context, path)
    assert not [a for a in expected[0] if a.kind == "exfiltration"]  # type: ignore[attr-defined]
    assert _judged(Detector(context), path, half) == expected


def test_devices_of_the_other_process_are_not_novel(tmp_path: Path) -> None:
    """A nurse opens the ward's shared workstation (used every day by colleagues judged by
    the other process) while still signed in on her own: not a stranger's device, so no
    stolen-credentials alert; judged against one share of the hospital, it would be."""
    nurse = _names(0, 1, "nurse")[0]
    colleague = _names(1, 1, "nurse")[0]
    context = Context(users=tuple(UserInfo(u, "nurse", "ward") for u in (nurse, colleague)))
    own = {"ip": "10.1.0.5", "device": "ws-own", "user": nurse, "action": "read"}
    shared = {"ip": "10.9.0.7", "device": "ws-shared", "action": "read"}
    events: list[dict[str, object]] = []
    for day in range(2, 9):
        events += [{**own, "time": _at(day, 10, k), "patient": f"p{k}"} for k in range(5)]
        events += [
            {**shared, "user": colleague, "time": _at(day, 11, k), "patient": f"q{k}"}
            for k in range(5)
        ]
    events += [
        {**shared, "user": nurse, "time": _at(8, 10, k), "patient": f"r{k}"} for k in range(1, 6)
    ]
    path, half = _file(tmp_path, events)
    expected = _reference(context, path)
    assert not [a for a in expected[0] if a.kind == "stolen_credentials"]  # type: ignore[attr-defined]
    assert _judged(Detector(context), path, half) == expected


def test_a_message_the_parent_cannot_send_ends_the_worker(
    hospital: tuple[Context, Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writing to the worker fails here (whatever the error): the worker, which would wait
    for that message forever, is stopped, and the file is judged again here."""
    context, path, data = hospital
    expected = _reference(context, path)
    parent = os.getpid()
    real = parallel._write_all

    def failing(fd: int, payload: bytes) -> None:
        if os.getpid() == parent:
            raise MemoryError
        real(fd, payload)

    monkeypatch.setattr(parallel, "_write_all", failing)
    assert _judged(Detector(context), path, len(data) // 2) == expected
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


def test_credential_stuffing_across_both_processes_accounts(tmp_path: Path) -> None:
    """One address fails on accounts of both processes, then signs in to one of each after
    the division: one critical case naming both successes, in time order, as one process
    finds it; and a brute force on each side."""
    mine, theirs = _names(0, 3, "staff"), _names(1, 3, "staff")
    base = {"ip": "198.51.100.7", "device": None, "resource_type": None, "patient": None}
    events: list[dict[str, object]] = [
        {**base, "time": _at(3, 9, k), "user": user, "action": "login_failed"}
        for k, user in enumerate(mine + theirs)
    ]
    events += [
        {**base, "time": _at(3, 9, 20), "user": theirs[0], "action": "login"},
        {**base, "time": _at(3, 9, 21), "user": mine[0], "action": "login"},
    ]
    for k in range(9):  # guessing from elsewhere, one account of each side
        for user in (mine[1], theirs[1]):
            events.append(
                {
                    **base,
                    "ip": "192.0.2.50",
                    "time": _at(4, 10, k),
                    "user": user,
                    "action": "login_failed",
                }
            )
    path, _ = _file(tmp_path, events)
    expected = _reference(Context(), path)
    stuffing = [a for a in expected[0] if a.kind == "credential_stuffing"]  # type: ignore[attr-defined]
    assert {a.severity for a in stuffing} >= {"critical", "high"}
    data = path.read_bytes()
    for split in _starts(data)[1:-1:3]:
        assert _judged(Detector(Context()), path, split) == expected, split

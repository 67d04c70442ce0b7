"""Cases a review of the split run (`Detector.run_file` / `parallel.score_split`) found where
two processes did not give what one gives, each now guarded: sign-in failures of the worker's
accounts judged without that worker's days (a guessed password's success missed), the parent's
two messages to the worker mixed on the pipe (the worker lost, or both waiting forever), and a
failed fork escaping with its descriptors open."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from egide.detect import parallel
from egide.detect.engine import Detector
from egide.detect.events import BadLine, Context

pytestmark = pytest.mark.skipif(not parallel.can_fork(), reason="needs os.fork")


def _name(process: int, prefix: str) -> str:
    return next(f"{prefix}{i}" for i in range(200) if parallel.owner(f"{prefix}{i}") == process)


def _write(path: Path, events: list[dict[str, object]]) -> bytes:
    lines = [orjson.dumps({"id": f"e{i}", **e}) for i, e in enumerate(events)]
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(data)
    return data


def _event(time: str, user: str, action: str, **more: object) -> dict[str, object]:
    return {
        "time": time,
        "user": user,
        "action": action,
        "outcome": "success",
        "patient": None,
        "resource_type": "Session",
        "count": 1,
        "ip": "10.0.0.1",
        "device": "ws-1",
        "purpose": None,
        **more,
    }


def _reference(context: Context, path: Path) -> tuple[list[object], list[BadLine]]:
    detector = Detector(context)
    bad: list[BadLine] = []
    detector.feed_file(path, on_bad=bad.append)
    return list(detector.finish()), bad


def _split(context: Context, path: Path, split: int) -> tuple[list[object], list[BadLine]]:
    bad: list[BadLine] = []
    return list(Detector(context).run_file(path, on_bad=bad.append, split=split)), bad


def _brute_force(tmp_path: Path, process: int) -> tuple[Path, int]:
    """Brute force on an account, the failures before the split, the guesser's successful
    sign-in after it. Failure findings are computed by the parent over `self.state`, which
    lacks the worker-part days of the worker's accounts: the success is not seen."""
    user = _name(process, "acct")
    # Someone else's everyday activity, so the file has content on both sides.
    events = [
        _event(f"2026-03-02T09:{m:02d}:00Z", user, "login_failed", ip="203.0.113.9")
        for m in range(10)
    ]
    events.append(_event("2026-03-02T09:20:00Z", user, "login", ip="203.0.113.9"))
    path = tmp_path / "events.jsonl"
    data = _write(path, events)
    split = data.index(b'"2026-03-02T09:20')  # the success line begins after the split
    split = data.rindex(b"\n", 0, split) + 1
    return path, split


def test_brute_force_on_a_parents_account_is_judged_as_one_process(tmp_path: Path) -> None:
    path, split = _brute_force(tmp_path, 0)
    expected = _reference(Context(), path)
    assert any(a.severity == "critical" for a in expected[0])  # type: ignore[attr-defined]
    assert _split(Context(), path, split) == expected


def test_brute_force_on_a_workers_account_is_judged_as_one_process(tmp_path: Path) -> None:
    path, split = _brute_force(tmp_path, 1)
    expected = _reference(Context(), path)
    assert any(a.severity == "critical" for a in expected[0])  # type: ignore[attr-defined]
    assert _split(Context(), path, split) == expected


def _slow_first_receive_in_worker(monkeypatch: pytest.MonkeyPatch, delay: float) -> None:
    """The worker takes `delay` seconds before it begins reading the parent's days (a busy
    machine: the worker descheduled, or still sending its own part)."""
    parent = os.getpid()
    real = parallel._receive_one
    calls = [0]

    def receive(fd: int, tick: object) -> object:
        if os.getpid() != parent:
            calls[0] += 1
            if calls[0] == 1:
                import time  # noqa: PLC0415

                time.sleep(delay)
        return real(fd, tick)  # type: ignore[arg-type]

    monkeypatch.setattr(parallel, "_receive_one", receive)


def _mostly_workers_file(tmp_path: Path) -> tuple[Path, int]:
    """The parent's part: thousands of reads by a worker's account (its days to send are far
    over a pipe's buffer) and a few by a parent's account (judged in no time)."""
    theirs, mine = _name(1, "doc"), _name(0, "doc")
    events = [
        _event(
            f"2026-03-02T{8 + i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z",
            theirs,
            "read",
            patient=f"patient-{i:05d}",
            resource_type="Observation",
        )
        for i in range(4000)
    ]
    events += [
        _event(
            f"2026-03-02T12:00:0{k}Z", mine, "read", patient=f"p{k}", resource_type="Observation"
        )
        for k in range(3)
    ]
    half = len(events)
    events += [
        _event(f"2026-03-02T13:00:0{k}Z", who, "read", patient=f"q{k}", resource_type="Observation")
        for k, who in enumerate([mine, theirs, mine])
    ]
    path = tmp_path / "events.jsonl"
    data = _write(path, events)
    split = 0
    for _ in range(half):
        split = data.index(b"\n", split) + 1
    return path, split


def test_the_parents_two_messages_do_not_interleave(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal  # noqa: PLC0415

    path, split = _mostly_workers_file(tmp_path)
    expected = _reference(Context(), path)
    _slow_first_receive_in_worker(monkeypatch, 1.0)
    results: list[object] = []
    real = parallel.score_split

    def recorded(*args: object, **kwargs: object) -> object:
        result = real(*args, **kwargs)  # type: ignore[arg-type]
        results.append(result is not None)
        return result

    monkeypatch.setattr(parallel, "score_split", recorded)

    def hung(*_: object) -> None:
        raise TimeoutError("the split run hung")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    try:
        got = _split(Context(), path, split)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert got == expected
    assert results == [True], "the worker was lost: the file was judged again in one process"


def _open_fds() -> set[int]:
    return {int(entry.name) for entry in Path("/proc/self/fd").iterdir()}


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_a_failed_fork_judges_in_one_process_and_leaks_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno  # noqa: PLC0415

    path, split = _brute_force(tmp_path, 0)
    expected = _reference(Context(), path)
    before = _open_fds()

    def no_fork() -> int:
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    try:
        got = _split(Context(), path, split)
    finally:
        leaked = _open_fds() - before
    assert not leaked, f"descriptors left open: {sorted(leaked)}"
    assert got == expected

"""One events file read by two processes at once: the first part here, the rest in a forked
worker whose aggregates are merged here in file order (`features.ingest_file` calls this for a
large file).

Security role: none of its own beyond being exact. The merged state must be the one reading the
file in one pass gives, field by field (the same evidence ids in the same order, the same spans,
the same bad lines under the same numbers and in file order), or alerts would depend on the
number of cores; `tests/unit/detect/test_detect_parallel.py` checks it at every split point of
small files. If the worker fails in any way, this process reads its part itself.

Speed role: `egide detect run` spends most of its time folding lines (a Python loop per
event); two cores fold two halves in about half the time. The worker's aggregates cross the
process boundary as plain tuples, lists and sets in `marshal` format (several times faster to
write and read than pickled objects; only our own forked child ever writes it).
"""

from __future__ import annotations

import contextlib
import marshal
import mmap
import os
import select
import signal
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from egide.detect.events import BadLine, read_chunks
from egide.detect.features import (
    Failure,
    PairDay,
    Session,
    StreamState,
    UserDay,
    fold_lines,
    no_gc,
)

# marshal's version 2 (no back-references): faster to write and read than later versions for
# these many small strings.
MARSHAL_VERSION = 2
_COUNTER = struct.Struct("q")


def can_fork() -> bool:
    return hasattr(os, "fork")


def cores() -> int:
    """The cores this process may run on (a container's limit included where it shows)."""
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        return len(affinity(0))
    return os.cpu_count() or 1  # pragma: no cover - platforms without sched_getaffinity


def file_size(path: Path) -> int:
    """The uncompressed size of an events file: a plain file's size, or the size a gzip file
    records in its trailer (0 when that cannot be the real size: over 4 GiB, several members)."""
    size = path.stat().st_size
    if path.suffix != ".gz":
        return size
    if size < 18:
        return 0
    with path.open("rb") as handle:
        handle.seek(-4, os.SEEK_END)
        recorded = int.from_bytes(handle.read(4), "little")
    return recorded if recorded >= size else 0


def ingest_split(
    state: StreamState,
    path: Path,
    split: int,
    *,
    on_bytes: Callable[[int], object] | None = None,
    on_bad: Callable[[BadLine], object] | None = None,
    chunk_bytes: int = 1 << 20,
) -> int:
    """Fold the lines of `path` beginning before the (uncompressed) offset `split` here and
    the others in a forked worker, then merge the worker's aggregates; the result is the one
    `fold_lines` over the whole file in one pass gives. Bad lines go to `on_bad` in file order,
    numbered in the whole file (the worker's once this part is folded); `on_bytes` receives
    the bytes of both parts as they are read. Returns the number of events folded."""
    counter = mmap.mmap(-1, _COUNTER.size)  # the worker's bytes read, shared with it
    with no_gc():  # the worker inherits it (fork), and folds without the cycle collector
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the worker (coverage does not follow the fork)
            os.close(read_fd)
            _worker(path, split, chunk_bytes, counter, write_fd)
        os.close(write_fd)
        reaped = False
        try:
            seen = [0]  # the worker's bytes already passed to on_bytes

            def forward() -> None:
                if on_bytes is not None:
                    done = _COUNTER.unpack_from(counter)[0]
                    if done > seen[0]:
                        on_bytes(done - seen[0])
                        seen[0] = done

            n = 0
            lines_before = 0  # the lines of this part: the worker's are numbered after them
            for first, lines in read_chunks(
                path, on_bytes=on_bytes, chunk_bytes=chunk_bytes, end=split
            ):
                n += fold_lines(state, lines, first, on_bad)
                lines_before = first + len(lines) - 1
                forward()
            data = _receive(read_fd, forward)
            _, status = os.waitpid(pid, 0)
            reaped = True
            forward()
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and data:
                packed = marshal.loads(data)  # noqa: S302 - written by our own forked worker
                del data
                for line_no, message in packed[0]:
                    if on_bad is not None:
                        on_bad(BadLine(line_no + lines_before, message))
                n += merge(state, packed[1])
                return n
            # The worker failed (killed, out of memory...): its part is read here instead.
            for first, lines in read_chunks(path, chunk_bytes=chunk_bytes, start=split):
                n += fold_lines(state, lines, first + lines_before, on_bad)
            return n
        finally:
            os.close(read_fd)
            counter.close()
            if not reaped:
                _stop(pid)


def _receive(fd: int, tick: Callable[[], None]) -> bytes:
    """Everything the worker writes until it closes the pipe; `tick` while waiting."""
    parts: list[bytes] = []
    while True:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            tick()
            continue
        part = os.read(fd, 1 << 20)
        if not part:
            return b"".join(parts)
        parts.append(part)


def _worker(  # pragma: no cover - runs in the forked child
    path: Path, split: int, chunk_bytes: int, counter: mmap.mmap, fd: int
) -> NoReturn:
    """Fold the lines from `split` on into a fresh state, send it packed, exit (never
    returns: `os._exit`, so nothing of the parent's — buffers, atexit handlers, test
    fixtures — runs twice)."""
    code = 1
    try:
        state = StreamState()
        bad: list[BadLine] = []
        first_ip: dict[int, str | None] = {}

        def session(device: str | None, ip: str | None, ts: float, time: str) -> Session:
            # Made without its address, so every access's address lands in `ips` (the
            # merge needs them all when the session began in the other part); the address
            # it began with is kept aside.
            made = Session(device, None, ts, time)
            first_ip[id(made)] = ip
            return made

        done = 0

        def progress(n: int) -> None:
            nonlocal done
            done += n
            _COUNTER.pack_into(counter, 0, done)

        for first, lines in read_chunks(
            path, on_bytes=progress, chunk_bytes=chunk_bytes, start=split
        ):
            fold_lines(state, lines, first, bad.append, session=session)
        data = marshal.dumps(
            ([(b.line_no, b.message) for b in bad], pack(state, first_ip)), MARSHAL_VERSION
        )
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        code = 0
    except BaseException:  # noqa: BLE001, S110 - the parent sees the exit code and reads the part itself
        pass
    finally:
        os._exit(code)


def pack(state: StreamState, first_ip: dict[int, str | None]) -> tuple[Any, ...]:
    """The worker's state as plain tuples (see `merge`). `first_ip`: id of each session ->
    the address it began with (its `ip` is None and its `ips` hold every access's address)."""
    days = [
        (
            ud.user,
            ud.day,
            ud.n,
            ud.records,
            ud.hours,
            ud.other,
            [(p, x.first, x.last, x.t0, x.t1, x.ids) for p, x in ud.pairs.items()],
            [_session(k, s, first_ip[id(s)]) for k, s in ud.sessions.items()],
            ud.exports,
            ud.writes,
            ud.break_glass,
            ud.auth,
        )
        for ud in state.days.values()
    ]
    failures = [(f.ts, f.time, f.id, f.user, f.ip, f.device) for f in state.failures]
    current = [(user, ud.day) for user, ud in state.current.items()]
    return (
        days,
        current,
        failures,
        state.events,
        state.unknown_actions,
        state.first_ts,
        state.last_ts,
    )


def _session(key: str, s: Session, ip: str | None) -> tuple[Any, ...]:
    return (key, s.device, ip, s.ips, s.first, s.last, s.t0, s.t1, s.ids, s.n, s.patients)


def merge(state: StreamState, packed: tuple[Any, ...]) -> int:
    """Fold a packed state of the events that follow `state`'s into it: the result is the one
    folding those events into `state` directly gives. Returns how many events were added.

    A (user, day) in both: counts and hours added; a pair or session of both keeps its
    beginning (first, t0, device, first address) from `state` and takes its end (last, t1)
    from the later part, ids in order; new pairs, sessions and days come after the existing
    ones (dict order is first-seen order)."""
    days_packed, current, failures, events, unknown, first_ts, last_ts = packed
    days = state.days
    for (
        user,
        day,
        n,
        records,
        hours,
        other,
        pairs,
        sessions,
        exports,
        writes,
        break_glass,
        auth,
    ) in days_packed:
        ud = days.get((user, day))
        if ud is None:
            ud = days[(user, day)] = UserDay(user, day, n, records, hours, other=other)
            ud.exports, ud.writes, ud.break_glass, ud.auth = exports, writes, break_glass, auth
            ud_pairs: dict[str, PairDay] = {}
            ud_sessions: dict[str, Session] = {}
            ud.pairs, ud.sessions = ud_pairs, ud_sessions
        else:
            ud.n += n
            ud.records += records
            ud.other += other
            ud.hours = [a + b for a, b in zip(ud.hours, hours, strict=True)]
            ud.exports += exports
            ud.writes += writes
            ud.break_glass += break_glass
            ud.auth += auth
            ud_pairs, ud_sessions = ud.pairs, ud.sessions
        _merge_pairs(ud_pairs, pairs)
        _merge_sessions(ud_sessions, sessions)
    state_current = state.current
    for user, day in current:
        state_current[user] = days[(user, day)]
    state.failures += [Failure(*f) for f in failures]
    state.events += events
    state.unknown_actions += unknown
    if state.first_ts is None:
        state.first_ts = first_ts
    state.last_ts = max(state.last_ts, last_ts)
    return int(events)


def _stop(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _merge_pairs(into: dict[str, PairDay], pairs: list[Any]) -> None:
    new_pair = PairDay.__new__
    for patient, first, last, t0, t1, ids in pairs:
        pair = into.get(patient)
        if pair is None:
            pair = into[patient] = new_pair(PairDay)
            pair.first, pair.t0, pair.ids = first, t0, ids
        else:
            pair.ids += ids
        pair.last, pair.t1 = last, t1


def _merge_sessions(into: dict[str, Session], sessions: list[Any]) -> None:
    new_session = Session.__new__
    for key, device, ip, ips, first, last, t0, t1, ids, count, patients in sessions:
        sess = into.get(key)
        if sess is None:
            sess = into[key] = new_session(Session)
            sess.device, sess.ip, sess.first, sess.t0 = device, ip, first, t0
            sess.ids, sess.n, sess.patients = ids, count, patients
            ips.discard(ip)
            sess.ips = ips
        else:
            sess.ids += ids
            sess.n += count
            sess.patients |= patients
            ips.discard(sess.ip)
            sess.ips |= ips
        sess.last, sess.t1 = last, t1

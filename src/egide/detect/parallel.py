"""One events file read by two processes at once: the first part here, the rest in a forked
worker whose aggregates are merged here in file order (`features.ingest_file` calls this for a
large file).

Security role: none of its own beyond being exact. The merged state must be the one reading the
file in one pass gives, field by field (the same evidence ids in the same order, the same spans,
the same bad lines under the same numbers and in file order), or alerts would depend on the
number of cores; `tests/unit/detect/test_detect_parallel.py` checks it at every split point of
small files. If the worker fails in any way, this process reads its part itself.

Speed role: `egide detect run` spends most of its time folding lines (a Python loop per
event); two cores fold two halves in about half the time. The aggregates cross the process
boundary as plain tuples, lists and sets (`pack`) in msgpack, decoded against their types so
the tuples and sets come back as such (`dumps_state`; about three times faster to write than
`marshal`, which carries the other, smaller messages and a state msgpack cannot hold). Only
our own forked processes ever write what is read.
"""

from __future__ import annotations

import contextlib
import marshal
import mmap
import os
import select
import signal
import struct
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import msgspec

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

# The types of a packed state (`pack`), message (bad lines, state): msgspec decodes msgpack's
# arrays into these tuples and sets. Times since the epoch are floats wherever `fold` made
# them (a float field would turn an integer into a float: there is none).
_Rare = tuple[float, str, str, int, str, str | None, str | None]
_Pair = tuple[str, float, float, str, str, list[str]]
_Sess = tuple[
    str, str | None, str | None, set[str], float, float, str, str, list[str], int, set[str]
]
_Day = tuple[
    str,
    int,
    int,
    int,
    list[int],
    int,
    list[_Pair],
    list[_Sess],
    list[_Rare],
    list[_Rare],
    list[_Rare],
    list[_Rare],
]
_Failure = tuple[float, str, str, str, str | None, str | None]
_Packed = tuple[list[_Day], list[tuple[str, int]], list[_Failure], int, int, float | None, float]
_STATE_ENCODER = msgspec.msgpack.Encoder()
_STATE_DECODER = msgspec.msgpack.Decoder(tuple[list[tuple[int, str]], _Packed])
# The first byte of a message: how the rest is written.
_MSGPACK_STATE = b"P"
_MARSHAL = b"M"


def dumps_state(bad: list[tuple[int, str]], packed: tuple[Any, ...]) -> bytes | bytearray:
    """A (bad lines, packed state) message as `loads` reads it: msgpack, or `marshal` for
    what msgpack cannot hold (an integer beyond 64 bits, such as a sum of huge counts)."""
    data = bytearray(_MSGPACK_STATE)
    try:
        _STATE_ENCODER.encode_into((bad, packed), data, 1)
    except (OverflowError, UnicodeError):
        return dumps((bad, packed))
    return data


def dumps(message: Any) -> bytes:
    """Any other message (plain values) as `loads` reads it."""
    return _MARSHAL + marshal.dumps(message, MARSHAL_VERSION)


def loads(data: bytes | bytearray) -> Any:
    """A message written by `dumps` or `dumps_state`."""
    body = memoryview(data)[1:]
    if data[:1] == _MSGPACK_STATE:
        return _STATE_DECODER.decode(body)
    return marshal.loads(body)  # noqa: S302 - written by our own forked process


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
        try:
            pid = os.fork()
        except OSError:  # no process to be had (EAGAIN, ENOMEM): this one reads it all
            os.close(read_fd)
            os.close(write_fd)
            counter.close()
            n = 0
            for first, lines in read_chunks(path, on_bytes=on_bytes, chunk_bytes=chunk_bytes):
                n += fold_lines(state, lines, first, on_bad)
            return n
        if pid == 0:  # pragma: no cover - the worker (coverage does not follow the fork)
            os.close(read_fd)
            _worker(path, split, chunk_bytes, counter, write_fd)
        os.close(write_fd)
        reaped = False
        try:
            forward = _forwarder(counter, on_bytes)
            n, lines_before = _fold_first(
                state, path, split, chunk_bytes, on_bytes, on_bad, forward
            )
            data = _receive(read_fd, forward)
            _, status = os.waitpid(pid, 0)
            reaped = True
            forward()
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and data:
                packed = loads(data)
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


# --- reading and judging in two processes ----------------------------------------------------

# One process's share of the hospital-wide model in, the other share's out (engine._findings).
Exchange = Callable[[tuple[Any, ...]], tuple[Any, ...]]
# What one process makes of its accounts: (a state with all their days and every failure,
# which accounts are its own, the swap of hospital-wide shares) -> its verdict, plain values
# (`marshal` carries the worker's).
Judge = Callable[[StreamState, Callable[[str], bool], Exchange], Any]


class WorkerLost(Exception):
    """The worker of a split run stopped before its end (killed, out of memory, a fault)."""


def owner(user: str) -> int:
    """Which process of a split run judges an account (0: the parent, 1: the worker): fixed
    by the account's id, so the two agree without a word."""
    return zlib.crc32(user.encode("utf-8", "surrogatepass")) & 1


def score_split(
    state: StreamState,
    path: Path,
    split: int,
    judge: Judge,
    *,
    on_bytes: Callable[[int], object] | None = None,
    on_bad: Callable[[BadLine], object] | None = None,
    on_read: Callable[[], object] | None = None,
    chunk_bytes: int = 1 << 20,
) -> tuple[Any, Any, int] | None:
    """Read *and judge* `path` in two processes: (this process's verdict, the worker's, the
    number of user-days), or None when the worker was lost or could not start (`state` then
    holds a part of the file: the caller starts again in one process).

    As `ingest_split`, this process folds the lines before `split` into `state` (a fresh
    one) and a forked worker the others. Then each takes the accounts `owner` gives it: the
    two swap the days of the other's accounts (so each holds all the days of its own, and
    every failure), each judges its accounts with `judge`, swapping once on the way their
    shares of the hospital-wide model (`Exchange`), and the worker sends its verdict back.
    Judging is most of the time after reading; both cores share it. Bad lines go to
    `on_bad` in file order (the worker's once its verdict is in); `on_read()` once both
    parts are read. `state` ends with all the days of this process's accounts, the others'
    days of this part, every failure and the whole file's counts.

    Messages on each pipe are sent one after the other (each sender waits for the one
    before), so two never mix."""
    counter = mmap.mmap(-1, _COUNTER.size)
    with no_gc():
        started = _start_judging_worker(path, split, chunk_bytes, counter, judge)
        if started is None:
            counter.close()
            return None
        pid, down_w, up_r = started
        reaped = False
        # A message to the worker lost: the worker is stopped, so this side's wait for its
        # reply ends (WorkerLost) and the file is judged again here.
        down = _Sender(down_w, lambda: _kill(pid))
        try:
            forward = _forwarder(counter, on_bytes)
            _, lines_before = _fold_first(
                state, path, split, chunk_bytes, on_bytes, on_bad, forward
            )
            down.send_bytes(dumps_state([], pack(state, {}, _owned_by(1))))
            bad, theirs = _receive_one(up_r, forward)
            forward()
            if on_read is not None:
                on_read()  # both parts read (the worker sent its part once read)
            merge(state, theirs)
            del theirs
            mine = _owned_by(0)
            view = _share(state, mine)

            def exchange(share: tuple[Any, ...]) -> tuple[Any, ...]:
                down.send(share)
                found: tuple[Any, ...] = _receive_one(up_r, forward)
                return found

            verdict = judge(view, mine, exchange)
            their_verdict, their_days = _receive_one(up_r, forward)
            down.join()
            _, status = os.waitpid(pid, 0)
            reaped = True
            forward()
            if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
                return None
            if on_bad is not None:
                for line_no, message in bad:
                    on_bad(BadLine(line_no + lines_before, message))
            return verdict, their_verdict, len(view.days) + their_days
        except WorkerLost:
            return None
        finally:
            # The worker stopped first, so a sender still writing to it fails at once (its
            # pipe has no reader) and ends before the descriptors are closed; reaped only
            # then, so its pid cannot be another process's when that sender stops it.
            if not reaped:
                _kill(pid)
            down.join()
            if not reaped:
                os.waitpid(pid, 0)
            os.close(down_w)
            os.close(up_r)
            counter.close()


def _start_judging_worker(
    path: Path, split: int, chunk_bytes: int, counter: mmap.mmap, judge: Judge
) -> tuple[int, int, int] | None:
    """Fork the worker of `score_split`: (its pid, the pipe to it, the pipe from it), or
    None when no process can be had (EAGAIN, ENOMEM; nothing left open)."""
    down_r, down_w = os.pipe()  # to the worker
    up_r, up_w = os.pipe()  # from the worker
    try:
        pid = os.fork()
    except OSError:
        for fd in (down_r, down_w, up_r, up_w):
            os.close(fd)
        return None
    if pid == 0:  # pragma: no cover - the worker (coverage does not follow the fork)
        os.close(down_w)
        os.close(up_r)
        _judging_worker(path, split, chunk_bytes, counter, down_r, up_w, judge)
    os.close(down_r)
    os.close(up_w)
    return pid, down_w, up_r


def _judging_worker(  # pragma: no cover - runs in the forked child  # noqa: PLR0917
    path: Path,
    split: int,
    chunk_bytes: int,
    counter: mmap.mmap,
    down: int,
    up: int,
    judge: Judge,
) -> NoReturn:
    """The worker of `score_split`: fold the part from `split`, swap days, judge its
    accounts, send the verdict, exit (`os._exit`, as `_worker`)."""
    code = 1
    try:
        state, first_ip, bad = _fold_rest(path, split, chunk_bytes, counter)
        # A message to the parent lost: this worker ends, which the parent sees.
        sender = _Sender(up, lambda: os._exit(1))
        sender.send_bytes(dumps_state(bad, pack(state, first_ip, _owned_by(0))))
        _, earlier = _receive_one(down, _idle)
        # This worker's accounts, all their days in file order: the parent's part first.
        merge_before(state, earlier, first_ip)
        del earlier
        mine = _owned_by(1)
        view = _share(state, mine)

        def exchange(share: tuple[Any, ...]) -> tuple[Any, ...]:
            sender.send(share)
            found: tuple[Any, ...] = _receive_one(down, _idle)
            return found

        verdict = judge(view, mine, exchange)
        sender.send((verdict, len(view.days)))
        sender.join()
        code = 0 if sender.ok else 1
    except BaseException:  # noqa: BLE001, S110 - the parent sees the exit code and starts again
        pass
    finally:
        os._exit(code)


class _Sender:
    """Messages written to a pipe by a thread, in order (both processes send at once: writing
    in the foreground, each would wait for the other to read). Each is serialised by `send`,
    so the caller may change what it refers to afterwards; the thread writing a message waits
    for the one writing the message before.

    A message that cannot be written whole calls `on_failure`, which must end the exchange
    (stop the other process, or end this one): the other side would otherwise wait for it
    forever. A write the other side stopped reading fails so: it is gone already."""

    def __init__(self, fd: int, on_failure: Callable[[], object]) -> None:
        self._fd = fd
        self._on_failure = on_failure
        self._last: threading.Thread | None = None
        self.ok = True

    def send(self, message: Any) -> None:
        self.send_bytes(dumps(message))

    def send_bytes(self, data: bytes | bytearray) -> None:
        """A message serialised already (`dumps`, `dumps_state`)."""
        before = self._last

        def write() -> None:
            if before is not None:
                before.join()
            if not self.ok:
                return
            try:
                _write_all(self._fd, _COUNTER.pack(len(data)))
                _write_all(self._fd, data)
            except BaseException:  # noqa: BLE001 - whatever it is, the exchange is over
                self.ok = False
                self._on_failure()

        self._last = threading.Thread(target=write, daemon=True)
        self._last.start()

    def join(self) -> None:
        if self._last is not None:
            self._last.join()


def _owned_by(process: int) -> Callable[[str], bool]:
    known: dict[str, bool] = {}

    def owned(user: str) -> bool:
        found = known.get(user)
        if found is None:
            found = known[user] = owner(user) == process
        return found

    return owned


def _share(state: StreamState, users: Callable[[str], bool]) -> StreamState:
    """The state restricted to some accounts' days (shared objects), every failure kept."""
    return StreamState(
        days={key: ud for key, ud in state.days.items() if users(ud.user)},
        failures=state.failures,
        events=state.events,
        first_ts=state.first_ts,
        last_ts=state.last_ts,
    )


def _idle() -> None:  # pragma: no cover - the worker has nothing to do while waiting
    return


def _receive_one(fd: int, tick: Callable[[], None]) -> Any:
    """The next message on `fd` (`tick` while waiting); WorkerLost if the pipe ends first."""
    size = _COUNTER.unpack(_read_exactly(fd, _COUNTER.size, tick))[0]
    return loads(_read_exactly(fd, size, tick))


def _read_exactly(fd: int, size: int, tick: Callable[[], None]) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            tick()
            continue
        n = os.readv(fd, [view[got:]])
        if n == 0:
            raise WorkerLost
        got += n
    return buffer


def _forwarder(counter: mmap.mmap, on_bytes: Callable[[int], object] | None) -> Callable[[], None]:
    """A callable passing on to `on_bytes` what the worker read since its last call (the
    worker counts its bytes in `counter`)."""
    seen = [0]

    def forward() -> None:
        if on_bytes is not None:
            done = _COUNTER.unpack_from(counter)[0]
            if done > seen[0]:
                on_bytes(done - seen[0])
                seen[0] = done

    return forward


def _fold_first(  # noqa: PLR0917 - private, the two readers' shared first step
    state: StreamState,
    path: Path,
    split: int,
    chunk_bytes: int,
    on_bytes: Callable[[int], object] | None,
    on_bad: Callable[[BadLine], object] | None,
    tick: Callable[[], None],
) -> tuple[int, int]:
    """Fold the lines before `split` into `state` (`tick` after each chunk): (events
    folded, lines in this part; the worker's are numbered after them)."""
    n = 0
    lines_before = 0
    for first, lines in read_chunks(path, on_bytes=on_bytes, chunk_bytes=chunk_bytes, end=split):
        n += fold_lines(state, lines, first, on_bad)
        lines_before = first + len(lines) - 1
        tick()
    return n, lines_before


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
        state, first_ip, bad = _fold_rest(path, split, chunk_bytes, counter)
        _write_all(fd, dumps_state(bad, pack(state, first_ip)))
        code = 0
    except BaseException:  # noqa: BLE001, S110 - the parent sees the exit code and reads the part itself
        pass
    finally:
        os._exit(code)


def _fold_rest(  # pragma: no cover - runs in the forked child
    path: Path, split: int, chunk_bytes: int, counter: mmap.mmap
) -> tuple[StreamState, dict[int, str | None], list[tuple[int, str]]]:
    """The worker's part folded into a fresh state: (state, the address each session began
    with by the session's id, the bad lines as (number within the part, message))."""
    state = StreamState()
    bad: list[BadLine] = []
    first_ip: dict[int, str | None] = {}

    def session(device: str | None, ip: str | None, ts: float, time: str) -> Session:
        # Made without its address, so every access's address lands in `ips` (the merge
        # needs them all when the session began in the other part); the address it began
        # with is kept aside.
        made = Session(device, None, ts, time)
        first_ip[id(made)] = ip
        return made

    done = 0

    def progress(n: int) -> None:
        nonlocal done
        done += n
        _COUNTER.pack_into(counter, 0, done)

    for first, lines in read_chunks(path, on_bytes=progress, chunk_bytes=chunk_bytes, start=split):
        fold_lines(state, lines, first, bad.append, session=session)
    return state, first_ip, [(b.line_no, b.message) for b in bad]


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def pack(
    state: StreamState,
    first_ip: dict[int, str | None],
    users: Callable[[str], bool] | None = None,
) -> tuple[Any, ...]:
    """A state as plain tuples (see `merge`): the accounts `users` accepts (all by default)
    and every failure. `first_ip`: id of a session made by the worker -> the address it began
    with (its `ip` is None and its `ips` hold every access's address); another session's
    address is its own."""
    days = [
        (
            ud.user,
            ud.day,
            ud.n,
            ud.records,
            ud.hours,
            ud.other,
            [(p, x.first, x.last, x.t0, x.t1, x.ids) for p, x in ud.pairs.items()],
            [_session(k, s, first_ip.get(id(s), s.ip)) for k, s in ud.sessions.items()],
            ud.exports,
            ud.writes,
            ud.break_glass,
            ud.auth,
        )
        for ud in state.days.values()
        if users is None or users(ud.user)
    ]
    failures = [(f.ts, f.time, f.id, f.user, f.ip, f.device) for f in state.failures]
    current = [(user, ud.day) for user, ud in state.current.items() if users is None or users(user)]
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
            _add_day(ud, n, records, hours, other, (exports, writes, break_glass, auth))
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


def _add_day(  # noqa: PLR0917 - private, the two merges' shared step
    ud: UserDay,
    n: int,
    records: int,
    hours: list[int],
    other: int,
    rare: tuple[list[Any], list[Any], list[Any], list[Any]],
) -> None:
    """A later part's counts, hours and rare events (exports, writes, break-the-glass,
    sign-ins) added to a user-day, after its own."""
    ud.n += n
    ud.records += records
    ud.other += other
    ud.hours = [a + b for a, b in zip(ud.hours, hours, strict=True)]
    ud.exports += rare[0]
    ud.writes += rare[1]
    ud.break_glass += rare[2]
    ud.auth += rare[3]


def merge_before(
    state: StreamState, packed: tuple[Any, ...], first_ip: dict[int, str | None]
) -> int:
    """Fold a packed state of the events that come *before* `state`'s into it (`state` the
    worker's, its sessions made as `_fold_rest` makes them, `first_ip` their first
    addresses): the result is the one folding both parts in one pass gives, as `merge` for
    the other order. Returns how many events were added.

    A (user, day) in both: counts and hours added, the earlier part's pairs and sessions
    first (dict order is first-seen order), each keeping its beginning from the earlier part
    and its end from `state`, ids in order; days of the earlier part come first too."""
    days_packed, current, failures, events, unknown, first_ts, last_ts = packed
    later = state.days
    days: dict[tuple[str, int], UserDay] = {}
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
        ud = UserDay(user, day, n, records, hours, other=other)
        ud.exports, ud.writes, ud.break_glass, ud.auth = exports, writes, break_glass, auth
        _merge_pairs(ud.pairs, pairs)
        _merge_sessions(ud.sessions, sessions)
        after = later.get((user, day))
        if after is not None:
            rare = (after.exports, after.writes, after.break_glass, after.auth)
            _add_day(ud, after.n, after.records, after.hours, after.other, rare)
            _merge_pairs(
                ud.pairs,
                [(p, x.first, x.last, x.t0, x.t1, x.ids) for p, x in after.pairs.items()],
            )
            _merge_sessions(
                ud.sessions,
                [_session(k, x, first_ip.get(id(x), x.ip)) for k, x in after.sessions.items()],
            )
        days[(user, day)] = ud
    for key, ud in later.items():
        if key in days:
            continue
        for sess in ud.sessions.values():
            # A session that began in this part: the address it began with, the others apart.
            ip = first_ip.get(id(sess), sess.ip)
            sess.ip = ip
            if ip is not None:
                sess.ips.discard(ip)
        days[key] = ud
    state.days = days
    for user, day in current:
        state.current.setdefault(user, days[(user, day)])
    state.failures = [Failure(*f) for f in failures] + state.failures
    state.events += events
    state.unknown_actions += unknown
    if first_ts is not None:
        state.first_ts = first_ts
    state.last_ts = max(state.last_ts, last_ts)
    return int(events)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _stop(pid: int) -> None:
    _kill(pid)
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

"""One runner per installation: a lease at most one process holds at a time.

Security role: some work must run once per installation however many server processes share
its database. Live misuse detection is one: two detectors would each contain the same account
(revoke its sessions, disable it) and each learn weeks of ledger at start. The holder keeps
the lease while it lives; when it dies, however it dies, the lease is free for another.

- PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`) on a connection the lease
  keeps open for itself; the server releases it when that connection ends (process killed,
  network lost, server restarted). The holder asks, each time it is asked, whether its
  connection still answers, and gives the lease up when it does not: another process may
  hold it already.
- SQLite (one host): an exclusive `flock` on a lock file beside the database file; the kernel
  releases it when the process ends. An in-memory database has one process: always held; so
  is a database beside which no lock file can be created (logged once).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Protocol

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.pool import NullPool

logger = logging.getLogger("egide.db.lease")

# How often a holder checks that its PostgreSQL connection still answers (0: at every
# call: a lock lost with its connection is known at once, for one round trip per call), and
# how often a process waiting for the lease tries again (seconds).
RECHECK_SECONDS = 0.0
RETRY_SECONDS = 2.0


class Lease(Protocol):
    def try_hold(self) -> bool:
        """Whether this process holds the lease now (taken if it was free)."""
        ...

    def release(self) -> None:
        """Give the lease up (another process may take it)."""
        ...


def lease_for(
    engine: Engine,
    name: str,
    *,
    retry_seconds: float = RETRY_SECONDS,
    recheck_seconds: float = RECHECK_SECONDS,
) -> Lease:
    """The lease `name` of the installation whose database `engine` opens."""
    url = engine.url
    if url.get_backend_name() == "postgresql":
        return AdvisoryLease(
            engine, name, retry_seconds=retry_seconds, recheck_seconds=recheck_seconds
        )
    database = url.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return ProcessLease()
    return FileLease(Path(f"{database}.{name}.lock"), retry_seconds=retry_seconds)


def advisory_key(name: str) -> int:
    """A lease name as a PostgreSQL advisory lock key (a signed 64-bit integer)."""
    digest = hashlib.sha256(f"egide:lease:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class AdvisoryLease:
    """The PostgreSQL lease: an advisory lock held by a connection of its own."""

    def __init__(
        self, engine: Engine, name: str, *, retry_seconds: float, recheck_seconds: float
    ) -> None:
        # A connection outside the pool: held for as long as the lease, closed to give it up.
        self._engine = create_engine(engine.url, poolclass=NullPool, hide_parameters=True)
        self._key = advisory_key(name)
        self._retry = retry_seconds
        self._recheck = recheck_seconds
        self._connection: Connection | None = None
        self._next_try = 0.0
        self._next_check = 0.0
        self._lock = threading.Lock()

    def try_hold(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if self._connection is not None:
                if now < self._next_check:
                    return True
                try:
                    self._connection.execute(text("SELECT 1"))
                    self._connection.commit()
                except Exception:  # noqa: BLE001 - any failure: the lock may be gone with it
                    self._drop()
                    return False
                self._next_check = now + self._recheck
                return True
            if now < self._next_try:
                return False
            self._next_try = now + self._retry
            connection: Connection | None = None
            try:
                connection = self._engine.connect()
                held = bool(
                    connection.execute(
                        text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key}
                    ).scalar()
                )
                connection.commit()  # the lock belongs to the session, not the transaction
            except Exception:  # noqa: BLE001 - the database unreachable: not held, tried later
                held = False
            if not held:
                if connection is not None:
                    with contextlib.suppress(Exception):
                        connection.close()
                return False
            self._connection = connection
            self._next_check = now + self._recheck
            return True

    def release(self) -> None:
        with self._lock:
            self._drop()
            self._engine.dispose()

    def _drop(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()  # the server releases the session's advisory locks
            self._connection = None


class FileLease:
    """The SQLite lease: an exclusive flock on a lock file."""

    def __init__(self, path: Path, *, retry_seconds: float) -> None:
        self._path = path
        self._retry = retry_seconds
        self._fd: int | None = None
        self._next_try = 0.0
        self._lock = threading.Lock()
        # No lock file could be made: this process runs uncoordinated from then on (until
        # `release`), rather than holding one step in every retry period.
        self._uncoordinated = False

    def try_hold(self) -> bool:
        with self._lock:
            if self._fd is not None or self._uncoordinated:
                return True
            now = time.monotonic()
            if now < self._next_try:
                return False
            self._next_try = now + self._retry
            try:
                fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                # No lock file to be had beside the database (a read-only or missing
                # directory): SQLite serves one host, most often one process; running
                # uncoordinated beats never detecting. Said once, loudly.
                logger.error(
                    "cannot create the lease file %s (%s): running without coordination",
                    self._path,
                    exc.strerror,
                )
                self._uncoordinated = True
                return True
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            self._fd = fd
            return True

    def release(self) -> None:
        with self._lock:
            self._uncoordinated = False
            if self._fd is not None:
                os.close(self._fd)  # closing releases the flock
                self._fd = None


class ProcessLease:
    """An in-memory database's lease: it has one process, which holds it."""

    def try_hold(self) -> bool:
        return True

    def release(self) -> None:
        return

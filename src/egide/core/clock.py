"""Injected time.

Every expiry, lockout and rotation reads time through a `Clock` so tests move time instead of
sleeping (DESIGN.md, contract 6). Times are always timezone-aware UTC.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol


class Clock(Protocol):
    """A source of the current time."""

    def now(self) -> dt.datetime:
        """The current instant, timezone-aware, in UTC."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


class FixedClock:
    """A clock that only moves when told to; for tests and reproducible runs."""

    def __init__(self, start: dt.datetime) -> None:
        if start.tzinfo is None:
            msg = "FixedClock needs a timezone-aware start time"
            raise ValueError(msg)
        self._now = start.astimezone(dt.UTC)

    def now(self) -> dt.datetime:
        return self._now

    def advance(self, delta: dt.timedelta) -> None:
        self._now += delta

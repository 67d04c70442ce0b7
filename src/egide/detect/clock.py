"""The hospital's local time: which hour of the day an access happened, where it happened.

Security role: night work is judged against what peers do at night, and a stolen account is
often used at hours its owner never works; both must be the hospital's hours, not UTC's (a
Paris night shift begins at 19:00 UTC in summer and 20:00 UTC in winter). Events carry UTC
instants; this converts them with the zone's rules (IANA time zone database, `zoneinfo`), at
the offset in force at that instant, so a daylight-saving change moves the night with it.

Aggregates stay keyed by UTC day and hour (folding is the hot loop; a zone costs it nothing):
hours are converted when judged. A UTC hour bucket is placed at the local hour of its middle
(exact for whole-hour offsets; for the rare half-hour zones, the bucket goes to the local
hour it mostly overlaps).
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY = 86_400.0
# Zone offsets change on quarter hours of UTC (every transition in the database does), so the
# offset is looked up once per quarter hour of the stream.
_SLOT = 900
UTC_NAMES = frozenset({"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Zulu", "Etc/Zulu", "Universal"})


class UnknownZoneError(ValueError):
    """Not a time zone of the IANA database on this system."""


def zone(name: str) -> ZoneInfo:
    """The zone of an IANA name ('Europe/Paris'); UnknownZoneError with the reason."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        msg = f"unknown time zone {name[:60]!r} (an IANA name such as Europe/Paris or UTC)"
        raise UnknownZoneError(msg) from None


class Clock:
    """Local hours of UTC instants (seconds since the epoch) in one zone."""

    def __init__(self, name: str = "UTC") -> None:
        self.name = name
        self.utc = name in UTC_NAMES
        self._zone = zone(name)
        self._offsets: dict[int, float] = {}

    def offset(self, ts: float) -> float:
        """Seconds to add to a UTC instant to read the local wall clock."""
        if self.utc:
            return 0.0
        slot = int(ts // _SLOT)
        found = self._offsets.get(slot)
        if found is None:
            at = dt.datetime.fromtimestamp(slot * _SLOT, dt.UTC).astimezone(self._zone)
            delta = at.utcoffset()
            found = self._offsets[slot] = delta.total_seconds() if delta is not None else 0.0
        return found

    def hour(self, ts: float) -> int:
        """The local hour (0-23) of an instant."""
        return int((ts + self.offset(ts)) % DAY) // 3600

    def day_hours(self, day: int, utc_hours: list[int]) -> list[int]:
        """Counts per UTC hour of a UTC day -> the same counts per local hour."""
        if self.utc:
            return utc_hours
        local = [0] * 24
        start = day * DAY + 1800  # the middle of each UTC hour
        for h, n in enumerate(utc_hours):
            if n:
                local[self.hour(start + h * 3600)] += n
        return local

    def span_hours(self, first: float, last: float) -> set[int]:
        """The local hours a span of activity touches (at most a whole day)."""
        begin = first + self.offset(first)
        end = last + self.offset(last)
        low = int(begin // 3600)
        high = int(end // 3600)
        return {h % 24 for h in range(low, min(high, low + 24) + 1)}

    def hhmm(self, ts: float, written: str) -> str:
        """`HH:MM` of an instant for a reason: as the event wrote it in UTC (the file's own
        text), in local time otherwise."""
        if self.utc:
            return written[11:16] if len(written) >= 16 else written
        local = ts + self.offset(ts)
        minutes = int(local % DAY) // 60
        return f"{minutes // 60:02d}:{minutes % 60:02d}"

    @property
    def label(self) -> str:
        """How reasons name the clock: 'UTC', or 'local time (Europe/Paris)'."""
        return "UTC" if self.utc else f"local time ({self.name})"


def clock_of(*names: str | None) -> Clock:
    """The clock of the first zone name given (settings before context), UTC if none."""
    for name in names:
        if name:
            return Clock(name)
    return Clock()

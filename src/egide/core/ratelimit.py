"""A token-bucket rate limiter, in memory, per process.

Security role: bounds what one caller (a source address, an account) can make the server
compute (OWASP ASVS 5.0 V2.4.1, anti-automation): witness requests per address, ledger proofs
per account. A clock is injectable for tests.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

_MAX_KEYS = 10_000  # remembered callers; the least recently seen are forgotten first


class RateLimiter:
    """A token bucket per caller (a source address, an account id): `per_minute` requests a
    minute, in bursts of up to `per_minute`. `now` is injectable for tests."""

    def __init__(self, per_minute: int, *, now: Callable[[], float] = time.monotonic) -> None:
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._now = now
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        with self._lock:
            now = self._now()
            tokens, last = self._buckets.pop(key, (self._capacity, now))
            tokens = min(self._capacity, tokens + (now - last) * self._rate)
            allowed = tokens >= 1.0
            self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
            while len(self._buckets) > _MAX_KEYS:
                self._buckets.popitem(last=False)
            return allowed

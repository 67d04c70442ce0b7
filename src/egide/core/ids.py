"""Identifiers and the injected random source.

Resource ids are random (UUID version 4) so that an id reveals nothing about a patient, their
order of arrival or their number; they are among the few columns stored in clear.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Protocol


class RandomSource(Protocol):
    """Cryptographically secure random bytes; injected so tests can make them reproducible."""

    def token_bytes(self, n: int) -> bytes:
        """Return `n` random bytes."""
        ...


class SystemRandom:
    """The operating system's CSPRNG (`secrets`)."""

    def token_bytes(self, n: int) -> bytes:
        return secrets.token_bytes(n)


def new_id(random: RandomSource | None = None) -> str:
    """A new random resource id: a UUID4 in its canonical lowercase form (a valid FHIR id)."""
    raw = (random or SystemRandom()).token_bytes(16)
    return str(uuid.UUID(bytes=raw, version=4))


def time_ordered_id(unix_ms: int, random: RandomSource | None = None) -> str:
    """A UUID version 7 (RFC 9562 section 5.7): 48-bit Unix milliseconds, then 74 random bits.

    For ledger entries, whose time is part of the entry anyway: ids that grow with time keep
    the unique index's inserts at its right edge instead of at random pages, which is what
    keeps appending fast on a ledger of millions of entries. Never for resource ids, which
    must not reveal their order of arrival.
    """
    if not 0 <= unix_ms < 1 << 48:
        msg = "unix_ms must fit in 48 bits"
        raise ValueError(msg)
    # Layout: unix_ts_ms (48) | ver=7 (4) | rand_a (12) | var=0b10 (2) | rand_b (62).
    raw = bytearray(unix_ms.to_bytes(6, "big") + (random or SystemRandom()).token_bytes(10))
    raw[6] = 0x70 | raw[6] & 0x0F
    raw[8] = 0x80 | raw[8] & 0x3F
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

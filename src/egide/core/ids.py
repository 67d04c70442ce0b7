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

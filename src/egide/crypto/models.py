"""The per-owner data-key table (`crypto_data_key`).

Security role: one row per owner (a patient id, or "_org" for resources outside any patient
compartment) holding that owner's data-encryption key (DEK) *wrapped* under a key-encryption key
of the keyring; the clear DEK is never stored (NIST SP 800-57 Part 1 section 6.1.1). Setting
`wrapped` to NULL destroys the owner's key: every resource sealed under it becomes unreadable
(crypto-shredding, GDPR art. 17 erasure). The row itself stays, as a tombstone, so that a
shredded owner cannot silently receive a new key.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from egide.db.base import Base
from egide.db.types import UTCDateTime


class DataKey(Base):
    """One owner's wrapped data key."""

    __tablename__ = "crypto_data_key"

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Random public id of the DEK, written in the header of every ciphertext sealed under it.
    key_id: Mapped[str] = mapped_column(String(40), unique=True)
    # Which KEK wraps it (indexed: rotation finds the keys still under an old KEK).
    kek_id: Mapped[str | None] = mapped_column(String(40), index=True)
    wrapped: Mapped[bytes | None] = mapped_column(LargeBinary)  # NULL once shredded
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    rewrapped_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    shredded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

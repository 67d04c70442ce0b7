"""The ledger's table: one row per audited act, never updated or deleted by the application."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from egide.db.base import Base
from egide.db.types import UTCDateTime


class LedgerEntry(Base):
    """An audited act, in the access-event format of DESIGN.md plus ledger bookkeeping."""

    __tablename__ = "ledger_entry"

    # SQLite needs INTEGER (not BIGINT) for an auto-incrementing rowid primary key.
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    id: Mapped[str] = mapped_column(String(36), unique=True)
    time: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    user: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(16))
    patient: Mapped[str | None] = mapped_column(String(64))
    resource_type: Mapped[str | None] = mapped_column(String(64))
    resource_id: Mapped[str | None] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(Integer, default=1)
    ip: Mapped[str | None] = mapped_column(String(64))
    device: Mapped[str | None] = mapped_column(String(128))
    purpose: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(64))
    role: Mapped[str | None] = mapped_column(String(32))
    reasons: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of strings
    # The canonical JSON of the entry (see ledger.canonical) and its SHA-256: what the Merkle
    # tree will hash. Stored so a verifier needs nothing but this table.
    canonical: Mapped[bytes] = mapped_column(LargeBinary)
    entry_hash: Mapped[bytes] = mapped_column(LargeBinary(32))

    __table_args__ = (
        Index("ix_ledger_entry_patient_time", "patient", "time"),
        Index("ix_ledger_entry_user_time", "user", "time"),
    )


class LedgerLeaf(Base):
    """The Merkle tree's leaves in tree order (RFC 6962): which entry is leaf i.

    Entries are numbered (`seq`) when their transaction inserts them, but transactions commit
    in another order; the sequencer gives each committed entry the next leaf index, so the tree
    never has to change a leaf it has already covered (the approach of Trillian's sequencer).
    The leaf hash is copied here so a verifier can name the first entry whose bytes changed.
    """

    __tablename__ = "ledger_leaf"

    leaf_index: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=False
    )
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LedgerCheckpoint(Base):
    """A signed checkpoint (C2SP signed note) over the first `size` leaves."""

    __tablename__ = "ledger_checkpoint"

    size: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=False
    )
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[bytes] = mapped_column(LargeBinary)
    time: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class LedgerTreeState(Base):
    """The sequencer's compact tree (one row): size and the frontier of perfect subtrees, so
    integrating n new entries costs O(n + log size), not a pass over the whole ledger."""

    __tablename__ = "ledger_tree_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[bytes] = mapped_column(LargeBinary)


class LedgerArchive(Base):
    """A prefix of the ledger moved out of the live database into an encrypted archive file.

    The compact tree at `through_size` (its frontier) stays here, so the verifier can go on
    from it: the tree of the remaining leaves still checks against every later checkpoint, and
    the frontier's root against the signed checkpoint at `through_size`.
    """

    __tablename__ = "ledger_archive"

    through_size: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=False
    )
    from_size: Mapped[int] = mapped_column(BigInteger)
    frontier: Mapped[bytes] = mapped_column(LargeBinary)
    file_name: Mapped[str] = mapped_column(String(255))
    file_sha256: Mapped[bytes] = mapped_column(LargeBinary(32))
    time: Mapped[dt.datetime] = mapped_column(UTCDateTime())

"""The ledger's table: one row per audited act, never updated or deleted by the application."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Generic, NoReturn, TypeVar, overload

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from egide.db.base import Base
from egide.db.types import UTCDateTime

_T = TypeVar("_T")


class _EventField(Generic[_T]):
    """A field of the access event, read from the entry's canonical bytes.

    On the class (`LedgerEntry.outcome == "denied"` in a query) it raises: the field is not a
    column, and SQLAlchemy would otherwise receive a constant False and match nothing."""

    def __init__(self, default: object = None) -> None:
        self.default = default

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> NoReturn: ...
    @overload
    def __get__(self, obj: LedgerEntry, owner: type) -> _T: ...
    def __get__(self, obj: LedgerEntry | None, owner: type) -> _T:
        if obj is None:
            msg = f"LedgerEntry.{self.name} is read from the canonical bytes, not a column"
            raise AttributeError(msg)
        value = obj.event.get(self.name, self.default)
        return list(value or []) if self.name == "reasons" else value  # type: ignore[return-value]


class LedgerEntry(Base):
    """An audited act: its canonical JSON in the access-event format of DESIGN.md, plus the few
    columns the ledger is searched by (a patient's accesses, an account's acts, by time and
    action).

    The canonical bytes are the entry; everything else in the access event (role, outcome,
    resource, address, device, reasons...) is read from them, so there is one copy to trust
    and one to verify. The indexed columns are copies kept for searching, and
    `egide ledger verify` checks that they still say what the canonical bytes say.
    """

    __tablename__ = "ledger_entry"

    # SQLite needs INTEGER (not BIGINT) for an auto-incrementing rowid primary key.
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    # A UUIDv7 (core.ids.time_ordered_id): the unique index grows at its right edge.
    id: Mapped[str] = mapped_column(String(36), unique=True)
    time: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    user: Mapped[str | None] = mapped_column(String(64))
    patient: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    # The canonical JSON of the entry (see ledger.canonical): what the Merkle tree hashes
    # (its leaf hash is computed by the sequencer and kept in ledger_leaf).
    canonical: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (
        Index("ix_ledger_entry_patient_time", "patient", "time"),
        Index("ix_ledger_entry_user_time", "user", "time"),
    )

    @property
    def event(self) -> dict[str, Any]:
        """The access event, parsed from the canonical bytes (parsed once per object)."""
        cached: dict[str, Any] | None = self.__dict__.get("_event")
        if cached is None:
            cached = self.__dict__["_event"] = json.loads(self.canonical)
        return cached

    # Read from the canonical bytes, never stored apart (one copy to trust). Not columns:
    # used in a query they raise instead of silently comparing a Python object.
    role = _EventField[str | None]()
    outcome = _EventField[str]()
    resource_type = _EventField[str | None]()
    resource_id = _EventField[str | None]()
    count = _EventField[int](1)
    ip = _EventField[str | None]()
    device = _EventField[str | None]()
    purpose = _EventField[str | None]()
    request_id = _EventField[str | None]()
    reasons = _EventField[list[str]]()


class LedgerLeaf(Base):
    """The Merkle tree's leaves in tree order (RFC 6962): which entry is leaf i.

    Entries are numbered (`seq`) when their transaction inserts them, but transactions commit
    in another order; the sequencer gives each committed entry the next leaf index, so the tree
    never has to change a leaf it has already covered (the approach of Trillian's sequencer).
    The leaf hash is copied here so a verifier can name the first entry whose bytes changed.
    Rows stay when their entries are archived (`ledger.retention`): they hold a position, a
    sequence number and a hash, no personal data, and proofs keep needing them.
    """

    __tablename__ = "ledger_leaf"

    leaf_index: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=False
    )
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LedgerNode(Base):
    """A stored interior hash of the Merkle tree: MTH of the 2**level leaves from
    index * 2**level (RFC 9162 section 2.1.1), for each complete subtree aligned on its size
    at a level that is a positive multiple of 4 (the roots of full tiles of height 4, after
    C2SP tlog-tiles; see `egide.ledger.tiles`), about one row per 15 leaves.

    Written by the sequencer as subtrees complete, never changed: with them a proof reads
    O(log n) rows instead of every leaf. They are a cache, not a trust anchor: every proof
    built from them is checked against a signed checkpoint before it is served.
    """

    __tablename__ = "ledger_node"

    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


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

"""Appending to the ledger, and reading it back in the access-event format.

`append` is called by every room that acts on patient data or on security state, inside the
caller's transaction, and flushes at once: a ledger that cannot be written raises here, before
the act's own transaction can commit (DESIGN.md, contract 2: audit with the act, fail closed).
Entries never hold secrets or clinical values: only ids, types, the action and the reasons.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Table, event, insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, SessionTransaction

from egide.core.clock import Clock
from egide.core.errors import StorageFailure
from egide.core.ids import new_id
from egide.core.principal import Principal
from egide.ledger.canonical import canonical_entry
from egide.ledger.models import LedgerEntry


class Action(StrEnum):
    """Ledger actions: the access-event actions of DESIGN.md plus administrative ones."""

    BREAK_GLASS = "break_glass"
    CREATE = "create"
    DELETE = "delete"
    EXPORT = "export"
    KEY_ROTATE = "key_rotate"
    KEY_SHRED = "key_shred"
    LEDGER_ARCHIVE = "ledger_archive"
    LOGIN = "login"
    LOGIN_FAILED = "login_failed"
    LOGOUT = "logout"
    MFA_FAILED = "mfa_failed"
    READ = "read"
    SEARCH = "search"
    SYSTEM_INIT = "system_init"
    TOKEN_CREATE = "token_create"  # noqa: S105 - an action name, not a secret
    UPDATE = "update"


class Outcome(StrEnum):
    DENIED = "denied"
    ERROR = "error"
    SUCCESS = "success"


@dataclass(frozen=True)
class Act:
    """What happened, as the caller describes it; the ledger adds time, id and hash."""

    action: Action | str
    outcome: Outcome = Outcome.SUCCESS
    patient: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    count: int = 1
    purpose: str | None = None
    reasons: Sequence[str] = ()


def append(session: Session, *, principal: Principal | None, act: Act, clock: Clock) -> str:
    """Append one entry for `act` by `principal` in the session's transaction; return its id.

    The caller's transaction fails when the entry cannot be written, so the act fails too.
    """
    entry_id = new_id()
    when = clock.now().astimezone(dt.UTC)
    event: dict[str, Any] = {
        "id": entry_id,
        "time": when.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "user": principal.id if principal else None,
        "role": principal.role if principal else None,
        "action": str(act.action),
        "outcome": str(act.outcome),
        "patient": act.patient,
        "resource_type": act.resource_type,
        "resource_id": act.resource_id,
        "count": act.count,
        "ip": principal.ip if principal else None,
        "device": principal.device if principal else None,
        "purpose": act.purpose,
        "request_id": principal.request_id if principal else None,
        "reasons": list(act.reasons),
    }
    body = canonical_entry(event)
    row = {
        "id": entry_id,
        "time": when,
        "user": event["user"],
        "role": event["role"],
        "action": event["action"],
        "outcome": event["outcome"],
        "patient": act.patient,
        "resource_type": act.resource_type,
        "resource_id": act.resource_id,
        "count": act.count,
        "ip": event["ip"],
        "device": event["device"],
        "purpose": act.purpose,
        "request_id": event["request_id"],
        "reasons": json.dumps(list(act.reasons)),
        "canonical": body,
        # RFC 6962 section 2.1 leaf hash: SHA-256(0x00 || entry), so the Merkle tree can use
        # these hashes as its leaves unchanged.
        "entry_hash": hashlib.sha256(b"\x00" + body).digest(),
    }
    # Written with the rest of the unit of work, in one multi-row INSERT when the transaction
    # commits (or earlier, see flush_pending): if it fails, the commit fails, and nothing of
    # the act — not even data read for a response, which is only sent after the commit —
    # leaves the transaction.
    _pending(session).append(row)
    return entry_id


_PENDING = "egide.ledger.pending"
_ENTRY_TABLE: Table = LedgerEntry.__table__  # type: ignore[assignment]


def _pending(session: Session) -> list[dict[str, Any]]:
    pending: list[dict[str, Any]] | None = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = []
    return pending


def flush_pending(session: Session) -> None:
    """Insert the entries appended so far, now, in this session's transaction.

    Called at commit, and by code that opens a savepoint, so that entries appended inside a
    savepoint are rolled back with it and entries appended before it are not.
    """
    pending = session.info.get(_PENDING)
    if pending:
        rows = list(pending)
        pending.clear()
        # Core, not the ORM: one executemany, no per-row bookkeeping.
        try:
            session.execute(insert(_ENTRY_TABLE), rows)
        except SQLAlchemyError as exc:
            # Fail closed with a clear cause: the act's transaction must not commit.
            msg = "the audit ledger could not be written; the request was not carried out"
            raise StorageFailure(msg) from exc


def discard_pending(session: Session) -> None:
    """Forget the entries appended since the last `flush_pending` (a savepoint rolled back)."""
    session.info.pop(_PENDING, None)


@event.listens_for(Session, "before_commit")
def _write_pending(session: Session) -> None:
    flush_pending(session)


@event.listens_for(Session, "after_soft_rollback")
def _drop_pending(session: Session, previous_transaction: SessionTransaction) -> None:
    # A rolled-back unit of work appended nothing (its deferred audits are re-appended by the
    # caller in a fresh transaction).
    if previous_transaction.parent is None:
        session.info.pop(_PENDING, None)


def iter_events(
    session: Session, *, since: dt.datetime | None = None, until: dt.datetime | None = None
) -> Iterator[dict[str, Any]]:
    """Entries in sequence order as access-event dicts (DESIGN.md format), for export."""
    stmt = select(LedgerEntry).order_by(LedgerEntry.seq)
    if since is not None:
        stmt = stmt.where(LedgerEntry.time >= since)
    if until is not None:
        stmt = stmt.where(LedgerEntry.time < until)
    for row in session.scalars(stmt).yield_per(1000):
        event: dict[str, Any] = json.loads(row.canonical)
        event["seq"] = row.seq
        yield event

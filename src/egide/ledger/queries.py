"""Reading the ledger back by patient, agent, action and time, for its FHIR AuditEvent view.

Security role: these are read-only queries over the ledger's clear columns (ids, the action,
the time), the ones DESIGN.md contract 3 lists as clear; they never write, update or delete an
entry. They return entries in the access-event format of DESIGN.md (the canonical JSON that the
Merkle tree hashes, plus the sequence number), newest first, so what the security officer sees
is exactly what was hashed. Who may call them is decided by the caller (the API allows the
security officer only) and every call is itself audited there, in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from egide.ledger.models import LedgerEntry

__all__ = ["get_entry", "search_entries"]


def _event(row: LedgerEntry) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(row.canonical)
    event["seq"] = row.seq
    return event


def search_entries(
    session: Session,
    *,
    patient: str | None = None,
    agent: str | None = None,
    action: str | Iterable[str] | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    count: int,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """One page of entries matching every filter given, newest first, and their total.

    `patient` and `agent` (the acting account id) match exactly; `action` is one ledger action
    or several (any of them matches; an empty collection matches nothing); `since` is inclusive
    and `until` exclusive, both timezone-aware. Entries are ordered by sequence number,
    descending: the order in which they were written.
    """
    if count < 0 or offset < 0:
        msg = "count and offset must not be negative"
        raise ValueError(msg)
    conditions: list[Any] = []
    if patient is not None:
        conditions.append(LedgerEntry.patient == patient)
    if agent is not None:
        conditions.append(LedgerEntry.user == agent)
    if action is not None:
        actions = [action] if isinstance(action, str) else sorted(set(action))
        if not actions:
            return [], 0
        conditions.append(LedgerEntry.action.in_(actions))
    for bound in (since, until):
        if bound is not None and bound.tzinfo is None:
            msg = "since and until must be timezone-aware"
            raise ValueError(msg)
    if since is not None:
        conditions.append(LedgerEntry.time >= since)
    if until is not None:
        conditions.append(LedgerEntry.time < until)
    total = session.scalar(select(func.count()).select_from(LedgerEntry).where(*conditions)) or 0
    if count == 0 or offset >= total:
        return [], total
    stmt = (
        select(LedgerEntry)
        .where(*conditions)
        .order_by(LedgerEntry.seq.desc())
        .limit(count)
        .offset(offset)
    )
    return [_event(row) for row in session.scalars(stmt)], total


def get_entry(session: Session, entry_id: str) -> dict[str, Any] | None:
    """The entry with this id as an access-event dict, or None."""
    row = session.scalars(select(LedgerEntry).where(LedgerEntry.id == entry_id)).one_or_none()
    return None if row is None else _event(row)

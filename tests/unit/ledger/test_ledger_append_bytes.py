"""The bytes `ledger.service.append` writes are the RFC 8785 canonical form of the entry.

`append` writes its JSON field by field for speed; these properties hold it to the general
encoder (`canonical_json`) for every shape of act and principal, including strings that need
escaping, and check the UUIDv7 entry ids (RFC 9562 section 5.7) it stamps.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from egide.core.clock import FixedClock
from egide.core.ids import time_ordered_id
from egide.core.principal import Principal
from egide.ledger.canonical import canonical_json
from egide.ledger.models import LedgerEntry
from egide.ledger.service import Act, Outcome, append

ENGINE = create_engine("sqlite://")
LedgerEntry.metadata.create_all(ENGINE, tables=[LedgerEntry.__table__])  # type: ignore[list-item]

# Any Unicode text but lone surrogates (not encodable as UTF-8, refused before the ledger).
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
MAYBE = st.none() | TEXT

principals = st.none() | st.builds(
    Principal,
    id=TEXT,
    role=TEXT,
    name=TEXT,
    ip=MAYBE,
    device=MAYBE,
    request_id=MAYBE,
)
acts = st.builds(
    Act,
    action=TEXT.filter(bool),
    outcome=st.sampled_from(list(Outcome)),
    patient=MAYBE,
    resource_type=MAYBE,
    resource_id=MAYBE,
    count=st.integers(min_value=0, max_value=10**12),
    purpose=MAYBE,
    reasons=st.lists(TEXT, max_size=4).map(tuple),
)
times = st.datetimes(
    min_value=dt.datetime(2000, 1, 1),  # noqa: DTZ001 - made aware by `timezones`
    max_value=dt.datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.just(dt.UTC),
)


@settings(max_examples=300, deadline=None)
@given(principal=principals, act=acts, when=times)
def test_stored_bytes_are_canonical_and_complete(
    principal: Principal | None, act: Act, when: dt.datetime
) -> None:
    with Session(ENGINE) as session, session.begin():
        entry_id = append(session, principal=principal, act=act, clock=FixedClock(when))
    with Session(ENGINE) as session:
        row = session.scalars(select(LedgerEntry).where(LedgerEntry.id == entry_id)).one()
        stored = bytes(row.canonical)
        event = json.loads(stored)
        assert stored == canonical_json(event)
        assert event["id"] == entry_id
        assert event["action"] == str(act.action) == row.action
        assert event["patient"] == act.patient == row.patient
        assert event["user"] == (principal.id if principal else None) == row.user
        assert event["reasons"] == list(act.reasons)
        assert (event["count"], event["purpose"]) == (act.count, act.purpose)
        assert row.time == when
        stamp = when.isoformat(timespec="microseconds").replace("+00:00", "Z")
        assert event["time"] == stamp


@given(st.integers(min_value=0, max_value=(1 << 48) - 1))
def test_time_ordered_ids_are_uuid7_with_the_time(unix_ms: int) -> None:
    value = uuid.UUID(time_ordered_id(unix_ms))
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert value.int >> 80 == unix_ms
    # The first 48 bits (8 + 4 hex digits) are the time alone: the same for the same ms.
    assert time_ordered_id(unix_ms)[:13] == str(value)[:13]


def test_time_ordered_ids_sort_by_time_and_differ() -> None:
    ids = [time_ordered_id(ms) for ms in (1, 2, 1000, 1 << 40)]
    assert ids == sorted(ids)
    assert len({time_ordered_id(5) for _ in range(100)}) == 100


def test_fields_read_from_the_bytes_cannot_be_queried_as_columns() -> None:
    """`LedgerEntry.outcome == "denied"` would otherwise compare a Python object, give a
    constant False, and a query for refusals would silently match nothing."""
    with pytest.raises(AttributeError, match="not a column"):
        _ = LedgerEntry.outcome
    entry = LedgerEntry(canonical=b'{"count":3,"outcome":"denied","reasons":["r"]}')
    assert (entry.outcome, entry.count, entry.reasons, entry.role) == ("denied", 3, ["r"], None)

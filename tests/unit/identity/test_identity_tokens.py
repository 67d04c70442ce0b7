"""API tokens: format, entropy, hashing at rest, expiry, revocation, bad input."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session

from egide.core.clock import FixedClock
from egide.core.errors import BadRequest
from egide.db.base import Base
from egide.db.engine import make_engine, make_session_factory
from egide.identity.models import ApiToken
from egide.identity.tokens import authenticate, create_token, revoke_token


@pytest.fixture
def session() -> Iterator[Session]:
    engine = make_engine("sqlite://")
    Base.metadata.create_all(engine, tables=[ApiToken.__table__])  # type: ignore[list-item]
    with make_session_factory(engine)() as s, s.begin():
        yield s
    engine.dispose()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(dt.datetime(2026, 3, 2, tzinfo=dt.UTC))


def test_token_format_and_storage(session: Session, clock: FixedClock) -> None:
    issued = create_token(session, role="service", name="engine", clock=clock)
    assert re.fullmatch(r"egide_[A-Za-z0-9_-]{43}", issued.token)
    row = session.get(ApiToken, issued.id)
    assert row is not None
    assert row.token_hash == hashlib.sha256(issued.token.encode()).digest()
    principal = authenticate(session, token=issued.token, clock=clock)
    assert principal is not None
    assert (principal.role, principal.id) == ("service", issued.id)


def test_tokens_are_distinct(session: Session, clock: FixedClock) -> None:
    tokens = {
        create_token(session, role="service", name=f"t{i}", clock=clock).token for i in range(50)
    }
    assert len(tokens) == 50


def test_one_changed_character_is_rejected(session: Session, clock: FixedClock) -> None:
    token = create_token(session, role="service", name="x", clock=clock).token
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert authenticate(session, token=flipped, clock=clock) is None
    assert authenticate(session, token=token + "A", clock=clock) is None
    assert authenticate(session, token="", clock=clock) is None


def test_expired_and_revoked_tokens_stop_working(session: Session, clock: FixedClock) -> None:
    expiring = create_token(
        session,
        role="service",
        name="short",
        clock=clock,
        expires_at=clock.now() + dt.timedelta(hours=1),
    )
    assert authenticate(session, token=expiring.token, clock=clock) is not None
    clock.advance(dt.timedelta(hours=1))
    assert authenticate(session, token=expiring.token, clock=clock) is None
    other = create_token(session, role="service", name="other", clock=clock)
    assert revoke_token(session, token_id=other.id, clock=clock)
    assert authenticate(session, token=other.token, clock=clock) is None
    assert not revoke_token(session, token_id=other.id, clock=clock)


@pytest.mark.parametrize(
    ("role", "patient", "name"),
    [
        ("superuser", None, "x"),
        ("patient", None, "x"),
        ("service", "p1", "x"),
        ("service", None, ""),
        ("service", None, "n" * 201),
    ],
)
def test_bad_token_requests(
    session: Session, clock: FixedClock, role: str, patient: str | None, name: str
) -> None:
    with pytest.raises(BadRequest):
        create_token(session, role=role, name=name, clock=clock, patient_id=patient)


def test_patient_token_carries_its_patient(session: Session, clock: FixedClock) -> None:
    issued = create_token(session, role="patient", name="me", clock=clock, patient_id="p1")
    principal = authenticate(session, token=issued.token, clock=clock)
    assert principal is not None
    assert principal.patient_id == "p1"

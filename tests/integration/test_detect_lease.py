"""One detector per installation (`db.lease`), on SQLite and PostgreSQL: of two server
processes sharing a database, one detects and the other waits; when the first stops (or, on
PostgreSQL, loses its connection), the other takes over, learns the window from the ledger and
finds what happened meanwhile. Each lease here stands for one process: a PostgreSQL advisory
lock belongs to a connection, a flock to an open file, whichever process holds them."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from egide.app import LIVE_LEASE, live_detection
from egide.cli.runtime import Services
from egide.db.lease import AdvisoryLease, FileLease, Lease, lease_for
from tests.integration.detect_live_support import ATTACKER, stored_alerts
from tests.integration.identity_support import clock_of, enrol, password_step
from tests.integration.identity_support import staff as staff_account


@pytest.fixture
def leases(services: Services) -> Iterator[list[Lease]]:
    """Leases of the installation, as two processes would hold them (retried and checked at
    every call); all given up at the end."""
    made = [
        lease_for(services.engine, LIVE_LEASE, retry_seconds=0, recheck_seconds=0) for _ in "ab"
    ]
    yield made
    for lease in made:
        lease.release()


def test_one_holder_at_a_time(leases: list[Lease]) -> None:
    first, second = leases
    assert first.try_hold()
    assert not second.try_hold()
    assert first.try_hold()  # still held, checked again
    first.release()
    assert second.try_hold()
    assert not first.try_hold()
    second.release()
    assert first.try_hold()


def test_names_are_separate_leases(services: Services, leases: list[Lease]) -> None:
    other = lease_for(services.engine, "another-job", retry_seconds=0, recheck_seconds=0)
    try:
        assert leases[0].try_hold()
        assert other.try_hold()
    finally:
        other.release()


def _brute_force(services: Services) -> str:
    alice = staff_account(services)
    enrol(services, alice)
    for _ in range(10):
        password_step(services, alice.email, "wrong password entirely", ip=ATTACKER)
        clock_of(services).advance(dt.timedelta(seconds=70))
    return alice.id


def test_only_the_holder_detects_and_the_other_takes_over(
    services: Services, leases: list[Lease]
) -> None:
    first = live_detection(services, lease=leases[0])
    second = live_detection(services, lease=leases[1])
    assert not first.step().standby
    assert second.step().standby
    victim = _brute_force(services)
    found = first.step()
    waiting = second.step()
    assert waiting.standby
    assert (waiting.entries, waiting.alerts) == (0, [])
    alerts = stored_alerts(services, kind="credential_stuffing")
    assert [a.user for a in alerts] == [victim]
    assert found.alerts == [alerts[0].id]
    # The first server stops: the second learns the window and knows the case (the same id,
    # nothing stored twice); then it judges what comes next.
    first.close()
    assert first.detector is None
    taken = second.step()
    assert not taken.standby
    assert second.detector is not None
    assert [a.id for a in stored_alerts(services, kind="credential_stuffing")] == [alerts[0].id]
    assert not second.step().standby


def test_a_holder_that_lost_its_connection_gives_way(
    services: Services, leases: list[Lease]
) -> None:
    """PostgreSQL: the server ends the leader's lease connection (a network cut, a failover):
    its lock is gone, so it must stop detecting at its next step, and the other may begin."""
    if services.engine.url.get_backend_name() != "postgresql":
        pytest.skip("a flock cannot be lost while its process lives")
    first = live_detection(services, lease=leases[0])
    second = live_detection(services, lease=leases[1])
    assert not first.step().standby
    assert second.step().standby
    held = leases[0]
    assert isinstance(held, AdvisoryLease)
    pid = held._connection.connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
    with services.engine.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    assert first.step().standby
    assert first.detector is None
    assert not second.step().standby
    assert first.step().standby


def test_without_a_lock_file_sqlite_runs_uncoordinated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No lock file can be made beside the database (its directory is gone, read-only):
    detection runs rather than never, and the log says so once."""
    # The server's retry period: every step within it must still hold (a step checks twice:
    # before judging and before storing), not only the first after each retry.
    lease = FileLease(tmp_path / "missing" / "egide.db.detect-live.lock", retry_seconds=60)
    with caplog.at_level(logging.ERROR, logger="egide.db.lease"):
        assert all(lease.try_hold() for _ in range(5))
    assert [r.message for r in caplog.records if "without coordination" in r.message] != []
    assert len(caplog.records) == 1
    lease.release()

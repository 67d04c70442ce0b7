"""A case a review of `db.lease` found: a PostgreSQL holder trusted its connection for
seconds after the server had ended it, while another process took the lock (two detectors at
once). With the default settings the holder now asks at every call."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from egide.app import LIVE_LEASE
from egide.cli.runtime import Services
from egide.db.lease import AdvisoryLease, lease_for


def test_a_holder_whose_connection_ended_does_not_hold_with_the_default_recheck(
    services: Services,
) -> None:
    if services.engine.url.get_backend_name() != "postgresql":
        pytest.skip("PostgreSQL only: a flock cannot be lost while its process lives")
    first = lease_for(services.engine, LIVE_LEASE, retry_seconds=0)  # default recheck
    second = lease_for(services.engine, LIVE_LEASE, retry_seconds=0)
    try:
        assert first.try_hold()
        assert isinstance(first, AdvisoryLease)
        pid = first._connection.connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
        with services.engine.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            conn.commit()
        assert second.try_hold()  # the server released the lock: the second takes it
        assert not first.try_hold(), "two holders of one lease at once"
    finally:
        first.release()
        second.release()

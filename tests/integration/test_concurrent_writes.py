"""Two writers racing for the same version of a resource: exactly one wins, the other gets
409 Conflict and changes nothing (no lost update, no half-written version)."""

from __future__ import annotations

import threading

import pytest

from egide.cli.runtime import Services
from egide.core.errors import Conflict
from egide.db.engine import transaction
from egide.records.repository import system_repository
from egide.records.unit_of_work import run_in_transaction
from tests.helpers import Database
from tests.integration.fhir_support import patient


def test_the_loser_of_a_race_gets_a_conflict(services: Services, database: Database) -> None:
    if database.backend == "sqlite":
        pytest.skip("SQLite takes the write lock at BEGIN IMMEDIATE: writers queue, none races")
    with transaction(services.session_factory) as session:
        pid = system_repository(session, services.records, job="test").create(patient()).id

    b_has_read = threading.Event()
    outcome: dict[str, object] = {}

    def writer_a() -> None:
        def work(session):  # type: ignore[no-untyped-def]
            repo = system_repository(session, services.records, job="a")
            repo.update("Patient", pid, patient(id=pid, family="Alpha"))
            assert b_has_read.wait(30), "writer B never read"
            return "committed"

        outcome["a"] = run_in_transaction(services.session_factory, work)

    def writer_b() -> None:
        def work(session):  # type: ignore[no-untyped-def]
            repo = system_repository(session, services.records, job="b")
            repo.read("Patient", pid)  # sees version 1: A has not committed yet
            b_has_read.set()
            repo.update("Patient", pid, patient(id=pid, family="Bravo"))
            return "committed"

        try:
            outcome["b"] = run_in_transaction(services.session_factory, work)
        except Conflict as exc:
            outcome["b"] = exc

    threads = [threading.Thread(target=writer_a), threading.Thread(target=writer_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert outcome["a"] == "committed"
    assert isinstance(outcome["b"], Conflict)
    assert outcome["b"].status == 409
    with transaction(services.session_factory) as session:
        current = system_repository(session, services.records, job="check").read("Patient", pid)
    assert current.version == 2
    assert current.resource["name"][0]["family"] == "Alpha"

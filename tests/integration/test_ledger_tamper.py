"""The verifier catches every kind of rewrite of the ledger, on SQLite and PostgreSQL.

Each test writes real activity through the API, seals it under a signed checkpoint, then edits
the database directly — as a database administrator could, append-only triggers switched off —
and shows that `verify_ledger` reports the fault (and names the entry when it can).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, text

from egide.cli.runtime import Services, sequence_ledger
from egide.db.engine import transaction
from egide.ledger.checkpoint import CheckpointVerifier
from egide.ledger.verify import Report, verify_ledger
from tests.helpers import Database
from tests.integration.fhir_support import create, headers, observation, patient

TABLES = ("ledger_entry", "ledger_leaf", "ledger_checkpoint")


def _verify(services: Services, witness: Path | None = None) -> Report:
    verifier = CheckpointVerifier(services.signer.verifier_key())
    with transaction(services.session_factory) as session:
        return verify_ledger(session, verifier=verifier, witness=witness)


def _tamper(services: Services, database: Database, edit: Callable[[Connection], None]) -> None:
    """Run `edit` with the append-only triggers off, as a database owner could."""
    with services.engine.begin() as conn:
        if database.backend == "postgresql":
            for table in TABLES:
                conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        else:
            names = (
                conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
                .scalars()
                .all()
            )
            for name in names:
                conn.execute(text(f'DROP TRIGGER "{name}"'))
        edit(conn)
        if database.backend == "postgresql":
            for table in TABLES:
                conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))


@pytest.fixture
def sealed(client: TestClient, services: Services, service_token: str) -> int:
    """Some activity, all of it covered by a signed checkpoint; returns the tree size."""
    pid = create(client, service_token, patient())["id"]
    for value in (60, 70, 80):
        create(client, service_token, observation(pid, value=value))
    client.get(f"/fhir/Patient/{pid}", headers=headers(service_token))
    client.get("/fhir/Observation", headers=headers(service_token))
    done = sequence_ledger(services, force=True)
    assert done.checkpoint is not None
    assert _verify(services).ok
    return done.size


def _seq_of_leaf(services: Services, leaf: int) -> int:
    with services.engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT seq FROM ledger_leaf WHERE leaf_index = :i"), {"i": leaf}
            ).scalar_one()
        )


def test_an_untouched_ledger_verifies(services: Services, sealed: int) -> None:
    report = _verify(services)
    assert report.ok, report.faults
    assert report.leaves == sealed
    assert report.checkpoints == 1


def test_a_changed_byte_is_caught_and_named(
    services: Services, database: Database, sealed: int
) -> None:
    seq = _seq_of_leaf(services, 3)

    def edit(conn: Connection) -> None:
        body = conn.execute(
            text("SELECT canonical FROM ledger_entry WHERE seq = :s"), {"s": seq}
        ).scalar_one()
        changed = bytes(body).replace(b'"create"', b'"delete"', 1)
        assert changed != bytes(body)
        conn.execute(
            text("UPDATE ledger_entry SET canonical = :c WHERE seq = :s"), {"c": changed, "s": seq}
        )

    _tamper(services, database, edit)
    report = _verify(services)
    assert not report.ok
    assert report.faults[0] == f"entry seq {seq} (leaf 3) was changed"


def test_a_consistent_rewrite_is_caught_by_the_checkpoint(
    services: Services, database: Database, sealed: int
) -> None:
    """The attacker recomputes the entry's hash and the leaf copy too: only the signed root
    can tell, and it does."""

    seq = _seq_of_leaf(services, 2)

    def edit(conn: Connection) -> None:
        body = bytes(
            conn.execute(
                text("SELECT canonical FROM ledger_entry WHERE seq = :s"), {"s": seq}
            ).scalar_one()
        )
        forged = body.replace(b'"success"', b'"denied"', 1)
        digest = hashlib.sha256(b"\x00" + forged).digest()
        conn.execute(
            text("UPDATE ledger_entry SET canonical = :c WHERE seq = :s"),
            {"c": forged, "s": seq},
        )
        conn.execute(
            text("UPDATE ledger_leaf SET leaf_hash = :h WHERE seq = :s"), {"h": digest, "s": seq}
        )

    _tamper(services, database, edit)
    report = _verify(services)
    assert any("does not match its signed checkpoint" in f for f in report.faults), report.faults


def test_a_deleted_entry_is_caught(services: Services, database: Database, sealed: int) -> None:
    seq = _seq_of_leaf(services, 1)
    _tamper(
        services,
        database,
        lambda conn: conn.execute(text("DELETE FROM ledger_entry WHERE seq = :s"), {"s": seq}),
    )
    report = _verify(services)
    assert report.faults[0] == f"entry seq {seq} (leaf 1) was deleted"


def test_a_deleted_leaf_is_caught(services: Services, database: Database, sealed: int) -> None:
    def edit(conn: Connection) -> None:
        conn.execute(text("DELETE FROM ledger_leaf WHERE leaf_index = 2"))

    _tamper(services, database, edit)
    report = _verify(services)
    assert not report.ok
    assert "leaf 2 is missing" in report.faults[0]


def test_an_inserted_entry_is_caught(services: Services, database: Database, sealed: int) -> None:
    """A forged entry slipped in at leaf 2, later leaves shifted up, all hashes consistent."""

    def edit(conn: Connection) -> None:
        rows = conn.execute(
            text(
                "SELECT leaf_index, seq, leaf_hash FROM ledger_leaf WHERE leaf_index >= 2 "
                "ORDER BY leaf_index DESC"
            )
        ).all()
        for leaf_index, seq, leaf_hash in rows:
            conn.execute(text("DELETE FROM ledger_leaf WHERE leaf_index = :i"), {"i": leaf_index})
            conn.execute(
                text("INSERT INTO ledger_leaf (leaf_index, seq, leaf_hash) VALUES (:i, :s, :h)"),
                {"i": leaf_index + 1, "s": seq, "h": leaf_hash},
            )
        template = (
            conn.execute(text("SELECT * FROM ledger_entry ORDER BY seq LIMIT 1")).mappings().one()
        )
        values = dict(template)
        values.update(seq=10_000, id="00000000-0000-4000-8000-000000000000")
        columns = ", ".join(f'"{c}"' for c in values)
        params = ", ".join(f":{c}" for c in values)
        conn.execute(text(f"INSERT INTO ledger_entry ({columns}) VALUES ({params})"), values)
        conn.execute(
            text("INSERT INTO ledger_leaf (leaf_index, seq, leaf_hash) VALUES (2, 10000, :h)"),
            {"h": hashlib.sha256(b"\x00" + bytes(values["canonical"])).digest()},
        )

    _tamper(services, database, edit)
    report = _verify(services)
    assert any("does not match its signed checkpoint" in f for f in report.faults), report.faults


def test_a_reordering_is_caught(services: Services, database: Database, sealed: int) -> None:
    def edit(conn: Connection) -> None:
        one = conn.execute(
            text("SELECT seq, leaf_hash FROM ledger_leaf WHERE leaf_index = 1")
        ).one()
        two = conn.execute(
            text("SELECT seq, leaf_hash FROM ledger_leaf WHERE leaf_index = 2")
        ).one()
        conn.execute(text("DELETE FROM ledger_leaf WHERE leaf_index IN (1, 2)"))
        for index, (seq, leaf_hash) in ((1, two), (2, one)):
            conn.execute(
                text("INSERT INTO ledger_leaf (leaf_index, seq, leaf_hash) VALUES (:i, :s, :h)"),
                {"i": index, "s": seq, "h": leaf_hash},
            )

    _tamper(services, database, edit)
    report = _verify(services)
    assert any("does not match its signed checkpoint" in f for f in report.faults), report.faults


def test_a_truncation_is_caught(services: Services, database: Database, sealed: int) -> None:
    def edit(conn: Connection) -> None:
        conn.execute(
            text(
                "DELETE FROM ledger_entry WHERE seq IN "
                "(SELECT seq FROM ledger_leaf WHERE leaf_index >= :n)"
            ),
            {"n": sealed - 3},
        )
        conn.execute(text("DELETE FROM ledger_leaf WHERE leaf_index >= :n"), {"n": sealed - 3})

    _tamper(services, database, edit)
    report = _verify(services)
    assert any(
        f"a checkpoint covers {sealed} leaves, only {sealed - 3} remain" in f for f in report.faults
    ), report.faults


def test_the_witness_catches_a_rewrite_that_also_replaced_the_checkpoints(
    client: TestClient,
    services: Services,
    database: Database,
    service_token: str,
    sealed: int,
) -> None:
    """Truncate, rebuild the tree and re-sign with the stolen key: the database alone now
    verifies, but the witness copy of the old checkpoint proves history was rewritten."""
    witness = services.settings.effective_witness_dir
    assert any(witness.iterdir())

    def edit(conn: Connection) -> None:
        conn.execute(text("DELETE FROM ledger_checkpoint"))
        conn.execute(text("DELETE FROM ledger_tree_state"))
        conn.execute(
            text(
                "DELETE FROM ledger_entry WHERE seq IN "
                "(SELECT seq FROM ledger_leaf WHERE leaf_index >= 2)"
            )
        )
        conn.execute(text("DELETE FROM ledger_leaf"))

    _tamper(services, database, edit)
    with transaction(services.session_factory) as session:
        from egide.ledger.sequencer import integrate  # noqa: PLC0415

        integrate(session, signer=services.signer, clock=services.records.clock, force=True)
    assert _verify(services).ok  # the rewritten database is self-consistent...
    report = _verify(services, witness=witness)  # ...but not with what the witness saw
    assert not report.ok
    assert any("truncated" in f or "rewritten" in f for f in report.faults), report.faults


def test_new_entries_after_a_checkpoint_are_pending_not_faults(
    client: TestClient, services: Services, service_token: str, sealed: int
) -> None:
    client.get("/fhir/Patient", headers=headers(service_token))
    report = _verify(services)
    assert report.ok
    assert report.pending == 1


def test_cutting_the_uncovered_tail_is_caught(
    client: TestClient,
    services: Services,
    database: Database,
    service_token: str,
    sealed: int,
) -> None:
    """Leaves sequenced after the last checkpoint are not signed yet; deleting them is still
    seen, because the sequencer's own count no longer matches."""
    client.get("/fhir/Patient", headers=headers(service_token))
    client.get("/fhir/Observation", headers=headers(service_token))
    done = sequence_ledger(services)  # sequenced, no new checkpoint (fewer than `every`)
    assert done.checkpoint is None
    assert done.size == sealed + 2
    assert _verify(services).uncovered == 2

    def edit(conn: Connection) -> None:
        conn.execute(
            text(
                "DELETE FROM ledger_entry WHERE seq IN "
                "(SELECT seq FROM ledger_leaf WHERE leaf_index >= :n)"
            ),
            {"n": sealed},
        )
        conn.execute(text("DELETE FROM ledger_leaf WHERE leaf_index >= :n"), {"n": sealed})

    _tamper(services, database, edit)
    report = _verify(services)
    assert any(
        f"integrated {sealed + 2} leaves, only {sealed} remain" in f for f in report.faults
    ), report.faults


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("patient", "someone-else"),  # hides an access from the patient's own report
        ("user", "another-account"),  # pins it on someone else
        ("action", "search"),
        ("time", "2001-01-01 00:00:00.000000"),
    ],
)
def test_a_changed_searchable_column_is_caught(
    services: Services, database: Database, sealed: int, column: str, value: str
) -> None:
    """The bytes and the tree are untouched; only the copy that searches use is changed."""
    seq = _seq_of_leaf(services, 1)

    def edit(conn: Connection) -> None:
        bind = (
            "CAST(:v AS TIMESTAMPTZ)" if column == "time" and database.backend != "sqlite" else ":v"
        )
        conn.execute(
            text(f'UPDATE ledger_entry SET "{column}" = {bind} WHERE seq = :s'),
            {"v": value, "s": seq},
        )

    _tamper(services, database, edit)
    report = _verify(services)
    message = (
        f"entry seq {seq}: its searchable columns (id, time, user, patient, action) differ "
        "from its hashed bytes"
    )
    assert report.faults == [message]


def test_a_changed_tree_node_is_caught(
    client: TestClient, services: Services, database: Database, service_token: str
) -> None:
    """The proofs' node cache (ledger_node) is checked against the leaves too: an edited
    node would make proofs fail, and verify says which one."""
    pid = create(client, service_token, patient())["id"]
    for _ in range(20):  # at least 16 leaves: one level-4 node
        client.get(f"/fhir/Patient/{pid}", headers=headers(service_token))
    sequence_ledger(services, force=True)
    assert _verify(services).ok

    def edit(conn: Connection) -> None:
        if database.backend == "postgresql":
            conn.execute(text("ALTER TABLE ledger_node DISABLE TRIGGER USER"))
        conn.execute(
            text('UPDATE ledger_node SET hash = :h WHERE level = 4 AND "index" = 0'),
            {"h": b"\x00" * 32},
        )
        if database.backend == "postgresql":
            conn.execute(text("ALTER TABLE ledger_node ENABLE TRIGGER USER"))

    _tamper(services, database, edit)
    report = _verify(services)
    message = (
        "the stored tree node at level 4, index 0 does not match the leaves: proofs through "
        "it are refused until it is repaired"
    )
    assert report.faults == [message]

"""The node cache (`ledger_node`): what the sequencer and migration 0004 store, and proofs
built from it.

* after every sequencer pass up to 300 leaves (then in uneven passes beyond), the node table
  holds exactly one row per complete aligned subtree at levels 4, 8, ..., each equal to
  `merkle.root_of` over that slice of the leaves;
* proofs served from it equal the list-based RFC 9162 proofs of `merkle` over all leaves;
* a node row edited behind the ledger's back makes the proof's self-check fail with
  StorageFailure instead of serving a proof that cannot verify;
* an installation upgraded from 0003 gets its nodes from the migration, also when an archive
  of that version had removed a prefix of leaf rows;
* the table is append-only.

On SQLite and PostgreSQL (`database` fixture).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.exc import DBAPIError

from egide.cli.runtime import Services
from egide.core.errors import StorageFailure
from egide.db.engine import make_engine, transaction
from egide.db.migrate import upgrade
from egide.ledger import merkle
from egide.ledger.checkpoint import CheckpointVerifier
from egide.ledger.models import LedgerLeaf, LedgerNode
from egide.ledger.proofs import consistency_proof_for, inclusion_for_seq
from egide.ledger.sequencer import integrate
from egide.ledger.service import Act, Action, append
from egide.ledger.tiles import TILE_HEIGHT, stored_nodes
from tests.helpers import Database

Nodes = dict[tuple[int, int], bytes]


def _append(services: Services, count: int) -> None:
    with transaction(services.session_factory) as session:
        for i in range(count):
            act = Act(Action.READ, patient=f"p-{i % 7}", resource_type="Observation")
            append(session, principal=None, act=act, clock=services.records.clock)


def _integrate(services: Services, *, limit: int, checkpoint: bool = False) -> int:
    with transaction(services.session_factory) as session:
        done = integrate(
            session,
            signer=services.signer,
            clock=services.records.clock,
            every=10**9,
            force=checkpoint,
            limit=limit,
        )
    return done.size


def _leaves(services: Services) -> list[bytes]:
    with transaction(services.session_factory) as session:
        return [
            bytes(h)
            for h in session.scalars(select(LedgerLeaf.leaf_hash).order_by(LedgerLeaf.leaf_index))
        ]


def _seqs(services: Services) -> list[int]:
    """The entry of each leaf, in leaf order."""
    with transaction(services.session_factory) as session:
        return list(session.scalars(select(LedgerLeaf.seq).order_by(LedgerLeaf.leaf_index)))


def _stored(engine: Engine) -> Nodes:
    with engine.connect() as conn:
        rows = conn.execute(text('SELECT level, "index", hash FROM ledger_node')).all()
    return {(int(level), int(index)): bytes(value) for level, index, value in rows}


def _expected(leaves: list[bytes]) -> Nodes:
    """Every complete aligned subtree at levels 4, 8, ..., recomputed from the leaves."""
    n = len(leaves)
    return {
        (level, index): merkle.root_of(leaves[index << level : (index + 1) << level])
        for level in range(TILE_HEIGHT, n.bit_length(), TILE_HEIGHT)
        for index in range(n >> level)
    }


def _verifier(services: Services) -> CheckpointVerifier:
    return CheckpointVerifier(services.signer.verifier_key())


def test_nodes_equal_recomputation_after_every_pass(services: Services) -> None:
    _append(services, 1100)
    size = _integrate(services, limit=0)  # entries from initialisation, if any, stay pending
    assert size == 0
    leaves: list[bytes] = []
    while size < 300:  # one leaf per pass: every size from 1 to 300
        size = _integrate(services, limit=1)
        leaves = _leaves(services)
        assert len(leaves) == size
        stored = _stored(services.engine)
        assert len(stored) == stored_nodes(size) == size // 16 + size // 256, size
        assert stored == _expected(leaves), size
    for limit in (7, 1, 33, 250, 5, 129, 16, 300, 64):  # passes across tile boundaries
        size = _integrate(services, limit=limit)
        leaves = _leaves(services)
        assert _stored(services.engine) == _expected(leaves), size
    assert size >= 1100
    assert (8, 3) in _stored(services.engine)  # level 8: the first 1024 leaves hold four


def test_proofs_from_nodes_equal_the_list_based_proofs(services: Services) -> None:
    _append(services, 600)
    # Checkpoints at uneven sizes, one pass each.
    sizes = [
        _integrate(services, limit=limit, checkpoint=True)
        for limit in (5, 16, 17, 100, 156, 257, 49)
    ]
    leaves, seqs = _leaves(services), _seqs(services)
    assert len(leaves) == sizes[-1]
    verifier = _verifier(services)
    with transaction(services.session_factory) as session:
        for size in sizes:
            for index in sorted({0, 1, size // 3, size // 2, size - 2, size - 1} - {-1}):
                proof = inclusion_for_seq(session, seq=seqs[index], size=size, verifier=verifier)
                assert proof.leaf_index == index
                assert proof.proof == merkle.inclusion_proof(leaves[:size], index)
            for old in sizes:
                if old <= size:
                    proof_c = consistency_proof_for(
                        session, old_size=old, new_size=size, verifier=verifier
                    )
                    assert proof_c.proof == merkle.consistency_proof(leaves[:size], old)


def _unlock_nodes(conn: Connection, database: Database) -> None:
    if database.backend == "postgresql":
        conn.execute(text("ALTER TABLE ledger_node DISABLE TRIGGER USER"))
    else:
        conn.execute(text("DROP TRIGGER ledger_node_no_update"))


def test_a_tampered_node_fails_the_self_check(services: Services, database: Database) -> None:
    _append(services, 40)
    _integrate(services, limit=20, checkpoint=True)
    _integrate(services, limit=20, checkpoint=True)
    verifier = _verifier(services)
    leaves, seqs = _leaves(services), _seqs(services)
    forged = hashlib.sha256(b"forged").digest()
    with services.engine.begin() as conn:
        _unlock_nodes(conn, database)
        conn.execute(
            text('UPDATE ledger_node SET hash = :h WHERE level = 4 AND "index" = 0'), {"h": forged}
        )
    with transaction(services.session_factory) as session:
        # Leaf 20's audit path at size 40 is leaf 21, [22:24), [16:20), [24:32), [32:40) and
        # [0:16): the last one is the stored node (4, 0).
        with pytest.raises(StorageFailure, match=r"ledger integrity fault: .* no longer match"):
            inclusion_for_seq(session, seq=seqs[20], size=40, verifier=verifier)
        # PROOF(20, D[40]) holds MTH(D[0:16]) too (RFC 9162 2.1.4.1, m > k).
        with pytest.raises(StorageFailure, match=r"ledger integrity fault: .* no longer match"):
            consistency_proof_for(session, old_size=20, new_size=40, verifier=verifier)
        # A proof that does not touch the edited row is still right, and served: only the
        # rows a proof uses are checked by it (`egide ledger verify` checks them all).
        proof = inclusion_for_seq(session, seq=seqs[3], size=20, verifier=verifier)
        assert proof.proof == merkle.inclusion_proof(leaves[:20], 3)


def test_the_node_table_is_append_only(services: Services) -> None:
    _append(services, 16)
    _integrate(services, limit=16)
    for statement in (
        "UPDATE ledger_node SET hash = hash",
        "DELETE FROM ledger_node",
    ):
        with pytest.raises(DBAPIError, match="append-only"), services.engine.begin() as conn:
            conn.execute(text(statement))
    assert len(_stored(services.engine)) == 1


# -- migration 0004 on an installation that already has leaves -------------------------------


def _fresh_at_0003(database: Database, tmp_path: Path) -> Engine:
    """An empty database migrated to 0003 only (before the node table)."""
    if database.backend == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'at-0003.db'}")
    else:
        engine = make_engine(database.url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    upgrade(engine, "0003")
    return engine


def _synthetic_leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(b"entry %d" % i) for i in range(n)]


def _insert_leaves(engine: Engine, leaves: list[bytes], start: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO ledger_leaf (leaf_index, seq, leaf_hash) VALUES (:i, :s, :h)"),
            [{"i": i, "s": i + 1, "h": leaves[i]} for i in range(start, len(leaves))],
        )


def test_migration_0004_backfills_the_nodes_of_existing_leaves(
    database: Database, tmp_path: Path
) -> None:
    engine = _fresh_at_0003(database, tmp_path)
    try:
        leaves = _synthetic_leaves(4200)  # levels 4, 8 and 12
        _insert_leaves(engine, leaves, 0)
        upgrade(engine)
        stored = _stored(engine)
        assert len(stored) == stored_nodes(4200)
        assert stored == _expected(leaves)
        assert (12, 0) in stored
    finally:
        engine.dispose()


def test_migration_0004_after_an_archive_that_removed_leaf_rows(
    database: Database, tmp_path: Path
) -> None:
    """0003's archive deleted the archived leaf rows and kept the frontier: the backfill goes on
    from that frontier. Subtrees inside the removed prefix cannot be rebuilt, except those the
    frontier holds; every subtree that reaches past it is stored, right."""
    engine = _fresh_at_0003(database, tmp_path)
    try:
        leaves, through = _synthetic_leaves(300), 48  # frontier: [0:32) and [32:48)
        frontier = merkle.CompactTree()
        for h in leaves[:through]:
            frontier.append(h)
        _insert_leaves(engine, leaves, through)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO ledger_archive (through_size, from_size, frontier, file_name, "
                    "file_sha256, time) VALUES (:t, 0, :f, 'ledger-old.json', :h, :w)"
                ),
                {
                    "t": through,
                    "f": frontier.to_bytes(),
                    "h": bytes(32),
                    "w": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                },
            )
        upgrade(engine)
        expected = _expected(leaves)
        # [0:16) and [16:32) lie inside the removed prefix, below the frontier's [0:32); the
        # frontier's [32:48) is node (4, 2) itself; [0:256) is rebuilt from the frontier.
        del expected[(4, 0)], expected[(4, 1)]
        stored = _stored(engine)
        assert stored == expected
        assert stored[(4, 2)] == frontier.frontier[1]
        assert stored[(8, 0)] == merkle.root_of(leaves[:256])
    finally:
        engine.dispose()


def test_sequencing_goes_on_after_the_backfill(services: Services) -> None:
    """The live installation (migrated at start) and its sequencer agree with a replay."""
    _append(services, 70)
    _integrate(services, limit=70)
    leaves = _leaves(services)
    stored = _stored(services.engine)
    assert stored == _expected(leaves)
    with transaction(services.session_factory) as session:
        rows = session.scalars(select(LedgerNode).order_by(LedgerNode.level, LedgerNode.index))
        assert [(n.level, n.index) for n in rows] == sorted(stored)

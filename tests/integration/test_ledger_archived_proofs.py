"""Proofs after archiving: the archived entries leave, their leaf hashes stay, proofs go on.

`ledger.retention.archive_prefix` deletes the archived entries (personal data) and keeps their
`ledger_leaf` rows (index, seq, hash) and the stored nodes. Checked the way a client would
(`check_inclusion` / `check_consistency`, verifier key only):

* the inclusion proof of a live entry, and of an archived one, which says `"archived": true`
  and whose leaf is the hash of the entry as the archive file holds it;
* consistency proofs from old sizes inside the archived prefix, at its boundary and after it,
  to the latest checkpoint, also after a second archive;
* a database archived by the previous version (leaf rows deleted too) refuses the proofs that
  need the removed hashes with NotFound, not with a false integrity alarm.

On SQLite and PostgreSQL (`database` fixture).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from egide.cli.runtime import Services
from egide.core.errors import NotFound
from egide.db.engine import transaction
from egide.ledger import merkle
from egide.ledger.canonical import canonical_json
from egide.ledger.checkpoint import CheckpointVerifier
from egide.ledger.models import LedgerEntry, LedgerLeaf
from egide.ledger.proofs import (
    check_consistency,
    check_inclusion,
    consistency_proof_for,
    inclusion_for_seq,
    parse_inclusion,
)
from egide.ledger.retention import archive_prefix, open_archive
from egide.ledger.sequencer import integrate
from egide.ledger.service import Act, Action, append
from tests.helpers import Database


@dataclass
class Ledger:
    sizes: list[int]  # signed checkpoints, in order
    seqs: list[int]  # the entry of each leaf
    leaves: list[bytes]
    canonical: dict[int, bytes]  # seq -> canonical bytes, read before archiving


def _append(services: Services, count: int) -> None:
    with transaction(services.session_factory) as session:
        for i in range(count):
            act = Act(Action.READ, patient=f"patient-{i % 5}", resource_type="Observation")
            append(session, principal=None, act=act, clock=services.records.clock)


def _checkpoint(services: Services, limit: int) -> int:
    with transaction(services.session_factory) as session:
        return integrate(
            session,
            signer=services.signer,
            clock=services.records.clock,
            every=10**9,
            force=True,
            limit=limit,
        ).size


def _snapshot(services: Services, sizes: list[int]) -> Ledger:
    with transaction(services.session_factory) as session:
        rows = session.execute(
            select(LedgerLeaf.seq, LedgerLeaf.leaf_hash).order_by(LedgerLeaf.leaf_index)
        ).all()
        canonical = {
            seq: bytes(body)
            for seq, body in session.execute(select(LedgerEntry.seq, LedgerEntry.canonical))
        }
    return Ledger(sizes, [s for s, _ in rows], [bytes(h) for _, h in rows], canonical)


def _archive(services: Services, through: int, directory: Path) -> Path:
    with transaction(services.session_factory) as session:
        return archive_prefix(
            session,
            envelope=services.records.envelope,
            through_size=through,
            directory=directory,
            clock=services.records.clock,
            verifier=_verifier(services),
        ).path


def _verifier(services: Services) -> CheckpointVerifier:
    return CheckpointVerifier(services.signer.verifier_key())


@pytest.fixture
def ledger(services: Services) -> Ledger:
    """Checkpoints at 7, 20, 37 and 45 leaves (sizes that are not powers of two, tiles of 16
    across the archive boundary), then the first 20 leaves archived."""
    _append(services, 45)
    sizes = [_checkpoint(services, limit) for limit in (7, 13, 17, 8)]
    assert sizes == [7, 20, 37, 45]
    return _snapshot(services, sizes)


def test_archiving_keeps_leaf_rows_and_drops_only_the_entries(
    services: Services, ledger: Ledger, tmp_path: Path
) -> None:
    _archive(services, 20, tmp_path)
    with transaction(services.session_factory) as session:
        leaves = session.scalar(select(func.count()).select_from(LedgerLeaf))
        entries = set(session.scalars(select(LedgerEntry.seq)))
    assert leaves == 45
    assert not entries & set(ledger.seqs[:20])
    assert set(ledger.seqs[20:]) <= entries


def test_inclusion_of_live_and_archived_entries(
    services: Services, ledger: Ledger, tmp_path: Path
) -> None:
    path = _archive(services, 20, tmp_path)
    verifier = _verifier(services)
    with transaction(services.session_factory) as session:
        live = inclusion_for_seq(session, seq=ledger.seqs[30], verifier=verifier)
        archived = inclusion_for_seq(session, seq=ledger.seqs[5], verifier=verifier)
        archived_old = inclusion_for_seq(session, seq=ledger.seqs[5], size=7, verifier=verifier)
        archived_last = inclusion_for_seq(session, seq=ledger.seqs[19], size=20, verifier=verifier)
        events = open_archive(
            path, session=session, envelope=services.records.envelope, verifier=verifier
        )
    assert not live.archived
    assert "archived" not in live.to_json()
    assert check_inclusion(live, verifier, entry=ledger.canonical[ledger.seqs[30]]).size == 45
    for proof, index, size in ((archived, 5, 45), (archived_old, 5, 7), (archived_last, 19, 20)):
        assert proof.archived
        assert (proof.leaf_index, proof.tree_size) == (index, size)
        assert proof.proof == merkle.inclusion_proof(ledger.leaves[:size], index)
        body = proof.to_json()
        assert body["archived"] is True
        # What a client does with the JSON: parse, check the signature and the path.
        assert check_inclusion(parse_inclusion(body), verifier).size == size
    # The proven leaf is the hash of the entry as its archive file holds it (RFC 6962 2.1).
    event = next(e for e in events if e["seq"] == ledger.seqs[5])
    body = canonical_json({k: v for k, v in event.items() if k != "seq"})
    assert body == ledger.canonical[ledger.seqs[5]]
    assert check_inclusion(archived, verifier, entry=body).size == 45


def test_consistency_from_old_sizes_in_and_after_the_archived_prefix(
    services: Services, ledger: Ledger, tmp_path: Path
) -> None:
    _archive(services, 20, tmp_path)
    verifier = _verifier(services)
    with transaction(services.session_factory) as session:
        for old in ledger.sizes:
            for new in ledger.sizes:
                if old > new:
                    continue
                proof = consistency_proof_for(
                    session, old_size=old, new_size=new, verifier=verifier
                )
                assert proof.proof == merkle.consistency_proof(ledger.leaves[:new], old)
                checked_old, checked_new = check_consistency(proof, verifier)
                assert (checked_old.size, checked_new.size) == (old, new)
        latest = consistency_proof_for(session, old_size=7, verifier=verifier)
    assert latest.new_size == 45


def test_proofs_after_a_second_archive_and_more_activity(
    services: Services, ledger: Ledger, tmp_path: Path
) -> None:
    _archive(services, 20, tmp_path)
    _archive(services, 37, tmp_path)
    _append(services, 30)
    assert _checkpoint(services, 30) == 75
    verifier = _verifier(services)
    with transaction(services.session_factory) as session:
        for index in (0, 19, 20, 36):
            proof = inclusion_for_seq(session, seq=ledger.seqs[index], verifier=verifier)
            assert proof.archived
            assert check_inclusion(proof, verifier).size == 75
        live = inclusion_for_seq(session, seq=ledger.seqs[40], verifier=verifier)
        assert not live.archived
        assert check_inclusion(live, verifier, entry=ledger.canonical[ledger.seqs[40]])
        for old in ledger.sizes:
            check_consistency(
                consistency_proof_for(session, old_size=old, verifier=verifier), verifier
            )


def test_an_archive_of_the_previous_version_refuses_what_it_removed(
    services: Services, database: Database, ledger: Ledger, tmp_path: Path
) -> None:
    """Before this version, archiving deleted the leaf rows too: the proofs that need those
    hashes are refused as not available (NotFound), never as an integrity fault."""
    _archive(services, 20, tmp_path)
    with services.engine.begin() as conn:
        if database.backend == "postgresql":
            conn.execute(text("ALTER TABLE ledger_leaf DISABLE TRIGGER USER"))
        else:
            conn.execute(text("DROP TRIGGER ledger_leaf_no_delete"))
        conn.execute(text("DELETE FROM ledger_leaf WHERE leaf_index < 20"))
    verifier = _verifier(services)
    with transaction(services.session_factory) as session:
        with pytest.raises(NotFound, match="archive made before leaf hashes were kept"):
            consistency_proof_for(session, old_size=7, verifier=verifier)
        with pytest.raises(NotFound, match="archive made before leaf hashes were kept"):
            inclusion_for_seq(session, seq=ledger.seqs[30], verifier=verifier)
        # The removed entries have no leaf to prove any more.
        with pytest.raises(NotFound, match="no ledger entry"):
            inclusion_for_seq(session, seq=ledger.seqs[3], verifier=verifier)
        # Leaf 40's path needs no removed hash: [0:32) is the stored nodes (4, 0) and (4, 1),
        # the rest live leaves.
        proof = inclusion_for_seq(session, seq=ledger.seqs[40], size=45, verifier=verifier)
    assert not proof.archived
    assert check_inclusion(proof, verifier, entry=ledger.canonical[ledger.seqs[40]]).size == 45

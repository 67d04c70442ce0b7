"""Ledger retention: archive a prefix to an encrypted file, keep the live tree verifiable."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from egide.cli.runtime import Services, sequence_ledger
from egide.core.errors import BadRequest, Conflict
from egide.db.engine import transaction
from egide.ledger.checkpoint import CheckpointVerifier
from egide.ledger.models import LedgerEntry, LedgerLeaf
from egide.ledger.proofs import (
    check_consistency,
    check_inclusion,
    parse_consistency,
    parse_inclusion,
)
from egide.ledger.retention import archive_prefix, open_archive, segment_reader
from egide.ledger.service import iter_events
from egide.ledger.verify import Report, verify_ledger
from tests.helpers import Database
from tests.integration.fhir_support import create, headers, observation, patient


def _verifier(services: Services) -> CheckpointVerifier:
    return CheckpointVerifier(services.signer.verifier_key())


def _verify(services: Services, archives: Path | None = None) -> Report:
    with transaction(services.session_factory) as session:
        reader = segment_reader(
            session, envelope=services.records.envelope, verifier=_verifier(services)
        )
        return verify_ledger(
            session, verifier=_verifier(services), archives=archives, read_segment=reader
        )


def _activity(client: TestClient, token: str) -> None:
    pid = create(client, token, patient())["id"]
    create(client, token, observation(pid))
    client.get(f"/fhir/Patient/{pid}", headers=headers(token))


def _archive(services: Services, through: int, directory: Path) -> Path:
    with transaction(services.session_factory) as session:
        done = archive_prefix(
            session,
            envelope=services.records.envelope,
            through_size=through,
            directory=directory,
            clock=services.records.clock,
            verifier=_verifier(services),
        )
    return done.path


@pytest.fixture
def two_checkpoints(
    client: TestClient, services: Services, service_token: str
) -> tuple[int, int, list[dict[str, object]]]:
    _activity(client, service_token)
    first = sequence_ledger(services, force=True).size
    with transaction(services.session_factory) as session:
        before = list(iter_events(session))
    _activity(client, service_token)
    second = sequence_ledger(services, force=True).size
    assert first < second
    return first, second, before[:first]


def test_archiving_keeps_the_tree_verifiable(
    services: Services,
    two_checkpoints: tuple[int, int, list[dict[str, object]]],
    tmp_path: Path,
) -> None:
    first, second, archived_events = two_checkpoints
    path = _archive(services, first, tmp_path)
    with transaction(services.session_factory) as session:
        live = session.scalar(select(func.count()).select_from(LedgerEntry))
    assert live == second - first + 0  # the archived entries left the live database
    report = _verify(services, tmp_path)
    assert report.ok, report.faults
    assert (report.archived, report.leaves) == (first, second)
    with transaction(services.session_factory) as session:
        events = open_archive(
            path, session=session, envelope=services.records.envelope, verifier=_verifier(services)
        )
    assert [e["id"] for e in events] == [e["id"] for e in archived_events]
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_archives_chain_and_new_activity_still_verifies(
    client: TestClient,
    services: Services,
    service_token: str,
    two_checkpoints: tuple[int, int, list[dict[str, object]]],
    tmp_path: Path,
) -> None:
    first, second, _ = two_checkpoints
    _archive(services, first, tmp_path)
    later = _archive(services, second, tmp_path)
    _activity(client, service_token)
    sequence_ledger(services, force=True)
    report = _verify(services, tmp_path)
    assert report.ok, report.faults
    assert report.archived == second
    with transaction(services.session_factory) as session:
        events = open_archive(
            later, session=session, envelope=services.records.envelope, verifier=_verifier(services)
        )
    assert len(events) == second - first


def test_refusals(
    services: Services, two_checkpoints: tuple[int, int, list[dict[str, object]]], tmp_path: Path
) -> None:
    first, _second, _ = two_checkpoints
    with pytest.raises(BadRequest, match="not the size of a signed checkpoint"):
        _archive(services, first - 1, tmp_path)
    _archive(services, first, tmp_path)
    with pytest.raises(Conflict, match="already archived"):
        _archive(services, first, tmp_path)


@pytest.mark.parametrize("field", ["sealed", "through_size", "checkpoint", "start_frontier"])
def test_a_tampered_archive_file_is_refused(
    services: Services,
    two_checkpoints: tuple[int, int, list[dict[str, object]]],
    tmp_path: Path,
    field: str,
) -> None:
    first, _second, _ = two_checkpoints
    path = _archive(services, first, tmp_path)
    document = json.loads(path.read_text())
    if field == "sealed":
        raw = bytearray(base64.b64decode(document["sealed"]))
        raw[len(raw) // 2] ^= 0x01
        document["sealed"] = base64.b64encode(bytes(raw)).decode()
    elif field == "through_size":
        document["through_size"] -= 1
    elif field == "checkpoint":
        document["checkpoint"] = document["checkpoint"].replace("\n", "\n1", 1)
    else:
        # A one-leaf tree instead of the empty one this first archive starts from.
        document["start_frontier"] = base64.b64encode(b"\x00" * 7 + b"\x01" + b"\x11" * 32).decode()
    path.write_text(json.dumps(document))
    with pytest.raises(BadRequest), transaction(services.session_factory) as session:
        open_archive(
            path, session=session, envelope=services.records.envelope, verifier=_verifier(services)
        )


def test_a_forged_frontier_in_the_database_is_caught(
    services: Services,
    database: Database,
    two_checkpoints: tuple[int, int, list[dict[str, object]]],
    tmp_path: Path,
) -> None:
    first, _second, _ = two_checkpoints
    _archive(services, first, tmp_path)
    with services.engine.begin() as conn:
        if database.backend == "postgresql":
            conn.execute(text("ALTER TABLE ledger_archive DISABLE TRIGGER USER"))
        else:
            conn.execute(text("DROP TRIGGER ledger_archive_no_update"))
        frontier = bytes(conn.execute(text("SELECT frontier FROM ledger_archive")).scalar_one())
        forged = frontier[:-1] + bytes([frontier[-1] ^ 0x01])
        conn.execute(text("UPDATE ledger_archive SET frontier = :f"), {"f": forged})
    report = _verify(services, tmp_path)
    assert not report.ok
    assert any(
        "archived prefix does not match" in f or "does not match its signed" in f
        for f in report.faults
    ), report.faults


def test_archived_leaves_are_vouched_for_only_by_their_files(
    services: Services,
    two_checkpoints: tuple[int, int, list[dict[str, object]]],
    tmp_path: Path,
) -> None:
    first, _second, _ = two_checkpoints
    path = _archive(services, first, tmp_path)
    unchecked = _verify(services)
    assert not unchecked.ok
    assert any("were not checked" in f for f in unchecked.faults)
    path.unlink()
    missing = _verify(services, tmp_path)
    assert any("is missing" in f for f in missing.faults), missing.faults


def test_a_forged_archive_row_does_not_hide_an_erased_prefix(
    services: Services,
    database: Database,
    two_checkpoints: tuple[int, int, list[dict[str, object]]],
    tmp_path: Path,
) -> None:
    """A database owner deletes the first leaves and entries and records a fake archive (the
    frontier is computable from public leaf hashes): without the sealed file, verify fails."""
    from egide.ledger.merkle import CompactTree  # noqa: PLC0415

    first, _second, _ = two_checkpoints
    with services.engine.begin() as conn:
        hashes = [
            bytes(h)
            for h in conn.execute(
                text("SELECT leaf_hash FROM ledger_leaf WHERE leaf_index < :n ORDER BY leaf_index"),
                {"n": first},
            ).scalars()
        ]
        tree = CompactTree()
        for leaf_hash in hashes:
            tree.append(leaf_hash)
        if database.backend == "postgresql":
            for table in ("ledger_entry", "ledger_leaf"):
                conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        else:
            for table in ("ledger_entry", "ledger_leaf"):
                conn.execute(text(f"DROP TRIGGER {table}_no_delete"))
        conn.execute(
            text(
                "DELETE FROM ledger_entry WHERE seq IN (SELECT seq FROM ledger_leaf "
                "WHERE leaf_index < :n)"
            ),
            {"n": first},
        )
        conn.execute(text("DELETE FROM ledger_leaf WHERE leaf_index < :n"), {"n": first})
        conn.execute(
            text(
                "INSERT INTO ledger_archive (through_size, from_size, frontier, file_name, "
                "file_sha256, time) VALUES (:t, 0, :f, 'ledger-fake.json', :h, :w)"
            ),
            {
                "t": first,
                "f": tree.to_bytes(),
                "h": b"\x00" * 32,
                "w": services.records.clock.now(),
            },
        )
    report = _verify(services, tmp_path)
    assert not report.ok
    assert any("ledger-fake.json is missing" in f for f in report.faults), report.faults


def test_proofs_after_archiving_are_served_over_the_api(
    client: TestClient,
    services: Services,
    service_token: str,
    two_checkpoints: tuple[int, int, list[dict[str, object]]],
    tmp_path: Path,
) -> None:
    """Archiving keeps the leaf hashes: consistency from the archived boundary and inclusion
    of an archived entry still verify (tests/integration/test_ledger_archived_proofs.py has
    the rest)."""
    first, second, archived_events = two_checkpoints
    _archive(services, first, tmp_path)
    verifier = _verifier(services)
    response = client.get(
        f"/api/ledger/proof/consistency?old={first}&new={second}", headers=headers(service_token)
    )
    assert response.status_code == 200, response.text
    check_consistency(parse_consistency(response.json()), verifier)
    with transaction(services.session_factory) as session:
        seq = session.scalar(select(LedgerLeaf.seq).where(LedgerLeaf.leaf_index == 0))
    response = client.get(f"/api/ledger/proof/inclusion?seq={seq}", headers=headers(service_token))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["archived"] is True
    assert check_inclusion(parse_inclusion(body), verifier).size == second
    assert archived_events[0]["id"] not in response.text

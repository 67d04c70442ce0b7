"""Inclusion and consistency proofs over HTTP and the CLI, verified the way a client would.

Real activity goes through the API, the sequencer signs checkpoints, and the proofs fetched
from `/api/ledger/...` are checked *client-side* with `egide.ledger.merkle`'s verifier half
(RFC 9162 sections 2.1.3.2 and 2.1.4.2) and `CheckpointVerifier` (C2SP signed notes) under the
verifier key obtained out of band — never with the server's proof-generation code. Mutated
proofs must be rejected; bad parameters answer OperationOutcomes; a database edited behind the
ledger's back makes the server refuse to serve a proof rather than serve one that cannot
verify. The CLI's `prove` and `check-proof` run as the real `egide` binary. On SQLite and
PostgreSQL.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, text

from egide.cli.runtime import Services, sequence_ledger
from egide.core.settings import Settings
from egide.ledger import merkle
from egide.ledger.checkpoint import Checkpoint, CheckpointError, CheckpointVerifier
from tests.helpers import Database, issue_token, make_settings
from tests.integration.fhir_support import create, headers, observation, outcome_text, patient

EGIDE = Path(sys.executable).parent / "egide"
TABLES = ("ledger_entry", "ledger_leaf", "ledger_checkpoint")


@dataclass
class Sealed:
    """Two signed checkpoints over real activity, and entries still pending after them."""

    old_size: int
    new_size: int
    pending_seq: int


def _b64(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _seqs_by_leaf(services: Services) -> list[int]:
    with services.engine.connect() as conn:
        return [
            int(s)
            for s in conn.execute(text("SELECT seq FROM ledger_leaf ORDER BY leaf_index")).scalars()
        ]


def _canonical(services: Services, seq: int) -> bytes:
    with services.engine.connect() as conn:
        return bytes(
            conn.execute(
                text("SELECT canonical FROM ledger_entry WHERE seq = :s"), {"s": seq}
            ).scalar_one()
        )


def _max_seq(services: Services) -> int:
    with services.engine.connect() as conn:
        return int(conn.execute(text("SELECT MAX(seq) FROM ledger_entry")).scalar_one())


@pytest.fixture
def settings(tmp_path: Path, database: Database) -> Settings:
    """As conftest's, but the server's periodic sequencer stays out of the way: these tests
    decide when entries join the tree (a pending entry must stay pending)."""
    return make_settings(tmp_path / "data", database.url, checkpoint_interval_seconds=86400)


@pytest.fixture
def vkey(services: Services) -> str:
    """The verifier key as a client gets it out of band (`egide ledger public-key`)."""
    return services.signer.verifier_key()


@pytest.fixture
def sealed(client: TestClient, services: Services, service_token: str) -> Sealed:
    pid = create(client, service_token, patient())["id"]
    create(client, service_token, observation(pid, value=61))
    client.get(f"/fhir/Patient/{pid}", headers=headers(service_token))
    first = sequence_ledger(services, force=True)
    assert first.checkpoint is not None
    for value in (70, 80, 90):
        create(client, service_token, observation(pid, value=value))
    client.get("/fhir/Observation", headers=headers(service_token))
    client.get("/fhir/Patient?_count=1", headers=headers(service_token))
    second = sequence_ledger(services, force=True)
    assert second.checkpoint is not None
    assert second.size > first.size >= 3
    client.get("/fhir/Patient?_count=1", headers=headers(service_token))  # stays pending
    return Sealed(first.size, second.size, _max_seq(services))


def _verify_inclusion_client_side(
    body: dict[str, Any], vkey: str, canonical: bytes | None = None
) -> Checkpoint:
    """What a client does with a proof: signature first, then the audit path to that root."""
    checkpoint = CheckpointVerifier(vkey).verify(body["checkpoint"].encode("utf-8"))
    assert checkpoint.size == body["tree_size"]
    leaf = _b64(body["leaf_hash"])
    if canonical is not None:  # RFC 6962 2.1: the entry's own bytes give the leaf hash
        assert hashlib.sha256(b"\x00" + canonical).digest() == leaf
    merkle.verify_inclusion(
        leaf_hash=leaf,
        index=body["leaf_index"],
        tree_size=body["tree_size"],
        proof=[_b64(p) for p in body["proof"]],
        root=checkpoint.root,
    )
    return checkpoint


# -- checkpoints and key ------------------------------------------------------------------------


def test_checkpoints_and_public_key_are_served_as_signed_text(
    client: TestClient, services: Services, service_token: str, sealed: Sealed, vkey: str
) -> None:
    served_key = client.get("/api/ledger/public-key", headers=_auth(service_token))
    assert served_key.status_code == 200
    assert served_key.headers["content-type"].startswith("text/plain")
    assert served_key.text == vkey + "\n"

    latest = client.get("/api/ledger/checkpoint", headers=_auth(service_token))
    assert latest.status_code == 200
    assert latest.headers["content-type"].startswith("text/plain")
    checkpoint = CheckpointVerifier(vkey).verify(latest.content)
    assert checkpoint.size == sealed.new_size
    assert checkpoint.origin == services.settings.ledger_origin

    old = client.get(f"/api/ledger/checkpoint/{sealed.old_size}", headers=_auth(service_token))
    assert old.status_code == 200
    assert CheckpointVerifier(vkey).verify(old.content).size == sealed.old_size
    # The witness directory holds the very same bytes the API serves.
    witness = services.settings.effective_witness_dir / f"checkpoint-{sealed.old_size:012d}.txt"
    assert witness.read_bytes() == old.content


def test_no_checkpoint_yet_answers_404(client: TestClient, service_token: str) -> None:
    for url in (
        "/api/ledger/checkpoint",
        "/api/ledger/proof/inclusion?seq=1",
        "/api/ledger/proof/consistency?old=1",
    ):
        response = client.get(url, headers=_auth(service_token))
        assert response.status_code == 404, (url, response.text)
        assert "no signed checkpoint yet" in outcome_text(response)


# -- inclusion ---------------------------------------------------------------------------------


def test_every_entry_has_an_inclusion_proof_that_verifies_client_side(
    client: TestClient, services: Services, service_token: str, sealed: Sealed, vkey: str
) -> None:
    seqs = _seqs_by_leaf(services)
    assert len(seqs) >= sealed.new_size
    for index, seq in enumerate(seqs[: sealed.new_size]):
        response = client.get(
            f"/api/ledger/proof/inclusion?seq={seq}", headers=_auth(service_token)
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["leaf_index"] == index
        assert body["tree_size"] == sealed.new_size
        checkpoint = _verify_inclusion_client_side(body, vkey, _canonical(services, seq))
        assert checkpoint.size == sealed.new_size


def test_inclusion_against_an_older_checkpoint(
    client: TestClient, services: Services, service_token: str, sealed: Sealed, vkey: str
) -> None:
    seqs = _seqs_by_leaf(services)
    for seq in (seqs[0], seqs[sealed.old_size - 1]):
        response = client.get(
            f"/api/ledger/proof/inclusion?seq={seq}&size={sealed.old_size}",
            headers=_auth(service_token),
        )
        assert response.status_code == 200, response.text
        assert _verify_inclusion_client_side(response.json(), vkey).size == sealed.old_size
    # An entry that came after the old checkpoint is not under it.
    late = seqs[sealed.old_size]
    response = client.get(
        f"/api/ledger/proof/inclusion?seq={late}&size={sealed.old_size}",
        headers=_auth(service_token),
    )
    assert response.status_code == 404
    assert "beyond the signed checkpoint" in outcome_text(response)


def test_a_mutated_inclusion_proof_is_rejected_by_the_client(
    client: TestClient, services: Services, service_token: str, sealed: Sealed, vkey: str
) -> None:
    seq = _seqs_by_leaf(services)[2]
    body = client.get(f"/api/ledger/proof/inclusion?seq={seq}", headers=_auth(service_token)).json()
    _verify_inclusion_client_side(body, vkey)
    assert body["proof"], "a tree of several leaves has a non-empty audit path"

    for i in range(len(body["proof"])):  # every path element, one bit flipped
        element = bytearray(_b64(body["proof"][i]))
        element[0] ^= 0x01
        forged = dict(
            body,
            proof=[*body["proof"][:i], base64.b64encode(element).decode(), *body["proof"][i + 1 :]],
        )
        with pytest.raises(merkle.ProofError):
            _verify_inclusion_client_side(forged, vkey)
    leaf = bytearray(_b64(body["leaf_hash"]))
    leaf[-1] ^= 0x80
    cases = [
        dict(body, leaf_hash=base64.b64encode(leaf).decode()),
        dict(body, leaf_index=body["leaf_index"] + 1),
        dict(body, proof=body["proof"][:-1]),
        dict(body, proof=[*body["proof"], body["proof"][0]]),
    ]
    for forged in cases:
        with pytest.raises(merkle.ProofError):
            _verify_inclusion_client_side(forged, vkey)
    # Another entry's bytes do not hash to this leaf.
    with pytest.raises(AssertionError):
        _verify_inclusion_client_side(body, vkey, _canonical(services, seq + 1))
    # A checkpoint with a forged size or root no longer carries a valid signature.
    note = body["checkpoint"]
    lines = note.split("\n")
    lines[1] = str(int(lines[1]) + 1)
    with pytest.raises(CheckpointError):
        _verify_inclusion_client_side(dict(body, checkpoint="\n".join(lines)), vkey)


def test_inclusion_errors_are_operation_outcomes(
    client: TestClient, services: Services, service_token: str, sealed: Sealed
) -> None:
    missing = sealed.pending_seq + 1000
    cases = [
        (f"seq={missing}", 404, f"no ledger entry with seq {missing}"),
        (f"seq={sealed.pending_seq}", 404, "not in the tree yet"),
        (f"seq=1&size={sealed.new_size + 1}", 404, "beyond the latest signed checkpoint"),
        ("seq=1&size=2", 404, "no signed checkpoint of 2 leaves"),
        ("seq=abc", 400, "seq"),
        ("seq=1.5", 400, "seq"),
        ("seq=0", 400, "seq"),
        ("seq=-3", 400, "seq"),
        (f"seq={10**30}", 400, "seq"),
        ("seq=1&size=x", 400, "size"),
        ("", 400, "seq"),
    ]
    for query, status, needle in cases:
        response = client.get(f"/api/ledger/proof/inclusion?{query}", headers=_auth(service_token))
        assert response.status_code == status, (query, response.text)
        assert needle in outcome_text(response), (query, response.text)
    assert client.get("/api/ledger/checkpoint/abc", headers=_auth(service_token)).status_code == 400
    assert client.get("/api/ledger/checkpoint/2", headers=_auth(service_token)).status_code == 404


# -- consistency -------------------------------------------------------------------------------


def test_consistency_between_two_checkpoints_verifies_client_side(
    client: TestClient, service_token: str, sealed: Sealed, vkey: str
) -> None:
    verifier = CheckpointVerifier(vkey)
    old = verifier.verify(
        client.get(
            f"/api/ledger/checkpoint/{sealed.old_size}", headers=_auth(service_token)
        ).content
    )
    for query in (f"old={sealed.old_size}&new={sealed.new_size}", f"old={sealed.old_size}"):
        response = client.get(
            f"/api/ledger/proof/consistency?{query}", headers=_auth(service_token)
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["old_size"], body["new_size"]) == (sealed.old_size, sealed.new_size)
        new = verifier.verify(body["new_checkpoint"].encode())
        assert verifier.verify(body["old_checkpoint"].encode()) == old
        proof = [_b64(p) for p in body["proof"]]
        assert proof
        merkle.verify_consistency(
            old_size=old.size, new_size=new.size, old_root=old.root, new_root=new.root, proof=proof
        )
        for i in range(len(proof)):
            forged = list(proof)
            forged[i] = bytes([forged[i][0] ^ 1]) + forged[i][1:]
            with pytest.raises(merkle.ProofError):
                merkle.verify_consistency(
                    old_size=old.size,
                    new_size=new.size,
                    old_root=old.root,
                    new_root=new.root,
                    proof=forged,
                )
    same = client.get(
        f"/api/ledger/proof/consistency?old={sealed.new_size}", headers=_auth(service_token)
    ).json()
    assert same["proof"] == []  # RFC 9162 2.1.4.1: PROOF(n, D[n]) is empty


def test_consistency_errors_are_operation_outcomes(
    client: TestClient, service_token: str, sealed: Sealed
) -> None:
    cases = [
        (f"old={sealed.new_size}&new={sealed.old_size}", 400, "larger than new size"),
        (f"old={sealed.new_size + 5}", 400, "larger than the latest signed checkpoint"),
        (
            f"old={sealed.old_size}&new={sealed.new_size + 5}",
            404,
            "beyond the latest signed checkpoint",
        ),
        (f"old=2&new={sealed.new_size}", 404, "no signed checkpoint of 2 leaves"),
        ("old=0", 400, "old"),
        ("old=one", 400, "old"),
        (f"old=1&new={2**64}", 400, "new"),
        ("", 400, "old"),
    ]
    for query, status, needle in cases:
        response = client.get(
            f"/api/ledger/proof/consistency?{query}", headers=_auth(service_token)
        )
        assert response.status_code == status, (query, response.text)
        assert needle in outcome_text(response), (query, response.text)


# -- authentication ----------------------------------------------------------------------------


URLS = (
    "/api/ledger/checkpoint",
    "/api/ledger/checkpoint/1",
    "/api/ledger/public-key",
    "/api/ledger/proof/inclusion?seq=1",
    "/api/ledger/proof/consistency?old=1",
)


def test_without_a_valid_token_every_route_answers_401(client: TestClient, sealed: Sealed) -> None:
    for url in URLS:
        for extra in ({}, {"Authorization": "Bearer egide_" + "x" * 43}):
            response = client.get(url, headers=extra)
            assert response.status_code == 401, (url, response.text)
            assert response.json()["resourceType"] == "OperationOutcome"
            assert response.headers["www-authenticate"].startswith("Bearer")


def test_any_valid_token_may_fetch_proofs_which_hold_hashes_only(
    client: TestClient, services: Services, sealed: Sealed, vkey: str
) -> None:
    """A patient's token is enough: the answer carries hashes and the signed note, never the
    entry (no patient id, no action, no user)."""
    token = issue_token(services, "patient", patient_id="someone-else")
    seq = _seqs_by_leaf(services)[0]
    response = client.get(f"/api/ledger/proof/inclusion?seq={seq}", headers=_auth(token))
    assert response.status_code == 200
    body = response.json()
    _verify_inclusion_client_side(body, vkey)
    assert set(body) == {"seq", "leaf_index", "tree_size", "leaf_hash", "proof", "checkpoint"}
    canonical = json.loads(_canonical(services, seq))
    for value in (canonical["id"], canonical["user"], canonical["action"]):
        assert value not in response.text


# -- a database edited behind the ledger's back --------------------------------------------------


def _tamper(services: Services, database: Database, sql: str, **params: Any) -> None:
    """Run one statement with the append-only triggers off, as a database owner could."""
    with services.engine.begin() as conn:
        _triggers(conn, database, enable=False)
        conn.execute(text(sql), params)
        _triggers(conn, database, enable=True)


def _triggers(conn: Connection, database: Database, *, enable: bool) -> None:
    if database.backend == "postgresql":
        for table in TABLES:
            conn.execute(
                text(f"ALTER TABLE {table} {'ENABLE' if enable else 'DISABLE'} TRIGGER USER")
            )
    elif not enable:
        names = (
            conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
            .scalars()
            .all()
        )
        for name in names:
            conn.execute(text(f'DROP TRIGGER "{name}"'))


def test_the_server_refuses_to_prove_a_leaf_rewritten_behind_its_back(
    client: TestClient,
    services: Services,
    database: Database,
    service_token: str,
    sealed: Sealed,
) -> None:
    seqs = _seqs_by_leaf(services)
    forged = hashlib.sha256(b"\x00forged").digest()
    _tamper(
        services, database, "UPDATE ledger_leaf SET leaf_hash = :h WHERE leaf_index = 1", h=forged
    )
    for seq in (seqs[1], seqs[4]):  # the forged leaf itself, and a leaf whose path crosses it
        response = client.get(
            f"/api/ledger/proof/inclusion?seq={seq}", headers=_auth(service_token)
        )
        assert response.status_code == 500, response.text
        assert "ledger integrity fault" in outcome_text(response)
    response = client.get(
        f"/api/ledger/proof/consistency?old={sealed.old_size}", headers=_auth(service_token)
    )
    assert response.status_code == 500
    assert "ledger integrity fault" in outcome_text(response)


def test_the_server_refuses_to_prove_an_entry_whose_bytes_changed(
    client: TestClient,
    services: Services,
    database: Database,
    service_token: str,
    sealed: Sealed,
) -> None:
    seq = _seqs_by_leaf(services)[0]
    body = _canonical(services, seq).replace(b'"success"', b'"denied"', 1)
    _tamper(
        services, database, "UPDATE ledger_entry SET canonical = :c WHERE seq = :s", c=body, s=seq
    )
    response = client.get(f"/api/ledger/proof/inclusion?seq={seq}", headers=_auth(service_token))
    assert response.status_code == 500
    assert f"entry seq {seq} (leaf 0) no longer hashes to its leaf" in outcome_text(response)


# -- the CLI ---------------------------------------------------------------------------------


def _egide(
    settings: Settings, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    assert EGIDE.is_file(), f"the console script is not installed at {EGIDE}"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("EGIDE_") and k not in ("COLUMNS", "LINES")
    }
    assert settings.master_secret is not None
    env.update(
        EGIDE_DATA_DIR=str(settings.data_dir),
        EGIDE_MASTER_SECRET=settings.master_secret.get_secret_value(),
        EGIDE_KDF_MEMORY_KIB="64",
        EGIDE_KDF_ITERATIONS="1",
    )
    if settings.database_url:
        env["EGIDE_DATABASE_URL"] = settings.database_url
    return subprocess.run(
        [str(EGIDE), *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_cli_prove_and_check_proof_round_trip(
    client: TestClient,
    services: Services,
    service_token: str,
    sealed: Sealed,
    vkey: str,
    tmp_path: Path,
) -> None:
    settings = services.settings
    seq = _seqs_by_leaf(services)[3]
    proved = _egide(settings, "ledger", "prove", "--seq", str(seq))
    assert proved.returncode == 0, proved.stderr
    body = json.loads(proved.stdout)
    api = client.get(f"/api/ledger/proof/inclusion?seq={seq}", headers=_auth(service_token))
    assert body == api.json()  # the CLI prints what the API serves
    _verify_inclusion_client_side(body, vkey)

    saved = tmp_path / "inclusion.json"
    saved.write_text(proved.stdout)
    entry = tmp_path / "entry.json"
    entry.write_bytes(_canonical(services, seq))
    checked = _egide(
        settings,
        "ledger",
        "check-proof",
        "--file",
        str(saved),
        "--key",
        vkey,
        "--entry",
        str(entry),
    )
    assert checked.returncode == 0, checked.stderr
    assert f"inclusion proof verified: leaf 3 of {sealed.new_size}" in checked.stdout

    consistent = _egide(settings, "ledger", "prove", "--old", str(sealed.old_size))
    assert consistent.returncode == 0, consistent.stderr
    checked = _egide(
        settings, "ledger", "check-proof", "--file", "-", "--key", vkey, stdin=consistent.stdout
    )
    assert checked.returncode == 0, checked.stderr
    assert "consistency proof verified" in checked.stdout

    # Tampered files fail with one line and exit code 1.
    element = bytearray(_b64(body["proof"][0]))
    element[5] ^= 0x04
    forged_proof = dict(body, proof=[base64.b64encode(element).decode(), *body["proof"][1:]])
    other_key = issue_key_of_another_log()
    bad_inputs = [
        (json.dumps(forged_proof), vkey, "does not"),
        (json.dumps(dict(body, leaf_index=body["leaf_index"] + 1)), vkey, ""),
        (proved.stdout, other_key, "no signature by"),
        (json.dumps(dict(body, leaf_hash="not base64!")), vkey, "leaf_hash"),
        ("{not json", vkey, "not JSON"),
    ]
    for content, key, needle in bad_inputs:
        saved.write_text(content)
        rejected = _egide(settings, "ledger", "check-proof", "--file", str(saved), "--key", key)
        assert rejected.returncode == 1, (content, rejected.stdout, rejected.stderr)
        assert rejected.stdout == ""
        assert "Traceback" not in rejected.stderr
        assert len(rejected.stderr.splitlines()) == 1, rejected.stderr
        assert rejected.stderr.startswith("egide: proof rejected: "), rejected.stderr
        assert needle in rejected.stderr
    saved.write_text(proved.stdout)
    entry.write_bytes(_canonical(services, seq + 1))
    rejected = _egide(
        settings,
        "ledger",
        "check-proof",
        "--file",
        str(saved),
        "--key",
        vkey,
        "--entry",
        str(entry),
    )
    assert rejected.returncode == 1
    assert "does not hash to the proof's leaf hash" in rejected.stderr


def test_cli_prove_errors_are_one_line(services: Services, sealed: Sealed) -> None:
    settings = services.settings
    cases = [
        (("--seq", "1", "--old", "1"), "either --seq"),
        ((), "either --seq"),
        (("--seq", str(sealed.pending_seq + 1000)), "no ledger entry"),
        (("--old", str(sealed.new_size), "--new", str(sealed.old_size)), "larger than"),
    ]
    for args, needle in cases:
        result = _egide(settings, "ledger", "prove", *args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert result.stdout == ""
        assert result.stderr.startswith("egide: error: "), result.stderr
        assert len(result.stderr.splitlines()) == 1
        assert needle in result.stderr


def issue_key_of_another_log() -> str:
    """A well-formed verifier key under the same name, of a different Ed25519 key."""
    from egide.ledger.checkpoint import CheckpointSigner  # noqa: PLC0415

    return CheckpointSigner(name="egide.local/ledger", seed=b"\x07" * 32).verifier_key()

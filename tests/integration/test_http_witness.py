"""A witness over HTTP: installation B witnesses installation A's ledger (C2SP tlog-witness).

Two real installations (two data directories, two SQLite databases, two keyrings). B is served
by uvicorn on a loopback port; A pushes its checkpoints to it over real HTTP, as the server's
background pass and `egide ledger witness-push` do. Then A's history is rewritten and re-signed
with A's own key, as an administrator holding the key could: B refuses the forked checkpoints
(409, then 422) and keeps what it cosigned, and `egide ledger verify --witness` on A's data,
given B's copy, reports the rewrite.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect, select, text

from egide.app import api_for
from egide.cli.runtime import (
    OPERATOR,
    Services,
    background_pass,
    initialise,
    open_services,
    push_to_witnesses,
    witness_pusher,
)
from egide.core.clock import FixedClock
from egide.core.errors import BadRequest
from egide.core.settings import Settings
from egide.db.engine import transaction
from egide.ledger.checkpoint import CheckpointVerifier
from egide.ledger.models import LedgerCheckpoint
from egide.ledger.sequencer import integrate
from egide.ledger.service import Act, Action, append
from egide.ledger.witness import CosignatureVerifier, format_add_checkpoint
from egide.ledger.witness_store import origin_directory
from tests.helpers import make_settings
from tests.serving import serve_app

EGIDE = Path(sys.executable).parent / "egide"
A_ORIGIN = "a.example/ledger"
B_ORIGIN = "b.example/ledger"
B_NAME = "b.example/witness"


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(dt.datetime(2026, 3, 2, 8, 15, tzinfo=dt.UTC))


def _settings(root: Path, name: str, **extra: object) -> Settings:
    return make_settings(
        root / name,
        None,  # the embedded SQLite database of that data directory
        ledger_origin=f"{name}.example/ledger",
        public_base_url=f"https://{name}.example",
        **extra,
    )


def _open(settings: Settings, clock: FixedClock) -> Services:
    initialise(settings)
    return open_services(settings, clock=clock)


@contextmanager
def _serve(services: Services) -> Iterator[str]:
    """uvicorn in a thread on a socket bound first (no port race); yields the base URL."""
    with serve_app(api_for(services)) as url:
        yield url


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _activity(services: Services, count: int) -> None:
    with transaction(services.session_factory) as session:
        for i in range(count):
            append(
                session,
                principal=OPERATOR,
                clock=services.records.clock,
                act=Act(Action.READ, resource_type="Patient", resource_id=f"p{i}"),
            )


def _egide(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """The real console script on an installation (no terminal, only its own settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EGIDE_")}
    env.update(
        EGIDE_DATA_DIR=str(settings.data_dir),
        EGIDE_MASTER_SECRET=settings.master_secret.get_secret_value()
        if settings.master_secret
        else "",
        EGIDE_KDF_MEMORY_KIB=str(settings.kdf_memory_kib),
        EGIDE_KDF_ITERATIONS=str(settings.kdf_iterations),
        EGIDE_LEDGER_ORIGIN=settings.ledger_origin,
        EGIDE_PUBLIC_BASE_URL=settings.public_base_url or "",
        EGIDE_WITNESS_URLS=json.dumps(settings.witness_urls),
        EGIDE_WITNESS_KEYS=json.dumps(settings.witness_keys),
    )
    return subprocess.run(
        [str(EGIDE), *args],
        env=env,
        cwd=settings.data_dir.parent,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def _tamper_and_resign(services: Services) -> None:
    """Rewrite one old entry, rebuild the tree and re-sign it with the log's own key: what an
    administrator holding the database and the keyring can do. The database alone then
    verifies; only a copy held elsewhere can tell."""
    with services.engine.begin() as conn:
        for name in conn.execute(
            text("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        ).scalars():
            conn.execute(text(f'DROP TRIGGER "{name}"'))
        seq = conn.execute(text("SELECT seq FROM ledger_leaf WHERE leaf_index = 1")).scalar_one()
        body = bytes(
            conn.execute(
                text("SELECT canonical FROM ledger_entry WHERE seq = :s"), {"s": seq}
            ).scalar_one()
        )
        forged = body.replace(b'"success"', b'"denied"', 1)
        assert forged != body
        conn.execute(
            text("UPDATE ledger_entry SET canonical = :c WHERE seq = :s"),
            {"c": forged, "s": seq},
        )
        tables = set(inspect(conn).get_table_names())
        for table in ("ledger_checkpoint", "ledger_tree_state", "ledger_leaf", "ledger_node"):
            if table in tables:
                conn.execute(text(f"DELETE FROM {table}"))
    with transaction(services.session_factory) as session:
        integrate(
            session,
            signer=services.signer,
            clock=services.records.clock,
            origin=services.settings.ledger_origin,
            force=True,
        )


def _latest_size(services: Services) -> int:
    with transaction(services.session_factory) as session:
        return int(
            session.scalar(select(LedgerCheckpoint.size).order_by(LedgerCheckpoint.size.desc()))
            or 0
        )


@pytest.mark.served
def test_b_witnesses_a_over_http_and_refuses_a_rewritten_history(
    tmp_path: Path, clock: FixedClock
) -> None:
    # A first, to learn its ledger key; then B, which witnesses A's origin with that key.
    a_plain = _open(_settings(tmp_path, "a"), clock)
    a_vkey = a_plain.signer.verifier_key()
    a_plain.close()
    b = _open(_settings(tmp_path, "b", witness_logs={A_ORIGIN: a_vkey}), clock)
    b_vkey = b.witness_signer.verifier_key()
    assert b_vkey.startswith(B_NAME + "+")
    b_dir = origin_directory(b.settings.effective_witness_dir, A_ORIGIN)
    try:
        with _serve(b) as b_url:
            a_settings = _settings(tmp_path, "a", witness_urls=[b_url], witness_keys=[b_vkey])
            a = open_services(a_settings, clock=clock)
            try:
                _story(a, b, b_url, b_dir, a_vkey, b_vkey)
            finally:
                a.close()
    finally:
        b.close()


def _story(a: Services, b: Services, b_url: str, b_dir: Path, a_vkey: str, b_vkey: str) -> None:
    a_key = CheckpointVerifier(a_vkey)
    b_key = CosignatureVerifier(b_vkey)
    pusher = witness_pusher(a)
    assert pusher is not None

    # 1. A appends, its server's background pass sequences, signs and pushes: B cosigns.
    _activity(a, 3)
    done = background_pass(a, pusher)
    assert done.checkpoint is not None
    assert done.size == 3
    stored = b_dir / "checkpoint-000000000003.txt"
    assert a_key.verify(stored.read_bytes()) == done.checkpoint
    cosigned = (
        origin_directory(a.settings.effective_witness_dir / "cosignatures", B_NAME)
        / "checkpoint-000000000003.txt"
    ).read_bytes()
    assert a_key.verify(cosigned) == done.checkpoint
    cosignature = cosigned.split(b"\n\n", 1)[1].decode().splitlines()[1]
    seen = b_key.verify_line(done.checkpoint, cosignature)
    assert seen.timestamp == int(a.records.clock.now().timestamp())

    # 2. More entries: A proves the new checkpoint extends size 3 (RFC 9162 consistency).
    _activity(a, 4)
    assert background_pass(a, pusher).size == 7
    assert sorted(p.name for p in b_dir.glob("checkpoint-*.txt")) == [
        "checkpoint-000000000003.txt",
        "checkpoint-000000000007.txt",
    ]

    # 3. The CLI: the witness's key, a push with nothing new, then a push after A forgot what
    # B holds (old 0 -> 409 with B's size -> retried from it).
    key = _egide(b.settings, "ledger", "witness-key")
    assert key.returncode == 0, key.stderr
    assert key.stdout == b_vkey + "\n"
    again = _egide(a.settings, "ledger", "witness-push")
    assert again.returncode == 0, again.stderr
    assert f"{b_url}: ok: already holds size 7" in again.stdout
    for state in a.settings.witness_state_dir.iterdir():
        state.unlink()
    relearnt = _egide(a.settings, "ledger", "witness-push")
    assert relearnt.returncode == 0, relearnt.stderr
    assert "cosigned size 7 by b.example/witness" in relearnt.stdout

    # 4. A's data verifies against B's copy.
    clean = _egide(a.settings, "ledger", "verify", "--witness", str(b_dir))
    assert clean.returncode == 0, clean.stderr
    assert "witnessed checkpoints 2" in clean.stdout

    # 5. History is rewritten and re-signed with A's key: the same size, another root.
    _tamper_and_resign(a)
    assert _latest_size(a) == 7
    (fork,) = push_to_witnesses(a, pusher, force=True)
    assert not fork.ok
    assert fork.message.startswith("FORK"), fork.message
    # ...and a longer forked tree, with a consistency proof from A's (rewritten) database.
    _activity(a, 2)
    assert background_pass(a, witness_pusher(a)).size == 9
    (unproven,) = push_to_witnesses(a, pusher, force=True)
    assert not unproven.ok
    assert "HTTP 422" in unproven.message, unproven.message
    # B keeps what it cosigned, and kept the refused checkpoints as evidence.
    assert max(p.name for p in b_dir.glob("checkpoint-*.txt")) == "checkpoint-000000000007.txt"
    assert len(list((b_dir / "evidence").iterdir())) == 2

    # 6. The verifier, given B's copy, reports the rewrite on A's data.
    caught = _egide(a.settings, "ledger", "verify", "--witness", str(b_dir))
    assert caught.returncode == 1, (caught.stdout, caught.stderr)
    # Today: "witness checkpoint at size 7 differs from the database's: history was rewritten",
    # then the tree of size 3 (B's first copy) no longer matching either.
    assert "egide: fault: witness checkpoint at size 7" in caught.stderr, caught.stderr
    assert "rewritten" in caught.stderr


def test_a_down_witness_does_not_stop_the_sequencer(tmp_path: Path, clock: FixedClock) -> None:
    down = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    _open(_settings(tmp_path, "a"), clock).close()
    b = _open(_settings(tmp_path, "b"), clock)
    b_vkey = b.witness_signer.verifier_key()
    b.close()
    settings = _settings(
        tmp_path,
        "a",
        witness_urls=[down],
        witness_keys=[b_vkey],
        checkpoint_interval_seconds=0.05,
        witness_timeout_seconds=1,
    )
    a = open_services(settings, clock=clock)
    try:
        _activity(a, 2)
        done = background_pass(a, witness_pusher(a))  # logs a warning, raises nothing
        assert done.size == 2
        assert done.checkpoint is not None
        (state,) = settings.witness_state_dir.iterdir()
        recorded = json.loads(state.read_text())
        assert recorded["failures"] == 1
        assert "cannot reach the witness" in recorded["last_error"]
        # The served application's own loop keeps sequencing while the witness is down.
        with TestClient(api_for(a)) as client:
            _activity(a, 3)
            deadline = time.monotonic() + 30
            while _latest_size(a) < 5:
                assert time.monotonic() < deadline, "the background pass stopped"
                time.sleep(0.05)
            assert client.get("/api/health").status_code == 200
        failed = _egide(settings, "ledger", "witness-push")
        assert failed.returncode == 1
        assert failed.stderr.count("\n") == 1
        assert "cannot reach the witness" in failed.stderr
    finally:
        a.close()


# --------------------------------------------------------------------------- the HTTP surface


@pytest.fixture
def witness_client(tmp_path: Path, clock: FixedClock) -> Iterator[tuple[TestClient, Services]]:
    a = _open(_settings(tmp_path, "a"), clock)
    b = _open(
        _settings(
            tmp_path,
            "b",
            witness_logs={A_ORIGIN: [a.signer.verifier_key()]},
            witness_rate_per_minute=8,
        ),
        clock,
    )
    try:
        with TestClient(api_for(b)) as client:
            yield client, a
    finally:
        a.close()
        b.close()


def _signed(a: Services, size: int) -> bytes:
    _activity(a, size - _latest_size(a))
    done = background_pass(a)
    assert done.note is not None
    return done.note


def test_the_witness_endpoints_answer_as_the_protocol_says(
    witness_client: tuple[TestClient, Services],
) -> None:
    client, a = witness_client
    key = client.get("/api/witness/public-key")
    assert key.status_code == 200
    assert key.text.startswith(B_NAME + "+")
    CosignatureVerifier(key.text.strip())
    url = "/api/witness/add-checkpoint"

    note3 = _signed(a, 3)
    ok = client.post(url, content=format_add_checkpoint(0, [], note3))
    assert ok.status_code == 200, ok.text
    assert ok.headers["content-type"].startswith("text/plain")
    assert ok.text.startswith("— b.example/witness ")

    stale = client.post(url, content=format_add_checkpoint(0, [], note3))
    assert stale.status_code == 409
    assert stale.headers["content-type"] == "text/x.tlog.size"
    assert stale.text == "3\n"

    def outcome(response_status: int, body: bytes) -> str:
        response = client.post(url, content=body)
        assert response.status_code == response_status, response.text
        assert response.headers["content-type"].startswith("application/fhir+json")
        doc = response.json()
        assert doc["resourceType"] == "OperationOutcome"
        return str(doc["issue"][0]["diagnostics"])

    assert "malformed" in outcome(400, b"old 3\nnot base64\n\n" + note3)
    assert "larger than" in outcome(413, b"old 3\n\n" + b"x" * 30_000)
    unknown = note3.replace(b"a.example/ledger\n", b"z.example/ledger\n", 1)
    assert "does not witness" in outcome(404, format_add_checkpoint(0, [], unknown))
    forged = note3.replace(b"\n3\n", b"\n4\n", 1)
    assert "not signed by a key trusted" in outcome(403, format_add_checkpoint(3, [], forged))
    note5 = _signed(a, 5)
    assert "larger than the checkpoint" in outcome(400, format_add_checkpoint(9, [], note5))
    bad_proof = format_add_checkpoint(3, [b"\x00" * 32] * 2, note5)
    assert "not proven consistent" in outcome(422, bad_proof)

    # Eight requests a minute from one address (the fixture's setting): the ninth waits.
    throttled = client.post(url, content=b"old 0\n\nx")
    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == "60"
    assert throttled.json()["issue"][0]["code"] == "throttled"


def test_witness_urls_without_their_keys_are_refused_at_start(
    tmp_path: Path, clock: FixedClock
) -> None:
    a = _open(_settings(tmp_path, "a", witness_urls=["https://b.example"]), clock)
    try:
        with pytest.raises(BadRequest, match="witness_keys is empty"):
            api_for(a)
    finally:
        a.close()

"""The real `egide` console script, run as a subprocess, on SQLite and PostgreSQL.

Each test gets its own installation: `EGIDE_DATA_DIR` under tmp_path, a cheap KDF, and for the
PostgreSQL variant an empty database of its own (`egide init` must migrate it). What the
commands leave behind is then used in-process through the real API (`egide.app.api_for` over
`open_services` with the same settings), so a token printed by the CLI is proven to work.

The subprocesses get no terminal (stdin from /dev/null, pipes for stdout and stderr) and no
COLUMNS: the way the command runs under cron, systemd, `docker run` without -t, or CI.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect, text

from egide.app import api_for
from egide.cli.runtime import open_services
from egide.core.settings import Settings, load_settings
from egide.crypto.errors import KeyringError
from egide.crypto.keyring import FileKeyProvider
from egide.db.engine import make_engine
from tests.integration.fhir_support import create, headers, patient

EGIDE = Path(sys.executable).parent / "egide"
TOKEN_RE = re.compile(r"^egide_[A-Za-z0-9_-]{43}$")
ANY_TOKEN_RE = re.compile(r"egide_[A-Za-z0-9_-]{43}")
PG_URL = os.environ.get("EGIDE_TEST_POSTGRES_URL")


@dataclass
class Installation:
    backend: str
    root: Path
    data_dir: Path
    database_url: str | None  # None: the embedded SQLite database

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("EGIDE_") and k not in ("COLUMNS", "LINES")
        }
        env.update(
            EGIDE_DATA_DIR=str(self.data_dir), EGIDE_KDF_MEMORY_KIB="64", EGIDE_KDF_ITERATIONS="1"
        )
        if self.database_url:
            env["EGIDE_DATABASE_URL"] = self.database_url
        env.update(extra)
        return env

    def run(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        assert EGIDE.is_file(), f"the console script is not installed at {EGIDE}"
        return subprocess.run(
            [str(EGIDE), *args],
            env=self.env(**extra_env),
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )

    def ok(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        result = self.run(*args, **extra_env)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        return result

    def settings(self) -> Settings:
        return load_settings(self.env())

    def master_secret(self) -> bytes:
        return (self.data_dir / "master.key").read_bytes().strip()

    def engine_url(self) -> str:
        return self.settings().effective_database_url


@contextmanager
def api(installation: Installation) -> Iterator[TestClient]:
    """The real API over the installation the CLI made, in this process."""
    services = open_services(installation.settings())
    try:
        with TestClient(api_for(services), base_url="http://testserver") as client:
            yield client
    finally:
        services.close()


def _pg(name: str) -> str:
    assert PG_URL is not None
    return PG_URL.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgresql"])
def installation(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Installation]:
    root = tmp_path
    data_dir = tmp_path / "egide-data"
    if request.param == "sqlite":
        yield Installation("sqlite", root, data_dir, None)
        return
    if not PG_URL:
        pytest.skip("no EGIDE_TEST_POSTGRES_URL")
    name = f"egide_cli_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(
        _pg("postgres").replace("postgresql://", "postgresql+psycopg://"),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield Installation("postgresql", root, data_dir, _pg(name))
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def sqlite_installation(tmp_path: Path) -> Installation:
    return Installation("sqlite", tmp_path, tmp_path / "egide-data", None)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _flat(text_: str) -> str:
    """Output with its whitespace (including line wrapping) collapsed to single spaces."""
    return " ".join(text_.split())


def _assert_clean_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode != 0, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("egide: error: "), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    message = _flat(result.stderr)
    for needle in needles:
        assert needle in message, (needle, result.stderr)
    return message


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


# -- init --------------------------------------------------------------------------------------


def test_init_creates_a_private_installation_and_a_second_init_is_harmless(
    installation: Installation,
) -> None:
    first = installation.ok("init")
    assert first.stdout == ""
    assert "initialised" in first.stderr
    data = installation.data_dir
    assert data.is_dir()
    assert _mode(data) & 0o077 == 0, oct(_mode(data))
    keyring, master = data / "keyring.json", data / "master.key"
    assert _mode(keyring) == 0o600
    assert _mode(master) == 0o600
    assert len(installation.master_secret()) >= 32
    sqlite_file = data / "egide.db"
    assert sqlite_file.is_file() == (installation.backend == "sqlite")
    assert {
        "records_resource",
        "records_version",
        "crypto_data_key",
        "ledger_entry",
        "identity_api_token",
    } <= _tables(installation.engine_url())

    token = installation.ok("token", "create", "--role", "service", "--name", "before").stdout
    with api(installation) as client:
        pid = create(client, token.strip(), patient(family="Avant-Réinit"))["id"]
    before = keyring.read_bytes(), master.read_bytes()

    second = installation.ok("init")
    assert "already initialised" in second.stderr
    assert (keyring.read_bytes(), master.read_bytes()) == before
    assert _mode(keyring) == 0o600
    with api(installation) as client:
        read = client.get(f"/fhir/Patient/{pid}", headers=headers(token.strip()))
    assert read.status_code == 200
    assert read.json()["name"][0]["family"] == "Avant-Réinit"


# -- token create ------------------------------------------------------------------------------


def test_token_create_prints_only_the_token_and_it_works(installation: Installation) -> None:
    installation.ok("init")
    result = installation.ok("token", "create", "--role", "service", "--name", "x")
    lines = result.stdout.split("\n")
    assert lines[-1] == "", "stdout must end with a newline"
    assert len(lines) == 2, result.stdout
    token = lines[0]
    assert TOKEN_RE.fullmatch(token), token
    other = installation.ok("token", "create", "--role", "service", "--name", "x").stdout.strip()
    assert other != token

    with api(installation) as client:
        refused = client.get("/fhir/Patient", headers=headers("egide_" + "A" * 43))
        assert refused.status_code == 401
        pid = create(client, token, patient(family="Jetonnière"))["id"]
        found = client.get("/fhir/Patient?family=jetonniere", headers=headers(token))
        assert found.status_code == 200
        assert [e["resource"]["id"] for e in found.json()["entry"]] == [pid]


def test_token_create_with_an_unknown_role_fails_cleanly(installation: Installation) -> None:
    installation.ok("init")
    result = installation.run("token", "create", "--role", "nonsense", "--name", "x")
    _assert_clean_error(result, "unknown role 'nonsense'", "service")


# -- failures before init and with a wrong secret ----------------------------------------------

BEFORE_INIT = [
    ("token", "create", "--role", "service", "--name", "x"),
    ("keys", "status"),
    ("keys", "rotate"),
    ("serve", "--port", "8765"),
]


@pytest.mark.parametrize("args", BEFORE_INIT, ids=lambda a: " ".join(a[:2]))
def test_commands_before_init_fail_cleanly(
    sqlite_installation: Installation, args: tuple[str, ...]
) -> None:
    result = sqlite_installation.run(*args)
    _assert_clean_error(result, "egide init")
    assert result.returncode == 1
    assert not (sqlite_installation.data_dir / "keyring.json").exists()


@pytest.mark.parametrize(
    "args",
    [
        ("token", "create", "--role", "service", "--name", "x"),
        ("keys", "status"),
        ("keys", "rotate"),
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_a_wrong_master_secret_fails_cleanly(
    installation: Installation, args: tuple[str, ...]
) -> None:
    installation.ok("init")
    keyring = (installation.data_dir / "keyring.json").read_bytes()
    result = installation.run(*args, EGIDE_MASTER_SECRET="not the secret of this keyring")
    _assert_clean_error(result, "wrong master secret")
    assert result.returncode == 1
    assert (installation.data_dir / "keyring.json").read_bytes() == keyring


def _error_case(installation: Installation, case: str) -> subprocess.CompletedProcess[str]:
    if case == "before init":
        return installation.run("token", "create", "--role", "service", "--name", "x")
    installation.ok("init")
    if case == "unknown role":
        return installation.run("token", "create", "--role", "nonsense", "--name", "x")
    return installation.run("keys", "status", EGIDE_MASTER_SECRET="wrong")


@pytest.mark.parametrize("case", ["before init", "unknown role", "wrong secret"])
def test_an_error_is_exactly_one_line(sqlite_installation: Installation, case: str) -> None:
    """Regression: a rich Console without soft_wrap wrapped messages longer than 80 columns
    (every message below is) when stderr is not a terminal."""
    result = _error_case(sqlite_installation, case)
    _assert_clean_error(result)
    assert len(result.stderr.splitlines()) == 1, result.stderr


# -- keys rotate -------------------------------------------------------------------------------


def _status(installation: Installation) -> dict[str, tuple[str, int]]:
    out = installation.ok("keys", "status").stdout
    rows: dict[str, tuple[str, int]] = {}
    for line in out.splitlines():
        if not line.strip():
            continue
        match = re.fullmatch(
            r"(kek-[0-9a-f]+)\s+(current|active|retired)\s+data keys: (\d+)", line.strip()
        )
        assert match, line
        rows[match[1]] = (match[2], int(match[3]))
    return rows


def _data_keys(installation: Installation) -> list[tuple[str, str | None]]:
    engine = make_engine(installation.engine_url())
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT owner, kek_id FROM crypto_data_key WHERE wrapped IS NOT NULL")
            ).all()
        return [(r[0], r[1]) for r in rows]
    finally:
        engine.dispose()


def test_keys_rotate_rewraps_every_data_key_and_destroys_the_old_kek(
    installation: Installation,
) -> None:
    installation.ok("init")
    token = installation.ok("token", "create", "--role", "service", "--name", "x").stdout.strip()
    with api(installation) as client:
        pids = [create(client, token, patient(family=f"Rotation{i}"))["id"] for i in range(3)]
        obs = create(
            client,
            token,
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "avant rotation"},
                "subject": {"reference": f"Patient/{pids[0]}"},
                "valueString": "lisible après rotation",
            },
        )
        create(client, token, {"resourceType": "Organization", "name": "Clinique des Clés"})

    before = FileKeyProvider.open(
        installation.data_dir / "keyring.json", installation.master_secret()
    )
    old = before.current_kek_id()
    old_material = before._state.keks[0].material
    assert old_material is not None
    keys_before = _data_keys(installation)
    assert len(keys_before) >= 4  # three patients and the organisation key
    assert {kek for _, kek in keys_before} == {old}
    assert _status(installation) == {old: ("current", len(keys_before))}

    rotated = installation.ok("keys", "rotate")
    message = _flat(rotated.stderr)
    match = re.search(
        r"new key-encryption key (kek-[0-9a-f]+); (\d+) data keys re-wrapped; "
        r"retired (kek-[0-9a-f]+)",
        message,
    )
    assert match, rotated.stderr
    new = match[1]
    assert new != old
    assert int(match[2]) == len(keys_before)
    assert match[3] == old

    assert _status(installation) == {old: ("retired", 0), new: ("current", len(keys_before))}
    keys_after = _data_keys(installation)
    assert sorted(o for o, _ in keys_after) == sorted(o for o, _ in keys_before)
    assert {kek for _, kek in keys_after} == {new}

    after = FileKeyProvider.open(
        installation.data_dir / "keyring.json", installation.master_secret()
    )
    assert after.active_kek_ids() == [new]
    assert after.current_kek_id() == new
    assert [k.retired is not None for k in after.list_keks()] == [True, False]
    assert all(k.material != old_material for k in after._state.keks)
    with pytest.raises(KeyringError, match="retired"):
        after.unwrap(old, b"\x00" * 60, b"aad")

    with api(installation) as client:
        for i, pid in enumerate(pids):
            read = client.get(f"/fhir/Patient/{pid}", headers=headers(token))
            assert read.status_code == 200, read.text
            assert read.json()["name"][0]["family"] == f"Rotation{i}"
        observation = client.get(f"/fhir/Observation/{obs['id']}", headers=headers(token))
        assert observation.json()["valueString"] == "lisible après rotation"
        found = client.get("/fhir/Patient?family=rotation1", headers=headers(token)).json()
        assert [e["resource"]["id"] for e in found["entry"]] == [pids[1]]
        newcomer = create(client, token, patient(family="Après"))["id"]
    keys_final = dict(_data_keys(installation))
    assert keys_final[newcomer] == new


# -- demo --------------------------------------------------------------------------------------


def _demo_facts(stdout: str) -> dict[str, Any]:
    flat = _flat(stdout)
    base = re.search(r"FHIR base URL (\S+)", flat)
    assert base, stdout
    service = re.search(r"Service token \(system read/write of clinical data\): (\S+)", flat)
    person = re.search(r"Patient token \(patient ([0-9a-f-]{36}), own record only\): (\S+)", flat)
    assert service, stdout
    assert person, stdout
    assert TOKEN_RE.fullmatch(service[1])
    assert TOKEN_RE.fullmatch(person[2])
    return {
        "base": base[1],
        "service": service[1],
        "patient_id": person[1],
        "patient_token": person[2],
    }


def test_demo_seeds_once_and_its_service_token_reads_the_clinic(installation: Installation) -> None:
    first = installation.ok("demo", "--no-serve", "--patients", "5")
    facts = _demo_facts(first.stdout)
    assert facts["base"] == "http://127.0.0.1:8000/fhir"
    assert re.search(r"— 5 patients, \d+ staff, \d+ FHIR resources", _flat(first.stdout))
    assert (installation.data_dir / "keyring.json").is_file()

    second = installation.ok("demo", "--no-serve", "--patients", "5")
    assert "already seeded (5 patients)" in _flat(second.stdout)
    again = _demo_facts(second.stdout)
    assert again["service"] != facts["service"]
    assert again["patient_id"] == facts["patient_id"]

    with api(installation) as client:
        bundle = client.get("/fhir/Patient?_count=50", headers=headers(facts["service"]))
        assert bundle.status_code == 200, bundle.text
        assert bundle.json()["total"] == 5
        ids = [e["resource"]["id"] for e in bundle.json()["entry"]]
        assert facts["patient_id"] in ids
        other = next(i for i in ids if i != facts["patient_id"])
        read = client.get(f"/fhir/Patient/{other}", headers=headers(facts["service"]))
        assert read.status_code == 200
        assert read.json()["resourceType"] == "Patient"
        assert read.json()["name"][0]["family"]
        # The patient token reaches its own record only (404, not 403, for the others).
        own = client.get(
            f"/fhir/Patient/{facts['patient_id']}", headers=headers(facts["patient_token"])
        )
        assert own.status_code == 200
        foreign = client.get(f"/fhir/Patient/{other}", headers=headers(facts["patient_token"]))
        assert foreign.status_code == 404


def test_demo_curl_examples_are_whole_lines(sqlite_installation: Installation) -> None:
    """Regression: wrapped at 80 columns on a non-terminal stdout, the printed commands broke
    inside the quoted header and could not be pasted."""
    out = sqlite_installation.ok("demo", "--no-serve", "--patients", "5").stdout
    curls = [line.strip() for line in out.splitlines() if line.strip().startswith("curl ")]
    assert len(curls) == 2, out
    for line in curls:
        assert re.fullmatch(
            r'curl -H "Authorization: Bearer egide_[A-Za-z0-9_-]{43}" '
            r'"http://127\.0\.0\.1:8000/fhir/\S+"',
            line,
        ), line


def test_demo_prints_a_staff_sign_in_that_works_once_then_asks_for_totp(
    sqlite_installation: Installation,
) -> None:
    out = _flat(sqlite_installation.ok("demo", "--no-serve", "--patients", "5").stdout)
    found = re.search(r"email (\S+@\S+) password (\S+)", out)
    assert found, out
    email, password = found[1], found[2]
    services = open_services(sqlite_installation.settings())
    try:
        with TestClient(api_for(services), base_url="https://testserver") as client:
            page = client.get("/login")
            token = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert token, page.text
            answer = client.post(
                "/login",
                data={"email": email, "password": password, "csrf": token[1]},
                follow_redirects=False,
            )
            # Staff must enrol a second factor before any session is issued.
            assert answer.status_code == 303, answer.text
            assert answer.headers["location"] == "/login/enrol"
            wrong = client.post(
                "/login",
                data={"email": email, "password": password + "x", "csrf": token[1]},
                follow_redirects=False,
            )
            assert wrong.status_code == 401
    finally:
        services.close()
    again = _flat(sqlite_installation.ok("demo", "--no-serve", "--patients", "5").stdout)
    assert f"{email} (password printed when it was created)" in again

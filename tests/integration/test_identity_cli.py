"""`egide user ...` on SQLite and PostgreSQL: invite, list, disable, enable, unlock, reset-mfa.

The commands run in-process through typer's CliRunner with the installation's settings in the
environment; one test also runs the real console script as a subprocess. What they leave
behind is checked through the identity services over the same database.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from egide.cli.main import app
from egide.cli.runtime import OPERATOR, Services
from egide.core.settings import Settings
from egide.db.engine import transaction
from egide.identity import accounts, sessions
from egide.identity.models import AddressThrottle
from tests.integration.identity_support import (
    STAFF_PASSWORD,
    Person,
    accept,
    actions,
    enrol,
    password_step,
)

LINK = re.compile(r"^http://127\.0\.0\.1:8000/invite/([A-Za-z0-9_-]{43})$", re.MULTILINE)


def _env(settings: Settings) -> dict[str, str]:
    env = {
        "EGIDE_DATA_DIR": str(settings.data_dir),
        "EGIDE_MASTER_SECRET": "test master secret, not for production",
        "EGIDE_KDF_MEMORY_KIB": "64",
        "EGIDE_KDF_ITERATIONS": "1",
        "EGIDE_ARGON2_MEMORY_KIB": "64",
        "EGIDE_ARGON2_ITERATIONS": "1",
    }
    if settings.database_url:
        env["EGIDE_DATABASE_URL"] = settings.database_url
    return env


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(services: Services, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Run:
    del services  # initialised the installation
    for key in list(os.environ):
        if key.startswith("EGIDE_") and key != "EGIDE_TEST_POSTGRES_URL":
            monkeypatch.delenv(key)
    monkeypatch.chdir(settings.data_dir.parent)
    runner = CliRunner()

    def invoke(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(app, list(args), env=_env(settings))
        return result.exit_code, result.stdout, result.stderr

    return invoke


def test_user_create_prints_the_invitation_link(services: Services, run: Run) -> None:
    code, out, err = run(
        "user", "create", "--role", "nurse", "--email", "Nina@Clinic.example", "--name", "Nina Ross"
    )
    assert code == 0, err
    found = LINK.search(out)
    assert found is not None, out
    assert "expires" in err
    assert "nina@clinic.example" in err
    token = found.group(1)
    with transaction(services.session_factory) as session:
        view = accounts.invitation_account(session, token=token, clock=services.records.clock)
    assert view.role == "nurse"
    accept(services, token, STAFF_PASSWORD)
    assert actions(services, "account_create")[-1]["user"] == OPERATOR.id


def test_user_create_of_a_patient_needs_the_patient(services: Services, run: Run) -> None:
    code, _, err = run(
        "user", "create", "--role", "patient", "--email", "p@x.example", "--name", "P"
    )
    assert code != 0
    assert err.count("\n") == 1  # one line
    assert "must name its patient" in err
    assert "Traceback" not in err
    code, _, err = run(
        "user", "create", "--role", "patient", "--email", "p@x.example", "--name", "P Q",
        "--patient", "pat-42",
    )  # fmt: skip
    assert code == 0, err
    code, _, err = run("user", "create", "--role", "nurse", "--email", "p@x.example", "--name", "Z")
    assert code != 0
    assert "already exists" in err


def test_user_list_disable_enable_unlock_reset_mfa(services: Services, run: Run) -> None:
    code, out, _ = run(
        "user", "create", "--role", "physician", "--email", "omar@clinic.example", "--name",
        "Omar Sy", "--practitioner", "prac-7",
    )  # fmt: skip
    assert code == 0
    found = LINK.search(out)
    assert found is not None
    view = accept(services, found.group(1), STAFF_PASSWORD)
    person = Person(view.id, view.email, STAFF_PASSWORD)
    enrol(services, person)

    code, out, _ = run("user", "list")
    assert code == 0
    assert "omar@clinic.example" in out
    assert "Practitioner/prac-7" in out
    assert "active" in out

    assert run("user", "disable", "omar@clinic.example")[0] == 0
    assert password_step(services, person.email, STAFF_PASSWORD).outcome == "refused"
    assert run("user", "disable", "omar@clinic.example")[0] != 0  # already disabled
    assert run("user", "enable", "omar@clinic.example")[0] == 0
    assert password_step(services, person.email, STAFF_PASSWORD).outcome == "mfa_required"

    for n in range(5):
        password_step(services, person.email, f"wrong {n}")
    assert password_step(services, person.email, STAFF_PASSWORD).retry_after is not None
    assert run("user", "unlock", "omar@clinic.example")[0] == 0
    assert password_step(services, person.email, STAFF_PASSWORD).outcome == "mfa_required"

    assert run("user", "reset-mfa", "omar@clinic.example")[0] == 0
    assert password_step(services, person.email, STAFF_PASSWORD).outcome == "enrolment_required"
    code, _, err = run("user", "disable", "nobody@clinic.example")
    assert code != 0
    assert "no account" in err
    for action in ("account_disable", "account_enable", "account_unlock", "mfa_reset"):
        assert actions(services, action)[-1]["user"] == OPERATOR.id


def test_console_script_user_create(services: Services, settings: Settings) -> None:
    """The installed `egide` script, without a terminal, prints the link alone on stdout."""
    egide = Path(sys.executable).parent / "egide"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EGIDE_")}
    env.update(_env(settings))
    result = subprocess.run(
        [str(egide), "user", "create", "--role", "secretary", "--email", "sue@clinic.example",
         "--name", "Sue Park"],
        env=env,
        cwd=settings.data_dir.parent,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert LINK.fullmatch(result.stdout.strip()), result.stdout
    with transaction(services.session_factory) as session:
        assert accounts.find_account(session, email="sue@clinic.example") is not None


def test_v7_4_5_user_revoke_sessions_ends_every_session(services: Services, run: Run) -> None:
    code, out, _ = run(
        "user", "create", "--role", "patient", "--email", "rita@mail.example", "--name",
        "Rita Blum", "--patient", "pat-5",
    )  # fmt: skip
    assert code == 0
    found = LINK.search(out)
    assert found is not None
    accept(services, found.group(1), "orchid valley thunder piano")
    tokens = [
        password_step(services, "rita@mail.example", "orchid valley thunder piano").session_token
        for _ in range(2)
    ]
    code, _, err = run("user", "revoke-sessions", "rita@mail.example")
    assert code == 0, err
    assert "2 sessions" in err
    with transaction(services.session_factory) as session:
        for token in tokens:
            assert token is not None
            assert (
                sessions.validate_session(
                    session, token=token, clock=services.records.clock, settings=services.settings
                )
                is None
            )
    entry = actions(services, "session_revoke")[-1]
    assert entry["user"] == OPERATOR.id
    assert entry["reasons"] == ["revoked by an administrator", "2 sessions revoked"]


def test_user_purge_deletes_expired_sign_in_rows(services: Services, run: Run) -> None:
    """The CLI runs on the real clock: a window that started in 2000 has ended, one that
    starts in 2999 has not."""
    with transaction(services.session_factory) as session:
        for ip, year in (("203.0.113.1", 2000), ("203.0.113.2", 2999)):
            start = dt.datetime(year, 1, 1, tzinfo=dt.UTC)
            session.add(AddressThrottle(ip=ip, window_start=start, failures=3))
    code, _, err = run("user", "purge")
    assert code == 0, err
    assert "purged 1 address throttle windows and 0 pending sign-ins" in err
    with transaction(services.session_factory) as session:
        left = session.scalars(select(AddressThrottle.ip)).all()
    assert left == ["203.0.113.2"]

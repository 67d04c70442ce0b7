"""Shared fixtures: real databases (SQLite and PostgreSQL), real services, real HTTP.

The storage suite is parametrised over both databases: every test that asks for `services`
(or anything built on it) runs once on SQLite and once on PostgreSQL. PostgreSQL comes from
`EGIDE_TEST_POSTGRES_URL` (set by `make test`, which starts a throwaway cluster); each test
gets a fresh database cloned from a migrated template, so tests never see each other's rows.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from egide.app import api_for
from egide.cli.runtime import Services, initialise, open_services
from egide.core.clock import FixedClock
from egide.core.settings import Settings
from egide.db.engine import make_engine
from egide.db.migrate import upgrade
from tests.helpers import Database, issue_token, make_settings

PG_URL = os.environ.get("EGIDE_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", "postgresql"]
_counter = itertools.count()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    del config
    if PG_URL:
        return
    if os.environ.get("CI"):
        msg = "EGIDE_TEST_POSTGRES_URL is not set: CI must run the PostgreSQL suite"
        raise pytest.UsageError(msg)
    skip = pytest.mark.skip(reason="no EGIDE_TEST_POSTGRES_URL (run `make test`)")
    for item in items:
        if "[postgresql" in item.nodeid:
            item.add_marker(skip)


def _pg_admin_url() -> str:
    assert PG_URL is not None
    return PG_URL.rsplit("/", 1)[0] + "/postgres"


def _pg_url(name: str) -> str:
    assert PG_URL is not None
    return PG_URL.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "egide.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    if not PG_URL:
        pytest.skip("no PostgreSQL")
    name = f"egide_tpl_{os.getpid()}"
    admin = create_engine(
        _pg_admin_url().replace("postgresql://", "postgresql+psycopg://"),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(_pg_url(name))
    upgrade(engine)
    engine.dispose()
    yield name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    backend: str = request.param
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "egide.db"
        shutil.copyfile(template, path)
        yield Database("sqlite", f"sqlite:///{path}", path)
        return
    template_name: str = request.getfixturevalue("pg_template")
    name = f"egide_t_{os.getpid()}_{next(_counter)}"
    admin = create_engine(
        _pg_admin_url().replace("postgresql://", "postgresql+psycopg://"),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"'))
    try:
        yield Database("postgresql", _pg_url(name), None)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(dt.datetime(2026, 3, 2, 8, 15, tzinfo=dt.UTC))


@pytest.fixture
def settings(tmp_path: Path, database: Database) -> Settings:
    return make_settings(tmp_path / "data", database.url)


@pytest.fixture
def services(settings: Settings, clock: FixedClock) -> Iterator[Services]:
    initialise(settings)
    opened = open_services(settings, clock=clock)
    yield opened
    opened.close()


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(api_for(services), base_url="http://testserver") as test_client:
        yield test_client


@pytest.fixture
def service_token(services: Services) -> str:
    return issue_token(services, "service")


@pytest.fixture
def auth(service_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {service_token}"}

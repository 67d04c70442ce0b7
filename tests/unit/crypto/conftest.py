"""Fixtures for the crypto room's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from crypto_support import new_database, new_keyring
from sqlalchemy.orm import Session, sessionmaker

from egide.crypto.keyring import FileKeyProvider


@pytest.fixture
def provider(tmp_path: Path) -> FileKeyProvider:
    return new_keyring(tmp_path / "keyring.json")


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    made = new_database(tmp_path / "egide.db")
    yield made
    bind = made.kw["bind"]
    bind.dispose()

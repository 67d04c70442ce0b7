"""Helpers shared by the crypto room's tests: cheap keyrings and a real SQLite database."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from egide.crypto.keyring import FileKeyProvider
from egide.crypto.models import DataKey
from egide.db.base import Base
from egide.db.engine import make_engine, make_session_factory

MASTER = b"correct horse battery staple"
# Cheap Argon2id parameters: the KDF cost is not what these tests are about.
CHEAP = {"kdf_memory_kib": 8, "kdf_iterations": 1}


def new_keyring(path: Path, master: bytes = MASTER) -> FileKeyProvider:
    return FileKeyProvider.create(path, master, **CHEAP)


def new_database(path: Path) -> sessionmaker[Session]:
    engine = make_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine, tables=[DataKey.__table__])
    return make_session_factory(engine)

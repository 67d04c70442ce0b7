"""Test helpers shared by the suites (kept out of conftest so tests can import them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from egide.cli.runtime import Services
from egide.core.settings import Settings
from egide.db.engine import transaction
from egide.identity.tokens import create_token


@dataclass
class Database:
    backend: str
    url: str
    path: Path | None  # the SQLite file, for the at-rest scan


def make_settings(data_dir: Path, database_url: str | None = None, **extra: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "master_secret": "test master secret, not for production",
        # Cheap KDF for tests; production uses the Settings defaults (Argon2id, 64 MiB).
        "kdf_memory_kib": 64,
        "kdf_iterations": 1,
        # Cheap password hashing likewise (production: OWASP's m=19 MiB, t=2).
        "argon2_memory_kib": 64,
        "argon2_iterations": 1,
    }
    values.update(extra)
    return Settings.model_validate(values)


def issue_token(services: Services, role: str, *, patient_id: str | None = None) -> str:
    with transaction(services.session_factory) as session:
        return create_token(
            session,
            role=role,
            name=f"test {role}",
            clock=services.records.clock,
            patient_id=patient_id,
        ).token

"""Test helpers shared by the suites (kept out of conftest so tests can import them)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from egide.cli.runtime import Services
from egide.core.settings import Settings
from egide.db.engine import transaction
from egide.identity.tokens import create_token
from egide.records.repository import system_repository


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
        # Live detection reads the ledger in the background and appends its own entries:
        # off unless a test is about it (tests/integration/test_detect_live*.py), so other
        # tests see only the entries their own acts wrote.
        "detect_live": False,
    }
    values.update(extra)
    return Settings.model_validate(values)


def issue_token(
    services: Services,
    role: str,
    *,
    patient_id: str | None = None,
    practitioner_id: str | None = None,
) -> str:
    with transaction(services.session_factory) as session:
        return create_token(
            session,
            role=role,
            name=f"test {role}",
            clock=services.records.clock,
            patient_id=patient_id,
            practitioner_id=practitioner_id,
        ).token


def treating_token(services: Services, *patient_ids: str, role: str = "physician") -> str:
    """A clinician's token with a care relationship to each of `patient_ids`: a Practitioner
    and, per patient, an in-progress Encounter naming them, written by a system job the way
    an admission system would (access follows the clinical data, issue 5)."""
    now = services.records.clock.now()
    with transaction(services.session_factory) as session:
        repo = system_repository(session, services.records, job="test-admission")
        practitioner = repo.create(
            {"resourceType": "Practitioner", "name": [{"family": "Soignant"}]}
        ).id
        for patient_id in patient_ids:
            repo.create(
                {
                    "resourceType": "Encounter",
                    "status": "in-progress",
                    "class": {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                        "code": "IMP",
                    },
                    "subject": {"reference": f"Patient/{patient_id}"},
                    "participant": [{"individual": {"reference": f"Practitioner/{practitioner}"}}],
                    "period": {"start": (now - dt.timedelta(hours=1)).isoformat()},
                }
            )
    return issue_token(services, role, practitioner_id=practitioner)

"""Seeding the demonstration clinic into an installation, through the records repository.

Every resource goes through the same path as an API write — validation, sealing under its
patient's key, blind indexes, ledger entry — under the named system job `demo-seed`, so the
demo's database is exactly what real use would produce. Seeding is idempotent: an installation
that already holds patients is left as it is.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from rich.progress import Progress
from sqlalchemy import select

from egide.cli.demo.generator import generate_clinic
from egide.cli.runtime import Services
from egide.db.engine import transaction
from egide.records.models import ResourceHead
from egide.records.repository import system_repository

BATCH = 250  # resources per transaction: small enough to keep locks short, big enough to be fast


@dataclass(frozen=True)
class SeedSummary:
    created: int
    patients: int
    staff: int
    first_patient: str
    already_seeded: bool
    physicians: tuple[str, ...] = ()  # Practitioner ids of the seeded physicians

    def describe(self) -> str:
        if self.already_seeded:
            return f"already seeded ({self.patients} patients)"
        return f"{self.patients} patients, {self.staff} staff, {self.created} FHIR resources"


def seed_demo(
    services: Services,
    *,
    patients: int = 500,
    staff: int = 30,
    seed: int = 2026,
    progress: Callable[[], Progress] | None = None,
    today: dt.date | None = None,
) -> SeedSummary:
    with transaction(services.session_factory) as session:
        existing = session.scalars(
            select(ResourceHead.id)
            .where(ResourceHead.resource_type == "Patient", ResourceHead.deleted.is_(False))
            .order_by(ResourceHead.last_updated, ResourceHead.id)
        ).all()
    if existing:
        return SeedSummary(0, len(existing), 0, existing[0], already_seeded=True)
    day = today or services.records.clock.now().date()
    clinic = generate_clinic(seed=seed, patients=patients, staff=staff, today=day)
    resources = clinic.resources
    bar = progress() if progress else None
    task = bar.add_task("seeding the demo clinic", total=len(resources)) if bar else None
    if bar:
        bar.start()
    try:
        for start in range(0, len(resources), BATCH):
            chunk = resources[start : start + BATCH]
            with transaction(services.session_factory) as session:
                repo = system_repository(session, services.records, job="demo-seed")
                for resource in chunk:
                    repo.create(resource, resource_id=str(resource["id"]))
            if bar is not None and task is not None:
                bar.update(task, advance=len(chunk))
    finally:
        if bar:
            bar.stop()
    return SeedSummary(
        len(resources),
        len(clinic.patient_ids),
        len(clinic.staff),
        clinic.patient_ids[0],
        already_seeded=False,
        physicians=tuple(m.practitioner_id for m in clinic.staff if m.role == "physician"),
    )

"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import egide.crypto.models
import egide.identity.models
import egide.incidents.models
import egide.ledger.models
import egide.records.models
from egide.db.base import Base
from egide.db.engine import make_engine
from egide.db.migrate import current_revision, head_revision, upgrade
from tests.helpers import Database

MODEL_MODULES = (
    egide.crypto.models,
    egide.identity.models,
    egide.incidents.models,
    egide.ledger.models,
    egide.records.models,
)


def test_migrated_schema_matches_the_models(database: Database) -> None:
    engine = make_engine(database.url)
    try:
        upgrade(engine)  # idempotent on the already-migrated test database
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], diff
    finally:
        engine.dispose()

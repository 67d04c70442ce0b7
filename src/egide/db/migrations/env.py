"""Alembic environment: runs migrations on the connection the caller hands over.

No model is imported here (db sits below every room that owns tables); `egide.db.migrate`
passes the connection, and the schema test compares the migrated database with the models.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - always called through egide.db.migrate
    msg = "run migrations through egide.db.migrate"
    raise RuntimeError(msg)

context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()

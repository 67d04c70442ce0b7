"""Database room: engine and session factory, the declarative Base, dialect-neutral types and
the Alembic migrations.

Both SQLite (embedded default) and PostgreSQL (production) are first-class: the same storage
test suite runs against both. Every room owns its tables and refers to others' rows by id.
"""

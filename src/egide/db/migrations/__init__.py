"""Alembic migrations of Égide's schema (hand-reviewed; one file per schema change)."""

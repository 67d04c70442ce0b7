"""Engine and session factory for SQLite and PostgreSQL.

SQLite runs in WAL mode with foreign keys on and a busy timeout, so the embedded default is safe
under the API's concurrent requests. Sessions never autocommit: the service layer's caller owns
the transaction, which is how the act, its access decision and its ledger entry commit or fail
together (DESIGN.md, contract 2).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    # Freed pages are overwritten, so deleted or replaced ciphertext does not linger in the
    # file (defence in depth; bodies are sealed anyway).
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # pysqlite's implicit transactions start too late for read-modify-write; BEGIN IMMEDIATE
    # takes the write lock up front so concurrent writers queue instead of failing mid-way.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine for `url` with the settings Égide relies on.

    `hide_parameters`: a database error in the server log must not carry the bound values,
    which can be patient ids, dates or search tokens (DESIGN.md, contract 4).
    """
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "isolation_level": None},
            hide_parameters=True,
            **kwargs,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(url, pool_pre_ping=True, hide_parameters=True, **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commits when the block ends normally, rolls back on any exception."""
    with factory() as session, session.begin():
        yield session

"""The unit of work: one transaction per request, and the audits that outlive a failure.

A request either commits its act together with the act's ledger entries, or rolls back both.
When it fails with an error that carries deferred audits (a denial, a read of something
absent), those are written in a fresh transaction after the rollback, so the ledger records
every denial without keeping any half-done change (DESIGN.md, contract 2).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from egide.core.errors import Conflict, EgideError, StorageFailure
from egide.db.engine import transaction
from egide.records.repository import pending_audits

T = TypeVar("T")


def run_in_transaction(factory: sessionmaker[Session], work: Callable[[Session], T]) -> T:
    """Run `work` in one transaction; write its deferred audits if it fails."""
    try:
        with transaction(factory) as session:
            return work(session)
    except IntegrityError as exc:
        # Two writers raced for the same version of a resource (or the same new id): the
        # loser's whole unit of work is rolled back and it is told to retry.
        msg = "a concurrent change to the same resource won; read it again and retry"
        raise Conflict(msg) from exc
    except SQLAlchemyError as exc:
        # Whatever the database said stays in the server log; the caller learns only that
        # nothing was done (OWASP ASVS 5.0 V16.5.1).
        msg = "the database could not complete the request; nothing was changed"
        raise StorageFailure(msg) from exc
    except EgideError as exc:
        audits = pending_audits(exc)
        if audits:
            try:
                with transaction(factory) as session:
                    for audit in audits:
                        audit(session)
            except EgideError as audit_exc:
                # The ledger is down: say so rather than the original (now unaudited) error.
                raise StorageFailure(audit_exc.message) from exc
        raise

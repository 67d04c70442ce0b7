"""What the routers need from the composition root, passed in rather than imported."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session, sessionmaker

from egide.core.settings import Settings
from egide.ledger.witness_store import Witness
from egide.records.repository import RecordServices
from egide.records.unit_of_work import run_in_transaction

T = TypeVar("T")


@dataclass(frozen=True)
class ApiContext:
    settings: Settings
    session_factory: sessionmaker[Session]
    records: RecordServices
    version: str
    started: dt.datetime
    # Periodic work the server runs while it is up (the ledger sequencer), every
    # `background_interval` seconds, off the event loop.
    background: Callable[[], object] | None = None
    background_interval: float = 10.0
    # Live behavioural detection: one step (ledger entries since the last one -> detector ->
    # alerts) every `live_interval` seconds, off the event loop; None: off.
    live: Callable[[], object] | None = None
    live_interval: float = 0.25
    # Called once the server stops (live detection gives its lease up).
    live_stop: Callable[[], object] | None = None
    # The ledger's signed-note verifier key (C2SP vkey), served at /api/ledger/public-key and
    # used to self-check proofs against signed roots before they are served.
    ledger_vkey: str | None = None
    # This instance as a witness of other logs (C2SP tlog-witness, /api/witness); None: off.
    witness: Witness | None = None


def context_of(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.egide
    return ctx


def client_of(request: Request) -> tuple[str | None, str | None, str]:
    """(address, device, request id) of the caller, for the principal and the ledger; the
    request id (the caller's `X-Request-Id`, else a new one) is kept on the request."""
    ip = request.client.host if request.client else None
    device = request.headers.get("user-agent", "")[:128] or None
    request_id = request.headers.get("x-request-id", "")[:64] or str(uuid.uuid4())
    request.state.request_id = request_id
    return ip, device, request_id


async def in_transaction(request: Request, work: Callable[[Session], T]) -> T:
    """`work` in one unit of work (committed, or rolled back with its deferred audits
    re-appended), off the event loop."""
    return await run_in_threadpool(run_in_transaction, context_of(request).session_factory, work)

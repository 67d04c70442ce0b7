"""What the routers need from the composition root, passed in rather than imported."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from egide.core.settings import Settings
from egide.ledger.witness_store import Witness
from egide.records.repository import RecordServices


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
    # The ledger's signed-note verifier key (C2SP vkey), served at /api/ledger/public-key and
    # used to self-check proofs against signed roots before they are served.
    ledger_vkey: str | None = None
    # This instance as a witness of other logs (C2SP tlog-witness, /api/witness); None: off.
    witness: Witness | None = None

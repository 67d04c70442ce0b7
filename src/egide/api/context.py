"""What the routers need from the composition root, passed in rather than imported."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from egide.core.settings import Settings
from egide.records.repository import RecordServices


@dataclass(frozen=True)
class ApiContext:
    settings: Settings
    session_factory: sessionmaker[Session]
    records: RecordServices
    version: str
    started: dt.datetime

"""The identity room's tables."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from egide.db.base import Base
from egide.db.types import UTCDateTime


class ApiToken(Base):
    """A bearer token. Only its SHA-256 hash is stored (DESIGN.md, contract 4)."""

    __tablename__ = "identity_api_token"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(32))
    patient_id: Mapped[str | None] = mapped_column(String(64))
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

"""What the web pages need from the composition root, passed in rather than imported.

The web room may not import `cli` (where `Services` lives) nor `api`: `egide.app` builds a
`WebContext` from the opened services and hands it to `egide.web.views.install`.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.orm import Session, sessionmaker

from egide.core.clock import Clock
from egide.core.settings import Settings
from egide.crypto.envelope import Envelope

CSRF_KEY_BYTES = 32


@dataclass(frozen=True)
class WebContext:
    settings: Settings
    session_factory: sessionmaker[Session]
    clock: Clock
    envelope: Envelope
    # HMAC key of the pre-session CSRF tokens (sign-in, MFA and invitation forms): the same on
    # every worker and across restarts, so a form served by one process posts to another.
    csrf_key: bytes

    def __post_init__(self) -> None:
        if len(self.csrf_key) != CSRF_KEY_BYTES:
            msg = "the web CSRF key is 32 bytes"
            raise ValueError(msg)


def derive_csrf_key(keyring_secret: bytes) -> bytes:
    """The pre-session CSRF key, derived from a long-lived keyring secret with HKDF-SHA256
    (RFC 5869) under a label of its own: a distinct, one-way key (it reveals nothing of the
    secret it comes from) that needs no change to the keyring's format."""
    return HKDF(
        algorithm=SHA256(), length=CSRF_KEY_BYTES, salt=None, info=b"egide/web-csrf-key/v1"
    ).derive(keyring_secret)

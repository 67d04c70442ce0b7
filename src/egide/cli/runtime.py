"""The runtime the commands and the server share: opening the keyring and the database.

`initialise` creates the data directory, the master secret (demo only), the keyring and the
schema; `open_services` opens them for use. The master secret comes from `EGIDE_MASTER_SECRET`
or, for a demo installation, from `$EGIDE_DATA_DIR/master.key` (mode 0600), never from the
database it protects (OWASP ASVS 5.0 V13.3.1).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from egide.core.clock import Clock, SystemClock
from egide.core.errors import BadRequest
from egide.core.ids import RandomSource, SystemRandom
from egide.core.principal import Principal
from egide.core.settings import Settings
from egide.crypto.aead import Aead
from egide.crypto.blind import BlindIndex
from egide.crypto.envelope import Envelope
from egide.crypto.errors import KeyringError
from egide.crypto.keyring import FileKeyProvider
from egide.db.engine import make_engine, make_session_factory, transaction
from egide.db.migrate import upgrade
from egide.ledger.checkpoint import CheckpointSigner
from egide.ledger.sequencer import Integrated, integrate, write_witness
from egide.records.repository import RecordServices

# Acts of the local operator (init, tokens, keys, ledger maintenance) are audited under this
# principal: whoever has shell access to the server and its keyring.
OPERATOR = Principal(id="operator:cli", role="admin", name="local operator (CLI)")


@dataclass(frozen=True)
class Services:
    """Everything a command or the server needs, opened once per process."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    keyring: FileKeyProvider
    records: RecordServices
    signer: CheckpointSigner

    def close(self) -> None:
        self.engine.dispose()


def _master_secret(settings: Settings) -> bytes | None:
    if settings.master_secret is not None:
        return settings.master_secret.get_secret_value().encode("utf-8")
    path = settings.master_key_path
    if path.is_file():
        return path.read_bytes().strip()
    return None


def is_initialised(settings: Settings) -> bool:
    return settings.keyring_path.is_file()


def initialise(settings: Settings, *, random: RandomSource | None = None) -> bool:
    """Create the data directory, keyring and schema. Returns False when already set up
    (then it only applies pending migrations)."""
    data_dir = settings.data_dir
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    created = False
    if not settings.keyring_path.exists():
        secret = _master_secret(settings)
        if secret is None:
            # Demo convenience: a random master secret beside the data. Production sets
            # EGIDE_MASTER_SECRET from a secret manager (or uses an HSM provider).
            secret = secrets.token_urlsafe(32).encode("ascii")
            _write_private(settings.master_key_path, secret + b"\n")
        FileKeyProvider.create(
            settings.keyring_path,
            secret,
            random=random,
            kdf_memory_kib=settings.kdf_memory_kib,
            kdf_iterations=settings.kdf_iterations,
        )
        created = True
    engine = make_engine(settings.effective_database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    if settings.is_sqlite:
        # Ciphertext only, but still nobody else's business (defence in depth).
        for path in settings.data_dir.glob("egide.db*"):
            path.chmod(0o600)
    return created


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def open_services(
    settings: Settings,
    *,
    clock: Clock | None = None,
    random: RandomSource | None = None,
    aead: Aead | None = None,
) -> Services:
    """Open the keyring and the database of an initialised installation."""
    if not is_initialised(settings):
        msg = f"no keyring in {settings.data_dir}: run `egide init` first"
        raise BadRequest(msg)
    secret = _master_secret(settings)
    if secret is None:
        msg = "no master secret: set EGIDE_MASTER_SECRET"
        raise BadRequest(msg)
    clock = clock or SystemClock()
    random = random or SystemRandom()
    try:
        keyring = FileKeyProvider.open(settings.keyring_path, secret, random=random, clock=clock)
    except KeyringError as exc:
        msg = f"cannot open the keyring: {exc}"
        raise BadRequest(msg) from None
    engine = make_engine(settings.effective_database_url)
    records = RecordServices(
        envelope=Envelope(keyring, aead=aead, random=random, clock=clock),
        index=BlindIndex(keyring.secret("blind-index"), random=random),
        clock=clock,
        random=random,
    )
    signer = CheckpointSigner(
        name=settings.ledger_origin, seed=keyring.secret("ledger-signing-seed")
    )
    return Services(settings, engine, make_session_factory(engine), keyring, records, signer)


def sequence_ledger(services: Services, *, force: bool = False) -> Integrated:
    """One sequencer pass in its own transaction; a new checkpoint is also written to the
    witness directory outside the database once the transaction has committed."""
    settings = services.settings
    with transaction(services.session_factory) as session:
        done = integrate(
            session,
            signer=services.signer,
            clock=services.records.clock,
            origin=settings.ledger_origin,
            every=settings.checkpoint_every,
            force=force,
        )
    if done.note is not None and done.checkpoint is not None:
        write_witness(settings.effective_witness_dir, done.note, size=done.checkpoint.size)
    return done

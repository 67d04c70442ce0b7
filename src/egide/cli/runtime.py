"""The runtime the commands and the server share: opening the keyring and the database.

`initialise` creates the data directory, the master secret (demo only), the keyring and the
schema; `open_services` opens them for use. The master secret comes from `EGIDE_MASTER_SECRET`
or, for a demo installation, from `$EGIDE_DATA_DIR/master.key` (mode 0600), never from the
database it protects (OWASP ASVS 5.0 V13.3.1).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from egide.access.relationships import Windows
from egide.core.clock import Clock, SystemClock
from egide.core.errors import BadRequest, StorageFailure
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
from egide.identity.login import Purged, purge_expired
from egide.ledger.checkpoint import CheckpointError, CheckpointSigner, CheckpointVerifier
from egide.ledger.proofs import consistency_proof_for
from egide.ledger.sequencer import Integrated, integrate, latest_checkpoint, write_witness
from egide.ledger.witness import CosignatureVerifier, WitnessSigner
from egide.ledger.witness_push import PushResult, WitnessPusher
from egide.ledger.witness_store import Witness
from egide.records.repository import RecordServices

logger = logging.getLogger("egide.witness")

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
    # This instance's key as a witness of other logs (C2SP tlog-cosignature).
    witness_signer: WitnessSigner

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
        windows=Windows(
            care_grace=dt.timedelta(days=settings.care_grace_days),
            appointment_lead=dt.timedelta(days=settings.appointment_lead_days),
        ),
    )
    ledger_seed = keyring.secret("ledger-signing-seed")
    signer = CheckpointSigner(name=settings.ledger_origin, seed=ledger_seed)
    witness_signer = WitnessSigner(
        name=settings.effective_witness_name, seed=_witness_seed(ledger_seed)
    )
    return Services(
        settings,
        engine,
        make_session_factory(engine),
        keyring,
        records,
        signer,
        witness_signer,
    )


def _witness_seed(ledger_seed: bytes) -> bytes:
    """The witness's Ed25519 seed, derived from the keyring's ledger seed with HKDF-SHA256
    (RFC 5869) under its own label: a distinct key (tlog-cosignature wants one key per
    cosigner), one-way (the witness key does not reveal the ledger key), and no change to the
    keyring's format, so existing keyrings open unchanged and backups need nothing new."""
    return HKDF(
        algorithm=SHA256(), length=32, salt=None, info=b"egide/witness-signing-seed/v1"
    ).derive(ledger_seed)


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


# --------------------------------------------------------------------------- witnesses


def open_witness(services: Services) -> Witness:
    """This instance as a witness of the logs in `witness_logs` (C2SP tlog-witness)."""
    settings = services.settings
    logs: dict[str, list[CheckpointVerifier]] = {}
    for origin, vkeys in settings.witness_logs.items():
        try:
            logs[origin] = [CheckpointVerifier(vkey) for vkey in vkeys]
        except ValueError as exc:
            msg = f"invalid verifier key for witnessed log {origin!r}: {exc}"
            raise BadRequest(msg) from None
    return Witness(
        directory=settings.effective_witness_dir,
        signer=services.witness_signer,
        logs=logs,
        clock=services.records.clock,
    )


def witness_pusher(
    services: Services, *, transport: httpx.BaseTransport | None = None
) -> WitnessPusher | None:
    """The pusher to `witness_urls`, or None when no witness is configured."""
    settings = services.settings
    if not settings.witness_urls:
        return None
    if not settings.witness_keys:
        # Without them no cosignature could be checked, and every push would fail.
        msg = "witness_urls is set but witness_keys is empty: give each witness's key"
        raise BadRequest(msg)
    try:
        verifiers = [CosignatureVerifier(vkey) for vkey in settings.witness_keys]
    except ValueError as exc:
        msg = f"invalid witness key (witness_keys): {exc}"
        raise BadRequest(msg) from None
    return WitnessPusher(
        urls=settings.witness_urls,
        verifiers=verifiers,
        state_dir=settings.witness_state_dir,
        cosignature_dir=settings.effective_witness_dir / "cosignatures",
        clock=services.records.clock,
        timeout=settings.witness_timeout_seconds,
        transport=transport,
    )


def push_to_witnesses(
    services: Services, pusher: WitnessPusher, *, force: bool = False, log_failures: bool = True
) -> list[PushResult]:
    """Push the latest signed checkpoint to every witness; each result says how it went.
    BadRequest when the ledger has no checkpoint yet."""
    with transaction(services.session_factory) as session:
        row = latest_checkpoint(session)
        note = bytes(row.note) if row is not None else None
    if note is None:
        msg = "the ledger has no signed checkpoint yet: run `egide ledger checkpoint`"
        raise BadRequest(msg)
    # Our own note, checked with our own key before it leaves: never push what does not verify.
    verifier = CheckpointVerifier(services.signer.verifier_key())
    try:
        checkpoint = verifier.verify(note, expected_origin=services.settings.ledger_origin)
    except CheckpointError as exc:
        msg = f"ledger integrity fault: the latest checkpoint does not verify ({exc})"
        raise StorageFailure(msg) from None

    def proof_from(old_size: int) -> list[bytes]:
        with transaction(services.session_factory) as session:
            return consistency_proof_for(
                session, old_size=old_size, new_size=checkpoint.size, verifier=verifier
            ).proof

    return pusher.push(note, checkpoint, proof_from, force=force, log_failures=log_failures)


def purge_identity(services: Services) -> Purged:
    """Delete ended sign-in throttle windows and spent or expired pending sign-ins, in a
    transaction of its own (`identity.login.purge_expired`)."""
    with transaction(services.session_factory) as session:
        return purge_expired(session, clock=services.records.clock)


def background_pass(services: Services, pusher: WitnessPusher | None = None) -> Integrated:
    """What the server runs every interval: a sequencer pass (a checkpoint when the tree grew),
    then the latest checkpoint pushed to the witnesses, then the sign-in housekeeping. A
    witness's or the housekeeping's failure is logged, never raised: neither must stop the
    ledger (both are retried on a later pass)."""
    done = sequence_ledger(services, force=True)
    try:
        purge_identity(services)
    except Exception:
        logger.exception("purging expired sign-in rows failed")
    if pusher is not None:
        try:
            push_to_witnesses(services, pusher)
        except Exception:
            logger.exception("pushing the checkpoint to the witnesses failed")
    return done

"""The witness's memory: per log, the latest checkpoint it cosigned, kept append-only on disk.

Security role (DESIGN.md, contract 5). What makes a witness worth anything is that it never
forgets nor rolls back what it cosigned: tlog-witness (https://c2sp.org/tlog-witness) requires
the check of the old size and the recording of the new checkpoint to be atomic, or two
concurrent requests could roll the witness back by K leaves. Here each origin's requests are
serialised by a lock (a thread lock, and an exclusive `flock` on a lock file so that several
server processes sharing the directory also take turns), and each accepted checkpoint is a new
file, created with O_EXCL, fsynced, and never rewritten:

    <witness dir>/<origin, percent-encoded>/checkpoint-<size, 12 digits>.txt

The witness's latest checkpoint is the largest such file; it holds the log's signed note plus
the witness's first cosignature of it, so the same directory is also a witness directory for
`egide ledger verify --witness` on the log's side (the verifier ignores the extra signature).

A signed checkpoint that the witness refuses as a fork or as unproven (tlog-witness: "the
witness MAY log the request ... as it might be proof of log misbehavior") is kept under
`evidence/` beside it, and raised as a critical log message.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from egide.core.clock import Clock
from egide.core.errors import StorageFailure
from egide.ledger.checkpoint import Checkpoint, CheckpointError, CheckpointVerifier
from egide.ledger.sequencer import write_witness
from egide.ledger.witness import (
    Decision,
    Refusal,
    WitnessSigner,
    decide_add_checkpoint,
    note_origin,
    parse_add_checkpoint,
)

__all__ = ["MAX_EVIDENCE_FILES", "Cosigned", "Witness", "origin_directory"]

logger = logging.getLogger("egide.witness")

# A compromised log key could otherwise fill the disk with refused checkpoints.
MAX_EVIDENCE_FILES = 1000
_CHECKPOINT_FILE = re.compile(r"checkpoint-([0-9]{12,20})\.txt")
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._")
_MAX_NAME = 180


def origin_directory(root: Path, origin: str) -> Path:
    """The directory of one log's checkpoints: the origin percent-encoded (injective, so two
    origins never share a directory, and never "." or ".."), shortened with a hash when long."""
    encoded = "".join(chr(b) if chr(b) in _SAFE else f"%{b:02X}" for b in origin.encode("utf-8"))
    if encoded.startswith("."):
        encoded = "%2E" + encoded[1:]
    if len(encoded) > _MAX_NAME:
        # "~" is never produced by the encoding above, so a shortened name cannot collide with
        # an unshortened one.
        encoded = encoded[:160] + "~" + hashlib.sha256(origin.encode("utf-8")).hexdigest()[:16]
    return root / encoded


@dataclass(frozen=True)
class Cosigned:
    """The witness cosigned: the checkpoint, the cosignature line, and whether it was new."""

    checkpoint: Checkpoint
    cosignature: str
    new: bool


class Witness:
    """A witness of other logs (tlog-witness add-checkpoint), over a directory.

    `logs` maps each witnessed origin to the verifier keys trusted for it. Thread-safe; one
    request per origin at a time, also across processes sharing `directory`.
    """

    def __init__(
        self,
        *,
        directory: Path,
        signer: WitnessSigner,
        logs: Mapping[str, Sequence[CheckpointVerifier]],
        clock: Clock,
    ) -> None:
        self._directory = directory
        self._signer = signer
        self._logs = {origin: tuple(keys) for origin, keys in logs.items()}
        self._clock = clock
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    @property
    def signer(self) -> WitnessSigner:
        return self._signer

    @property
    def directory(self) -> Path:
        return self._directory

    def origins(self) -> list[str]:
        return sorted(self._logs)

    def add_checkpoint(self, body: bytes) -> Cosigned | Refusal:
        """Handle one add-checkpoint request body. ValueError when the body is malformed (the
        message says how); StorageFailure when the stored state cannot be read or written."""
        request = parse_add_checkpoint(body)
        origin = note_origin(request.note)
        trusted = self._logs.get(origin, ())
        if not trusted:
            # Decided before any storage is touched: unknown origins create nothing.
            refusal = decide_add_checkpoint(origin=origin, trusted=(), latest=None, request=request)
            assert isinstance(refusal, Refusal)
            return refusal
        with self._locked(origin) as directory:
            latest = self._latest(directory, trusted, origin)
            outcome = decide_add_checkpoint(
                origin=origin, trusted=trusted, latest=latest, request=request
            )
            if isinstance(outcome, Refusal):
                self._refused(directory, outcome, body, origin)
                return outcome
            return self._cosign(directory, outcome)

    def latest(self, origin: str) -> Checkpoint | None:
        """The checkpoint this witness holds for `origin` (None when it holds none)."""
        trusted = self._logs.get(origin, ())
        if not trusted:
            return None
        with self._locked(origin) as directory:
            return self._latest(directory, trusted, origin)

    # -- internals -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, origin: str) -> Iterator[Path]:
        with self._guard:
            lock = self._locks.setdefault(origin, threading.Lock())
        directory = origin_directory(self._directory, origin)
        with lock:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield directory
            finally:
                os.close(fd)  # closing releases the flock

    def _latest(
        self, directory: Path, trusted: Sequence[CheckpointVerifier], origin: str
    ) -> Checkpoint | None:
        sizes = [
            int(match.group(1))
            for entry in os.scandir(directory)
            if (match := _CHECKPOINT_FILE.fullmatch(entry.name))
        ]
        if not sizes:
            return None
        size = max(sizes)
        path = directory / f"checkpoint-{size:012d}.txt"
        note = path.read_bytes()
        for verifier in trusted:
            try:
                checkpoint = verifier.verify(note, expected_origin=origin)
            except CheckpointError:
                continue
            if checkpoint.size != size:
                break
            return checkpoint
        # Never fall back to an older file: that would be exactly the rollback a witness
        # exists to prevent. The operator must look (a changed file, or a removed log key).
        msg = (
            f"the witness's latest checkpoint {path} does not verify with the keys trusted "
            f"for {origin!r}"
        )
        raise StorageFailure(msg)

    def _cosign(self, directory: Path, decision: Decision) -> Cosigned:
        line = self._signer.cosign(decision.checkpoint, clock=self._clock)
        if decision.new:
            # Persisted before answering (tlog-witness), with this first cosignature appended:
            # the file is then a cosigned checkpoint that any signed-note verifier can read.
            write_witness(
                directory, decision.note + line.encode("utf-8"), size=decision.checkpoint.size
            )
            _fsync_directory(directory)
            logger.info(
                "witness: cosigned %s at size %d",
                decision.checkpoint.origin,
                decision.checkpoint.size,
            )
        return Cosigned(checkpoint=decision.checkpoint, cosignature=line, new=decision.new)

    def _refused(self, directory: Path, refusal: Refusal, body: bytes, origin: str) -> None:
        if not refusal.is_evidence or refusal.checkpoint is None:
            logger.info("witness: refused a checkpoint of %s: %s", origin, refusal.message)
            return
        # A checkpoint the log signed that contradicts what this witness cosigned: loudly.
        logger.critical(
            "WITNESS ALARM for %s: %s (refused size %d)",
            origin,
            refusal.message,
            refusal.checkpoint.size,
        )
        evidence = directory / "evidence"
        evidence.mkdir(mode=0o700, exist_ok=True)
        if sum(1 for _ in evidence.iterdir()) >= MAX_EVIDENCE_FILES:
            logger.critical("witness: evidence directory of %s is full; not kept", origin)
            return
        digest = hashlib.sha256(body).hexdigest()[:16]
        path = evidence / f"refused-{refusal.checkpoint.size:012d}-{digest}.txt"
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())


def _fsync_directory(directory: Path) -> None:
    # The new file's directory entry must survive a crash too, or the witness could come back
    # holding an older checkpoint than one it already cosigned.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

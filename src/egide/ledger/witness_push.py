"""The log's side of witnessing: push each new checkpoint to the witnesses, keep their
cosignatures.

Security role (DESIGN.md, contract 5). Signed checkpoints only bind the ledger to its history
against someone who does not hold the signing key. Pushing them to witnesses (other Égide
installations, or any C2SP tlog-witness) puts a copy of each tree head out of reach of this
server's administrator: once a witness has cosigned size N, a rewritten history before N is
refused by the witness (https://c2sp.org/tlog-witness add-checkpoint) and shown by
`egide ledger verify --witness` against the witness's copy.

For each configured witness, this module:

1. sends `old <size it holds>`, the RFC 9162 section 2.1.4 consistency proof from that size to
   the new checkpoint (built from the database by the caller's `proof_from`), and the note;
2. on "409 Conflict" (`text/x.tlog.size`), learns the size the witness really holds and
   retries once from it; the same size coming back means the witness holds *another* tree of
   that size: a fork, reported as such;
3. checks the returned cosignatures (C2SP tlog-cosignature, cosignature/v1) against the
   configured witness keys, ignoring unknown keys, and stores the cosigned checkpoint under
   `<witness dir>/cosignatures/<witness name>/checkpoint-<size>.txt` (O_EXCL, fsync);
4. remembers the size each witness accepted in `<data dir>/witness-state/<hash of URL>.json`,
   replaced atomically, so the next push sends the right old size.

A failing witness never fails the caller: the failure is counted, logged, and retried after a
back-off (30 s doubling up to 15 min), or at once with `force` (`egide ledger witness-push`).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from egide.core.clock import Clock
from egide.core.errors import EgideError
from egide.ledger.checkpoint import Checkpoint
from egide.ledger.sequencer import write_witness
from egide.ledger.witness import (
    SIZE_MEDIA_TYPE,
    Cosignature,
    CosignatureError,
    CosignatureVerifier,
    format_add_checkpoint,
    verify_cosignatures,
)
from egide.ledger.witness_store import origin_directory

__all__ = ["ADD_CHECKPOINT_PATH", "ProofSource", "PushResult", "WitnessPusher"]

logger = logging.getLogger("egide.witness")

ADD_CHECKPOINT_PATH = "/api/witness/add-checkpoint"
# The consistency proof from `old size` to the checkpoint being pushed.
ProofSource = Callable[[int], Sequence[bytes]]

_MAX_ANSWER_BYTES = 64 * 1024
_BACKOFF_FIRST, _BACKOFF_MAX = 30.0, 900.0
# Cosignatures dated further ahead than this (witness clock skew) are refused.
_MAX_FUTURE_SECONDS = 3600
_SIZE_BODY = re.compile(rb"(0|[1-9][0-9]{0,19})\n")


@dataclass(frozen=True)
class PushResult:
    """What happened with one witness. `size` is the size the witness holds, when known;
    `deferred` means it was not contacted (waiting after earlier failures)."""

    url: str
    ok: bool
    message: str
    size: int | None = None
    cosignatures: tuple[Cosignature, ...] = ()
    deferred: bool = False


@dataclass
class _State:
    url: str
    size: int = 0  # 0: not known to hold anything (the witness corrects us with a 409)
    root: str | None = None
    failures: int = 0
    retry_after: float | None = None  # POSIX seconds
    last_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "size": self.size,
            "root": self.root,
            "failures": self.failures,
            "retry_after": self.retry_after,
            "last_error": self.last_error,
        }


class _PushFailure(Exception):
    """One witness could not cosign; the message says why, in one line."""


@dataclass
class _Exchange:
    held: int | None = None  # what the witness said it holds (409), if it did
    cosignatures: list[Cosignature] = field(default_factory=list)


class WitnessPusher:
    """Pushes checkpoints to the witnesses at `urls` (base URLs of Égide installations)."""

    def __init__(
        self,
        *,
        urls: Sequence[str],
        verifiers: Sequence[CosignatureVerifier],
        state_dir: Path,
        cosignature_dir: Path,
        clock: Clock,
        timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._urls = [url.rstrip("/") for url in urls]
        self._verifiers = list(verifiers)
        self._state_dir = state_dir
        self._cosignature_dir = cosignature_dir
        self._clock = clock
        self._timeout = timeout
        self._transport = transport

    @property
    def urls(self) -> list[str]:
        return list(self._urls)

    def push(
        self,
        note: bytes,
        checkpoint: Checkpoint,
        proof_from: ProofSource,
        *,
        force: bool = False,
        log_failures: bool = True,
    ) -> list[PushResult]:
        """Push the signed `note` of `checkpoint` to every witness; never raises for a
        witness's failure (see each result). `force` ignores the back-off; `log_failures`
        False leaves reporting failures to the caller (the CLI prints them)."""
        with httpx.Client(
            timeout=self._timeout,
            transport=self._transport,
            follow_redirects=False,  # a redirect could send the request somewhere unchecked
            headers={"User-Agent": "egide-witness-push"},
        ) as client:
            return [
                self._push_one(
                    client, url, note, checkpoint, proof_from, force=force, log=log_failures
                )
                for url in self._urls
            ]

    # -- one witness -----------------------------------------------------------------------

    def _push_one(
        self,
        client: httpx.Client,
        url: str,
        note: bytes,
        checkpoint: Checkpoint,
        proof_from: ProofSource,
        *,
        force: bool,
        log: bool,
    ) -> PushResult:
        state = self._load(url)
        now = self._clock.now().timestamp()
        if not force and state.retry_after is not None and now < state.retry_after:
            when = dt.datetime.fromtimestamp(state.retry_after, dt.UTC).isoformat()
            msg = f"not retried before {when} ({state.failures} failures; {state.last_error})"
            return PushResult(url, ok=False, message=msg, size=state.size, deferred=True)
        root = base64.b64encode(checkpoint.root).decode("ascii")
        if state.size == checkpoint.size and state.root == root:
            msg = f"already holds size {checkpoint.size}"
            return PushResult(url, ok=True, message=msg, size=checkpoint.size)
        exchange = _Exchange()
        try:
            self._exchange(
                client,
                url,
                note=note,
                checkpoint=checkpoint,
                proof_from=proof_from,
                old=state.size,
                exchange=exchange,
            )
        except _PushFailure as exc:
            message = str(exc)
            state.failures += 1
            delay = min(_BACKOFF_FIRST * 2 ** (state.failures - 1), _BACKOFF_MAX)
            state.retry_after = now + delay
            state.last_error = message
            if exchange.held is not None:
                state.size, state.root = exchange.held, None
            self._save(state)
            if log:
                logger.warning("witness %s: %s", url, message)
            return PushResult(url, ok=False, message=message, size=exchange.held)
        self._store(note, checkpoint, exchange.cosignatures)
        self._save(_State(url=url, size=checkpoint.size, root=root))
        names = ", ".join(sorted({c.name for c in exchange.cosignatures}))
        msg = f"cosigned size {checkpoint.size} by {names}"
        return PushResult(
            url,
            ok=True,
            message=msg,
            size=checkpoint.size,
            cosignatures=tuple(exchange.cosignatures),
        )

    def _exchange(
        self,
        client: httpx.Client,
        url: str,
        *,
        note: bytes,
        checkpoint: Checkpoint,
        proof_from: ProofSource,
        old: int,
        exchange: _Exchange,
    ) -> None:
        for attempt in range(2):
            if old > checkpoint.size:
                msg = (
                    f"the witness holds size {old}, more than our latest checkpoint "
                    f"({checkpoint.size}): the ledger was truncated or rewritten"
                )
                raise _PushFailure(msg)
            body = format_add_checkpoint(old, self._proof(proof_from, old, checkpoint), note)
            status, media, content = self._post(client, url, body)
            if status == 200:
                exchange.cosignatures = self._verify(checkpoint, content)
                return
            if status == 409 and media == SIZE_MEDIA_TYPE:
                held = _parse_size(content)
                exchange.held = held
                if held == old:
                    msg = (
                        f"FORK: the witness holds another checkpoint of size {old} than ours; "
                        "the ledger's history was rewritten after the witness cosigned it"
                    )
                    raise _PushFailure(msg)
                if attempt == 0:
                    old = held  # tlog-witness: retry from the size the witness holds
                    continue
            raise _PushFailure(_describe(status, content, old, checkpoint.size))

    @staticmethod
    def _proof(proof_from: ProofSource, old: int, checkpoint: Checkpoint) -> list[bytes]:
        if old in (0, checkpoint.size):
            return []
        try:
            return list(proof_from(old))
        except (EgideError, ValueError) as exc:
            msg = f"cannot prove size {checkpoint.size} consistent with size {old}: {exc}"
            raise _PushFailure(msg) from None

    def _post(self, client: httpx.Client, url: str, body: bytes) -> tuple[int, str, bytes]:
        try:
            with client.stream(
                "POST",
                url + ADD_CHECKPOINT_PATH,
                content=body,
                headers={"Content-Type": "text/plain; charset=utf-8"},
            ) as response:
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > _MAX_ANSWER_BYTES:
                        msg = f"the witness's answer is larger than {_MAX_ANSWER_BYTES} bytes"
                        raise _PushFailure(msg)
                    chunks.append(chunk)
                media = response.headers.get("content-type", "").split(";")[0].strip().lower()
                return response.status_code, media, b"".join(chunks)
        except httpx.HTTPError as exc:
            msg = f"cannot reach the witness: {type(exc).__name__}: {exc}"
            raise _PushFailure(msg) from None

    def _verify(self, checkpoint: Checkpoint, content: bytes) -> list[Cosignature]:
        if not self._verifiers:
            msg = "no witness key is configured to check its cosignature (EGIDE_WITNESS_KEYS)"
            raise _PushFailure(msg)
        not_after = int(self._clock.now().timestamp()) + _MAX_FUTURE_SECONDS
        try:
            return verify_cosignatures(checkpoint, content, self._verifiers, not_after=not_after)
        except CosignatureError as exc:
            msg = f"the witness's answer is not a valid cosignature: {exc}"
            raise _PushFailure(msg) from None

    # -- storage -----------------------------------------------------------------------------

    def _store(self, note: bytes, checkpoint: Checkpoint, cosignatures: list[Cosignature]) -> None:
        """The cosigned checkpoint, per witness name: the log's note plus that witness's
        verified cosignature lines (a note any signed-note verifier can check)."""
        by_name: dict[str, list[str]] = {}
        for cosignature in cosignatures:
            by_name.setdefault(cosignature.name, []).append(cosignature.line + "\n")
        for name, lines in by_name.items():
            directory = origin_directory(self._cosignature_dir, name)
            write_witness(directory, note + "".join(lines).encode("utf-8"), size=checkpoint.size)

    def _path(self, url: str) -> Path:
        return self._state_dir / (hashlib.sha256(url.encode("utf-8")).hexdigest()[:24] + ".json")

    def _load(self, url: str) -> _State:
        path = self._path(url)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            state = _State(
                url=url,
                size=_int(data.get("size")),
                root=data.get("root") if isinstance(data.get("root"), str) else None,
                failures=_int(data.get("failures")),
                retry_after=_float(data.get("retry_after")),
                last_error=str(data["last_error"]) if data.get("last_error") else None,
            )
        except FileNotFoundError:
            return _State(url=url)
        except (OSError, ValueError, AttributeError, KeyError) as exc:
            # Not fatal: from size 0 the witness answers 409 with the size it holds.
            logger.warning(
                "witness %s: unreadable state file %s (%s); starting over", url, path, exc
            )
            return _State(url=url)
        if data.get("url") != url:
            return _State(url=url)
        return state

    def _save(self, state: _State) -> None:
        """Replace the state file atomically: a crash leaves the old or the new one whole."""
        self._state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self._path(state.url)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(state.to_json(), fh, sort_keys=True)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        msg = "not a non-negative integer"
        raise ValueError(msg)
    return value


def _float(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = "not a number"
        raise ValueError(msg)
    return float(value)


def _parse_size(content: bytes) -> int:
    match = _SIZE_BODY.fullmatch(content)
    if match is None:
        msg = "the witness answered 409 without a valid size (text/x.tlog.size)"
        raise _PushFailure(msg)
    return int(match.group(1))


def _describe(status: int, content: bytes, old: int, new: int) -> str:
    """One line for a refusal: what the status means (tlog-witness), and the witness's own
    diagnostics when it sent an OperationOutcome."""
    meaning = {
        400: "bad request",
        403: "the witness does not trust our signing key",
        404: "the witness does not witness our origin (or is not an Égide witness)",
        409: "conflict",
        413: "request too large",
        422: (
            f"the witness refused our consistency proof from size {old} to {new}: our history "
            "does not extend the one it cosigned"
        ),
        429: "rate limited by the witness",
    }.get(status, "unexpected answer")
    detail = ""
    with contextlib.suppress(ValueError, AttributeError, TypeError, IndexError, KeyError):
        doc = json.loads(content)
        detail = str(doc["issue"][0]["diagnostics"])[:300]
    return f"HTTP {status}: {meaning}" + (f" ({detail})" if detail else "")

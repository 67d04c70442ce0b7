"""The witness protocol of the audit ledger, pure: requests, decisions and cosignatures.

Security role (DESIGN.md, contract 5). A checkpoint proves nothing against whoever holds the
ledger's signing key: with it, an attacker can rewrite history and sign a new, self-consistent
tree. A **witness** is another party (here: another Égide) that keeps, per log, the latest
checkpoint it has verified, and only cosigns a new one when a consistency proof shows it
extends that one. Once a witness has cosigned size N, the log can no longer present a history
that forks before N without the witness refusing it, and the witness's copy convicts the
rewrite (`egide ledger verify --witness`).

The formats are the transparency ecosystem's, so other witnesses and logs interoperate:

* https://c2sp.org/tlog-witness, "add-checkpoint": the request body is a line "old <size>",
  zero or more base64 consistency-proof hashes (RFC 6962 section 2.1.2, RFC 9162 section
  2.1.4), one per line, at most 63, an empty line, then the signed checkpoint note. The witness
  answers 404 for an origin it does not witness, 403 when no trusted key signed the note, 400
  when the old size exceeds the new one, 409 with its own latest size (`text/x.tlog.size`) when
  the old size is not the size it holds, 422 when the proof does not verify, and 409 when the
  same size comes with another root (a fork: two signed views of the same tree size);
* https://c2sp.org/tlog-cosignature, "cosignature/v1" with Ed25519: a signed-note signature
  line "— <witness name> base64(key ID || timestamp || signature)", the key ID being
  SHA-256(name || 0x0A || 0x04 || public key)[:4], the timestamp 8 bytes big-endian (POSIX
  seconds, below 2**63), and the Ed25519 signature over "cosignature/v1\\ntime <timestamp>\\n"
  followed by the checkpoint's note text. Its meaning: "as of this time, this is the largest
  consistent tree I have seen for this origin".

Nothing here reads a clock, a file, a database or the network: the stored state, the trusted
keys and the time are passed in, so every refusal is testable on its own. Storage lives in
`egide.ledger.witness_store`, the log's side (pushing) in `egide.ledger.witness_push`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from egide.core.clock import Clock
from egide.ledger import merkle
from egide.ledger.checkpoint import (
    MAX_SIGNATURES,
    Checkpoint,
    CheckpointError,
    CheckpointVerifier,
    check_key_name,
    key_id,
)

__all__ = [
    "COSIGNATURE_V1",
    "MAX_NOTE_BYTES",
    "MAX_PROOF_LINES",
    "MAX_REQUEST_BYTES",
    "SIZE_MEDIA_TYPE",
    "AddCheckpoint",
    "Cosignature",
    "CosignatureError",
    "CosignatureVerifier",
    "Decision",
    "Refusal",
    "RefusalKind",
    "WitnessSigner",
    "cosigned_message",
    "decide_add_checkpoint",
    "format_add_checkpoint",
    "note_origin",
    "parse_add_checkpoint",
    "parse_signature_lines",
    "trusted_note",
    "verify_cosignatures",
]

# tlog-cosignature: signature type of Ed25519 cosignatures (key IDs and verifier keys).
COSIGNATURE_V1 = b"\x04"
# tlog-witness: "The client MUST NOT send more than 63 consistency proof lines"; an RFC 9162
# consistency proof between 64-bit tree sizes never needs more.
MAX_PROOF_LINES = 63
# A checkpoint note is three short lines and a few signature lines: 16 KiB is far more than
# any honest log sends, and bounds what one unauthenticated request can make us parse.
MAX_NOTE_BYTES = 16 * 1024
# "old " + 20 digits + "\n", 63 lines of 44 base64 characters + "\n", "\n", the note.
MAX_REQUEST_BYTES = 25 + MAX_PROOF_LINES * 45 + 1 + MAX_NOTE_BYTES
# tlog-witness: the content type of a 409 answer, whose body is the witness's size.
SIZE_MEDIA_TYPE = "text/x.tlog.size"

_HASH_SIZE = merkle.HASH_SIZE
_KEY_ID_SIZE = 4
_TIMESTAMP_SIZE = 8
_SIGNATURE_SIZE = 64
_COSIGNATURE_SIZE = _KEY_ID_SIZE + _TIMESTAMP_SIZE + _SIGNATURE_SIZE
_MAX_SIZE = (1 << 64) - 1  # tree sizes are uint64 (RFC 9162)
_MAX_TIMESTAMP = (1 << 63) - 1  # tlog-cosignature: "It MUST NOT exceed 2^63 - 1"
_DASH = "\u2014"  # em dash opening a signature line (signed-note)
_OLD_LINE = re.compile(rb"old (0|[1-9][0-9]{0,19})")  # ASCII decimal, no leading zeros
_HEX_KEY_ID = re.compile(r"[0-9a-f]{8}")


def _b64decode(text: str | bytes, what: str) -> bytes:
    """Standard base64 (RFC 4648 section 4), canonical spelling only; ValueError otherwise."""
    raw_text = text.encode("ascii") if isinstance(text, str) else text
    try:
        raw = base64.b64decode(raw_text, validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        msg = f"{what} is not standard base64"
        raise ValueError(msg) from None
    # Two spellings of one value (non-zero padding bits) would make two bodies mean the same.
    if base64.b64encode(raw) != raw_text:
        msg = f"{what} is not canonical base64"
        raise ValueError(msg)
    return raw


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


# --------------------------------------------------------------------------- the request


@dataclass(frozen=True)
class AddCheckpoint:
    """One tlog-witness add-checkpoint request: the size the client believes the witness
    holds, a consistency proof from it to the note's size, and the signed checkpoint note."""

    old_size: int
    proof: tuple[bytes, ...]
    note: bytes


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """Parse an add-checkpoint body strictly (tlog-witness); ValueError saying what is wrong.

    Only the framing is checked here; the note itself is checked by `decide_add_checkpoint`
    against the trusted keys (C2SP signed-note parsing of `egide.ledger.checkpoint`).
    """
    if len(body) > MAX_REQUEST_BYTES:
        msg = f"the request is larger than {MAX_REQUEST_BYTES} bytes"
        raise ValueError(msg)
    end = body.find(b"\n")
    if end < 0:
        msg = "the request has no 'old <size>' line"
        raise ValueError(msg)
    match = _OLD_LINE.fullmatch(body[:end])
    if match is None:
        msg = "the first line must be 'old <size>' (decimal, no leading zeros)"
        raise ValueError(msg)
    old_size = int(match.group(1))
    if old_size > _MAX_SIZE:
        msg = "the old size does not fit in 64 bits"
        raise ValueError(msg)
    proof: list[bytes] = []
    pos = end + 1
    while True:
        end = body.find(b"\n", pos)
        if end < 0:
            msg = "the request has no empty line before the checkpoint"
            raise ValueError(msg)
        line = body[pos:end]
        pos = end + 1
        if not line:
            break
        if len(proof) == MAX_PROOF_LINES:
            msg = f"the request has more than {MAX_PROOF_LINES} consistency proof lines"
            raise ValueError(msg)
        digest = _b64decode(line, f"consistency proof line {len(proof) + 1}")
        if len(digest) != _HASH_SIZE:
            msg = f"consistency proof line {len(proof) + 1} is not a {_HASH_SIZE}-byte hash"
            raise ValueError(msg)
        proof.append(digest)
    note = body[pos:]
    if not note:
        msg = "the request has no checkpoint after the empty line"
        raise ValueError(msg)
    if len(note) > MAX_NOTE_BYTES:
        msg = f"the checkpoint note is larger than {MAX_NOTE_BYTES} bytes"
        raise ValueError(msg)
    if old_size == 0 and proof:
        # tlog-witness: "The proof MUST be empty if the old size is zero."
        msg = "a request from old size 0 must not carry a consistency proof"
        raise ValueError(msg)
    return AddCheckpoint(old_size=old_size, proof=tuple(proof), note=note)


def format_add_checkpoint(old_size: int, proof: Sequence[bytes], note: bytes) -> bytes:
    """The add-checkpoint body for `note` (tlog-witness); ValueError for what the witness would
    refuse to parse. `parse_add_checkpoint(format_add_checkpoint(...))` gives the inputs back."""
    if (
        isinstance(old_size, bool)
        or not isinstance(old_size, int)
        or not 0 <= old_size <= _MAX_SIZE
    ):
        msg = "the old size must be an integer in 0 .. 2**64 - 1"
        raise ValueError(msg)
    if len(proof) > MAX_PROOF_LINES:
        msg = f"a consistency proof has at most {MAX_PROOF_LINES} hashes"
        raise ValueError(msg)
    if old_size == 0 and proof:
        msg = "a request from old size 0 carries no consistency proof"
        raise ValueError(msg)
    if any(not isinstance(h, bytes) or len(h) != _HASH_SIZE for h in proof):
        msg = f"every consistency proof element must be a {_HASH_SIZE}-byte hash"
        raise ValueError(msg)
    if not isinstance(note, bytes) or not note or len(note) > MAX_NOTE_BYTES:
        msg = f"the checkpoint note must be 1 .. {MAX_NOTE_BYTES} bytes"
        raise ValueError(msg)
    lines = [f"old {old_size}\n".encode("ascii")]
    lines += [base64.b64encode(h) + b"\n" for h in proof]
    return b"".join(lines) + b"\n" + note


def note_origin(note: bytes) -> str:
    """The origin line of a checkpoint note, *unverified*: only to choose which keys to verify
    the note with (`decide_add_checkpoint` then pins the origin it verified)."""
    first, sep, _ = note.partition(b"\n")
    try:
        origin = first.decode("utf-8")
    except UnicodeDecodeError:
        msg = "the checkpoint's origin line is not UTF-8"
        raise ValueError(msg) from None
    if not sep or not origin or any(ch < " " for ch in origin):
        msg = "the checkpoint has no origin line"
        raise ValueError(msg)
    return origin


# --------------------------------------------------------------------------- the decision


class RefusalKind(StrEnum):
    """Why a witness refuses to cosign (tlog-witness), with the HTTP status each answers."""

    UNKNOWN_ORIGIN = "unknown-origin"  # 404: not a log this witness witnesses
    BAD_SIGNATURE = "bad-signature"  # 403: no trusted key signed the note
    BAD_REQUEST = "bad-request"  # 400: old size larger than the checkpoint's
    SIZE_MISMATCH = "size-mismatch"  # 409: old size is not what the witness holds
    FORK = "fork"  # 409: same size as the witness's, another root
    BAD_PROOF = "bad-proof"  # 422: the consistency proof does not verify

    @property
    def status(self) -> int:
        return _STATUS[self]


_STATUS = {
    RefusalKind.UNKNOWN_ORIGIN: 404,
    RefusalKind.BAD_SIGNATURE: 403,
    RefusalKind.BAD_REQUEST: 400,
    RefusalKind.SIZE_MISMATCH: 409,
    RefusalKind.FORK: 409,
    RefusalKind.BAD_PROOF: 422,
}


@dataclass(frozen=True)
class Refusal:
    """The witness does not cosign. `latest_size` is the size it holds (for 409 answers);
    `checkpoint` is the signed checkpoint refused, when its signature did verify (evidence)."""

    kind: RefusalKind
    message: str
    latest_size: int | None = None
    checkpoint: Checkpoint | None = None

    @property
    def status(self) -> int:
        return self.kind.status

    @property
    def is_evidence(self) -> bool:
        """A checkpoint the log signed that contradicts what the witness cosigned: a fork (same
        size, another root) for certain, or a proof that does not verify (a fork, or a broken
        client). Worth keeping and raising an alarm for."""
        return self.kind in {RefusalKind.FORK, RefusalKind.BAD_PROOF}


@dataclass(frozen=True)
class Decision:
    """The witness cosigns `checkpoint`. `note` is what to store: the checkpoint text with the
    trusted log signature only. `new` is False when it already held this very checkpoint."""

    checkpoint: Checkpoint
    note: bytes
    new: bool


def trusted_note(note: bytes, verifier: CheckpointVerifier) -> bytes:
    """`note` (already verified by `verifier`) reduced to its text and the signature lines of
    `verifier`'s key: signatures from keys the witness does not trust are not kept."""
    text = note.decode("utf-8")
    cut = text.rfind("\n\n")
    body, block = text[: cut + 1], text[cut + 2 :]
    kept = []
    for name, raw, line in _signature_lines(block):
        if name == verifier.name and raw[:_KEY_ID_SIZE] == verifier.key_id:
            kept.append(line + "\n")
    return (body + "\n" + "".join(kept)).encode("utf-8")


def decide_add_checkpoint(
    *,
    origin: str,
    trusted: Sequence[CheckpointVerifier],
    latest: Checkpoint | None,
    request: AddCheckpoint,
) -> Decision | Refusal:
    """The witness's state machine for one add-checkpoint request (tlog-witness), pure.

    `origin` is the log the request is for (`note_origin`), `trusted` the log's verifier keys
    (empty: an origin this witness does not witness), `latest` the checkpoint the witness holds
    for it (None: never cosigned one). The checks run in the specification's order; the caller
    must run this and persist the result atomically (one request at a time per origin).
    """
    if not trusted:
        return Refusal(RefusalKind.UNKNOWN_ORIGIN, f"this witness does not witness {origin!r}")
    if latest is not None and latest.origin != origin:
        msg = f"the stored checkpoint is for {latest.origin!r}, not {origin!r}"
        raise ValueError(msg)
    checkpoint: Checkpoint | None = None
    signer: CheckpointVerifier | None = None
    problems: list[str] = []
    for verifier in trusted:
        try:
            checkpoint = verifier.verify(request.note, expected_origin=origin)
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        signer = verifier
        break
    if checkpoint is None or signer is None:
        msg = f"the checkpoint is not signed by a key trusted for {origin!r}: {problems[0]}"
        return Refusal(RefusalKind.BAD_SIGNATURE, msg)
    if request.old_size > checkpoint.size:
        msg = f"old size {request.old_size} is larger than the checkpoint's {checkpoint.size}"
        return Refusal(RefusalKind.BAD_REQUEST, msg, checkpoint=checkpoint)
    held = latest.size if latest is not None else 0
    if request.old_size != held:
        msg = f"old size {request.old_size} is not the size this witness holds ({held})"
        return Refusal(RefusalKind.SIZE_MISMATCH, msg, latest_size=held, checkpoint=checkpoint)
    note = trusted_note(request.note, signer)
    if latest is None:
        # First checkpoint of this log: trusted on first use, as tlog-witness allows (old 0).
        return Decision(checkpoint=checkpoint, note=note, new=True)
    if checkpoint.size == latest.size:
        if checkpoint.root != latest.root:
            msg = (
                f"FORK: the log signed two different trees of size {checkpoint.size}; this "
                "witness keeps the one it cosigned"
            )
            return Refusal(RefusalKind.FORK, msg, latest_size=held, checkpoint=checkpoint)
        if request.proof:
            msg = "a consistency proof between equal sizes must be empty"
            return Refusal(RefusalKind.BAD_PROOF, msg, checkpoint=checkpoint)
        return Decision(checkpoint=checkpoint, note=note, new=False)
    if latest.size == 0:
        # Every tree extends the empty tree; the request carried no proof (old size 0).
        return Decision(checkpoint=checkpoint, note=note, new=True)
    try:
        # RFC 9162 section 2.1.4.2 against the root this witness cosigned, not a root the
        # client supplies: the client only supplies the proof.
        merkle.verify_consistency(
            old_size=latest.size,
            new_size=checkpoint.size,
            old_root=latest.root,
            new_root=checkpoint.root,
            proof=list(request.proof),
        )
    except merkle.ProofError as exc:
        msg = (
            f"the checkpoint of size {checkpoint.size} is not proven consistent with the one "
            f"of size {latest.size} this witness cosigned: {exc}"
        )
        return Refusal(RefusalKind.BAD_PROOF, msg, checkpoint=checkpoint)
    return Decision(checkpoint=checkpoint, note=note, new=True)


# --------------------------------------------------------------------------- cosignatures


class CosignatureError(ValueError):
    """A cosignature is malformed, or not by the expected key, or does not verify."""


def cosigned_message(checkpoint: Checkpoint, timestamp: int) -> bytes:
    """What an Ed25519 cosignature/v1 signs (tlog-cosignature): the header line, the time line,
    then the checkpoint's whole note text (its final newline included, no signature lines)."""
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        msg = "a cosignature timestamp is an integer"
        raise ValueError(msg)
    if not 0 <= timestamp <= _MAX_TIMESTAMP:
        msg = "a cosignature timestamp is in 0 .. 2**63 - 1"
        raise ValueError(msg)
    return f"cosignature/v1\ntime {timestamp}\n".encode("ascii") + checkpoint.body()


def _vkey(name: str, key: bytes) -> str:
    kid = key_id(name, key, COSIGNATURE_V1)
    return f"{name}+{kid.hex()}+{_b64(COSIGNATURE_V1 + key)}"


class WitnessSigner:
    """Cosigns checkpoints with the witness's Ed25519 key (tlog-cosignature, cosignature/v1).

    One key serves one witness name: the Ed25519 message does not commit to the name
    (tlog-cosignature), so the key must not be reused under another name.
    """

    def __init__(self, *, name: str, seed: bytes) -> None:
        check_key_name(name)
        if not isinstance(seed, bytes) or len(seed) != 32:
            msg = "an Ed25519 seed is 32 bytes"
            raise ValueError(msg)
        self._name = name
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self._public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self._key_id = key_id(name, self._public, COSIGNATURE_V1)

    @property
    def name(self) -> str:
        """The witness name, on every cosignature line."""
        return self._name

    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key (RFC 8032)."""
        return self._public

    def verifier_key(self) -> str:
        """The verifier key: "<name>+<hex key ID>+<base64(0x04 || public key)>"."""
        return _vkey(self._name, self._public)

    def cosign_at_time(self, checkpoint: Checkpoint, timestamp: int) -> str:
        """The cosignature line (with its newline) over `checkpoint` at POSIX time
        `timestamp`: "— <name> base64(key ID || timestamp (8 bytes, big-endian) || sig)"."""
        signature = self._key.sign(cosigned_message(checkpoint, timestamp))
        raw = self._key_id + timestamp.to_bytes(_TIMESTAMP_SIZE, "big") + signature
        return f"{_DASH} {self._name} {_b64(raw)}\n"

    def cosign(self, checkpoint: Checkpoint, *, clock: Clock) -> str:
        """`cosign_at_time` at the clock's current second (rounded down)."""
        return self.cosign_at_time(checkpoint, int(clock.now().timestamp()))


@dataclass(frozen=True)
class Cosignature:
    """A verified cosignature: who, when (POSIX seconds), and its signature line."""

    name: str
    key_id: bytes
    timestamp: int
    line: str


def _signature_lines(block: str) -> list[tuple[str, bytes, str]]:
    """(name, decoded bytes, line) of each signed-note signature line of `block`, a run of
    "— <name> <base64>\\n" lines; CosignatureError on anything else."""
    if not block.endswith("\n"):
        msg = "signature lines must end with a newline"
        raise CosignatureError(msg)
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        msg = f"more than {MAX_SIGNATURES} signature lines"
        raise CosignatureError(msg)
    parsed = []
    for number, line in enumerate(lines, start=1):
        fields = line.split(" ")
        if len(fields) != 3 or fields[0] != _DASH:
            msg = f"signature line {number} is not '{_DASH} <name> <signature>'"
            raise CosignatureError(msg)
        try:
            check_key_name(fields[1])
            raw = _b64decode(fields[2], f"signature line {number}")
        except ValueError as exc:
            raise CosignatureError(str(exc)) from None
        if len(raw) <= _KEY_ID_SIZE:
            msg = f"signature line {number} is too short to hold a key ID and a signature"
            raise CosignatureError(msg)
        parsed.append((fields[1], raw, line))
    return parsed


def parse_signature_lines(body: bytes) -> list[tuple[str, bytes, str]]:
    """The signature lines of a witness's 200 answer (tlog-witness: one or more note signature
    lines); CosignatureError when the body is not exactly that."""
    if len(body) > MAX_NOTE_BYTES:
        msg = f"the answer is larger than {MAX_NOTE_BYTES} bytes"
        raise CosignatureError(msg)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        msg = "the answer is not UTF-8"
        raise CosignatureError(msg) from None
    if not text or any(ch < " " and ch != "\n" for ch in text):
        msg = "the answer is empty or holds control characters"
        raise CosignatureError(msg)
    return _signature_lines(text)


class CosignatureVerifier:
    """Checks cosignature/v1 lines of one witness key (tlog-cosignature), given its vkey."""

    def __init__(self, vkey: str) -> None:
        parts = vkey.split("+", 2)  # base64 may contain "+"; the name and hex ID cannot
        if len(parts) != 3:
            msg = "a witness verifier key is <name>+<hex key ID>+<base64 key>"
            raise ValueError(msg)
        name, hex_id, encoded = parts
        check_key_name(name)
        if not _HEX_KEY_ID.fullmatch(hex_id):
            msg = "the witness verifier key's ID is not 8 lowercase hex digits"
            raise ValueError(msg)
        raw = _b64decode(encoded, "the witness verifier key")
        if len(raw) != 33 or raw[:1] != COSIGNATURE_V1:
            msg = "the witness verifier key is not an Ed25519 cosignature key (0x04 + 32 bytes)"
            raise ValueError(msg)
        public = raw[1:]
        if key_id(name, public, COSIGNATURE_V1).hex() != hex_id:
            msg = "the witness verifier key's ID does not match its name and key"
            raise ValueError(msg)
        self._name = name
        self._key_id = bytes.fromhex(hex_id)
        self._key = Ed25519PublicKey.from_public_bytes(public)
        self._vkey = vkey

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> bytes:
        return self._key_id

    def verifier_key(self) -> str:
        return self._vkey

    def matches(self, name: str, raw: bytes) -> bool:
        """Whether a signature line (name, decoded bytes) claims to be from this key."""
        return name == self._name and raw[:_KEY_ID_SIZE] == self._key_id

    def verify_line(
        self, checkpoint: Checkpoint, line: str, *, not_after: int | None = None
    ) -> Cosignature:
        """Check one cosignature line over `checkpoint`; `not_after` refuses timestamps later
        than it (POSIX seconds: a cosignature from the future, tlog-cosignature allows it)."""
        ((name, raw, text),) = _signature_lines(line if line.endswith("\n") else line + "\n")
        return self.verify_parsed(checkpoint, name, raw, text, not_after=not_after)

    def verify_parsed(
        self,
        checkpoint: Checkpoint,
        name: str,
        raw: bytes,
        line: str,
        *,
        not_after: int | None = None,
    ) -> Cosignature:
        """`verify_line` for a line already split by `parse_signature_lines`."""
        if not self.matches(name, raw):
            msg = f"the cosignature is not by {self._name} (key ID {self._key_id.hex()})"
            raise CosignatureError(msg)
        if len(raw) != _COSIGNATURE_SIZE:
            msg = f"a cosignature is {_COSIGNATURE_SIZE} bytes, this one {len(raw)}"
            raise CosignatureError(msg)
        timestamp = int.from_bytes(raw[_KEY_ID_SIZE : _KEY_ID_SIZE + _TIMESTAMP_SIZE], "big")
        if timestamp > _MAX_TIMESTAMP:
            msg = "the cosignature's timestamp exceeds 2**63 - 1"
            raise CosignatureError(msg)
        if not_after is not None and timestamp > not_after:
            msg = f"the cosignature by {self._name} is dated in the future ({timestamp})"
            raise CosignatureError(msg)
        try:
            self._key.verify(
                raw[_KEY_ID_SIZE + _TIMESTAMP_SIZE :], cosigned_message(checkpoint, timestamp)
            )
        except InvalidSignature:
            msg = f"the cosignature by {self._name} does not verify"
            raise CosignatureError(msg) from None
        return Cosignature(name=name, key_id=self._key_id, timestamp=timestamp, line=line)


def verify_cosignatures(
    checkpoint: Checkpoint,
    body: bytes,
    verifiers: Sequence[CosignatureVerifier],
    *,
    not_after: int | None = None,
) -> list[Cosignature]:
    """The cosignatures of `body` (a witness's answer) over `checkpoint` made by one of
    `verifiers`; lines of other keys are ignored (tlog-witness: "The client MUST ignore any
    cosignatures from unknown keys"). CosignatureError when a line of a trusted key does not
    verify, or when none is from a trusted key."""
    found: list[Cosignature] = []
    for name, raw, line in parse_signature_lines(body):
        for verifier in verifiers:
            if verifier.matches(name, raw):
                found.append(
                    verifier.verify_parsed(checkpoint, name, raw, line, not_after=not_after)
                )
                break
    if not found:
        msg = "the answer holds no cosignature by a trusted witness key"
        raise CosignatureError(msg)
    return found

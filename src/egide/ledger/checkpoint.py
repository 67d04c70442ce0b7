"""Signed checkpoints of the ledger's Merkle tree, as C2SP signed notes.

Security role (DESIGN.md, contract 5): a checkpoint is the ledger's signed statement "my tree of
N entries has root R". Anyone holding the ledger's verifier key can check it, then use the
inclusion and consistency proofs of `egide.ledger.merkle` against it: an entry changed, removed
or reordered after a checkpoint was signed (or copied to a witness) no longer matches its root.
The writer signs with an Ed25519 key; verifiers need only the public verifier key string.

The format is the transparency ecosystem's, so existing tools can read it:

* https://c2sp.org/tlog-checkpoint: the note text is the origin line, the tree size in decimal
  without leading zeros, and the standard base64 of the 32-byte RFC 6962 root, each followed by
  a newline (no extension lines: Égide writes none and refuses them, since they would not be
  covered by `Checkpoint`);
* https://c2sp.org/signed-note: the text, a blank line, then one line per signature,
  "— <key name> <base64(4-byte key ID || signature)>"; key ID = SHA-256(key name || 0x0A ||
  0x01 || 32-byte Ed25519 public key)[:4], 0x01 being the Ed25519 signature type; the verifier
  key string is "<name>+<hex key ID>+<base64(0x01 || public key)>".

Verification is strict: every base64 field must be canonical (re-encoding it gives the same
text), numbers have no leading zeros, and a note either parses exactly or is refused, so that no
two different byte strings verify as the same checkpoint. Signatures from other keys (witness
cosignatures, a rotated key) are ignored, as the signed-note specification requires.

Pure on purpose: standard library and `cryptography` only, so a verifier runs apart from the
writer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "MAX_NOTE_BYTES",
    "MAX_SIGNATURES",
    "Checkpoint",
    "CheckpointError",
    "CheckpointSigner",
    "CheckpointVerifier",
    "check_key_name",
    "key_id",
]

# signed-note: "Signature types", 0x01 = Ed25519.
_ED25519 = b"\x01"
_HASH_SIZE = 32
_SIGNATURE_SIZE = 64
_KEY_ID_SIZE = 4
# signed-note: verifiers SHOULD bound the number of signatures (and MUST accept at least 16).
MAX_SIGNATURES = 100
MAX_NOTE_BYTES = 64 * 1024
_MAX_SIZE = (1 << 64) - 1  # tree sizes are 64-bit (RFC 9162 uint64 tree_size)
_DASH = "\u2014"  # em dash opening a signature line
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")  # ASCII only, no sign, no leading zeros
_HEX_KEY_ID = re.compile(r"[0-9a-f]{8}")


class CheckpointError(ValueError):
    """A signed note is not a valid checkpoint signed by the expected key; the message says why."""


def _has_control(text: str) -> bool:
    # signed-note: no ASCII control characters (below U+0020) other than newline.
    return any(ch < " " and ch != "\n" for ch in text)


def _check_key_name(name: str) -> None:
    # signed-note: key names are non-empty, with no Unicode spaces and no "+".
    if not isinstance(name, str) or not name:
        msg = "key name must be a non-empty string"
        raise ValueError(msg)
    if any(ch.isspace() or ch == "+" or ch < " " for ch in name):
        msg = f"key name {name!r} contains a space, a '+' or a control character"
        raise ValueError(msg)


def _b64decode(text: str) -> bytes:
    """Standard base64 (RFC 4648 section 4), canonical only; ValueError otherwise."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        msg = "not standard base64"
        raise ValueError(msg) from exc
    if base64.b64encode(raw).decode("ascii") != text:
        msg = "not canonical base64"  # e.g. non-zero padding bits: two spellings, one value
        raise ValueError(msg)
    return raw


def check_key_name(name: str) -> None:
    """Raise ValueError unless `name` is a valid signed-note key name (non-empty, no Unicode
    space, no "+", no control character)."""
    _check_key_name(name)


def key_id(name: str, public_key: bytes, signature_type: bytes = _ED25519) -> bytes:
    """The 4-byte signed-note key ID: SHA-256(name || 0x0A || type || key)[:4].

    The type is 0x01 for the log's Ed25519 note signatures (signed-note) and 0x04 for Ed25519
    witness cosignatures (C2SP tlog-cosignature, `egide.ledger.witness`).
    """
    return hashlib.sha256(name.encode("utf-8") + b"\n" + signature_type + public_key).digest()[:4]


@dataclass(frozen=True)
class Checkpoint:
    """The tree head a checkpoint signs: origin (the log's identity), size and RFC 6962 root."""

    origin: str
    size: int
    root: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin:
            msg = "checkpoint origin must be a non-empty string"
            raise ValueError(msg)
        if _has_control(self.origin) or "\n" in self.origin:
            msg = "checkpoint origin must not contain newlines or control characters"
            raise ValueError(msg)
        try:
            self.origin.encode("utf-8")
        except UnicodeEncodeError as exc:
            msg = "checkpoint origin must be encodable as UTF-8"
            raise ValueError(msg) from exc
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            msg = "checkpoint size must be an integer"
            raise ValueError(msg)
        if not 0 <= self.size <= _MAX_SIZE:
            msg = f"checkpoint size {self.size} is outside 0 .. 2**64 - 1"
            raise ValueError(msg)
        if not isinstance(self.root, bytes) or len(self.root) != _HASH_SIZE:
            msg = f"checkpoint root must be {_HASH_SIZE} bytes"
            raise ValueError(msg)

    def body(self) -> bytes:
        """The note text (tlog-checkpoint): origin, size and base64 root, one per line."""
        root = base64.b64encode(self.root).decode("ascii")
        return f"{self.origin}\n{self.size}\n{root}\n".encode()


class CheckpointSigner:
    """Signs checkpoints with the ledger's Ed25519 key (signed-note signature type 0x01)."""

    def __init__(self, *, name: str, seed: bytes) -> None:
        _check_key_name(name)
        if not isinstance(seed, bytes) or len(seed) != 32:
            msg = "an Ed25519 seed is 32 bytes"
            raise ValueError(msg)
        self._name = name
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self._public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self._key_id = key_id(name, self._public)

    @property
    def name(self) -> str:
        """The key name that appears on signature lines."""
        return self._name

    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key (RFC 8032)."""
        return self._public

    def verifier_key(self) -> str:
        """The signed-note verifier key: "<name>+<hex key ID>+<base64(0x01 || public key)>"."""
        encoded = base64.b64encode(_ED25519 + self._public).decode("ascii")
        return f"{self._name}+{self._key_id.hex()}+{encoded}"

    def sign(self, checkpoint: Checkpoint) -> bytes:
        """The whole signed note: the checkpoint text, a blank line and one signature line."""
        text = checkpoint.body()
        signature = self._key.sign(text)  # Ed25519 over the note text (signed-note, RFC 8032)
        encoded = base64.b64encode(self._key_id + signature).decode("ascii")
        return text + f"\n{_DASH} {self._name} {encoded}\n".encode()


class CheckpointVerifier:
    """Checks signed checkpoints against one verifier key; needs nothing of the writer."""

    def __init__(self, vkey: str) -> None:
        # The base64 key may itself contain "+"; the name (signed-note) and hex ID cannot.
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            msg = "a verifier key is <name>+<hex key ID>+<base64 key>"
            raise ValueError(msg)
        name, hex_id, encoded = parts
        _check_key_name(name)
        if not _HEX_KEY_ID.fullmatch(hex_id):
            msg = "the verifier key's ID is not 8 lowercase hex digits"
            raise ValueError(msg)
        try:
            raw = _b64decode(encoded)
        except ValueError as exc:
            msg = f"the verifier key's key is {exc}"
            raise ValueError(msg) from exc
        if len(raw) != 33 or raw[:1] != _ED25519:
            msg = "the verifier key is not an Ed25519 key (0x01 followed by 32 bytes)"
            raise ValueError(msg)
        public = raw[1:]
        if key_id(name, public).hex() != hex_id:
            msg = "the verifier key's ID does not match its name and key"
            raise ValueError(msg)
        self._name = name
        self._key_id = bytes.fromhex(hex_id)
        self._public = public
        self._key = Ed25519PublicKey.from_public_bytes(public)

    @property
    def name(self) -> str:
        """The key name expected on our signature line."""
        return self._name

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID expected at the start of our signature."""
        return self._key_id

    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        return self._public

    def verify(self, note: bytes, *, expected_origin: str | None = None) -> Checkpoint:
        """Check `note` is a checkpoint signed by this key and return it; CheckpointError if not.

        If `expected_origin` is given, the checkpoint's origin must equal it.
        """
        text, signature = self._split_and_find_signature(note)
        try:
            self._key.verify(signature, text)
        except InvalidSignature as exc:
            msg = f"the signature by {self._name} does not verify"
            raise CheckpointError(msg) from exc
        # Only text that the key signed is parsed past this point.
        checkpoint = _parse_body(text.decode("utf-8"))
        if expected_origin is not None and checkpoint.origin != expected_origin:
            msg = f"checkpoint origin {checkpoint.origin!r} is not {expected_origin!r}"
            raise CheckpointError(msg)
        return checkpoint

    def _split_and_find_signature(self, note: bytes) -> tuple[bytes, bytes]:
        """Split a signed note (signed-note "Format") and return (text, our 64-byte signature)."""
        if len(note) > MAX_NOTE_BYTES:
            msg = f"signed note is larger than {MAX_NOTE_BYTES} bytes"
            raise CheckpointError(msg)
        try:
            decoded = note.decode("utf-8")
        except UnicodeDecodeError as exc:
            msg = "signed note is not valid UTF-8"
            raise CheckpointError(msg) from exc
        if _has_control(decoded):
            msg = "signed note contains a control character"
            raise CheckpointError(msg)
        if not decoded.endswith("\n"):
            msg = "signed note does not end with a newline"
            raise CheckpointError(msg)
        # The text is separated from the signatures by the last empty line.
        cut = decoded.rfind("\n\n")
        if cut < 0:
            msg = "signed note has no blank line before its signatures"
            raise CheckpointError(msg)
        text, block = decoded[: cut + 1], decoded[cut + 2 :]
        lines = block.split("\n")[:-1]  # block ends with "\n"; every line is non-empty here
        if not lines:
            msg = "signed note has no signature lines"
            raise CheckpointError(msg)
        if len(lines) > MAX_SIGNATURES:
            msg = f"signed note has more than {MAX_SIGNATURES} signatures"
            raise CheckpointError(msg)
        ours: list[bytes] = []
        for number, line in enumerate(lines, start=1):
            name, raw = _parse_signature_line(line, number)
            # signed-note: a signature is ours only if both the name and the key ID match;
            # any other one is from an unknown key and is ignored.
            if name == self._name and raw[:_KEY_ID_SIZE] == self._key_id:
                ours.append(raw[_KEY_ID_SIZE:])
        if not ours:
            msg = f"signed note has no signature by {self._name} (key ID {self._key_id.hex()})"
            raise CheckpointError(msg)
        if len(ours) > 1:
            msg = f"signed note has {len(ours)} signatures by {self._name}"
            raise CheckpointError(msg)
        if len(ours[0]) != _SIGNATURE_SIZE:
            msg = f"the signature by {self._name} is not {_SIGNATURE_SIZE} bytes"
            raise CheckpointError(msg)
        return text.encode("utf-8"), ours[0]


def _parse_signature_line(line: str, number: int) -> tuple[str, bytes]:
    """Parse "— <name> <base64(key ID || signature)>" (signed-note "Signatures")."""
    fields = line.split(" ")
    if len(fields) != 3 or fields[0] != _DASH:
        msg = f"signature line {number} is not '{_DASH} <name> <signature>'"
        raise CheckpointError(msg)
    name, encoded = fields[1], fields[2]
    try:
        _check_key_name(name)
        raw = _b64decode(encoded)
    except ValueError as exc:
        msg = f"signature line {number}: {exc}"
        raise CheckpointError(msg) from exc
    if len(raw) <= _KEY_ID_SIZE:
        msg = f"signature line {number} is too short to hold a key ID and a signature"
        raise CheckpointError(msg)
    return name, raw


def _parse_body(text: str) -> Checkpoint:
    """Parse the tlog-checkpoint note text: origin, size and root lines, nothing else."""
    lines = text.split("\n")[:-1]  # the text ends with "\n"
    if len(lines) < 3:
        msg = "checkpoint text has fewer than three lines"
        raise CheckpointError(msg)
    if len(lines) > 3:
        msg = "checkpoint has extension lines, which Égide does not accept"
        raise CheckpointError(msg)
    origin, size_text, root_text = lines
    if not origin:
        msg = "checkpoint origin is empty"
        raise CheckpointError(msg)
    if not _DECIMAL.fullmatch(size_text):
        msg = f"checkpoint size {size_text!r} is not a decimal number without leading zeros"
        raise CheckpointError(msg)
    size = int(size_text)
    if size > _MAX_SIZE:
        msg = f"checkpoint size {size} does not fit in 64 bits"
        raise CheckpointError(msg)
    try:
        root = _b64decode(root_text)
    except ValueError as exc:
        msg = f"checkpoint root is {exc}"
        raise CheckpointError(msg) from exc
    if len(root) != _HASH_SIZE:
        msg = f"checkpoint root is {len(root)} bytes, not {_HASH_SIZE}"
        raise CheckpointError(msg)
    return Checkpoint(origin=origin, size=size, root=root)

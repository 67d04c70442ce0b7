"""The keyring: key-encryption keys (KEKs) and long-lived named secrets, and their providers.

Security role: KEKs wrap every per-patient data key (envelope encryption, NIST SP 800-57 Part 1
section 6.1.1 key hierarchy). They never touch the database: the file provider keeps them in a
file sealed under a key derived from the operator's master secret (OWASP ASVS 5.0 V11.1/V13.3:
secrets stored outside the data they protect). Rotation adds a new KEK and makes it current;
retirement destroys an old KEK's material, which completes crypto-shredding of every data key
that was ever wrapped only under it (including copies left in backups).

`KeyProvider` is the seam: a PKCS#11 HSM provider will implement the same protocol later, with
the KEKs never leaving the HSM (wrap/unwrap happen inside it).

Keyring file format `egide-keyring/1` (JSON, UTF-8, mode 0600):

    {"format": "egide-keyring/1",
     "cipher": "AES-256-GCM",
     "kdf": {"name": "argon2id", "version": 19, "memory_kib": M, "iterations": T,
             "parallelism": P, "salt": base64(16 random bytes)},
     "nonce": base64(12 bytes), "sealed": base64(ciphertext || tag)}

The wrapping key is Argon2id(master secret, salt, T, M, P) -> 32 bytes (RFC 9106). `sealed` is
AES-256-GCM under it, with associated data = the canonical JSON (sorted keys, no spaces) of the
clear header {"cipher", "format", "kdf"}: weakening or swapping the KDF parameters breaks the
tag (RFC 9106 section 3.1 parameters must be authenticated along with the data they protect).
The sealed payload is JSON:

    {"current": "kek-…",
     "keks": [{"id", "created" (RFC 3339), "retired" (RFC 3339 or null),
               "material" (base64 32 bytes, null once retired)}],
     "secrets": {"blind-index": base64(32), "ledger-signing-seed": base64(32)}}

Writes are atomic (temporary file in the same directory, fsync, rename, fsync of the directory),
serialised between processes by an advisory lock on `<file>.lock`; a provider notices when
another process changed the file (e.g. `egide keys rotate` while the server runs) and reloads it
before its next operation, so a running server never wraps new keys under a KEK that was rotated
away from.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import fcntl
import json
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from argon2.exceptions import HashingError
from argon2.low_level import ARGON2_VERSION, Type, hash_secret_raw

from egide.core.clock import Clock, SystemClock
from egide.core.ids import RandomSource, SystemRandom
from egide.crypto.aead import KEY_SIZE, NONCE_SIZE, TAG_SIZE, AesGcm
from egide.crypto.errors import DecryptionError, KeyringError

FORMAT = "egide-keyring/1"
SECRET_SIZE = 32
# Named long-lived secrets created with the keyring: the HMAC key of blind indexes (kept apart
# from KEKs so rotating KEKs does not invalidate every search index) and the future Ed25519
# seed of the audit ledger's signing key.
SECRET_NAMES = ("blind-index", "ledger-signing-seed")
SALT_SIZE = 16  # RFC 9106 section 3.1: 128-bit salt

# Bounds on KDF parameters read from a file, so a planted file cannot make `open` allocate
# terabytes or spin for hours (denial of service), nor weaken the KDF to nothing.
_MIN_MEMORY_KIB, _MAX_MEMORY_KIB = 8, 4 * 1024 * 1024
_MAX_ITERATIONS, _MAX_PARALLELISM = 100, 64


class KeyProvider(Protocol):
    """Holds the KEKs and named secrets. A PKCS#11 HSM provider will implement this later."""

    def current_kek_id(self) -> str:
        """The id of the KEK that wraps new data keys."""
        ...

    def active_kek_ids(self) -> list[str]:
        """Ids of every KEK that can still unwrap (not retired), oldest first."""
        ...

    def wrap(self, kek_id: str, dek: bytes, aad: bytes) -> bytes:
        """Encrypt `dek` under KEK `kek_id`, bound to `aad`. KeyringError if unknown/retired."""
        ...

    def unwrap(self, kek_id: str, wrapped: bytes, aad: bytes) -> bytes:
        """Inverse of wrap. KeyringError if unknown/retired, DecryptionError if tampered."""
        ...

    def rotate(self) -> str:
        """Create a new KEK, make it current, persist, return its id."""
        ...

    def retire(self, kek_id: str) -> None:
        """Destroy a KEK's material. KeyringError for the current KEK or an unknown id."""
        ...

    def secret(self, name: str) -> bytes:
        """A named 32-byte long-lived secret. KeyringError for an unknown name."""
        ...


@dataclass(frozen=True)
class KekInfo:
    """Public facts about one KEK (never its material), for `egide keys list`."""

    id: str
    created: dt.datetime
    retired: dt.datetime | None


@dataclass(frozen=True)
class _Kek:
    id: str
    created: dt.datetime
    retired: dt.datetime | None
    material: bytes | None  # None once retired: the key is destroyed


@dataclass(frozen=True)
class _State:
    current: str
    keks: tuple[_Kek, ...]
    secrets: Mapping[str, bytes]


@dataclass(frozen=True)
class _KdfParams:
    memory_kib: int
    iterations: int
    parallelism: int
    salt: bytes

    def header(self) -> dict[str, Any]:
        return {
            "cipher": AesGcm.name,
            "format": FORMAT,
            "kdf": {
                "name": "argon2id",
                "version": ARGON2_VERSION,
                "memory_kib": self.memory_kib,
                "iterations": self.iterations,
                "parallelism": self.parallelism,
                "salt": _b64e(self.salt),
            },
        }

    def aad(self) -> bytes:
        # Canonical form: the same parameters always give the same bytes.
        return json.dumps(self.header(), sort_keys=True, separators=(",", ":")).encode()

    def derive(self, master_secret: bytes) -> bytes:
        """Argon2id (RFC 9106) of the master secret: the keyring's wrapping key."""
        try:
            return hash_secret_raw(
                secret=master_secret,
                salt=self.salt,
                time_cost=self.iterations,
                memory_cost=self.memory_kib,
                parallelism=self.parallelism,
                hash_len=KEY_SIZE,
                type=Type.ID,
                version=ARGON2_VERSION,
            )
        except HashingError:
            msg = "keyring KDF parameters are not usable"
            raise KeyringError(msg) from None


def _b64e(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _corrupt(detail: str) -> KeyringError:
    return KeyringError(f"keyring file is corrupt or not an Égide keyring ({detail})")


def _b64d(value: object, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise _corrupt(f"{what} is not a string")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise _corrupt(f"{what} is not base64") from None
    if size is not None and len(raw) != size:
        raise _corrupt(f"{what} has the wrong length")
    # Only the canonical encoding is accepted: base64 ignores unused trailing bits, and a
    # file that was altered anywhere must be refused, not quietly read the same.
    if _b64e(raw) != value:
        raise _corrupt(f"{what} is not canonical base64")
    return raw


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of duplicate keys silently; a keyring never has any.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _corrupt("duplicate JSON key")
    return result


def _int(value: object, what: str, low: int, high: int) -> int:
    # `type is int` refuses JSON booleans, which Python treats as ints.
    if type(value) is not int or not low <= value <= high:
        raise _corrupt(f"{what} out of range")
    return value


def _time(value: object, what: str) -> dt.datetime:
    if not isinstance(value, str):
        raise _corrupt(f"{what} is not a timestamp")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise _corrupt(f"{what} is not a timestamp") from None
    if parsed.tzinfo is None:
        raise _corrupt(f"{what} has no offset")
    return parsed


def _exact_keys(obj: object, keys: set[str], what: str) -> dict[str, Any]:
    # Unknown fields are refused: in the clear header they would be unauthenticated.
    if not isinstance(obj, dict) or set(obj) != keys:
        raise _corrupt(f"unexpected {what} fields")
    return obj


def _parse_header(doc: object) -> tuple[_KdfParams, bytes, bytes]:
    top = _exact_keys(doc, {"format", "cipher", "kdf", "nonce", "sealed"}, "top-level")
    if top["format"] != FORMAT:
        raise _corrupt("unknown format")
    if top["cipher"] != AesGcm.name:
        raise _corrupt("unknown cipher")
    kdf = _exact_keys(
        top["kdf"],
        {"name", "version", "memory_kib", "iterations", "parallelism", "salt"},
        "kdf",
    )
    if kdf["name"] != "argon2id" or kdf["version"] != ARGON2_VERSION:
        raise _corrupt("unknown KDF")
    params = _KdfParams(
        memory_kib=_int(kdf["memory_kib"], "memory_kib", _MIN_MEMORY_KIB, _MAX_MEMORY_KIB),
        iterations=_int(kdf["iterations"], "iterations", 1, _MAX_ITERATIONS),
        parallelism=_int(kdf["parallelism"], "parallelism", 1, _MAX_PARALLELISM),
        salt=_b64d(kdf["salt"], "salt", SALT_SIZE),
    )
    return params, _b64d(top["nonce"], "nonce", NONCE_SIZE), _b64d(top["sealed"], "sealed")


def _parse_payload(raw: bytes) -> _State:
    try:
        doc = json.loads(raw, object_pairs_hook=_no_duplicates)
    except ValueError:
        raise _corrupt("payload is not JSON") from None
    top = _exact_keys(doc, {"current", "keks", "secrets"}, "payload")
    keks: list[_Kek] = []
    if not isinstance(top["keks"], list):
        raise _corrupt("keks is not a list")
    for item in top["keks"]:
        entry = _exact_keys(item, {"id", "created", "retired", "material"}, "kek")
        if not isinstance(entry["id"], str) or not entry["id"]:
            raise _corrupt("kek id")
        retired = None if entry["retired"] is None else _time(entry["retired"], "retired")
        material = None if entry["material"] is None else _b64d(entry["material"], "kek", KEY_SIZE)
        if (retired is None) != (material is not None):
            raise _corrupt("kek retired flag and material disagree")
        keks.append(_Kek(entry["id"], _time(entry["created"], "created"), retired, material))
    ids = [k.id for k in keks]
    if len(set(ids)) != len(ids):
        raise _corrupt("duplicate kek id")
    current = top["current"]
    if not any(k.id == current and k.material is not None for k in keks):
        raise _corrupt("current kek missing or retired")
    secrets_doc = _exact_keys(top["secrets"], set(SECRET_NAMES), "secrets")
    secrets = {name: _b64d(secrets_doc[name], name, SECRET_SIZE) for name in SECRET_NAMES}
    return _State(current=current, keks=tuple(keks), secrets=secrets)


def _dump_payload(state: _State) -> bytes:
    return json.dumps(
        {
            "current": state.current,
            "keks": [
                {
                    "id": k.id,
                    "created": k.created.isoformat(),
                    "retired": None if k.retired is None else k.retired.isoformat(),
                    "material": None if k.material is None else _b64e(k.material),
                }
                for k in state.keks
            ],
            "secrets": {name: _b64e(value) for name, value in state.secrets.items()},
        },
        sort_keys=True,
    ).encode()


def _fsync_dir(directory: Path) -> None:
    # The rename is only durable once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes, *, exclusive: bool) -> None:
    """Write via a 0600 temp file in the same directory; `exclusive` never replaces a file."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o600)  # owner read/write only, whatever the umask
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            # link() fails if the target exists: no window in which a keyring is overwritten.
            try:
                os.link(tmp, path)
            except FileExistsError:
                msg = f"refusing to overwrite existing keyring {path}"
                raise KeyringError(msg) from None
        else:
            tmp.replace(path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _stamp(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class FileKeyProvider:
    """KEKs and named secrets in one sealed file; see the module docstring for its format."""

    def __init__(
        self,
        *,
        path: Path,
        params: _KdfParams,
        wrapping_key: bytes,
        state: _State,
        stamp: tuple[int, int, int, int],
        random: RandomSource,
        clock: Clock,
    ) -> None:
        """Use `create` or `open`; the constructor trusts its arguments."""
        self._path = path
        self._params = params
        self._wrapping_key = wrapping_key
        self._state = state
        self._stamp = stamp
        self._random = random
        self._clock = clock
        self._aead = AesGcm()
        self._lock = threading.RLock()

    # -- construction --------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: Path,
        master_secret: bytes,
        *,
        random: RandomSource | None = None,
        clock: Clock | None = None,
        kdf_memory_kib: int = 65536,
        kdf_iterations: int = 3,
    ) -> FileKeyProvider:
        """Create a new keyring with one KEK and every named secret; never overwrites a file."""
        rnd = random or SystemRandom()
        clk = clock or SystemClock()
        if not master_secret:
            msg = "the master secret must not be empty"
            raise KeyringError(msg)
        if path.exists():
            msg = f"refusing to overwrite existing keyring {path}"
            raise KeyringError(msg)
        if not (_MIN_MEMORY_KIB <= kdf_memory_kib <= _MAX_MEMORY_KIB) or not (
            1 <= kdf_iterations <= _MAX_ITERATIONS
        ):
            msg = "keyring KDF parameters out of range"
            raise KeyringError(msg)
        params = _KdfParams(kdf_memory_kib, kdf_iterations, 1, rnd.token_bytes(SALT_SIZE))
        wrapping_key = params.derive(master_secret)
        first = _Kek(_new_kek_id(rnd, ()), clk.now(), None, rnd.token_bytes(KEY_SIZE))
        state = _State(
            current=first.id,
            keks=(first,),
            secrets={name: rnd.token_bytes(SECRET_SIZE) for name in SECRET_NAMES},
        )
        data = _seal_file(params, wrapping_key, state, rnd)
        try:
            _write_atomic(path, data, exclusive=True)
            stamp = _stamp(path)
        except OSError as exc:
            msg = f"cannot write keyring {path}: {exc.strerror}"
            raise KeyringError(msg) from None
        return cls(
            path=path,
            params=params,
            wrapping_key=wrapping_key,
            state=state,
            stamp=stamp,
            random=rnd,
            clock=clk,
        )

    @classmethod
    def open(
        cls,
        path: Path,
        master_secret: bytes,
        *,
        random: RandomSource | None = None,
        clock: Clock | None = None,
    ) -> FileKeyProvider:
        """Open an existing keyring. KeyringError on a wrong secret or a corrupt file."""
        stamp, params, nonce, sealed = _read_file(path)
        wrapping_key = params.derive(master_secret)
        state = _unseal(params, wrapping_key, nonce, sealed)
        return cls(
            path=path,
            params=params,
            wrapping_key=wrapping_key,
            state=state,
            stamp=stamp,
            random=random or SystemRandom(),
            clock=clock or SystemClock(),
        )

    # -- KeyProvider ---------------------------------------------------------------------

    def current_kek_id(self) -> str:
        return self._fresh().current

    def active_kek_ids(self) -> list[str]:
        return [k.id for k in self._fresh().keks if k.material is not None]

    def wrap(self, kek_id: str, dek: bytes, aad: bytes) -> bytes:
        """AES-256-GCM key wrap with a fresh random nonce: nonce || ciphertext || tag."""
        kek = self._material(kek_id)
        nonce = self._random.token_bytes(NONCE_SIZE)
        return nonce + self._aead.encrypt(kek, nonce, dek, aad)

    def unwrap(self, kek_id: str, wrapped: bytes, aad: bytes) -> bytes:
        kek = self._material(kek_id)
        if len(wrapped) < NONCE_SIZE + TAG_SIZE:
            msg = "decryption failed"
            raise DecryptionError(msg)
        return self._aead.decrypt(kek, wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:], aad)

    def rotate(self) -> str:
        with self._writing() as state:
            kek = _Kek(
                _new_kek_id(self._random, [k.id for k in state.keks]),
                self._clock.now(),
                None,
                self._random.token_bytes(KEY_SIZE),
            )
            self._save(replace(state, current=kek.id, keks=(*state.keks, kek)))
            return kek.id

    def retire(self, kek_id: str) -> None:
        """Destroy the KEK's material for good. Retiring a retired KEK does nothing.

        The caller must first check that no data key is still wrapped under it
        (`Envelope.kek_usage`): those keys would become unrecoverable.
        """
        with self._writing() as state:
            if kek_id == state.current:
                msg = "refusing to retire the current KEK: rotate first"
                raise KeyringError(msg)
            found = [k for k in state.keks if k.id == kek_id]
            if not found:
                msg = f"unknown KEK {kek_id!r}"
                raise KeyringError(msg)
            if found[0].material is None:
                return
            now = self._clock.now()
            keks = tuple(
                replace(k, retired=now, material=None) if k.id == kek_id else k for k in state.keks
            )
            self._save(replace(state, keks=keks))

    def secret(self, name: str) -> bytes:
        value = self._fresh().secrets.get(name)
        if value is None:
            msg = f"unknown keyring secret {name!r}"
            raise KeyringError(msg)
        return value

    # -- extras for the CLI --------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    def list_keks(self) -> list[KekInfo]:
        """Every KEK, oldest first, with its creation and retirement times (no material)."""
        return [KekInfo(k.id, k.created, k.retired) for k in self._fresh().keks]

    def refresh(self) -> None:
        """Reload the file now (it is also reloaded automatically when it changes)."""
        with self._lock:
            self._reload()

    # -- internals -----------------------------------------------------------------------

    def _material(self, kek_id: str) -> bytes:
        for kek in self._fresh().keks:
            if kek.id == kek_id:
                if kek.material is None:
                    msg = f"KEK {kek_id!r} is retired"
                    raise KeyringError(msg)
                return kek.material
        msg = f"unknown KEK {kek_id!r}"
        raise KeyringError(msg)

    def _fresh(self) -> _State:
        """The current state, reloaded first if another process replaced the file."""
        try:
            stamp = _stamp(self._path)
        except OSError as exc:
            # Fail closed: a keyring that vanished must not keep serving stale keys.
            msg = f"cannot read keyring {self._path}: {exc.strerror}"
            raise KeyringError(msg) from None
        if stamp != self._stamp:
            with self._lock:
                self._reload()
        return self._state

    def _reload(self) -> None:
        stamp, params, nonce, sealed = _read_file(self._path)
        if params != self._params:
            # Same master secret but a new salt or cost: only a re-keyed or swapped file.
            msg = "the keyring file was replaced by a different keyring; open it again"
            raise KeyringError(msg)
        self._state = _unseal(params, self._wrapping_key, nonce, sealed)
        self._stamp = stamp

    @contextmanager
    def _writing(self) -> Iterator[_State]:
        """Exclusive access across threads and processes, on the latest state from disk."""
        lock_path = self._path.with_name(self._path.name + ".lock")
        with self._lock:
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                msg = f"cannot lock keyring {self._path}: {exc.strerror}"
                raise KeyringError(msg) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # advisory lock, released by close
                self._reload()
                yield self._state
            finally:
                os.close(fd)

    def _save(self, state: _State) -> None:
        data = _seal_file(self._params, self._wrapping_key, state, self._random)
        try:
            _write_atomic(self._path, data, exclusive=False)
            self._stamp = _stamp(self._path)
        except OSError as exc:
            msg = f"cannot write keyring {self._path}: {exc.strerror}"
            raise KeyringError(msg) from None
        self._state = state


def _new_kek_id(random: RandomSource, existing: tuple[str, ...] | list[str]) -> str:
    while True:
        kek_id = "kek-" + random.token_bytes(4).hex()
        if kek_id not in existing:
            return kek_id


def _seal_file(params: _KdfParams, wrapping_key: bytes, state: _State, rnd: RandomSource) -> bytes:
    nonce = rnd.token_bytes(NONCE_SIZE)  # fresh for every write: never reused under the key
    sealed = AesGcm().encrypt(wrapping_key, nonce, _dump_payload(state), params.aad())
    doc = {**params.header(), "nonce": _b64e(nonce), "sealed": _b64e(sealed)}
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def _read_file(path: Path) -> tuple[tuple[int, int, int, int], _KdfParams, bytes, bytes]:
    try:
        with path.open("rb") as fh:
            stamp = _stamp_fd(fh.fileno())
            raw = fh.read(16 * 1024 * 1024)  # a keyring is a few KiB; refuse to slurp more
    except OSError as exc:
        msg = f"cannot read keyring {path}: {exc.strerror}"
        raise KeyringError(msg) from None
    try:
        doc = json.loads(raw, object_pairs_hook=_no_duplicates)
    except ValueError:
        raise _corrupt("not JSON") from None
    params, nonce, sealed = _parse_header(doc)
    return stamp, params, nonce, sealed


def _stamp_fd(fd: int) -> tuple[int, int, int, int]:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def _unseal(params: _KdfParams, wrapping_key: bytes, nonce: bytes, sealed: bytes) -> _State:
    try:
        payload = AesGcm().decrypt(wrapping_key, nonce, sealed, params.aad())
    except DecryptionError:
        msg = "wrong master secret, or the keyring file was altered"
        raise KeyringError(msg) from None
    return _parse_payload(payload)

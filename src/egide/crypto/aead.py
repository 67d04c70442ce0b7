"""Authenticated encryption with associated data (AEAD): the one primitive that seals patient data.

Security role: `AesGcm` is AES-256-GCM (NIST SP 800-38D) with 96-bit nonces, the cipher behind
the keyring, key wrapping and every sealed resource body (DESIGN.md, contract 3; OWASP ASVS 5.0
V11.3.2 approved AEAD, V11.3.4 unique nonces). Its `encrypt`/`decrypt` refuse anything but a
256-bit key and a 96-bit nonce, so a wrong-sized key from a bug never silently gives AES-128.
Every authentication failure becomes one opaque `DecryptionError`.

`aesgcm_raw_encrypt`/`aesgcm_raw_decrypt` expose the bare primitive (any AES key size, any nonce
size the library supports) only so the published Wycheproof vectors can exercise it; Égide's own
code goes through `AesGcm`.

`UnsafeNullCipher` gives NO confidentiality and NO integrity: it exists so benchmarks can measure
the cost of everything but the cipher. Never use it for data.
"""

from __future__ import annotations

from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from egide.crypto.errors import CryptoError, DecryptionError

KEY_SIZE = 32  # AES-256
NONCE_SIZE = 12  # 96 bits: the IV length SP 800-38D section 8.2.1 recommends
TAG_SIZE = 16  # full 128-bit tag; SP 800-38D section 5.2.1.2 allows shorter, we never do

_AES_KEY_SIZES = frozenset({16, 24, 32})


class Aead(Protocol):
    """An AEAD cipher: `decrypt` either returns the exact plaintext or raises DecryptionError."""

    name: str

    def encrypt(self, key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """Return ciphertext || tag."""
        ...

    def decrypt(self, key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        """Return the plaintext, or raise DecryptionError if anything was altered."""
        ...


def _check_raw(key: bytes, nonce: bytes) -> None:
    if len(key) not in _AES_KEY_SIZES:
        msg = "AES key must be 16, 24 or 32 bytes"
        raise CryptoError(msg)
    # The library accepts IVs of 8..128 bytes; anything else is refused before it is used.
    if not 8 <= len(nonce) <= 128:
        msg = "AES-GCM nonce size not supported (8 to 128 bytes)"
        raise CryptoError(msg)


def aesgcm_raw_encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Bare AES-GCM encryption (SP 800-38D) with a 128-bit tag; for test vectors only.

    Raises CryptoError for parameters the primitive does not support.
    """
    _check_raw(key, nonce)
    return AESGCM(key).encrypt(nonce, plaintext, aad)


def aesgcm_raw_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """Bare AES-GCM decryption; DecryptionError when the tag does not verify.

    Raises CryptoError for parameters the primitive does not support.
    """
    _check_raw(key, nonce)
    if len(ciphertext) < TAG_SIZE:
        msg = "decryption failed"
        raise DecryptionError(msg)
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except InvalidTag:
        msg = "decryption failed"
        # `from None`: the lower library's traceback says nothing useful and nothing safe.
        raise DecryptionError(msg) from None


class AesGcm:
    """AES-256-GCM with 96-bit nonces and 128-bit tags (NIST SP 800-38D).

    Nonces must never repeat under one key: callers draw them from a CSPRNG (96 random bits
    keep the collision probability below 2^-32 for 2^32 messages per key, SP 800-38D 8.3).
    """

    name = "AES-256-GCM"

    @staticmethod
    def _check(key: bytes, nonce: bytes) -> None:
        if len(key) != KEY_SIZE:
            msg = "AES-256-GCM needs a 32-byte key"
            raise CryptoError(msg)
        if len(nonce) != NONCE_SIZE:
            msg = "AES-256-GCM needs a 12-byte nonce"
            raise CryptoError(msg)

    def encrypt(self, key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        self._check(key, nonce)
        return aesgcm_raw_encrypt(key, nonce, plaintext, aad)

    def decrypt(self, key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        self._check(key, nonce)
        return aesgcm_raw_decrypt(key, nonce, ciphertext, aad)


class UnsafeNullCipher:
    """DANGER: NO ENCRYPTION AND NO AUTHENTICATION. BENCHMARKS ONLY.

    Returns the plaintext followed by 16 zero bytes in place of a tag, and on decryption checks
    nothing but the length. Anyone reading the database reads the data; anyone writing it can
    change it undetected. It exists only to measure the cost of the rest of the pipeline.
    Data sealed with it fails to open under `AesGcm` (the zero 'tag' never verifies), so the
    two are never silently mixed up.
    """

    name = "UNSAFE-NULL-CIPHER-NO-CONFIDENTIALITY-BENCHMARK-ONLY"

    def encrypt(self, key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        del key, nonce, aad  # deliberately ignored: this cipher protects nothing
        return plaintext + bytes(TAG_SIZE)

    def decrypt(self, key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        del key, nonce, aad
        if len(ciphertext) < TAG_SIZE:
            msg = "decryption failed"
            raise DecryptionError(msg)
        return ciphertext[:-TAG_SIZE]

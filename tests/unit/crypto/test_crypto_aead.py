"""AesGcm behaviour beyond the vectors, and the benchmark-only null cipher."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from egide.crypto.aead import AesGcm, UnsafeNullCipher
from egide.crypto.errors import DecryptionError

KEY, NONCE = bytes(range(32)), bytes(range(12))


@given(st.binary(max_size=200), st.binary(max_size=50), st.data())
def test_any_bit_flip_is_detected(plaintext: bytes, aad: bytes, data: st.DataObject) -> None:
    aead = AesGcm()
    sealed = aead.encrypt(KEY, NONCE, plaintext, aad)
    assert aead.decrypt(KEY, NONCE, sealed, aad) == plaintext
    bit = data.draw(st.integers(0, len(sealed) * 8 - 1))
    tampered = bytearray(sealed)
    tampered[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(DecryptionError):
        aead.decrypt(KEY, NONCE, bytes(tampered), aad)


def test_short_ciphertext_is_a_decryption_error() -> None:
    for n in range(16):
        with pytest.raises(DecryptionError):
            AesGcm().decrypt(KEY, NONCE, bytes(n), b"")


def test_null_cipher_is_unsafe_and_says_so() -> None:
    null = UnsafeNullCipher()
    assert "UNSAFE" in null.name
    sealed = null.encrypt(KEY, NONCE, b"secret diagnosis", b"aad")
    assert sealed == b"secret diagnosis" + bytes(16)  # no confidentiality at all
    assert null.decrypt(b"", b"", sealed, b"other") == b"secret diagnosis"
    with pytest.raises(DecryptionError):
        null.decrypt(KEY, NONCE, bytes(15), b"")
    # Never silently mixed up with the real cipher.
    with pytest.raises(DecryptionError):
        AesGcm().decrypt(KEY, NONCE, sealed, b"aad")

"""Every Project Wycheproof AES-GCM vector gives its expected result.

The vectors (tests/vectors/wycheproof/aes_gcm_test.json, Apache-2.0, see the README there) are
read from the repository copy, never from outside it.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

from egide.crypto.aead import AesGcm, aesgcm_raw_decrypt, aesgcm_raw_encrypt
from egide.crypto.errors import CryptoError, DecryptionError

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "wycheproof" / "aes_gcm_test.json"
DOC = json.loads(VECTORS.read_text())
CASES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    (group, case) for group in DOC["testGroups"] for case in group["tests"]
]


def _supported_iv(iv: bytes) -> bool:
    # cryptography (OpenSSL) accepts IVs of 8 to 128 bytes; Wycheproof also has 0..6-byte and
    # 257-byte IVs. Égide only ever uses 12-byte nonces.
    return 8 <= len(iv) <= 128


def test_every_vector_is_present() -> None:
    assert len(CASES) == DOC["numberOfTests"] == 316
    computed = sum(_supported_iv(bytes.fromhex(c["iv"])) for _, c in CASES)
    assert computed >= 280  # the refused sizes are a small, known minority


@pytest.mark.parametrize(("group", "case"), CASES, ids=[f"tc{c['tcId']}" for _, c in CASES])
def test_vector(group: dict[str, Any], case: dict[str, Any]) -> None:
    key, iv = bytes.fromhex(case["key"]), bytes.fromhex(case["iv"])
    aad, msg = bytes.fromhex(case["aad"]), bytes.fromhex(case["msg"])
    sealed = bytes.fromhex(case["ct"]) + bytes.fromhex(case["tag"])
    assert group["tagSize"] == 128
    result = case["result"]

    if not _supported_iv(iv):
        # Refusing is the only safe alternative to computing: never a wrong output.
        with pytest.raises(CryptoError) as enc_exc:
            aesgcm_raw_encrypt(key, iv, msg, aad)
        assert not isinstance(enc_exc.value, DecryptionError)
        with pytest.raises(CryptoError):
            aesgcm_raw_decrypt(key, iv, sealed, aad)
        return

    if result == "valid":
        assert aesgcm_raw_encrypt(key, iv, msg, aad) == sealed
        assert aesgcm_raw_decrypt(key, iv, sealed, aad) == msg
    elif result == "invalid":
        with pytest.raises(DecryptionError):
            aesgcm_raw_decrypt(key, iv, sealed, aad)
        assert aesgcm_raw_encrypt(key, iv, msg, aad) != sealed
    else:
        assert result == "acceptable"
        with contextlib.suppress(DecryptionError):
            assert aesgcm_raw_decrypt(key, iv, sealed, aad) == msg


AES256_96 = [
    c for g, c in CASES if g["keySize"] == 256 and g["ivSize"] == 96 and c["result"] == "valid"
]


@pytest.mark.parametrize("case", AES256_96, ids=[f"tc{c['tcId']}" for c in AES256_96])
def test_aesgcm_class_agrees_on_256_bit_96_bit_vectors(case: dict[str, Any]) -> None:
    key, iv = bytes.fromhex(case["key"]), bytes.fromhex(case["iv"])
    aad, msg = bytes.fromhex(case["aad"]), bytes.fromhex(case["msg"])
    sealed = bytes.fromhex(case["ct"]) + bytes.fromhex(case["tag"])
    assert AesGcm().encrypt(key, iv, msg, aad) == sealed
    assert AesGcm().decrypt(key, iv, sealed, aad) == msg


def test_aesgcm_class_refuses_short_keys_and_odd_nonces() -> None:
    aead = AesGcm()
    for key_len in (0, 16, 24, 31, 33):
        with pytest.raises(CryptoError):
            aead.encrypt(bytes(key_len), bytes(12), b"x", b"")
        with pytest.raises(CryptoError):
            aead.decrypt(bytes(key_len), bytes(12), bytes(17), b"")
    for nonce_len in (0, 8, 11, 13, 16):
        with pytest.raises(CryptoError):
            aead.encrypt(bytes(32), bytes(nonce_len), b"x", b"")

"""Session tokens (ASVS 5.0 V7.2) and CSRF tokens (synchronizer pattern, ASVS V3.5.1)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from egide.identity.session_tokens import (
    CSRF_SECRET_BYTES,
    check_csrf,
    csrf_token_for,
    looks_like_session_token,
    new_csrf_secret,
    new_session_token,
    token_hash,
)


class FixedBytes:
    """A RandomSource that always returns the same byte."""

    def __init__(self, byte: int) -> None:
        self.byte = byte

    def token_bytes(self, n: int) -> bytes:
        return bytes([self.byte]) * n


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# --- session tokens ------------------------------------------------------------------------


def test_session_token_carries_256_random_bits() -> None:
    """ASVS V7.2.3 asks for at least 128 bits from a CSPRNG; the identity issue for 256."""
    token = new_session_token()
    assert len(token) == 43
    assert len(_decode(token)) == 32
    assert looks_like_session_token(token)
    assert len({new_session_token() for _ in range(1000)}) == 1000


def test_session_token_known_answers() -> None:
    assert new_session_token(FixedBytes(0)) == "A" * 43
    assert new_session_token(FixedBytes(0xFF)) == "_" * 42 + "8"


def test_only_the_hash_is_stored() -> None:
    token = new_session_token()
    assert token_hash(token) == hashlib.sha256(token.encode()).digest()
    assert len(token_hash(token)) == 32
    assert token_hash(token) != token_hash(new_session_token())
    assert token.encode() not in token_hash(token)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "A" * 42,
        "A" * 44,
        "A" * 42 + "=",
        "A" * 42 + "+",
        "A" * 42 + "/",
        "A" * 43 + "\n",
        "A" * 42 + "é",
        None,
        b"A" * 43,
        43,
    ],
)
def test_junk_cookies_are_recognised_before_any_lookup(value: object) -> None:
    assert not looks_like_session_token(value)


# --- CSRF ----------------------------------------------------------------------------------


def test_csrf_token_checks_against_its_session_secret() -> None:
    secret = new_csrf_secret()
    assert len(secret) == CSRF_SECRET_BYTES == 32
    token = csrf_token_for(secret)
    assert len(token) == 86
    assert check_csrf(secret, token)
    assert not check_csrf(new_csrf_secret(), token)  # another session's token


def test_csrf_tokens_are_masked_afresh_each_time() -> None:
    """A different token on every page (against BREACH), all valid for the session."""
    secret = new_csrf_secret()
    tokens = {csrf_token_for(secret) for _ in range(50)}
    assert len(tokens) == 50
    assert all(check_csrf(secret, t) for t in tokens)
    assert all(_encode(secret) not in t for t in tokens)


def test_csrf_token_known_answer() -> None:
    """With an all-zero pad the masked half is the secret itself."""
    secret = bytes(range(32))
    token = csrf_token_for(secret, FixedBytes(0))
    assert token == _encode(bytes(32) + secret)
    assert csrf_token_for(secret, FixedBytes(0xFF)) == _encode(
        b"\xff" * 32 + bytes(b ^ 0xFF for b in secret)
    )


@pytest.mark.parametrize(
    "presented",
    [
        None,
        "",
        "A" * 85,
        "A" * 87,
        "A" * 85 + "=",
        "A" * 85 + "+",
        " " + "A" * 85,
        "A" * 86 + "\n",
    ],
)
def test_missing_or_malformed_csrf_tokens_fail(presented: str | None) -> None:
    assert not check_csrf(new_csrf_secret(), presented)


def test_the_secret_itself_is_not_a_token() -> None:
    secret = new_csrf_secret()
    assert not check_csrf(secret, _encode(secret))


@given(bit=st.integers(min_value=0, max_value=2 * CSRF_SECRET_BYTES * 8 - 1))
def test_any_bit_flip_fails(bit: int) -> None:
    secret = bytes(range(32, 64))
    raw = bytearray(_decode(csrf_token_for(secret)))
    raw[bit // 8] ^= 1 << (bit % 8)
    assert not check_csrf(secret, _encode(bytes(raw)))


@given(secret=st.binary(min_size=32, max_size=32))
def test_round_trip_any_secret(secret: bytes) -> None:
    assert check_csrf(secret, csrf_token_for(secret))


def test_secret_size_is_enforced() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        csrf_token_for(b"short")
    with pytest.raises(ValueError, match="32 bytes"):
        check_csrf(b"x" * 31, "A" * 86)

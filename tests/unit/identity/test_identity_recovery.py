"""Recovery codes: entropy and format, normalisation of typed input, hashing, single use."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from egide.identity.recovery import (
    ALPHABET,
    CODE_BYTES,
    CODE_COUNT,
    CODE_LENGTH,
    format_code,
    generate_codes,
    hash_code,
    match,
    normalise_code,
)

DISPLAY_RE = re.compile(r"[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){5}")
PEPPER = b"p" * 32


class FixedBytes:
    """A RandomSource that always returns the same byte."""

    def __init__(self, byte: int) -> None:
        self.byte = byte

    def token_bytes(self, n: int) -> bytes:
        return bytes([self.byte]) * n


def test_ten_distinct_codes_of_120_bits() -> None:
    """ASVS V6.5.3 (CSPRNG) and V6.5.2: at least 112 bits, so a plain hash may store them."""
    assert CODE_COUNT == 10
    assert CODE_BYTES * 8 == 120
    assert len(ALPHABET) == 32  # 5 bits a character, 24 characters
    codes = generate_codes()
    assert len(codes) == 10
    assert len(set(codes)) == 10
    for code in codes:
        assert DISPLAY_RE.fullmatch(code), code
        assert len(normalise_code(code) or "") == CODE_LENGTH


def test_known_answers_from_a_fixed_source() -> None:
    """Crockford base32 of all-zero and all-one bits."""
    assert generate_codes(1, random=FixedBytes(0x00)) == ["-".join(["0000"] * 6)]
    assert generate_codes(1, random=FixedBytes(0xFF)) == ["-".join(["ZZZZ"] * 6)]
    # 0x42 repeated: 5-bit groups 01000 01001 00001 00100 00100 10000 10010 00010, that is
    # 8 9 1 4 4 16 18 2, and Crockford's alphabet skips I and L: 16 is G, 18 is J.
    assert generate_codes(1, random=FixedBytes(0x42)) == [format_code("89144GJ2" * 3)]


def test_count_is_validated() -> None:
    with pytest.raises(ValueError, match="at least one"):
        generate_codes(0)


def test_a_repeating_random_source_fails_instead_of_looping() -> None:
    with pytest.raises(RuntimeError, match="repeating"):
        generate_codes(2, random=FixedBytes(0x42))


@pytest.mark.parametrize(
    "typed",
    [
        "7K3M-Q9XD-2B4F-HJ6N-PR8T-VW5Y",
        "7k3m-q9xd-2b4f-hj6n-pr8t-vw5y",
        "7K3MQ9XD2B4FHJ6NPR8TVW5Y",
        "  7K3M Q9XD 2B4F HJ6N PR8T VW5Y  ",
        "7K3M\u2013Q9XD\u2014 2B4F \u2011 HJ6N-PR8T-VW5Y",  # en dash, em dash, non-breaking hyphen
        "７Ｋ３Ｍ－Ｑ９ＸＤ－２Ｂ４Ｆ－ＨＪ６Ｎ－ＰＲ８Ｔ－ＶＷ５Ｙ",  # full-width (NFKC)
    ],
)
def test_normalisation_accepts_what_people_type(typed: str) -> None:
    assert normalise_code(typed) == "7K3MQ9XD2B4FHJ6NPR8TVW5Y"


def test_confusable_letters_are_read_as_digits() -> None:
    """Crockford: O is 0, I and L are 1."""
    assert normalise_code("OOOO-IIII-LLLL-oooo-iiii-llll") == "000011111111000011111111"


@pytest.mark.parametrize(
    "typed",
    [
        "",
        "7K3M-Q9XD-2B4F-HJ6N-PR8T",  # 20 characters
        "7K3M-Q9XD-2B4F-HJ6N-PR8T-VW5YZ",  # 25 characters
        "7K3M-Q9XD-2B4F-HJ6N-PR8T-VW5U",  # U is not in the alphabet
        "7K3M-Q9XD-2B4F-HJ6N-PR8T-VW5!",
        "7K3M_Q9XD_2B4F_HJ6N_PR8T_VW5Y",
        "7K3M-Q9XD-2B4F-HJ6N-PR8T-VW5Y" + " " * 200,  # too long to be worth looking at
        "7K3M-Q9XD-2B4F-HJ6N-PR8T-VW5٣",  # Arabic-Indic digit
    ],
)
def test_malformed_codes_are_refused(typed: str) -> None:
    assert normalise_code(typed) is None
    assert match(typed, [hash_code("7K3M-Q9XD-2B4F-HJ6N-PR8T-VW5Y")]) is None
    with pytest.raises(ValueError, match="not a recovery code"):
        hash_code(typed)


def test_stored_hash_is_domain_separated_sha256() -> None:
    code = "7K3M-Q9XD-2B4F-HJ6N-PR8T-VW5Y"
    expected = hashlib.sha256(b"egide-recovery-code/1:7K3MQ9XD2B4FHJ6NPR8TVW5Y").digest()
    assert hash_code(code) == expected
    assert hash_code(code.lower().replace("-", " ")) == expected
    assert hashlib.sha256(b"7K3MQ9XD2B4FHJ6NPR8TVW5Y").digest() != expected


def test_pepper_makes_an_hmac() -> None:
    code = "7K3M-Q9XD-2B4F-HJ6N-PR8T-VW5Y"
    peppered = hash_code(code, pepper=PEPPER)
    assert (
        peppered
        == hmac.new(PEPPER, b"egide-recovery-code/1:7K3MQ9XD2B4FHJ6NPR8TVW5Y", "sha256").digest()
    )
    assert peppered != hash_code(code)
    assert match(code, [peppered], pepper=PEPPER) == 0
    assert match(code, [peppered]) is None  # without the pepper, nothing matches
    assert match(code, [peppered], pepper=b"q" * 32) is None
    with pytest.raises(ValueError, match="16 bytes"):
        hash_code(code, pepper=b"short")


def test_match_finds_the_slot_and_single_use_is_the_callers_clearing() -> None:
    codes = generate_codes()
    stored: list[bytes | None] = [hash_code(c) for c in codes]
    assert match(codes[3], stored) == 3
    stored[3] = None  # the caller clears the slot in the login transaction
    assert match(codes[3], stored) is None
    for index, code in enumerate(codes):
        if index != 3:
            assert match(code.lower(), stored) == index
    assert match(generate_codes(1)[0], stored) is None
    assert match(codes[0], []) is None
    assert match(codes[0], [None] * 10) is None


def test_match_compares_every_slot_whatever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    """No early exit: the first slot matching costs as many comparisons as none matching,
    and used (None) slots are compared too."""
    codes = generate_codes()
    stored: list[bytes | None] = [hash_code(c) for c in codes]
    stored[5] = None
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(len(b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)  # the module recovery calls into
    for candidate in (codes[0], codes[9], codes[5], generate_codes(1)[0]):
        calls.clear()
        match(candidate, stored)
        assert calls == [32] * 10


@given(position=st.integers(min_value=0, max_value=CODE_LENGTH - 1), data=st.data())
def test_one_character_changed_does_not_match(position: int, data: st.DataObject) -> None:
    code = normalise_code(generate_codes(1)[0])
    assert code is not None
    replacement = data.draw(st.sampled_from([c for c in ALPHABET if c != code[position]]))
    changed = code[:position] + replacement + code[position + 1 :]
    assert match(changed, [hash_code(code)]) is None
    assert match(code, [hash_code(code)]) == 0


@given(st.binary(min_size=CODE_BYTES, max_size=CODE_BYTES))
def test_display_form_round_trips(raw: bytes) -> None:
    class Once:
        def token_bytes(self, n: int) -> bytes:
            assert n == CODE_BYTES
            return raw

    (code,) = generate_codes(1, random=Once())
    assert DISPLAY_RE.fullmatch(code)
    assert format_code(normalise_code(code) or "") == code

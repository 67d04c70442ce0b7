"""Blind indexes: known answers, normalisation, fixed-size prefix token sets."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from egide.crypto.blind import BlindIndex, normalise_text

KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
INDEX = BlindIndex(KEY)
words = st.text(alphabet="abcdefghijklmnopqrstuvwxyzéèçÉ -'", min_size=1, max_size=30)


def test_token_known_answer() -> None:
    # Computed independently with the standard library, from the documented definition.
    expected = hmac.new(KEY, b"family\x00dupont", hashlib.sha256).digest()
    assert INDEX.token("family", "dupont") == expected
    assert len(expected) == 32
    # And one fixed value, so a change of definition in both places would still be caught.
    assert INDEX.token("family", "dupont").hex() == expected.hex()
    assert hmac.new(
        KEY, b"prefix:given\x00el", hashlib.sha256
    ).digest() == INDEX.prefix_query_token("given", "ÉL")


def test_key_matters_and_must_be_32_bytes() -> None:
    assert BlindIndex(bytes(32)).token("family", "dupont") != INDEX.token("family", "dupont")
    for size in (0, 16, 31, 33, 64):
        with pytest.raises(ValueError, match="32 bytes"):
            BlindIndex(bytes(size))


def test_domain_separation_between_parameters() -> None:
    assert INDEX.token("family", "martin") != INDEX.token("given", "martin")
    assert INDEX.exact_query_token("family", "martin") != INDEX.exact_query_token("given", "martin")
    # The NUL separator keeps ("ab", "c") and ("a", "bc") apart and refuses NUL in names.
    assert INDEX.token("ab", "c") != INDEX.token("a", "bc")
    with pytest.raises(ValueError, match="NUL"):
        INDEX.token("fam\x00ily", "x")
    # Prefix and exact tokens of the same text differ.
    assert INDEX.prefix_query_token("family", "martin") != INDEX.exact_query_token(
        "family", "martin"
    )


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Élodie  DUPONT", "elodie dupont"),
        ("elodie dupont", "elodie dupont"),
        ("  Anaïs\tLe\u00a0Goff \n", "anais le goff"),
        ("Straße", "strasse"),
        ("ﬁlou", "filou"),  # compatibility ligature
        ("ＣＡＦＥ", "cafe"),  # full-width letters
        ("İbrahim", "ibrahim"),
        ("Çağla Öztürk", "cagla ozturk"),
        ("", ""),
    ],
)
def test_normalisation_examples(raw: str, normalised: str) -> None:
    assert normalise_text(raw) == normalised


@given(st.text())
def test_normalisation_is_idempotent(value: str) -> None:
    once = normalise_text(value)
    assert normalise_text(once) == once
    assert once == once.strip()
    assert "  " not in once


@given(word=st.text(max_size=40), slots=st.integers(2, 20), min_len=st.integers(1, 5))
def test_prefix_tokens_always_fill_exactly_the_slots(word: str, slots: int, min_len: int) -> None:
    tokens = INDEX.prefix_tokens("family", word, min_len=min_len, slots=slots)
    assert len(tokens) == slots
    assert len(set(tokens)) == slots
    assert all(len(t) == 32 for t in tokens)
    assert tokens == sorted(tokens)  # order carries no information about the length


def test_short_and_long_words_give_the_same_row_count() -> None:
    assert len(INDEX.prefix_tokens("family", "Li")) == len(
        INDEX.prefix_tokens("family", "Wolfeschlegelsteinhausenbergerdorff")
    )


def test_padding_is_random_but_real_tokens_are_stable() -> None:
    first, second = INDEX.prefix_tokens("family", "Li"), INDEX.prefix_tokens("family", "Li")
    common = set(first) & set(second)
    real = {INDEX.prefix_query_token("family", "li"), INDEX.exact_query_token("family", "li")}
    assert common == real


@given(word=words, data=st.data())
def test_prefix_query_finds_words_that_start_with_it(word: str, data: st.DataObject) -> None:
    norm = normalise_text(word)
    assume(len(norm) >= 2)
    cut = data.draw(st.integers(2, len(norm)))
    prefix = norm[:cut]
    assume(len(normalise_text(prefix)) >= 2)
    tokens = INDEX.prefix_tokens("family", word)
    assert INDEX.prefix_query_token("family", prefix.upper()) in tokens
    assert INDEX.exact_query_token("family", word) in tokens


@given(word=words, prefix=words)
def test_prefix_query_misses_words_that_do_not_start_with_it(word: str, prefix: str) -> None:
    norm, wanted = normalise_text(word), normalise_text(prefix)
    assume(len(wanted) >= 2)
    assume(not norm.startswith(wanted[:12]))  # 12 = indexed cap with the defaults
    tokens = INDEX.prefix_tokens("family", word)
    assert INDEX.prefix_query_token("family", prefix) not in tokens
    own = normalise_text(norm[:2])
    if len(own) >= 2:  # the word's own prefix, searched under another parameter
        assert INDEX.prefix_query_token("given", own) not in tokens


def test_examples_of_search() -> None:
    stored = INDEX.prefix_tokens("family", "Dupont")
    assert INDEX.prefix_query_token("family", "DUP") in stored
    assert INDEX.prefix_query_token("family", "dùpon") in stored
    assert INDEX.prefix_query_token("family", "dupont") in stored
    assert INDEX.prefix_query_token("family", "dupe") not in stored
    assert INDEX.prefix_query_token("family", "upo") not in stored  # not a prefix
    assert INDEX.exact_query_token("family", "DUPONT") in stored
    assert INDEX.exact_query_token("family", "dupon") not in stored
    with pytest.raises(ValueError, match="at least 2"):
        INDEX.prefix_query_token("family", "d")


def test_long_prefix_queries_are_truncated_to_the_indexed_length() -> None:
    name = "Wolfeschlegelsteinhausenbergerdorff"
    stored = INDEX.prefix_tokens("family", name)
    # Prefix tokens cover lengths 2..12 (11 slots) plus the exact word.
    assert INDEX.prefix_query_token("family", name[:20]) in stored
    assert INDEX.prefix_query_token("family", name) in stored
    # A false positive the caller must filter after opening the data:
    assert INDEX.prefix_query_token("family", name[:12] + "zzz") in stored


def test_empty_word_is_only_padding() -> None:
    tokens = INDEX.prefix_tokens("family", "   ")
    assert len(tokens) == 12
    assert INDEX.exact_query_token("family", "") not in tokens

"""Keyed blind indexes: searchable tokens for sealed values, never the values themselves.

Security role: FHIR search (e.g. `Patient?name=dup`) must work although names are sealed
(DESIGN.md contract 3). Instead of a clear value the database stores HMAC-SHA256 tokens
(RFC 2104, FIPS 198-1) under a 32-byte key kept in the keyring ("blind-index"), so someone
holding the database but not the keyring cannot test guesses offline. Tokens are
domain-separated by search parameter: equal values under `family` and `given` give unrelated
tokens, so rows cannot be linked across parameters.

`prefix_tokens` supports FHIR R4 string search (section 3.1.1.5.4.1: case- and
accent-insensitive "starts with" match) with a fixed number of tokens per word, padded with
random values and sorted, so the number or order of index rows does not reveal a name's length.

Residual leakage (accepted, documented): equal tokens reveal which rows share a value or a
prefix, so frequency analysis of short prefixes remains possible for someone who sees the index
and knows the population; a query token reveals which rows matched and repeated queries are
linkable; prefixes longer than `min_len + slots - 2` characters are not indexed (a longer
prefix query is truncated to that length and the caller must filter after opening the data).
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata

from egide.core.ids import RandomSource, SystemRandom

TOKEN_SIZE = 32
_PREFIX = "prefix:"
_EXACT = "exact:"


def normalise_text(value: str) -> str:
    """Case-, accent- and spacing-insensitive form: "Élodie  DUPONT" -> "elodie dupont".

    NFKD separates accents into combining marks (Unicode UAX #15), which are dropped; casefold
    is Unicode full case folding ("Straße" -> "strasse"); the two passes run twice because
    folding can produce new decomposable characters and compatibility forms can fold again.
    """
    text = value
    for _ in range(2):
        decomposed = unicodedata.normalize("NFKD", text)
        text = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()
    return " ".join(text.split())


class BlindIndex:
    """HMAC-SHA256 tokens for equality and prefix search over sealed values."""

    def __init__(self, key: bytes, *, random: RandomSource | None = None) -> None:
        if len(key) != 32:
            msg = "the blind-index key must be 32 bytes"
            raise ValueError(msg)
        self._key = key
        self._random = random or SystemRandom()

    def token(self, param: str, value: str) -> bytes:
        """HMAC-SHA256(key, param || 0x00 || value), 32 bytes. The value is used as given."""
        if "\x00" in param:
            # NUL separates the domain from the value; allowing it would make inputs ambiguous.
            msg = "search parameter names may not contain NUL"
            raise ValueError(msg)
        message = param.encode() + b"\x00" + value.encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def prefix_tokens(
        self, param: str, word: str, *, min_len: int = 2, slots: int = 12
    ) -> list[bytes]:
        """Exactly `slots` tokens to store for `word`: its prefixes, itself, random padding.

        Prefixes of the normalised word of length min_len.. (at most slots-1 of them) go under
        the "prefix:" domain, the whole word under "exact:"; the list is padded with random
        32-byte values and sorted, so neither its length nor its order says how long the word
        is. An empty word gives padding only (nothing to find).
        """
        if min_len < 1 or slots < 2:
            msg = "min_len must be >= 1 and slots >= 2"
            raise ValueError(msg)
        norm = normalise_text(word)
        tokens: list[bytes] = []
        if norm:
            longest = min(len(norm), min_len + slots - 2)
            tokens = [self.token(_PREFIX + param, norm[:n]) for n in range(min_len, longest + 1)]
            tokens.append(self.token(_EXACT + param, norm))
        tokens.extend(self._random.token_bytes(TOKEN_SIZE) for _ in range(slots - len(tokens)))
        return sorted(tokens)

    def prefix_query_token(
        self, param: str, prefix: str, *, min_len: int = 2, slots: int = 12
    ) -> bytes:
        """The token a "starts with `prefix`" search looks up (same min_len/slots as stored).

        ValueError when the normalised prefix is shorter than min_len (not indexed); a prefix
        longer than the indexed maximum is truncated, so results must be filtered after opening.
        """
        norm = normalise_text(prefix)
        if len(norm) < min_len:
            msg = f"a prefix search needs at least {min_len} characters"
            raise ValueError(msg)
        return self.token(_PREFIX + param, norm[: min_len + slots - 2])

    def exact_query_token(self, param: str, word: str) -> bytes:
        """The token an exact (normalised) match of `word` looks up."""
        return self.token(_EXACT + param, normalise_text(word))

"""Passwords: which ones may be chosen, and how they are stored and checked.

Security role: a password is the first factor of every account (and the only one for patients
who decline MFA). This module holds the two halves of NIST SP 800-63B-4 section 3.1.1.2
(password verifiers) and OWASP ASVS 5.0 chapter V6.2 that need no database:

* `check_password` is the policy applied when a password is set or changed. It returns the
  reasons a password is refused (an empty list means acceptable):

  - length, counted in Unicode code points after NFKC normalisation (63B-4 3.1.1.2: "each
    Unicode code point SHALL be counted as a single character"): at least 15 when the password
    is the only factor, at least 8 when it is used with MFA (63B-4 3.1.1.2; ASVS V6.2.1);
    up to `MAX_LENGTH` (1,024) accepted and never truncated (ASVS V6.2.8, V6.2.9: 64 or more).
    The upper bound exists only to bound the work one request can cause (normalisation, the
    blocklist and context checks below, and Argon2's initial BLAKE2b pass over the input): a
    megabyte "password" would otherwise cost CPU and memory for nothing. 1,024 code points is
    sixteen times the 64 the standards ask for, far beyond any passphrase or password manager;
  - no composition rules at all (63B-4 3.1.1.2 "SHALL NOT impose other composition rules";
    ASVS V6.2.5): any character is allowed, including spaces and emoji;
  - a blocklist of common passwords (63B-4 3.1.1.2; ASVS V6.2.4 asks for at least the top
    3,000): the whole "passwords" frequency list of zxcvbn 4.5.0 (30,000 entries, MIT), loaded
    lazily once;
  - context words (ASVS V6.1.2, V6.2.11), documented here as ASVS V6.1.2 asks:
    `BUILTIN_CONTEXT_WORDS` (the product's names) plus what the caller passes, which must be
    the user's name parts, the local part of their e-mail address and the organisation's
    (clinic's) name: `context_words_for` assembles that list;
  - repetitive or sequential strings ("aaaaaaaaaaaaaaa", "abcdefghijklmnop",
    "123456789012345").

  How the comparisons are made, kept deliberately simple:

  1. The password is folded: NFKC, case folding, accents removed (so "Hélène" matches
     "helene"). Folding is for comparisons only; the stored hash is of the exact password.
  2. Blocklist: refused when any of these forms is a listed password: the folded password;
     the same without spaces and punctuation; that without leading or trailing digits
     ("2024password!!" -> "password"); that with common character substitutions undone
     ("p@ssw0rd" -> "password"); and, for each form that is one unit repeated
     ("passwordpassword"), the unit.
  3. Context words: refused when the password is made only of context words (also with the
     substitutions undone), digits, spaces and punctuation: "Dupont.Jeanne-1975",
     "3gide2024!". A passphrase that merely contains the user's name with other words is
     accepted: that is a real passphrase, not a guessable variation.

  Not covered here: the breached-password check of ASVS V6.2.12 (a k-anonymity lookup is a
  network call; it belongs with the wiring, or an offline list) and keyboard walks not in the
  list ("qwertyuiopasdfg").

* `PasswordHasher` stores passwords as Argon2id hashes (RFC 9106; 63B-4 3.1.1.2 "salted and
  hashed using a suitable password hashing scheme"; ASVS V11.4.2) with the OWASP Password
  Storage Cheat Sheet's first Argon2id configuration as default: m = 19,456 KiB (19 MiB),
  t = 2, p = 1, a 16-byte random salt and a 32-byte output. The parameters are configurable
  (the cheat sheet's equivalent trade-offs, e.g. m=47,104 KiB t=1, or stronger); hashes made
  with other parameters still verify, and `needs_rehash` tells the caller to store a fresh
  hash after a successful login (rehash on login).

  Passwords are NFKC-normalised before hashing (63B-4 3.1.1.2: verifiers SHOULD apply the
  Normalization Process for Stabilized Strings with NFKC or NFKD) so that the same password
  typed on two systems that compose accents differently (NFC on one, NFD on another) still
  verifies. Nothing else is changed: no case folding, no trimming, no truncation (ASVS V6.2.8).

  `verify` never raises on a malformed stored hash; it answers False. `verify_or_dummy` checks
  against a dummy hash when there is no stored hash (unknown user, account without password),
  so that failing for an unknown user costs the same Argon2id computation as failing for a
  known one, and the response time does not reveal which accounts exist (ASVS V6.3.8).
  `bench/bench_identity.py` prints the two timings side by side.
"""

from __future__ import annotations

import functools
import itertools
import re
import secrets
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import argon2
from argon2.exceptions import Argon2Error

# --- Policy --------------------------------------------------------------------------------

MIN_LENGTH_SINGLE_FACTOR = 15  # NIST SP 800-63B-4 3.1.1.2; ASVS V6.2.1 "strongly recommended"
MIN_LENGTH_WITH_MFA = 8  # NIST SP 800-63B-4 3.1.1.2; ASVS V6.2.1
MAX_LENGTH = 1024  # code points after NFKC; see the module docstring for why a bound at all
# NFKC can lengthen a string (one ligature becomes up to 18 code points) or shorten it
# (combining sequences compose); inputs longer than this are refused before normalising, so
# normalisation itself is bounded. 4x leaves room for any realistic input that normalises
# to 1,024 or fewer (composition merges at most a few code points into one).
_MAX_RAW_LENGTH = 4 * MAX_LENGTH

# zxcvbn 4.5.0's "passwords" list holds 30,000 entries ranked by frequency; we take them all
# (ASVS V6.2.4 asks for at least the top 3,000). A smaller N would only let more through.
BLOCKLIST_SIZE = 30_000

# The product's own names: the first guesses of anyone attacking an Égide installation.
# Callers add the user's name parts, e-mail local part and organisation name
# (`context_words_for`). ASVS V6.1.2 asks for this list to be documented: it is, here.
BUILTIN_CONTEXT_WORDS: tuple[str, ...] = ("egide", "aegis")

# Context words shorter than this are ignored: "de", "le", "jo" would refuse too much.
_MIN_CONTEXT_WORD = 3

# Character substitutions undone before comparing ("p@ssw0rd" -> "password"). "1" stands for
# both "i" and "l", so there are two tables. Each maps one character to one character, so a
# substituted string keeps the positions of the original (the context check relies on it).
_LEET = {"0": "o", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
_LEET_I = str.maketrans({**_LEET, "1": "i"})
_LEET_L = str.maketrans({**_LEET, "1": "l"})
_LEET_SYMBOLS = frozenset("@$")

_ASCII_DIGITS = frozenset("0123456789")

# A string made of one unit this short, repeated, is refused as repetitive ("abababab...").
_MAX_REPEATED_UNIT = 4


class Refusal(StrEnum):
    """Why a password is refused. Values are stable codes; `describe` gives the sentence."""

    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    COMMON = "common"
    CONTEXT = "context"
    REPETITIVE = "repetitive"


def describe(reason: str, *, mfa: bool) -> str:
    """A sentence for the user saying why their password was refused (English)."""
    minimum = MIN_LENGTH_WITH_MFA if mfa else MIN_LENGTH_SINGLE_FACTOR
    sentences: dict[str, str] = {
        Refusal.TOO_SHORT: f"Use at least {minimum} characters.",
        Refusal.TOO_LONG: f"Use at most {MAX_LENGTH} characters.",
        Refusal.COMMON: "This password is among the most common ones; choose another.",
        Refusal.CONTEXT: (
            "This password is made of your name, e-mail, the organisation's or the product's "
            "name; add words of your own."
        ),
        Refusal.REPETITIVE: "This password is a repetition or a sequence; choose another.",
    }
    # Refusal is a StrEnum: its members hash and compare like their string codes.
    return sentences.get(reason, "This password is not acceptable.")


def normalise(password: str) -> str:
    """The form a password is hashed in: NFKC (NIST SP 800-63B-4 3.1.1.2), nothing else."""
    return unicodedata.normalize("NFKC", password)


def _fold(text: str) -> str:
    """The form passwords and words are compared in: NFKC, case-folded, accents removed."""
    folded = unicodedata.normalize("NFKD", normalise(text).casefold())
    return "".join(c for c in folded if not unicodedata.combining(c))


def _strip_digits(text: str) -> str:
    start, end = 0, len(text)
    while start < end and text[start].isdigit():
        start += 1
    while end > start and text[end - 1].isdigit():
        end -= 1
    return text[start:end]


def _repeated_unit(text: str) -> str | None:
    """The shortest unit `text` is a repetition of (at least twice), or None."""
    if len(text) < 2:
        return None
    period = (text + text).find(text, 1)
    return text[:period] if period < len(text) else None


def _compact(folded: str) -> str:
    """Letters and digits, plus the symbols that stand for letters ("@", "$")."""
    return "".join(c for c in folded if c.isalnum() or c in _LEET_SYMBOLS)


def _blocklist_forms(folded: str) -> set[str]:
    compact = _compact(folded)
    plain = "".join(c for c in compact if c.isalnum())
    core = _strip_digits(compact)
    forms = {
        folded,
        plain,
        _strip_digits(plain),
        core.translate(_LEET_I),
        core.translate(_LEET_L),
    }
    forms |= {unit for form in forms if (unit := _repeated_unit(form)) is not None}
    forms.discard("")
    return forms


@functools.cache
def common_passwords() -> frozenset[str]:
    """The blocklist: the top `BLOCKLIST_SIZE` of zxcvbn 4.5.0's passwords, folded.

    Loaded on first use and kept: importing the list costs ~30 ms and a few MB, which only
    processes that check new passwords should pay.
    """
    # A local import on purpose (see above): the module is a ~1 MB literal.
    from zxcvbn.frequency_lists import FREQUENCY_LISTS  # noqa: PLC0415

    ranked: list[str] = FREQUENCY_LISTS["passwords"][:BLOCKLIST_SIZE]
    # The list is lowercase already; folding anyway makes the comparison exact by design.
    return frozenset(_fold(word) for word in ranked)


def context_words_for(
    *, names: Iterable[str] = (), email: str | None = None, organisation: str | None = None
) -> list[str]:
    """The caller's share of the context words: name parts, e-mail local part, organisation.

    Only the e-mail's local part is used: domains ("gmail", "com") are not guesses about
    this user. `check_password` adds `BUILTIN_CONTEXT_WORDS` itself.
    """
    words = [n for n in names if n]
    if email:
        words.append(email.rpartition("@")[0] or email)
    if organisation:
        words.append(organisation)
    return words


def _context_terms(words: Iterable[str]) -> set[str]:
    """Folded words and their parts ("Jean-Pierre" -> "jeanpierre", "jean", "pierre")."""
    terms: set[str] = set()
    for word in (*BUILTIN_CONTEXT_WORDS, *words):
        folded = _fold(word)
        terms.add("".join(c for c in folded if c.isalnum()))
        terms.update(re.split(r"[\W_]+", folded))
    return {t for t in terms if len(t) >= _MIN_CONTEXT_WORD}


def _only_context(folded: str, terms: set[str]) -> bool:
    """True when every letter of the password belongs to an occurrence of a context word."""
    compact = _compact(folded)
    if not compact or not terms:
        return False
    covered = [False] * len(compact)
    for variant in {compact, compact.translate(_LEET_I), compact.translate(_LEET_L)}:
        for term in terms:
            start = variant.find(term)
            while start != -1:
                covered[start : start + len(term)] = [True] * len(term)
                start = variant.find(term, start + 1)
    if not any(covered):
        return False
    return all(not c.isalpha() for c, hit in zip(compact, covered, strict=True) if not hit)


def _sequential(text: str) -> bool:
    """A run of consecutive characters up or down ("abcdef", "987654", "1234567890123")."""
    if len(text) < 3:
        return False

    def step(a: str, b: str) -> int:
        if a in _ASCII_DIGITS and b in _ASCII_DIGITS:
            # Digits wrap around: "...7890123..." is as sequential as "...789".
            return {1: 1, 9: -1}.get((ord(b) - ord(a)) % 10, 0)
        return ord(b) - ord(a)

    steps = {step(a, b) for a, b in itertools.pairwise(text)}
    return steps in ({1}, {-1})


def _repetitive(folded: str) -> bool:
    dense = "".join(c for c in folded if not c.isspace())
    unit = _repeated_unit(dense)
    if unit is not None and len(unit) <= _MAX_REPEATED_UNIT:
        return True
    return _sequential(dense)


def check_password(password: str, *, mfa: bool, context_words: Sequence[str]) -> list[str]:
    """The reasons `password` may not be chosen (`Refusal` codes); empty when acceptable.

    `mfa`: the account uses a second factor, so 8 characters suffice instead of 15.
    `context_words`: the user's name parts, e-mail local part and organisation name (see
    `context_words_for`); "egide" and "aegis" are always added.
    """
    if len(password) > _MAX_RAW_LENGTH:
        return [Refusal.TOO_LONG]
    length = len(normalise(password))
    reasons: list[str] = []
    if length < (MIN_LENGTH_WITH_MFA if mfa else MIN_LENGTH_SINGLE_FACTOR):
        reasons.append(Refusal.TOO_SHORT)
    if length > MAX_LENGTH:
        reasons.append(Refusal.TOO_LONG)
        return reasons  # no point comparing an unacceptable length against lists
    folded = _fold(password)
    if not _blocklist_forms(folded).isdisjoint(common_passwords()):
        reasons.append(Refusal.COMMON)
    if _only_context(folded, _context_terms(context_words)):
        reasons.append(Refusal.CONTEXT)
    if _repetitive(folded):
        reasons.append(Refusal.REPETITIVE)
    return reasons


# --- Storage -------------------------------------------------------------------------------

# OWASP Password Storage Cheat Sheet, Argon2id: "a minimum configuration of 19 MiB of memory,
# an iteration count of 2, and 1 degree of parallelism".
OWASP_MEMORY_KIB = 19_456
OWASP_TIME_COST = 2
OWASP_PARALLELISM = 1
HASH_LEN = 32
SALT_LEN = 16  # 128-bit salt (RFC 9106 section 3.1); 63B-4 asks for at least 32 bits

# Sanity bounds on parameters read back from a stored hash: a corrupted or planted row must
# not make one login allocate gigabytes or spin for minutes (denial of service).
_MAX_STORED_MEMORY_KIB = 4 * 1024 * 1024
_MAX_STORED_TIME_COST = 100
_MAX_STORED_PARALLELISM = 64


@dataclass(frozen=True)
class Argon2Parameters:
    """Argon2id cost parameters (RFC 9106). Defaults: OWASP's m=19 MiB, t=2, p=1."""

    memory_kib: int = OWASP_MEMORY_KIB
    time_cost: int = OWASP_TIME_COST
    parallelism: int = OWASP_PARALLELISM
    hash_len: int = HASH_LEN
    salt_len: int = SALT_LEN

    def __post_init__(self) -> None:
        if not 1 <= self.parallelism <= _MAX_STORED_PARALLELISM:
            msg = "Argon2 parallelism must be between 1 and 64"
            raise ValueError(msg)
        if not 8 * self.parallelism <= self.memory_kib <= _MAX_STORED_MEMORY_KIB:
            msg = "Argon2 memory must be at least 8 KiB per lane and at most 4 GiB"
            raise ValueError(msg)
        if not 1 <= self.time_cost <= _MAX_STORED_TIME_COST:
            msg = "Argon2 time cost must be between 1 and 100"
            raise ValueError(msg)
        if self.hash_len < 16 or self.salt_len < 16:
            msg = "Argon2 hash and salt must be at least 16 bytes"
            raise ValueError(msg)


OWASP_PARAMETERS = Argon2Parameters()


@functools.cache
def _dummy_hash(params: Argon2Parameters) -> str:
    """A hash of a random password no one knows, computed once per parameter set.

    Checked in place of a missing hash so an unknown user costs the same Argon2id computation
    as a known one (ASVS V6.3.8). Its password is random, so it can never match.
    """
    return _hasher_for(params).hash(secrets.token_urlsafe(32))


def _hasher_for(params: Argon2Parameters) -> argon2.PasswordHasher:
    return argon2.PasswordHasher(
        time_cost=params.time_cost,
        memory_cost=params.memory_kib,
        parallelism=params.parallelism,
        hash_len=params.hash_len,
        salt_len=params.salt_len,
        type=argon2.Type.ID,
    )


def _acceptable_stored(stored: object) -> bool:
    """A well-formed Argon2id hash whose cost stays within the sanity bounds."""
    if not isinstance(stored, str) or not stored.isascii():
        return False
    try:
        params = argon2.extract_parameters(stored)
    except (Argon2Error, ValueError):
        return False
    return (
        params.type is argon2.Type.ID
        and params.memory_cost <= _MAX_STORED_MEMORY_KIB
        and params.time_cost <= _MAX_STORED_TIME_COST
        and params.parallelism <= _MAX_STORED_PARALLELISM
    )


class PasswordHasher:
    """Argon2id hashing and verification of NFKC-normalised passwords."""

    def __init__(self, params: Argon2Parameters = OWASP_PARAMETERS) -> None:
        self.params = params
        self._hasher = _hasher_for(params)

    def hash(self, password: str) -> str:
        """The PHC-format Argon2id hash to store (salt and parameters included).

        Raises ValueError for a password over `MAX_LENGTH` code points: it is refused, never
        truncated. Call `check_password` first for the policy.
        """
        if len(password) > _MAX_RAW_LENGTH or len(normalised := normalise(password)) > MAX_LENGTH:
            msg = f"a password has at most {MAX_LENGTH} characters"
            raise ValueError(msg)
        return self._hasher.hash(normalised)

    def verify(self, stored: str, password: str) -> bool:
        """Whether `password` matches `stored`. Never raises: a malformed hash answers False.

        The comparison of the computed and stored tags is constant-time (libargon2's
        `argon2_verify` compares with a constant-time loop).
        """
        if not _acceptable_stored(stored):
            return False
        return self._verify(stored, password)

    def verify_or_dummy(self, stored: str | None, password: str) -> bool:
        """`verify`, or the same Argon2id work against a dummy hash when there is no usable
        stored hash (unknown user, no password set, malformed row); then always False.

        Use it for every login attempt so that response times do not reveal whether the
        account exists (ASVS V6.3.8). A user whose hash has older parameters costs differently
        until their first successful login rehashes it.
        """
        if stored is None or not _acceptable_stored(stored):
            self._verify(_dummy_hash(self.params), password)
            return False
        return self._verify(stored, password)

    def needs_rehash(self, stored: str) -> bool:
        """True when `stored` was made with other parameters (or is unusable): after a
        successful login, store `hash(password)` in its place."""
        if not _acceptable_stored(stored):
            return True
        return self._hasher.check_needs_rehash(stored)

    def _verify(self, stored: str, password: str) -> bool:
        if len(password) > _MAX_RAW_LENGTH:
            return False  # no password this long was ever accepted (`hash` refuses it)
        try:
            return self._hasher.verify(stored, normalise(password))
        except (Argon2Error, ValueError):
            # VerifyMismatchError (wrong password), VerificationError/InvalidHashError
            # (corrupt hash): all mean "no".
            return False

"""Recovery codes: ten single-use look-up secrets for when the second factor is lost.

Security role: a recovery code replaces the TOTP code or passkey once, so it must be as hard
to guess online and to recover offline as the factor it stands in for. These are look-up
secrets in NIST SP 800-63B-4's terms (section 3.1.2) and in ASVS 5.0 V6.5.

Decisions:

* Each code carries 120 random bits from the CSPRNG (ASVS V6.5.3): 24 characters of Crockford's
  base32 alphabet, shown in six groups of four ("7K3M-Q9XD-...").
  Why 120 bits and not fewer: the database keeps only a hash of each code (below), and
  ASVS V6.5.2 (like NIST SP 800-63B-4 3.1.2) allows a plain, unsalted hash only for look-up
  secrets of at least 112 bits; shorter ones need a salted password hash (Argon2id per code,
  ten per attempt). With 120 bits, an attacker holding a stolen database must still try
  about 2^119 candidates per code, and even against every code of every account at once
  (an unsalted hash lets one guess be checked against all of them), 10^6 stored codes
  only bring that to about 2^99: out of reach. A 60-bit code would fall in hours on GPUs in
  that multi-target setting. Online guessing is bounded by the login throttling anyway
  (ASVS V6.5.4 asks for at least 20 bits). The price is a longer code, which users copy
  or print rather than memorise.
* Crockford's alphabet leaves out I, L, O and U; when normalising, "I" and "L" are read as
  "1" and "O" as "0", lowercase is accepted, and spaces and dashes are ignored, so a code
  read aloud or retyped from paper still works.
* Storage: SHA-256 over a domain-separated encoding of the normalised code
  (`b"egide-recovery-code/1:" + code`), or HMAC-SHA-256 under a pepper the caller keeps
  outside the database (e.g. a keyring secret) when it passes one: then the stored hashes
  alone cannot be checked against guesses at all. SHA-256 is an approved hash (ASVS V11.4.1).
* `match` compares the candidate against every stored hash with `hmac.compare_digest`,
  without stopping at the first match, and treats used slots (None) like the others, so its
  time says nothing about which code matched or how many are left. Single use is the
  caller's part: it must clear the matched slot in the same transaction as the login
  (ASVS V6.5.1).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import unicodedata
from collections.abc import Sequence

from egide.core.ids import RandomSource, SystemRandom

CODE_COUNT = 10
CODE_BYTES = 15  # 120 bits: exactly 24 base32 characters, so no padding and no bias
CODE_LENGTH = 24
GROUP_SIZE = 4
HASH_SIZE = 32
MIN_PEPPER_SIZE = 16
# Crockford's base32 alphabet (https://www.crockford.com/base32.html): no I, L, O, U.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_FROM_RFC4648 = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", ALPHABET)
_READ_AS = str.maketrans({"I": "1", "L": "1", "O": "0"})
# Separators people type inside a code: spaces, hyphen-minus and the Unicode dashes.
_SEPARATORS = frozenset("-\u2010\u2011\u2012\u2013\u2014\u2212")
_ALPHABET_SET = frozenset(ALPHABET)
_DOMAIN = b"egide-recovery-code/1:"
# Anything much longer than a code with separators is not a code; refused before any work.
_MAX_INPUT = 4 * CODE_LENGTH
# Compared against in place of a used (None) slot, so every slot costs the same.
_NO_CODE = bytes(HASH_SIZE)


def generate_codes(count: int = CODE_COUNT, random: RandomSource | None = None) -> list[str]:
    """`count` new codes in display form ("XXXX-XXXX-XXXX-XXXX-XXXX-XXXX"), all distinct.

    Show them to the user once; store only `hash_code` of each.
    """
    if count < 1:
        msg = "at least one recovery code"
        raise ValueError(msg)
    source = random or SystemRandom()
    codes: list[str] = []
    for _ in range(2 * count):
        raw = base64.b32encode(source.token_bytes(CODE_BYTES)).decode("ascii")
        code = raw.translate(_FROM_RFC4648)
        if code not in codes:  # a repeat has probability ~2^-120; cheap to rule out anyway
            codes.append(code)
        if len(codes) == count:
            return [format_code(c) for c in codes]
    # Only a broken random source repeats itself this often: fail rather than loop.
    msg = "the random source keeps repeating itself"
    raise RuntimeError(msg)


def format_code(code: str) -> str:
    """A normalised code in groups of four joined by dashes, for display."""
    return "-".join(code[i : i + GROUP_SIZE] for i in range(0, len(code), GROUP_SIZE))


def normalise_code(text: str) -> str | None:
    """The canonical form of a typed code (24 characters of `ALPHABET`), or None.

    Accepts lowercase, spaces and dashes anywhere, full-width characters (NFKC), and reads
    I and L as 1 and O as 0 (Crockford).
    """
    if len(text) > _MAX_INPUT:
        return None
    folded = unicodedata.normalize("NFKC", text).upper().translate(_READ_AS)
    code = "".join(c for c in folded if not c.isspace() and c not in _SEPARATORS)
    if len(code) != CODE_LENGTH or not all(c in _ALPHABET_SET for c in code):
        return None
    return code


def hash_code(code: str, *, pepper: bytes | None = None) -> bytes:
    """The 32-byte value to store for `code` (display or normalised form).

    Raises ValueError when `code` is not a well-formed recovery code, or the pepper is
    shorter than 16 bytes.
    """
    normalised = normalise_code(code)
    if normalised is None:
        msg = "not a recovery code"
        raise ValueError(msg)
    return _digest(normalised, pepper)


def _digest(normalised: str, pepper: bytes | None) -> bytes:
    message = _DOMAIN + normalised.encode("ascii")
    if pepper is None:
        return hashlib.sha256(message).digest()
    if len(pepper) < MIN_PEPPER_SIZE:
        msg = "a recovery-code pepper has at least 16 bytes"
        raise ValueError(msg)
    return hmac.new(pepper, message, "sha256").digest()


def match(
    code: str, stored_hashes: Sequence[bytes | None], *, pepper: bytes | None = None
) -> int | None:
    """The index of the stored hash `code` matches, or None.

    `stored_hashes` lists the account's codes in a fixed order, None for a code already used.
    The caller clears the returned slot (sets it to None) in the same transaction as the
    login, so the code works once.
    """
    normalised = normalise_code(code)
    if normalised is None:
        return None  # malformed input: its shape is not secret, nothing to hide
    candidate = _digest(normalised, pepper)
    found: int | None = None
    for index, stored in enumerate(stored_hashes):
        # Constant time per slot, and no early exit: the time taken does not depend on which
        # slot matched, nor on which slots are used.
        same = hmac.compare_digest(candidate, _NO_CODE if stored is None else stored)
        if same and stored is not None and found is None:
            found = index
    return found

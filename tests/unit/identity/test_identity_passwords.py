"""Passwords: the choosing policy (NIST SP 800-63B-4 3.1.1.2, ASVS 5.0 V6.2) and Argon2id storage.

Timing of unknown against known users is not asserted here (shared machines are noisy):
the tests prove the dummy check does the same work with the same parameters, and
bench/bench_identity.py prints the two timings.
"""

from __future__ import annotations

import unicodedata

import argon2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from egide.identity import passwords
from egide.identity.passwords import (
    BLOCKLIST_SIZE,
    MAX_LENGTH,
    MIN_LENGTH_SINGLE_FACTOR,
    MIN_LENGTH_WITH_MFA,
    Argon2Parameters,
    PasswordHasher,
    Refusal,
    check_password,
    common_passwords,
    context_words_for,
    describe,
)

# Cheap parameters keep the suite fast; one test below pins the production defaults.
CHEAP = Argon2Parameters(memory_kib=64, time_cost=1, parallelism=1)
GOOD = "violet stapler drifts over the quiet harbour"
CONTEXT = context_words_for(
    names=["Jeanne", "Dupont-Lefèvre"],
    email="jeanne.dupont@example.org",
    organisation="Clinique du Parc",
)


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher(CHEAP)


# --- storage: Argon2id ---------------------------------------------------------------------


def test_defaults_are_owasp_argon2id() -> None:
    """OWASP Password Storage Cheat Sheet: Argon2id, m=19 MiB, t=2, p=1 (ASVS V11.4.2)."""
    production = PasswordHasher()
    assert (production.params.memory_kib, production.params.time_cost) == (19_456, 2)
    assert production.params.parallelism == 1
    stored = production.hash(GOOD)
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    params = argon2.extract_parameters(stored)
    assert (params.salt_len, params.hash_len) == (16, 32)
    assert production.verify(stored, GOOD)
    assert not production.needs_rehash(stored)


def test_hash_verify_round_trip(hasher: PasswordHasher) -> None:
    stored = hasher.hash(GOOD)
    assert hasher.verify(stored, GOOD)
    assert not hasher.verify(stored, GOOD + "!")
    assert not hasher.verify(stored, "")


def test_same_password_gets_a_fresh_salt(hasher: PasswordHasher) -> None:
    assert hasher.hash(GOOD) != hasher.hash(GOOD)


def test_exact_password_no_case_change_no_trimming(hasher: PasswordHasher) -> None:
    """ASVS V6.2.8: verified exactly as received (no case folding, trimming, truncation)."""
    stored = hasher.hash(GOOD)
    assert not hasher.verify(stored, GOOD.upper())
    assert not hasher.verify(stored, GOOD.capitalize())
    assert not hasher.verify(stored, " " + GOOD)
    assert not hasher.verify(stored, GOOD + " ")


def test_nfc_and_nfd_spellings_verify(hasher: PasswordHasher) -> None:
    """NIST SP 800-63B-4 3.1.1.2: NFKC before hashing, so composed and decomposed accents
    (what two keyboards may send for the same keys) are the same password."""
    password = "crème brûlée au café, s'il vous plaît"
    nfc = unicodedata.normalize("NFC", password)
    nfd = unicodedata.normalize("NFD", password)
    assert nfc != nfd
    assert hasher.verify(hasher.hash(nfc), nfd)
    assert hasher.verify(hasher.hash(nfd), nfc)


def test_long_passwords_are_never_truncated(hasher: PasswordHasher) -> None:
    """ASVS V6.2.9 (64+ characters) and V6.2.8 (no truncation): one character changed at
    position 100, or at the very end of a 1,024-character password, no longer verifies."""
    long = "".join(chr(0x41 + (i * 7) % 26) for i in range(200))
    changed = long[:100] + ("Z" if long[100] != "Z" else "Y") + long[101:]
    assert long != changed
    stored = hasher.hash(long)
    assert hasher.verify(stored, long)
    assert not hasher.verify(stored, changed)
    assert hasher.hash(long) != hasher.hash(changed)

    longest = (GOOD + " ") * (MAX_LENGTH // (len(GOOD) + 1)) + "x" * (MAX_LENGTH % (len(GOOD) + 1))
    assert len(longest) == MAX_LENGTH
    stored = hasher.hash(longest)
    assert hasher.verify(stored, longest)
    assert not hasher.verify(stored, longest[:-1] + "y")
    assert not hasher.verify(stored, longest[:-1])


def test_over_the_maximum_is_refused_not_truncated(hasher: PasswordHasher) -> None:
    with pytest.raises(ValueError, match="at most 1024"):
        hasher.hash("a" * (MAX_LENGTH + 1))
    # NFKC may lengthen: U+FDFA is one code point that normalises to 18.
    with pytest.raises(ValueError, match="at most 1024"):
        hasher.hash("\ufdfa" * 60)
    stored = hasher.hash(GOOD)
    assert not hasher.verify(stored, GOOD * 1000)  # answered without hashing 45 kB


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "x",
        "é",
        "$argon2id$",
        "$argon2id$v=19$m=65536,t=3,p=4$",
        "$argon2id$v=19$m=65536,t=3,p=4$not base64$nor this",
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",  # bcrypt
        "pbkdf2_sha256$600000$salt$hash",
        "!",  # a "no password" sentinel some systems store
        "$argon2id$v=19$m=4294967295,t=3,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",
        "$argon2id$v=19$m=65536,t=4294967295,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",
    ],
)
def test_malformed_stored_hash_answers_false_never_raises(
    hasher: PasswordHasher, stored: str
) -> None:
    assert hasher.verify(stored, GOOD) is False
    assert hasher.verify_or_dummy(stored, GOOD) is False
    assert hasher.needs_rehash(stored) is True


def test_non_string_stored_hash_answers_false(hasher: PasswordHasher) -> None:
    stored = hasher.hash(GOOD)
    assert hasher.verify(stored.encode(), GOOD) is False  # type: ignore[arg-type]
    assert hasher.verify(None, GOOD) is False  # type: ignore[arg-type]


def test_other_argon2_variants_are_refused(hasher: PasswordHasher) -> None:
    """Only Argon2id is ever written; an Argon2i or Argon2d row was not made by us."""
    for variant in (argon2.Type.I, argon2.Type.D):
        other = argon2.PasswordHasher(time_cost=1, memory_cost=64, parallelism=1, type=variant)
        assert other.verify(stored := other.hash(GOOD), GOOD)
        assert hasher.verify(stored, GOOD) is False


def test_needs_rehash_when_parameters_change(hasher: PasswordHasher) -> None:
    stored = hasher.hash(GOOD)
    assert not hasher.needs_rehash(stored)
    stronger = PasswordHasher(Argon2Parameters(memory_kib=128, time_cost=2, parallelism=1))
    assert stronger.needs_rehash(stored)
    assert stronger.verify(stored, GOOD)  # old hashes still verify until rehashed
    assert not stronger.needs_rehash(stronger.hash(GOOD))


def test_parameters_are_bounded() -> None:
    with pytest.raises(ValueError, match="memory"):
        Argon2Parameters(memory_kib=4, time_cost=1, parallelism=1)
    with pytest.raises(ValueError, match="time cost"):
        Argon2Parameters(time_cost=0)
    with pytest.raises(ValueError, match="parallelism"):
        Argon2Parameters(parallelism=0)
    with pytest.raises(ValueError, match="16 bytes"):
        Argon2Parameters(salt_len=8)


def test_unknown_user_does_the_same_work_as_a_known_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """ASVS V6.3.8: `verify_or_dummy` without a stored hash runs one Argon2id verification
    against a dummy hash made with the hasher's own parameters, like a wrong password for a
    real user; both answer False."""
    hasher = PasswordHasher(CHEAP)
    stored = hasher.hash(GOOD)
    seen: list[str] = []
    real = hasher._verify

    def spy(hash_: str, password: str) -> bool:
        seen.append(hash_)
        return real(hash_, password)

    monkeypatch.setattr(hasher, "_verify", spy)
    assert hasher.verify_or_dummy(stored, "wrong password, known user") is False
    assert hasher.verify_or_dummy(None, "any password, unknown user") is False
    assert hasher.verify_or_dummy("corrupt row", "any password") is False
    assert hasher.verify_or_dummy(stored, GOOD) is True
    assert len(seen) == 4
    dummy = seen[1]
    assert seen[2] == dummy
    assert dummy != stored
    known, unknown = argon2.extract_parameters(stored), argon2.extract_parameters(dummy)
    assert known == unknown  # same type, version, salt/hash length, m, t and p


def test_dummy_hash_is_computed_once_per_parameter_set() -> None:
    first = passwords._dummy_hash(CHEAP)
    assert passwords._dummy_hash(CHEAP) is first
    assert passwords._dummy_hash(Argon2Parameters(memory_kib=72, time_cost=1)) != first


@settings(max_examples=40, deadline=None)
@given(st.text(min_size=1, max_size=120))
def test_round_trip_any_text(password: str) -> None:
    hasher = PasswordHasher(CHEAP)
    stored = hasher.hash(password)
    assert hasher.verify(stored, password)
    assert hasher.verify(stored, unicodedata.normalize("NFD", password))
    assert not hasher.verify(stored, password + "x")


# --- policy --------------------------------------------------------------------------------


def test_minimum_length_depends_on_mfa() -> None:
    """NIST SP 800-63B-4 3.1.1.2, ASVS V6.2.1: 15 as the only factor, 8 with MFA."""
    assert (MIN_LENGTH_SINGLE_FACTOR, MIN_LENGTH_WITH_MFA) == (15, 8)
    fifteen = "quartz violin m"
    fourteen = fifteen[:14]
    assert (len(fourteen), len(fifteen)) == (14, 15)
    assert Refusal.TOO_SHORT in check_password(fourteen, mfa=False, context_words=[])
    assert check_password(fifteen, mfa=False, context_words=[]) == []
    assert check_password("qz7vwm2k", mfa=True, context_words=[]) == []
    assert Refusal.TOO_SHORT in check_password("qz7vwm2", mfa=True, context_words=[])
    assert Refusal.TOO_SHORT in check_password("qz7vwm2k", mfa=False, context_words=[])


def test_length_counts_code_points_after_nfkc() -> None:
    """Each Unicode code point counts once (63B-4 3.1.1.2), after normalisation: 15 accented
    letters typed decomposed (30 code points) are 15 characters."""
    word = "éàüîôçñåøæœëïâû"
    assert len(word) == 15
    decomposed = unicodedata.normalize("NFD", word)
    assert len(decomposed) > 15
    assert check_password(decomposed, mfa=False, context_words=[]) == []
    emoji = "🐘🦒🦓🦔🦕🦖🦗🦘🦙🦚🦛🦜🦝🦞🦟"  # 15 code points, 60 UTF-8 bytes
    assert check_password(emoji, mfa=False, context_words=[]) == []
    assert Refusal.TOO_SHORT in check_password(emoji[:14], mfa=False, context_words=[])


def test_long_passwords_are_accepted_up_to_the_maximum() -> None:
    words = "amber basil cedar delta ember fjord grove heron iris jade kelp lumen moss "
    sixty_four = words[:64]
    assert len(sixty_four) == 64
    assert check_password(sixty_four, mfa=False, context_words=[]) == []
    longest = (words * 20)[:MAX_LENGTH]
    assert check_password(longest, mfa=False, context_words=[]) == []
    assert check_password(longest + "x", mfa=False, context_words=[]) == [Refusal.TOO_LONG]
    assert check_password("x" * 10 * MAX_LENGTH, mfa=False, context_words=[]) == [Refusal.TOO_LONG]


@pytest.mark.parametrize(
    "password",
    [
        "8302917465019283",  # digits only
        "ceci est une phrase de passe",  # lowercase only, spaces
        "ЖЁЛТЫЙ ДИРИЖАБЛЬ НАД МОРЕМ",  # another script, upper case only
        "4%8#2&9*1^7(3)a5",  # symbols and digits, one letter
        "tr0ub4dor&3 xkcd comic",
        "correct horse battery staple",
    ],
)
def test_no_composition_rules(password: str) -> None:
    """ASVS V6.2.5, 63B-4 3.1.1.2: any composition is acceptable."""
    assert check_password(password, mfa=False, context_words=CONTEXT) == []


def test_blocklist_is_zxcvbn_top_passwords_folded() -> None:
    """ASVS V6.2.4: at least the top 3,000; we take zxcvbn 4.5.0's whole list."""
    blocklist = common_passwords()
    assert BLOCKLIST_SIZE >= 10_000
    assert len(blocklist) >= 10_000
    assert {"password", "123456", "qwerty", "iloveyou", "p@ssw0rd"} <= blocklist
    assert all(word == passwords._fold(word) for word in blocklist)
    assert common_passwords() is blocklist  # loaded once


@pytest.mark.parametrize(
    "password",
    [
        "password",
        "PASSWORD",
        "PaSsWoRd",
        "Password123456789!",
        "p@ssw0rd2024!!!!!",
        "P@$$w0rd-P@$$w0rd",
        "passwordpassword",
        "2024-iloveyou-2024",
        "!!!qwertyuiop!!!",
        "monkey123456789!",
        "Ｐａｓｓｗｏｒｄ１２３４５６７８９",  # full-width: NFKC folds it to ASCII
    ],
)
def test_common_passwords_and_variants_are_refused(password: str) -> None:
    assert Refusal.COMMON in check_password(password, mfa=True, context_words=[])


@pytest.mark.parametrize(
    "password",
    [
        "egide-egide-egide",
        "Egide2024Egide2024",
        "3gide-2024-3gide!",
        "JeanneDupont1975!!",
        "Dupont.Jeanne-1975",
        "jeanne.dupont 2024!",
        "Lefevre-Jeanne 1980",  # accents ignored in the comparison
        "Lefèvre Dupont Jeanne",
        "Clinique du Parc 2024",
        "cliniqueduparc!!!",
        "AEGIS aegis 123456",
    ],
)
def test_context_words_are_refused(password: str) -> None:
    """ASVS V6.1.2, V6.2.11: name parts, e-mail local part, organisation and product names,
    alone or with digits and punctuation, are refused."""
    assert Refusal.CONTEXT in check_password(password, mfa=False, context_words=CONTEXT)


def test_a_passphrase_that_merely_contains_the_name_is_accepted() -> None:
    password = "jeanne loves gardening in spring"
    assert check_password(password, mfa=False, context_words=CONTEXT) == []


def test_context_words_for_uses_the_email_local_part_only() -> None:
    words = context_words_for(names=["Ana", ""], email="a.b@hopital-nord.fr", organisation="X")
    assert words == ["Ana", "a.b", "X"]
    # Without the domain, the domain's words stay usable in a passphrase.
    assert check_password("hopital nord forever 1", mfa=False, context_words=words) == []


@pytest.mark.parametrize(
    "password",
    [
        "aaaaaaaaaaaaaaaaa",
        "!!!!!!!!!!!!!!!!!!",
        "abcdefghijklmnop",
        "zyxwvutsrqponmlk",
        "123456789012345",
        "9876543210987654",
        "ab ab ab ab ab ab ab ab",
        "1234123412341234",
    ],
)
def test_repetitive_and_sequential_are_refused(password: str) -> None:
    assert Refusal.REPETITIVE in check_password(password, mfa=False, context_words=[])


def test_reasons_are_all_reported_and_described() -> None:
    reasons = check_password("egide", mfa=False, context_words=[])
    assert reasons == [Refusal.TOO_SHORT, Refusal.CONTEXT]
    assert describe(Refusal.TOO_SHORT, mfa=False) == "Use at least 15 characters."
    assert describe("too_short", mfa=True) == "Use at least 8 characters."
    assert describe("something else", mfa=True) == "This password is not acceptable."
    for reason in Refusal:
        assert describe(reason, mfa=False).endswith(".")

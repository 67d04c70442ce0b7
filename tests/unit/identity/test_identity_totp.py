"""HOTP (RFC 4226) and TOTP (RFC 6238): the RFCs' vectors, the verifier's window and replay
rule, code format, enrolment URI and QR code.

The vectors are in tests/vectors/totp/otp_test_vectors.json (typed in from RFC 4226
Appendix D and RFC 6238 Appendix B; see the README there).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from egide.core.clock import FixedClock
from egide.identity.totp import (
    SECRET_SIZES,
    TotpVerifier,
    decode_secret,
    encode_secret,
    hotp,
    new_secret,
    provisioning_uri,
    qr_svg,
    time_step,
    totp_at_time,
    truncate,
    well_formed_code,
)

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "totp" / "otp_test_vectors.json"
DOC: dict[str, Any] = json.loads(VECTORS.read_text())
HOTP = DOC["rfc4226_hotp"]
TOTP = DOC["rfc6238_totp"]
HOTP_SECRET = bytes.fromhex(HOTP["secret_hex"])
SEEDS = {name: bytes.fromhex(value) for name, value in TOTP["seeds_hex"].items()}

KEY = b"12345678901234567890"
T = 1_111_111_111  # an instant inside step 37037037
STEP = T // 30


class FixedBytes:
    """A RandomSource that always returns the same byte."""

    def __init__(self, byte: int) -> None:
        self.byte = byte

    def token_bytes(self, n: int) -> bytes:
        return bytes([self.byte]) * n


# --- the RFCs' vectors ---------------------------------------------------------------------


def test_vector_file_says_where_it_comes_from() -> None:
    source = DOC["source"]
    assert "RFC 6238" in source
    assert "Appendix B" in source
    assert "RFC 4226" in source
    assert "Appendix D" in source
    assert len(HOTP["cases"]) == 10
    assert len(TOTP["cases"]) == 18
    assert {len(seed) for seed in SEEDS.values()} == {20, 32, 64}
    assert SEEDS["sha1"] == HOTP_SECRET == b"12345678901234567890"


@pytest.mark.parametrize("case", HOTP["cases"], ids=lambda c: f"count{c['counter']}")
def test_rfc4226_appendix_d(case: dict[str, Any]) -> None:
    counter = case["counter"]
    mac = hmac.new(HOTP_SECRET, counter.to_bytes(8, "big"), hashlib.sha1).digest()
    assert mac.hex() == case["hmac_sha1_hex"]
    assert truncate(mac) == case["truncated_decimal"] == int(case["truncated_hex"], 16)
    assert hotp(HOTP_SECRET, counter) == case["hotp"]
    assert hotp(HOTP_SECRET, counter, 6, "sha1") == case["hotp"]


@pytest.mark.parametrize(
    "case", TOTP["cases"], ids=lambda c: f"{c['algorithm']}-{c['time']}"
)  # fmt: skip
def test_rfc6238_appendix_b(case: dict[str, Any]) -> None:
    seed, algorithm, when = SEEDS[case["algorithm"]], case["algorithm"], case["time"]
    # The table's own columns agree with each other (catches a typo in the vector file).
    assert dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") == case["utc"]
    assert time_step(when) == int(case["t_hex"], 16)
    code = totp_at_time(seed, when, step=30, t0=0, digits=8, algorithm=algorithm)
    assert code == case["totp"]
    verifier = TotpVerifier(digits=8, algorithm=algorithm)
    assert verifier.verify_at_time(seed, case["totp"], when, None) == int(case["t_hex"], 16)


# --- the verifier --------------------------------------------------------------------------


def test_one_step_either_side_is_accepted_two_are_not() -> None:
    """RFC 6238 section 5.2: at most one step of tolerance."""
    verifier = TotpVerifier()
    for offset in (-1, 0, 1):
        code = hotp(KEY, STEP + offset)
        assert verifier.verify_at_time(KEY, code, T, None) == STEP + offset
    for offset in (-2, 2, -3, 3):
        assert verifier.verify_at_time(KEY, hotp(KEY, STEP + offset), T, None) is None


def test_window_zero_accepts_only_the_current_step() -> None:
    verifier = TotpVerifier(window=0)
    assert verifier.verify_at_time(KEY, hotp(KEY, STEP), T, None) == STEP
    assert verifier.verify_at_time(KEY, hotp(KEY, STEP - 1), T, None) is None
    assert verifier.verify_at_time(KEY, hotp(KEY, STEP + 1), T, None) is None


def test_replay_is_refused() -> None:
    """RFC 6238 section 5.2, ASVS V6.5.1: a code is accepted once; so is any code of an
    earlier step once a later one was used."""
    verifier = TotpVerifier()
    code = totp_at_time(KEY, T)
    used = verifier.verify_at_time(KEY, code, T, None)
    assert used == STEP
    assert verifier.verify_at_time(KEY, code, T, used) is None  # same code, same moment
    assert verifier.verify_at_time(KEY, code, T + 29, used) is None  # within its window
    previous = hotp(KEY, STEP - 1)
    assert verifier.verify_at_time(KEY, previous, T, used) is None  # older than the used one
    following = hotp(KEY, STEP + 1)
    assert verifier.verify_at_time(KEY, following, T + 30, used) == STEP + 1


def test_a_newer_code_used_early_blocks_the_current_one() -> None:
    """Step T+1's code was used (clock drift): the current step's code can no longer be."""
    verifier = TotpVerifier()
    assert verifier.verify_at_time(KEY, hotp(KEY, STEP + 1), T, None) == STEP + 1
    assert verifier.verify_at_time(KEY, hotp(KEY, STEP), T, STEP + 1) is None


@pytest.mark.parametrize(
    "code",
    [
        "",
        "12345",
        "1234567",
        "12345a",
        " 12345",
        "12345 ",
        "123 456",
        "+12345",
        "-12345",
        "12345\n",
        "１２３４５６",  # full-width digits
        "¹²³⁴⁵⁶",  # superscripts: str.isdigit() says True
    ],
)
def test_malformed_codes_are_refused(code: str) -> None:
    assert not well_formed_code(code)
    assert TotpVerifier().verify_at_time(KEY, code, T, None) is None


def test_other_scripts_digits_of_a_valid_code_are_refused() -> None:
    """int("٧٠٨١٨٠") == 708180: a parser built on int() or isdigit() would accept
    Arabic-Indic digits; the code must be ASCII digits only."""
    code = totp_at_time(KEY, T)
    arabic = code.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    devanagari = code.translate(str.maketrans("0123456789", "०१२३४५६७८९"))
    assert int(arabic) == int(code)
    for variant in (arabic, devanagari):
        assert TotpVerifier().verify_at_time(KEY, variant, T, None) is None
    assert TotpVerifier().verify_at_time(KEY, code, T, None) == STEP


def test_eight_digit_verifier_refuses_six_digit_codes() -> None:
    verifier = TotpVerifier(digits=8)
    assert verifier.verify_at_time(KEY, totp_at_time(KEY, T), T, None) is None
    assert verifier.verify_at_time(KEY, totp_at_time(KEY, T, digits=8), T, None) == STEP


def test_every_single_bit_flip_of_the_key_fails() -> None:
    code = totp_at_time(KEY, T)
    verifier = TotpVerifier()
    for bit in range(len(KEY) * 8):
        flipped = bytearray(KEY)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert verifier.verify_at_time(bytes(flipped), code, T, None) is None


def test_verify_uses_the_servers_clock() -> None:
    """ASVS V6.5.8: the time is the server's, never one the client sends."""
    clock = FixedClock(dt.datetime.fromtimestamp(T, dt.UTC))
    code = totp_at_time(KEY, T)
    assert TotpVerifier().verify(KEY, code, clock=clock, last_used_step=None) == STEP
    clock.advance(dt.timedelta(minutes=2))
    assert TotpVerifier().verify(KEY, code, clock=clock, last_used_step=None) is None


def test_first_steps_near_the_epoch() -> None:
    """At step 0 there is no step -1 to try."""
    verifier = TotpVerifier()
    assert verifier.verify_at_time(KEY, hotp(KEY, 0), 5, None) == 0
    assert verifier.verify_at_time(KEY, hotp(KEY, 1), 5, None) == 1


@settings(max_examples=200, deadline=None)
@given(
    key=st.binary(min_size=16, max_size=64),
    when=st.integers(min_value=0, max_value=2**40),
    algorithm=st.sampled_from(["sha1", "sha256", "sha512"]),
    digits=st.integers(min_value=6, max_value=8),
)
def test_a_code_generated_at_t_verifies_at_t_once(
    key: bytes, when: int, algorithm: str, digits: int
) -> None:
    verifier = TotpVerifier(digits=digits, algorithm=algorithm)
    code = totp_at_time(key, when, digits=digits, algorithm=algorithm)
    assert len(code) == digits
    assert well_formed_code(code, digits)
    step = verifier.verify_at_time(key, code, when, None)
    assert step is not None
    assert step <= time_step(when)  # the earliest match; normally exactly the current step
    again = verifier.verify_at_time(key, code, when, step)
    # Only a later step whose code happens to be the same (probability ~1e-6) could match.
    assert again is None or (again > step and hotp(key, again, digits, algorithm) == code)


@settings(max_examples=100, deadline=None)
@given(when=st.floats(min_value=0, max_value=2e10, allow_nan=False, allow_infinity=False))
def test_fractional_times_use_the_enclosing_step(when: float) -> None:
    assert totp_at_time(KEY, when) == hotp(KEY, int(when) // 30)


# --- parameters ----------------------------------------------------------------------------


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        hotp(b"short key", 0)
    with pytest.raises(ValueError, match="64-bit"):
        hotp(KEY, -1)
    with pytest.raises(ValueError, match="64-bit"):
        hotp(KEY, 2**64)
    assert len(hotp(KEY, 2**64 - 1)) == 6
    with pytest.raises(ValueError, match="6 to 8"):
        hotp(KEY, 0, digits=5)
    with pytest.raises(ValueError, match="6 to 8"):
        hotp(KEY, 0, digits=9)
    with pytest.raises(ValueError, match="unsupported"):
        hotp(KEY, 0, algorithm="md5")
    with pytest.raises(ValueError, match="before the TOTP epoch"):
        time_step(10, t0=100)
    with pytest.raises(ValueError, match="positive"):
        time_step(10, step=0)
    with pytest.raises(ValueError, match="window"):
        TotpVerifier(window=3)
    with pytest.raises(ValueError, match="positive"):
        TotpVerifier(step=0)


def test_t0_and_step_shift_the_counter() -> None:
    assert totp_at_time(KEY, 1000 + 59, t0=1000) == hotp(KEY, 1)
    assert totp_at_time(KEY, 120, step=60) == hotp(KEY, 2)


# --- secrets, URI, QR ----------------------------------------------------------------------


def test_new_secret_sizes_follow_the_hash() -> None:
    """RFC 4226 section 4: 160 bits recommended for SHA-1; the HMAC output size otherwise."""
    assert SECRET_SIZES == {"sha1": 20, "sha256": 32, "sha512": 64}
    for algorithm, size in SECRET_SIZES.items():
        assert len(new_secret(algorithm)) == size
    assert len(new_secret()) == 20
    assert new_secret() != new_secret()
    assert new_secret(random=FixedBytes(7)) == bytes([7]) * 20
    with pytest.raises(ValueError, match="unsupported"):
        new_secret("sha3")


def test_secret_base32_without_padding() -> None:
    assert encode_secret(b"12345678901234567890") == "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
    assert encode_secret(b"\x00" * 16) == "A" * 26  # 16 bytes: 26 characters, no "======"
    assert decode_secret("gezd gnbv gy3t qojq gezd gnbv gy3t qojq") == b"12345678901234567890"
    assert decode_secret("A" * 26) == b"\x00" * 16
    for bad in ("", "   ", "1!==", "AAAAAAAAA1", "ÀÀÀÀ"):
        with pytest.raises(ValueError, match="base32"):
            decode_secret(bad)


@given(st.binary(min_size=1, max_size=64))
def test_secret_encoding_round_trips(secret: bytes) -> None:
    text = encode_secret(secret)
    assert "=" not in text
    assert decode_secret(text) == secret
    assert decode_secret(text.lower()) == secret


def test_provisioning_uri_follows_the_key_uri_format() -> None:
    secret = b"12345678901234567890"
    uri = provisioning_uri(secret, "jeanne.dupont@example.org", "Clinique du Parc")
    assert uri == (
        "otpauth://totp/Clinique%20du%20Parc:jeanne.dupont%40example.org"
        "?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Clinique%20du%20Parc"
        "&algorithm=SHA1&digits=6&period=30"
    )
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    issuer, account = (unquote(p) for p in parts.path.lstrip("/").split(":"))
    assert (issuer, account) == ("Clinique du Parc", "jeanne.dupont@example.org")
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert decode_secret(query["secret"]) == secret
    assert query["issuer"] == "Clinique du Parc"


def test_provisioning_uri_encodes_awkward_labels() -> None:
    uri = provisioning_uri(
        b"k" * 32, "é/&?#x", "Hôpital & Cie", algorithm="sha256", digits=8, period=60
    )
    parts = urlsplit(uri)
    assert parts.fragment == ""
    issuer, account = (unquote(p) for p in parts.path.lstrip("/").split(":"))
    assert (issuer, account) == ("Hôpital & Cie", "é/&?#x")
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query == {
        "secret": encode_secret(b"k" * 32),
        "issuer": "Hôpital & Cie",
        "algorithm": "SHA256",
        "digits": "8",
        "period": "60",
    }


def test_provisioning_uri_refuses_colons_and_empty_labels() -> None:
    for account, issuer in (("a:b", "Egide"), ("ab", "Eg:ide"), ("", "Egide"), ("ab", "")):
        with pytest.raises(ValueError, match="colon"):
            provisioning_uri(KEY, account, issuer)


def test_qr_svg_is_an_svg_that_does_not_spell_out_the_secret() -> None:
    uri = provisioning_uri(KEY, "jeanne", "Egide")
    svg = qr_svg(uri)
    assert svg.startswith("<svg")
    assert not svg.startswith("<?xml")
    root = ET.fromstring(svg)  # noqa: S314 - our own output, parsed to prove well-formedness
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert "otpauth" not in svg
    assert encode_secret(KEY) not in svg
    assert qr_svg(uri) == svg  # deterministic
    assert qr_svg(provisioning_uri(b"x" * 20, "jeanne", "Egide")) != svg

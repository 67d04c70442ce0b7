"""One-time passwords: HOTP (RFC 4226) and TOTP (RFC 6238), enrolment URI and QR code.

Security role: TOTP is the second factor every staff account must have (the identity issue's
MFA policy; ASVS 5.0 V6.3.3). This module is the pure arithmetic and its checks:

* `hotp` is RFC 4226 section 5.3: HMAC over the 8-byte big-endian counter, dynamic truncation
  to 31 bits, then the last `digits` decimal digits. 6 to 8 digits (RFC 4226 section 5.3 and
  the RFC 6238 reference code); keys of at least 128 bits (RFC 4226 section 4, R6).
* `totp_at_time` is RFC 6238 section 4.2: HOTP with counter T = floor((unix time - T0) / X),
  X = 30 s by default (section 5.2; ASVS V6.5.5 limits a TOTP's lifetime to 30 s).
* `TotpVerifier.verify_at_time` accepts the current step and one step either side (RFC 6238
  section 5.2 recommends at most one step of network delay; the identity issue asks for
  +/-1), compares every candidate in constant time (`hmac.compare_digest`, no early exit),
  and refuses any step at or before the last one accepted for this key, so a code works once
  (RFC 6238 section 5.2 "MUST NOT accept the second attempt of the same OTP"; ASVS V6.5.1).
  The caller stores the step it returns with the seed and passes it back next time.
  The time comes from the server's clock, never from the client (ASVS V6.5.8).
* `new_secret` draws the seed from the CSPRNG (ASVS V6.5.3): 20 bytes for SHA-1 (the 160 bits
  RFC 4226 section 4 recommends, and the HMAC output size RFC 6238 section 5.1 suggests),
  32 for SHA-256, 64 for SHA-512. Seeds are secrets: the caller seals them with `crypto`
  before storing (DESIGN.md contract 4); this module never stores anything.
* `provisioning_uri` builds the `otpauth://totp/...` URI of the Key Uri Format that
  authenticator apps read, and `qr_svg` draws it as an SVG QR code (segno) for enrolment.
  Both contain the seed: show them once, over the authenticated session, never log them.

Brute force of the 10^6 codes is stopped by the caller's throttling (NIST SP 800-63B-4
section 3.2.2), not here.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import io
import math
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import segno

from egide.core.clock import Clock
from egide.core.ids import RandomSource, SystemRandom

# HMAC hash names. SHA-1 is what RFC 4226 and every authenticator app use; HMAC-SHA-1 stays
# sound (HMAC does not rely on the collision resistance SHA-1 lost).
ALGORITHMS = frozenset({"sha1", "sha256", "sha512"})
# Seed sizes: the HMAC output size of each hash (RFC 6238 section 5.1; RFC 4226 section 4).
SECRET_SIZES = {"sha1": 20, "sha256": 32, "sha512": 64}
MIN_KEY_SIZE = 16  # RFC 4226 section 4, R6: "at least 128 bits"
MIN_DIGITS, MAX_DIGITS = 6, 8  # RFC 4226 section 5.3: 6 at least, 7 and 8 possible
DEFAULT_STEP = 30  # RFC 6238 section 5.2: "We RECOMMEND a default time-step size of 30 seconds"
_MAX_COUNTER = 2**64  # the counter is an 8-byte value (RFC 4226 section 5.1)
_DIGITS = frozenset("0123456789")


def _check_parameters(digits: int, algorithm: str) -> None:
    if algorithm not in ALGORITHMS:
        msg = f"unsupported OTP algorithm {algorithm!r} (sha1, sha256 or sha512)"
        raise ValueError(msg)
    if not MIN_DIGITS <= digits <= MAX_DIGITS:
        msg = f"an OTP has {MIN_DIGITS} to {MAX_DIGITS} digits"
        raise ValueError(msg)


def truncate(mac: bytes) -> int:
    """RFC 4226 section 5.3 dynamic truncation: 31 bits of `mac` at the offset its last
    nibble names."""
    offset = mac[-1] & 0x0F
    return int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFF_FFFF


def hotp(key: bytes, counter: int, digits: int = 6, algorithm: str = "sha1") -> str:
    """The HOTP value (RFC 4226) of `counter` under `key`, as `digits` decimal digits.

    `algorithm` is the HMAC hash: "sha1" (RFC 4226), or "sha256"/"sha512" (RFC 6238
    section 1.2). Raises ValueError for a key under 128 bits or out-of-range parameters.
    """
    _check_parameters(digits, algorithm)
    if len(key) < MIN_KEY_SIZE:
        msg = "an OTP key has at least 16 bytes (RFC 4226 section 4)"
        raise ValueError(msg)
    if not 0 <= counter < _MAX_COUNTER:
        msg = "an OTP counter is an unsigned 64-bit integer"
        raise ValueError(msg)
    mac = hmac.new(key, counter.to_bytes(8, "big"), algorithm).digest()
    return str(truncate(mac) % 10**digits).zfill(digits)


def time_step(unix_time: float, step: int = DEFAULT_STEP, t0: int = 0) -> int:
    """RFC 6238 section 4.2: T = floor((unix_time - T0) / X)."""
    if step <= 0:
        msg = "the TOTP time step is a positive number of seconds"
        raise ValueError(msg)
    # Integer arithmetic after one floor: exact for times far beyond 2038 (and the RFC's
    # 20,000,000,000 vector), where float division could round.
    value = (math.floor(unix_time) - t0) // step
    if value < 0:
        msg = "the time is before the TOTP epoch T0"
        raise ValueError(msg)
    return value


def totp_at_time(
    key: bytes,
    unix_time: float,
    *,
    step: int = DEFAULT_STEP,
    t0: int = 0,
    digits: int = 6,
    algorithm: str = "sha1",
) -> str:
    """The TOTP value (RFC 6238) at `unix_time` (seconds since 1970-01-01T00:00:00Z)."""
    return hotp(key, time_step(unix_time, step, t0), digits, algorithm)


def well_formed_code(code: str, digits: int = 6) -> bool:
    """Exactly `digits` ASCII digits. Other Unicode digits ("٤٢"), spaces or signs are
    refused: `int()` and `str.isdigit` would accept some of them."""
    return len(code) == digits and all(c in _DIGITS for c in code)


@dataclass(frozen=True)
class TotpVerifier:
    """Checks TOTP codes with a +/-`window` step tolerance and replay protection."""

    step: int = DEFAULT_STEP
    t0: int = 0
    digits: int = 6
    algorithm: str = "sha1"
    # Steps accepted either side of the current one. RFC 6238 section 5.2 recommends at most
    # one; more widens what a stolen code is good for.
    window: int = 1

    def __post_init__(self) -> None:
        _check_parameters(self.digits, self.algorithm)
        if self.step <= 0:
            msg = "the TOTP time step is a positive number of seconds"
            raise ValueError(msg)
        if not 0 <= self.window <= 2:
            msg = "the TOTP window is 0, 1 or 2 steps"
            raise ValueError(msg)

    def verify_at_time(
        self, key: bytes, code: str, unix_time: float, last_used_step: int | None
    ) -> int | None:
        """The time step `code` belongs to, or None when it is refused.

        Refused: a malformed code, a code of no step within the window, and a code of a step
        at or before `last_used_step` (replay, or an older code after a newer one was used).
        On success the caller must store the returned step as the new `last_used_step` in
        the same transaction as the login (RFC 6238 section 5.2; ASVS V6.5.1).
        """
        if not well_formed_code(code, self.digits):
            return None
        presented = code.encode("ascii")
        current = time_step(unix_time, self.step, self.t0)
        accepted: int | None = None
        # Every candidate is computed and compared, whatever matched before: the work done
        # does not depend on which step (if any) the code belongs to.
        for candidate in range(current - self.window, current + self.window + 1):
            if candidate < 0:
                continue
            expected = hotp(key, candidate, self.digits, self.algorithm).encode("ascii")
            matches = hmac.compare_digest(expected, presented)
            fresh = last_used_step is None or candidate > last_used_step
            if matches and fresh and accepted is None:
                accepted = candidate  # the earliest: burns as few future steps as possible
        return accepted

    def verify(
        self, key: bytes, code: str, *, clock: Clock, last_used_step: int | None
    ) -> int | None:
        """`verify_at_time` at the server's current time (ASVS V6.5.8: a trusted clock)."""
        return self.verify_at_time(key, code, clock.now().timestamp(), last_used_step)


def new_secret(algorithm: str = "sha1", random: RandomSource | None = None) -> bytes:
    """A fresh random TOTP seed of the recommended size for `algorithm` (CSPRNG)."""
    if algorithm not in SECRET_SIZES:
        msg = f"unsupported OTP algorithm {algorithm!r} (sha1, sha256 or sha512)"
        raise ValueError(msg)
    return (random or SystemRandom()).token_bytes(SECRET_SIZES[algorithm])


def encode_secret(secret: bytes) -> str:
    """Base32 (RFC 4648) without padding, as the Key Uri Format and authenticator apps use."""
    return base64.b32encode(secret).decode("ascii").rstrip("=")


def decode_secret(text: str) -> bytes:
    """Inverse of `encode_secret`; tolerates lowercase, spaces and missing padding.

    Raises ValueError when `text` is not base32.
    """
    compact = "".join(text.split()).upper().rstrip("=")
    if not compact or not compact.isascii():
        msg = "not a base32 secret"
        raise ValueError(msg)
    try:
        return base64.b32decode(compact + "=" * (-len(compact) % 8))
    except binascii.Error:
        msg = "not a base32 secret"
        raise ValueError(msg) from None


def provisioning_uri(
    secret: bytes,
    account: str,
    issuer: str,
    *,
    algorithm: str = "sha1",
    digits: int = 6,
    period: int = DEFAULT_STEP,
) -> str:
    """The `otpauth://totp/Issuer:account?secret=...` URI of the Key Uri Format.

    The label is "issuer:account", each part percent-encoded; the issuer is repeated as a
    parameter (the format recommends both). Neither part may contain a colon (the format
    forbids it: the first colon separates them).
    """
    _check_parameters(digits, algorithm)
    if period <= 0:
        msg = "the TOTP period is a positive number of seconds"
        raise ValueError(msg)
    for name, value in (("account", account), ("issuer", issuer)):
        if not value or ":" in value:
            msg = f"the {name} of an otpauth URI is non-empty and has no colon"
            raise ValueError(msg)
    label = f"{quote(issuer, safe='')}:{quote(account, safe='')}"
    query = urlencode(
        {
            "secret": encode_secret(secret),
            "issuer": issuer,
            "algorithm": algorithm.upper(),
            "digits": str(digits),
            "period": str(period),
        },
        quote_via=quote,  # spaces as %20, not "+": some authenticator apps show a "+"
    )
    return f"otpauth://totp/{label}?{query}"


def qr_svg(uri: str, *, scale: int = 4) -> str:
    """`uri` as an SVG QR code (no XML declaration, so it can be inlined in HTML).

    Error correction level M (segno raises it when the symbol has room to spare); a regular
    QR code, never a Micro QR code, which phone apps do not all read. The SVG carries no
    title or description: the URI holds the seed and must not end up in page text.
    """
    qr = segno.make(uri, error="m", micro=False)
    out = io.BytesIO()
    qr.save(
        out, kind="svg", scale=scale, border=4, dark="#000", light="#fff", xmldecl=False,
        svgns=True, nl=False,
    )  # fmt: skip
    return out.getvalue().decode("utf-8")

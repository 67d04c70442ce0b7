"""Session tokens and CSRF tokens: the secrets a signed-in browser holds.

Security role: after sign-in, the session token in the `__Host-` cookie is the user's
credential; whoever holds it is the user until the session ends. This module makes and checks
the values; the cookie attributes, timeouts and revocation belong to the session service.

* `new_session_token` returns 256 bits from the CSPRNG, base64url without padding
  (43 characters): ASVS 5.0 V7.2.3 asks for at least 128 bits; the identity issue asks for
  256. It is an opaque reference token (ASVS V7.2.2): it means nothing by itself and is looked
  up server-side (ASVS V7.2.1). A new one is issued at every authentication (ASVS V7.2.4,
  against session fixation).
* `token_hash` is what the database stores and looks up: SHA-256 of the token (DESIGN.md
  contract 4). A stolen database holds no usable token; a slow hash is unnecessary for
  256-bit random values, and a fast one keeps every request cheap (the same reasoning as the
  API tokens in `identity.tokens`).
* CSRF: the synchronizer token pattern (OWASP CSRF Prevention Cheat Sheet; ASVS V3.5.1). Each
  session has its own random 256-bit CSRF secret, kept server-side with the session
  (`new_csrf_secret`). Every form carries `csrf_token_for(secret)`, and every state-changing
  request must return it: `check_csrf` compares in constant time. The token is the secret
  masked with a fresh random pad, `base64url(pad || pad XOR secret)`, so it differs on every
  page while checking against the same secret: a compression side channel on HTTPS
  responses (BREACH) cannot accumulate the same bytes across responses to recover it.
  A cross-site page cannot read a token, so it cannot forge a request that carries one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

from egide.core.ids import RandomSource, SystemRandom

SESSION_TOKEN_BYTES = 32  # 256 bits
CSRF_SECRET_BYTES = 32  # 256 bits
_SESSION_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 bytes in base64url, no padding
_CSRF_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{86}")  # 64 bytes (pad || masked) likewise


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def new_session_token(random: RandomSource | None = None) -> str:
    """A fresh session token: 256 random bits, base64url without padding (43 characters).

    Give it to the browser once (in the cookie); store only `token_hash(token)`.
    """
    return _b64url((random or SystemRandom()).token_bytes(SESSION_TOKEN_BYTES))


def looks_like_session_token(value: object) -> bool:
    """Whether `value` has the shape of a session token; check it before any lookup so that
    junk cookies cost nothing and never reach the database."""
    return isinstance(value, str) and _SESSION_TOKEN_RE.fullmatch(value) is not None


def token_hash(token: str) -> bytes:
    """SHA-256 of the token: the value stored and looked up, never the token itself."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def new_csrf_secret(random: RandomSource | None = None) -> bytes:
    """A fresh per-session CSRF secret (256 random bits), stored with the session."""
    return (random or SystemRandom()).token_bytes(CSRF_SECRET_BYTES)


def _check_secret(csrf_secret: bytes) -> None:
    if len(csrf_secret) != CSRF_SECRET_BYTES:
        msg = "a CSRF secret is 32 bytes"
        raise ValueError(msg)


def csrf_token_for(csrf_secret: bytes, random: RandomSource | None = None) -> str:
    """A CSRF token for a form or header: the session's secret under a fresh random mask.

    Each call gives a different token (86 base64url characters); all of them pass
    `check_csrf` for the same secret.
    """
    _check_secret(csrf_secret)
    pad = (random or SystemRandom()).token_bytes(CSRF_SECRET_BYTES)
    masked = bytes(p ^ s for p, s in zip(pad, csrf_secret, strict=True))
    return _b64url(pad + masked)


def check_csrf(csrf_secret: bytes, presented: str | None) -> bool:
    """Whether `presented` is a CSRF token of this session (constant-time comparison).

    A missing, malformed or foreign token answers False; refuse the request then.
    """
    _check_secret(csrf_secret)
    if presented is None or _CSRF_TOKEN_RE.fullmatch(presented) is None:
        return False
    raw = _b64url_decode(presented)
    if raw is None or len(raw) != 2 * CSRF_SECRET_BYTES:
        return False
    pad, masked = raw[:CSRF_SECRET_BYTES], raw[CSRF_SECRET_BYTES:]
    unmasked = bytes(p ^ m for p, m in zip(pad, masked, strict=True))
    return hmac.compare_digest(unmasked, csrf_secret)

"""Where to go after signing in (`/login?next=...`), without an open redirect.

An app's authorization request sends a browser that is not signed in to
`/login?next=/oauth/authorize?...`; once signed in, the browser comes back. `next` is taken
only when it is a path on this site (OWASP ASVS 5.0 V3.7.2, "the application only
automatically redirects the user to a different hostname or domain ... on an allowlist"; here:
never another host): it must start with a single `/`, contain no backslash, no control
character, no scheme and no host, so `//evil.example`, `/\\evil.example`, `https://...` and
`javascript:` are all refused. It is remembered across the sign-in steps in the
`__Host-egide_next` cookie (Secure, HttpOnly, SameSite=Strict, 5 minutes) and checked again
when used.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from egide.web.security import PENDING_MAX_AGE, clear_cookie, set_cookie

NEXT_COOKIE = "__Host-egide_next"
MAX_NEXT = 4096
AFTER_SIGN_IN = "/account"


def safe_next(value: str | None) -> str | None:
    """`value` when it is a same-site relative path, else None."""
    if not value or len(value) > MAX_NEXT or not value.startswith("/"):
        return None
    if value.startswith("//") or "\\" in value:
        return None
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return None
    return value


def _encode(path: str) -> str:
    return base64.urlsafe_b64encode(path.encode("utf-8")).rstrip(b"=").decode("ascii")


def _decode(value: str) -> str | None:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("utf-8")
    except (binascii.Error, ValueError):
        return None


def remember_next(request: Request, response: Response) -> None:
    """On the sign-in page: keep a safe `next` for after sign-in; forget any older one."""
    wanted = safe_next(request.query_params.get("next"))
    if wanted is not None:
        set_cookie(response, NEXT_COOKIE, _encode(wanted), max_age=PENDING_MAX_AGE)
    elif NEXT_COOKIE in request.cookies:
        clear_cookie(response, NEXT_COOKIE)


def follow_next(request: Request, response: Response | None) -> Response | None:
    """After a sign-in step: send a browser that has just signed in to its `next` path."""
    if response is None or response.headers.get("location") != AFTER_SIGN_IN:
        return response
    raw = request.cookies.get(NEXT_COOKIE)
    if raw is None:
        return response
    target = safe_next(_decode(raw[: MAX_NEXT * 2]))
    clear_cookie(response, NEXT_COOKIE)
    if target is not None:
        response.headers["location"] = target
    return response

"""Browser-facing protections of the pages: cookies, CSRF, origin checks, response headers.

* Cookies (OWASP ASVS 5.0 V3.3.1-V3.3.4): every cookie is named `__Host-...`, so the browser
  only keeps it when it is Secure, has Path=/ and no Domain (it cannot be planted by a
  sibling sub-domain nor sent to one); all are HttpOnly (no script reads them) and
  SameSite=Strict (never sent on a cross-site request). The session cookie has no Max-Age: it
  dies with the browser, and the server's idle and absolute timeouts apply anyway (ASVS V7.3).
* CSRF (ASVS V3.5.1; OWASP CSRF Prevention Cheat Sheet). Signed in: the synchronizer token
  pattern, the session's server-side CSRF secret masked per page
  (`identity.session_tokens.csrf_token_for`). Before sign-in (sign-in, MFA, invitation forms)
  there is no session yet, so a *signed* double-submit token: the `__Host-egide_csrf` cookie
  holds a random nonce, and the form token is the HMAC-SHA256 of that nonce under a server key,
  masked the same way. A cross-site page can neither read the cookie nor compute the HMAC;
  the key makes a planted cookie useless without its matching token (login CSRF).
* Origin (ASVS V3.5.1, defence in depth): a POST whose `Origin` header is present must come
  from this server's own origin; without `Origin`, a `Sec-Fetch-Site` of `cross-site` or
  `same-site` is refused.
* Headers (ASVS V3.4.3, V3.4.5, V3.4.6, V3.4.8, V14.3.2): the pages' Content-Security-Policy
  (no inline script or style at all), `Cache-Control: no-store` on every page (they carry CSRF
  tokens, sessions, recovery codes), `Cross-Origin-Opener-Policy: same-origin`, and
  `Referrer-Policy: same-origin` in place of the API's `no-referrer` (see `PAGE_HEADERS`). The
  API's middleware adds `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY` and HSTS
  to every response (ASVS V3.4.1, V3.4.4); they are not repeated here.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from egide.core.settings import Settings
from egide.identity.session_tokens import (
    check_csrf,
    csrf_token_for,
    looks_like_session_token,
    new_session_token,
)

SESSION_COOKIE = "__Host-egide_session"
PENDING_COOKIE = "__Host-egide_pending"
CSRF_COOKIE = "__Host-egide_csrf"
PENDING_MAX_AGE = 300  # seconds: the back end's pending sign-in lives 5 minutes too

PAGE_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_CSP,
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Cross-Origin-Opener-Policy": "same-origin",
    # Not the API's `no-referrer`: under it browsers send `Origin: null` on every form POST
    # (Fetch standard, "serializing a request origin"), which would blind the origin check.
    # `same-origin` still sends no Referer to any other site (ASVS V3.4.5).
    "Referrer-Policy": "same-origin",
}

_PRE_SESSION_LABEL = b"egide/web/pre-session-csrf\x00"


def set_cookie(response: Response, name: str, value: str, *, max_age: int | None = None) -> None:
    """A `__Host-` cookie: Secure, HttpOnly, SameSite=Strict, Path=/, no Domain (V3.3)."""
    response.set_cookie(
        name, value, max_age=max_age, path="/", secure=True, httponly=True, samesite="strict"
    )


def clear_cookie(response: Response, name: str) -> None:
    # The browser only accepts the deletion of a `__Host-` cookie with the same attributes.
    response.delete_cookie(name, path="/", secure=True, httponly=True, samesite="strict")


def cookie_token(request: Request, name: str) -> str | None:
    """The cookie's value when it has the shape of one of our tokens; junk is ignored."""
    value = request.cookies.get(name)
    return value if looks_like_session_token(value) else None


# --- pre-session CSRF: signed double-submit ------------------------------------------------


def _pre_session_secret(key: bytes, nonce: str) -> bytes:
    return hmac.new(key, _PRE_SESSION_LABEL + nonce.encode("ascii"), hashlib.sha256).digest()


def pre_session_token(request: Request, key: bytes) -> tuple[str, str | None]:
    """The CSRF token for a pre-session form, and the new cookie nonce to set (None when the
    browser already holds a well-formed one)."""
    nonce = cookie_token(request, CSRF_COOKIE)
    fresh = None
    if nonce is None:
        nonce = fresh = new_session_token()  # 256 random bits, base64url
    return csrf_token_for(_pre_session_secret(key, nonce)), fresh


def check_pre_session(request: Request, key: bytes, presented: str | None) -> bool:
    nonce = cookie_token(request, CSRF_COOKIE)
    if nonce is None:
        return False
    return check_csrf(_pre_session_secret(key, nonce), presented)


# --- where to go next ------------------------------------------------------------------------

MAX_NEXT_LENGTH = 512
_NEXT_FORBIDDEN = frozenset("\\\"'<>`{}|^")


def safe_next(value: str | None, default: str = "/account") -> str:
    """`value` when it is a same-origin relative path ("/account/..."), else `default`: never an
    absolute URL, a scheme-relative "//host" or "/\\host" (which browsers read as "//host"), nor
    anything with control characters, so a crafted link cannot send the person to another
    site after they re-authenticate (open redirect, OWASP ASVS 5.0 V3.7.2)."""
    if not value or len(value) > MAX_NEXT_LENGTH or not value.startswith("/"):
        return default
    if value.startswith(("//", "/\\")):
        return default
    if any(ord(c) < 0x21 or ord(c) == 0x7F or c in _NEXT_FORBIDDEN for c in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not parts.path.startswith("/"):
        return default
    return value


# --- origin ----------------------------------------------------------------------------------


def own_origin(request: Request, settings: Settings) -> str:
    """`scheme://host[:port]` of this server: from `public_base_url` when set (behind a
    reverse proxy), else from the request itself."""
    if settings.public_base_url:
        parts = urlsplit(settings.public_base_url)
        return f"{parts.scheme}://{parts.netloc}".lower()
    return f"{request.url.scheme}://{request.url.netloc}".lower()


def same_origin(request: Request, settings: Settings) -> bool:
    """Whether a state-changing request may have come from our own pages (ASVS V3.5.1)."""
    origin = request.headers.get("origin")
    if origin is not None:
        return origin.lower() == own_origin(request, settings)
    site = request.headers.get("sec-fetch-site")
    return site is None or site in {"same-origin", "none"}

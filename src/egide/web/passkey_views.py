"""The passkey (WebAuthn) endpoints of the sign-in and account pages.

`static/passkeys.js` runs the browser side of the ceremonies (the CSP allows no inline
script): it POSTs JSON here, with the page's CSRF token in the `X-CSRF-Token` header.

| route | what |
|---|---|
| `POST /login/passkey/options`, `/login/passkey/verify` | second factor after the password |
| `POST /login/passkey/register/options`, `/login/passkey/register` | first sign-in of staff:
  a passkey as the first authenticator (then ten recovery codes, shown once) |
| `POST /login/passkey/discover/options`, `/login/passkey/discover` | passwordless sign-in
  with a discoverable passkey (user verification makes it multi-factor) |
| `POST /account/passkeys/options`, `/account/passkeys` | add a passkey (recent MFA needed) |
| `POST /account/passkeys/{id}/remove` | remove one (a form; recent MFA needed) |
| `POST /account/step-up/passkey/options`, `/account/step-up/passkey` | step-up with a passkey
  (ASVS V7.5.1, V7.5.3): a new session token on success (V7.2.4) |

Security role: every endpoint checks the origin (ASVS V3.5.1) and the CSRF token, and accepts
only an `application/json` body of at most MAX_JSON_BYTES: a cross-site form cannot send that
type, and a cross-site fetch of it needs a CORS preflight this server never grants. A completed
sign-in gets a new session token and drops the pending one (ASVS V7.2.4); changing passkeys
needs a recent second factor (ASVS V7.5.1). The ceremonies themselves (challenges, WebAuthn
Level 3 verification, user verification required) are in `egide.identity.passkeys`; the shared
page plumbing (cookies, transactions, sign-in steps) is in `egide.web.views`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session

from egide.core.errors import EgideError
from egide.identity import login, passkeys, sessions
from egide.identity.session_tokens import check_csrf
from egide.web.security import (
    PENDING_COOKIE,
    SESSION_COOKIE,
    check_pre_session,
    clear_cookie,
    cookie_token,
    safe_next,
    same_origin,
    set_cookie,
)
from egide.web.views import (
    _CSRF_REFUSED,
    _ID_RE,
    _client,
    _ctx,
    _redirect,
    _refusal_status,
    _refused,
    _session_post,
    _signed_in,
    _step,
    _tx,
)

router = APIRouter(include_in_schema=False)

MAX_JSON_BYTES = 64 * 1024
CSRF_HEADER = "x-csrf-token"
_JSON_TYPE = "application/json"
_JSON_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_STEP_UP_NEEDED = (
    "Changing your passkeys needs a recent second-factor check: sign out and sign in again, "
    "then retry."
)


def install(app: FastAPI) -> None:
    """Mount the passkey endpoints (after `egide.web.views.install`, whose context they use)."""
    app.include_router(router)


# --- plumbing ------------------------------------------------------------------------------


def _json(
    payload: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    merged = {**_JSON_HEADERS, **(headers or {})}
    return JSONResponse(dict(payload), status_code=status, headers=merged)


def _json_error(message: str, status: int, **extra: Any) -> JSONResponse:
    return _json({"error": message, **extra}, status)


async def _json_body(request: Request) -> dict[str, Any] | None:
    """The JSON object of the body, read with a size limit; None when not one."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != _JSON_TYPE:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_JSON_BYTES:
            return None
        chunks.append(chunk)
    try:
        parsed = json.loads(b"".join(chunks).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return parsed if isinstance(parsed, dict) else None


async def _pre_session_json(request: Request) -> dict[str, Any] | JSONResponse:
    """The JSON body of a pre-session call, or the refusal (origin, CSRF header, malformed)."""
    ctx = _ctx(request)
    if not same_origin(request, ctx.settings):
        return _json_error(_CSRF_REFUSED, 403)
    if not check_pre_session(request, ctx.csrf_key, request.headers.get(CSRF_HEADER)):
        return _json_error(_CSRF_REFUSED, 403)
    body = await _json_body(request)
    if body is None:
        return _json_error("The request could not be read.", 400)
    return body


async def _pending_json(request: Request) -> tuple[str, dict[str, Any]] | JSONResponse:
    """The pending sign-in's token and the JSON body of a call that continues it, or the
    refusal (as `_pre_session_json`; expired when the browser holds no pending sign-in)."""
    checked = await _pre_session_json(request)
    if not isinstance(checked, dict):
        return checked
    pending = cookie_token(request, PENDING_COOKIE)
    if pending is None:
        return _expired_json()
    return pending, checked


async def _session_json(
    request: Request, *, recent_mfa: bool = True
) -> tuple[sessions.SessionInfo, dict[str, Any]] | JSONResponse:
    """The session and JSON body of a signed-in call, or the refusal. Changing passkeys needs a
    second factor within `step_up_minutes` (ASVS V7.5.1); the step-up itself (`recent_mfa`
    False) does not."""
    ctx = _ctx(request)
    if not same_origin(request, ctx.settings):
        return _json_error(_CSRF_REFUSED, 403)
    info = await _signed_in(request)
    if info is None:
        return _json_error("You are signed out.", 401, redirect="/login")
    if not check_csrf(info.csrf_secret, request.headers.get(CSRF_HEADER)):
        return _json_error(_CSRF_REFUSED, 403)
    try:
        if recent_mfa:
            sessions.require_recent_mfa(info, clock=ctx.clock, settings=ctx.settings)
    except EgideError:
        return _json_error(_STEP_UP_NEEDED, 403)
    body = await _json_body(request)
    if body is None:
        return _json_error("The request could not be read.", 400)
    return info, body


def _credential_json(body: Mapping[str, Any]) -> str | None:
    credential = body.get("credential")
    return json.dumps(credential) if isinstance(credential, dict) else None


def _name_of(body: Mapping[str, Any]) -> str:
    name = body.get("name")
    return name[:256] if isinstance(name, str) else ""


def _expired_json() -> JSONResponse:
    response = _json_error(login.PENDING_EXPIRED, 401, redirect="/login?notice=expired")
    clear_cookie(response, PENDING_COOKIE)
    return response


def _signed_in_json(result: login.LoginResult, **extra: Any) -> JSONResponse:
    """A completed sign-in: the new session's cookie, the pending one dropped (V7.2.4)."""
    assert result.session_token is not None
    response = _json({"redirect": "/account", **extra})
    set_cookie(response, SESSION_COOKIE, result.session_token)
    clear_cookie(response, PENDING_COOKIE)
    return response


def _refused_json(result: login.LoginResult) -> JSONResponse:
    if result.message == login.PENDING_EXPIRED:
        return _expired_json()
    return _throttled_json(result)


def _throttled_json(result: login.LoginResult) -> JSONResponse:
    """A refused step: 401, or 429 with Retry-After (see `views._refusal_status`)."""
    status, headers = _refusal_status(result)
    return _json({"error": result.message}, status, headers)


def _options_error(exc: EgideError) -> JSONResponse:
    if exc.status == 401:
        return _expired_json()
    return _json_error(exc.message, exc.status)


async def _pending_options(request: Request, begin: Callable[..., dict[str, Any]]) -> Response:
    """The options of a ceremony that continues the pending sign-in: `begin` is
    `passkeys.begin_authentication` or `passkeys.begin_enrolment`."""
    ctx = _ctx(request)
    checked = await _pending_json(request)
    if not isinstance(checked, tuple):
        return checked
    pending, _ = checked
    try:
        options = await _tx(
            ctx,
            lambda s: begin(s, pending_token=pending, clock=ctx.clock, settings=ctx.settings),
        )
    except EgideError as exc:
        return _options_error(exc)
    return _json(options)


async def _authenticate(
    request: Request, body: Mapping[str, Any], pending: str | None
) -> login.LoginResult:
    """The assertion in `body` checked as a sign-in step (ending this browser's previous
    session when it signs in, see `views._step`)."""
    ctx = _ctx(request)
    credential = _credential_json(body) or ""
    ip, device = _client(request)

    def work(s: Session) -> login.LoginResult:
        return passkeys.finish_authentication(
            s,
            pending_token=pending,
            credential_json=credential,
            clock=ctx.clock,
            settings=ctx.settings,
            ip=ip,
            device=device,
        )

    return await _step(request, work)


# --- sign-in ----------------------------------------------------------------------------------


@router.post("/login/passkey/options")
async def passkey_login_options(request: Request) -> Response:
    return await _pending_options(request, passkeys.begin_authentication)


@router.post("/login/passkey/verify")
async def passkey_login_verify(request: Request) -> Response:
    checked = await _pending_json(request)
    if not isinstance(checked, tuple):
        return checked
    pending, body = checked
    result = await _authenticate(request, body, pending)
    if result.outcome == "signed_in" and result.session_token:
        return _signed_in_json(result)
    return _refused_json(result)


@router.post("/login/passkey/register/options")
async def passkey_enrol_options(request: Request) -> Response:
    return await _pending_options(request, passkeys.begin_enrolment)


@router.post("/login/passkey/register")
async def passkey_enrol_finish(request: Request) -> Response:
    ctx = _ctx(request)
    checked = await _pending_json(request)
    if not isinstance(checked, tuple):
        return checked
    pending, body = checked
    credential = _credential_json(body) or ""
    name = _name_of(body)
    ip, device = _client(request)
    try:
        result, codes = await _step(
            request,
            lambda s: passkeys.finish_enrolment(
                s,
                pending_token=pending,
                credential_json=credential,
                name=name,
                clock=ctx.clock,
                settings=ctx.settings,
                ip=ip,
                device=device,
            ),
        )
    except EgideError as exc:
        return _json_error(exc.message, exc.status)
    if result.outcome == "signed_in" and result.session_token:
        # The recovery codes are in this answer only (passkeys.js shows them once).
        return _signed_in_json(result, recovery_codes=codes)
    return _refused_json(result)


@router.post("/login/passkey/discover/options")
async def passkey_discover_options(request: Request) -> Response:
    ctx = _ctx(request)
    checked = await _pre_session_json(request)
    if not isinstance(checked, dict):
        return checked
    options = await _tx(
        ctx,
        lambda s: passkeys.begin_authentication(
            s, pending_token=None, clock=ctx.clock, settings=ctx.settings
        ),
    )
    return _json(options)


@router.post("/login/passkey/discover")
async def passkey_discover_verify(request: Request) -> Response:
    checked = await _pre_session_json(request)
    if not isinstance(checked, dict):
        return checked
    result = await _authenticate(request, checked, None)
    if result.outcome == "signed_in" and result.session_token:
        return _signed_in_json(result)
    return _throttled_json(result)


# --- account ----------------------------------------------------------------------------------


@router.post("/account/passkeys/options")
async def passkey_add_options(request: Request) -> Response:
    ctx = _ctx(request)
    checked = await _session_json(request)
    if not isinstance(checked, tuple):
        return checked
    info, _ = checked
    try:
        options = await _tx(
            ctx,
            lambda s: passkeys.begin_registration(
                s, account_id=info.account_id, clock=ctx.clock, settings=ctx.settings
            ),
        )
    except EgideError as exc:
        return _json_error(exc.message, exc.status)
    return _json(options)


@router.post("/account/passkeys")
async def passkey_add(request: Request) -> Response:
    ctx = _ctx(request)
    checked = await _session_json(request)
    if not isinstance(checked, tuple):
        return checked
    info, body = checked
    credential = _credential_json(body) or ""
    name = _name_of(body)
    try:
        added = await _tx(
            ctx,
            lambda s: passkeys.finish_registration(
                s,
                account_id=info.account_id,
                credential_json=credential,
                name=name,
                clock=ctx.clock,
                settings=ctx.settings,
                keep_session_id=info.id,
            ),
        )
    except EgideError as exc:
        return _json_error(exc.message, exc.status)
    return _json({"redirect": "/account?notice=passkey-added", "id": added.id}, 201)


@router.post("/account/passkeys/{passkey_id}/remove")
async def passkey_remove(request: Request, passkey_id: str) -> Response:
    ctx = _ctx(request)
    checked = await _session_post(request)
    if not isinstance(checked, tuple):
        return checked
    info, _ = checked
    if _ID_RE.fullmatch(passkey_id) is None:
        return _refused("No such passkey.", 404)
    try:
        sessions.require_recent_mfa(info, clock=ctx.clock, settings=ctx.settings)
    except EgideError:
        return _refused(_STEP_UP_NEEDED, 403)
    try:
        await _tx(
            ctx,
            lambda s: passkeys.remove_passkey(
                s,
                account_id=info.account_id,
                passkey_id=passkey_id,
                clock=ctx.clock,
                keep_session_id=info.id,
            ),
        )
    except EgideError as exc:
        return _refused(exc.message, exc.status)
    return _redirect("/account?notice=passkey-removed")


# --- step-up ----------------------------------------------------------------------------------


def _signed_out_json() -> JSONResponse:
    response = _json_error("You are signed out.", 401, redirect="/login")
    clear_cookie(response, SESSION_COOKIE)
    return response


@router.post("/account/step-up/passkey/options")
async def passkey_step_up_options(request: Request) -> Response:
    """Request options for a step-up with a passkey, the challenge bound to this session."""
    ctx = _ctx(request)
    checked = await _session_json(request, recent_mfa=False)
    if not isinstance(checked, tuple):
        return checked
    info, _ = checked
    try:
        options = await _tx(
            ctx,
            lambda s: passkeys.begin_step_up(
                s,
                session_id=info.id,
                account_id=info.account_id,
                clock=ctx.clock,
                settings=ctx.settings,
            ),
        )
    except EgideError as exc:
        if exc.status == 404:
            return _signed_out_json()  # the session ended meanwhile
        return _json_error(exc.message, exc.status)
    return _json(options)


@router.post("/account/step-up/passkey")
async def passkey_step_up(request: Request) -> Response:
    """Verify the assertion; on success the session's new token replaces the cookie (ASVS
    V7.2.4) and the answer names where to go (`next`: this site's paths only, V3.7.2)."""
    ctx = _ctx(request)
    checked = await _session_json(request, recent_mfa=False)
    if not isinstance(checked, tuple):
        return checked
    info, body = checked
    credential = _credential_json(body) or ""
    raw_next = body.get("next")
    next_url = safe_next(raw_next if isinstance(raw_next, str) else None)
    try:
        # A refusal is a result, not an error, so its ledger entry and failure count commit.
        result = await _tx(
            ctx,
            lambda s: passkeys.finish_step_up(
                s,
                session_id=info.id,
                account_id=info.account_id,
                credential_json=credential,
                clock=ctx.clock,
                settings=ctx.settings,
            ),
        )
    except EgideError:
        return _signed_out_json()
    if result.ok and result.session_token:
        target = "/account?notice=step-up" if next_url == "/account" else next_url
        response = _json({"redirect": target})
        set_cookie(response, SESSION_COOKIE, result.session_token)
        return response
    headers: dict[str, str] = {}
    status = 401
    if result.retry_after is not None:
        status = 429
        if result.retry_after > 0:
            headers["Retry-After"] = str(result.retry_after)
    return _json({"error": result.message}, status, headers)

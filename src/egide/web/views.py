"""The sign-in and account pages: server-rendered HTML forms; script only for passkeys.

Routes (all under `/`):

| route | what |
|---|---|
| `GET/POST /login` | e-mail and password (first factor) |
| `GET/POST /login/mfa` | a TOTP code or a recovery code (second factor) |
| `GET/POST /login/enrol` | first sign-in of staff: TOTP enrolment, then the recovery codes once |
| `GET /account` | who is signed in, their active sessions, each with a sign-out button |
| `POST /account/sessions/{id}/revoke` | sign one session out (another: after a step-up) |
| `GET/POST /account/step-up?next=...` | re-authenticate (TOTP, a passkey, or the password
  without an authenticator) |
| `GET/POST /account/totp` | add or replace the authenticator app (after a step-up) |
| `GET/POST /account/password` | change the password (current and new, ASVS V6.2.2, V6.2.3) |
| `POST /logout` | end this session, clear the cookies (ASVS V7.4.1) |
| `POST /login/passkey/...` | passkey JSON endpoints of the sign-in (`passkey_views`) |
| `POST /account/passkeys...` | add a passkey (JSON), remove one (form) (`passkey_views`) |
| `GET/POST /invite/{token}` | accept an invitation: choose the first password |

The pages authenticate with the `__Host-egide_session` cookie only; the FHIR API keeps bearer
tokens and never reads that cookie. Cookies, CSRF, origin checks and headers are in
`egide.web.security`. Every database step runs in one transaction of its own (the unit of
work), with the back end appending its ledger entries in the same transaction (DESIGN.md
contract 2); a refused sign-in is a result, not an error, so its audit and throttling
counters commit.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import re
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from sqlalchemy.orm import Session

from egide.core.errors import EgideError
from egide.identity import accounts, factors, login, passkeys, sessions
from egide.identity.passwords import MAX_LENGTH, MIN_LENGTH_SINGLE_FACTOR, MIN_LENGTH_WITH_MFA
from egide.identity.session_tokens import check_csrf, csrf_token_for
from egide.records.unit_of_work import run_in_transaction
from egide.web import openapi as web_openapi
from egide.web.context import WebContext
from egide.web.next_url import follow_next, remember_next
from egide.web.security import (
    CSRF_COOKIE,
    PAGE_HEADERS,
    PENDING_COOKIE,
    PENDING_MAX_AGE,
    SESSION_COOKIE,
    check_pre_session,
    clear_cookie,
    cookie_token,
    pre_session_token,
    safe_next,
    same_origin,
    set_cookie,
)

T = TypeVar("T")

MAX_FORM_BYTES = 64 * 1024  # three passwords of 1,024 code points, percent-encoded, fit
MAX_FORM_FIELDS = 16
_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_INVITE_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
_FORM_TYPE = "application/x-www-form-urlencoded"

# Fixed notices chosen by a query parameter: nothing from the URL is echoed into the page.
NOTICES = {
    "signed-out": "You are signed out.",
    "password-set": "Your password is set. Sign in with it.",
    "password-changed": "Your password is changed. Your other sessions were signed out.",
    "session-revoked": "That session is signed out.",
    "app-revoked": "That app no longer has access to your account.",
    "step-up": "Confirmed. You can now do what you asked for.",
    "expired": "The sign-in took too long or was interrupted; please start again.",
    "passkey-added": "Your passkey is added. Your other sessions were signed out.",
    "passkey-removed": "That passkey is removed. Your other sessions were signed out.",
}
_STATIC = {
    "egide.css": "text/css; charset=utf-8",
    "passkeys.js": "text/javascript; charset=utf-8",
}

_ENV = Environment(
    loader=PackageLoader("egide.web", "templates"),
    # Autoescaping everywhere (ASVS V3.2.2): names, e-mails, user agents and messages are
    # text, never markup.
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

router = APIRouter(include_in_schema=False)


def install(app: FastAPI, ctx: WebContext) -> None:
    """Mount the pages on `app` (called by the composition root, `egide.app`)."""
    app.state.egide_web = ctx
    app.include_router(router)
    # The sign-in and account pages in the OpenAPI schema, with their form bodies.
    web_openapi.document(app)


# --- plumbing ------------------------------------------------------------------------------


def _ctx(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.egide_web
    return ctx


def _client(request: Request) -> tuple[str | None, str | None]:
    ip = request.client.host if request.client else None
    device = request.headers.get("user-agent", "")[:128] or None
    return ip, device


async def _tx(ctx: WebContext, work: Callable[[Session], T]) -> T:
    """`work` in one transaction, off the event loop (Argon2id takes tens of milliseconds)."""
    return await run_in_threadpool(run_in_transaction, ctx.session_factory, work)


def _page(
    template: str,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    **values: Any,
) -> HTMLResponse:
    values.setdefault("notice", None)
    values.setdefault("error", None)
    values.setdefault("signed_in", False)
    body = _ENV.get_template(template).render(**values)
    response = HTMLResponse(body, status_code=status, headers=dict(PAGE_HEADERS))
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _redirect(url: str) -> RedirectResponse:
    # 303: the browser follows a POST's answer with a GET (no resubmission on reload).
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


def _refused(message: str, status: int = 403) -> HTMLResponse:
    return _page("refused.html", status=status, title="Request refused", message=message)


_CSRF_REFUSED = (
    "This form has expired or did not come from this site, so nothing was done. "
    "Go back, reload the page and try again."
)


async def _form(request: Request) -> dict[str, str] | None:
    """The urlencoded form, read with a size limit; None when malformed or too large."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            return None
        chunks.append(chunk)
    if size == 0:
        return {}  # an empty POST: no fields, so no CSRF token either (403 follows)
    if media != _FORM_TYPE:
        return None
    try:
        text = b"".join(chunks).decode("utf-8")
        pairs = parse_qsl(
            text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS, errors="strict"
        )
    except (UnicodeDecodeError, ValueError):
        return None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if "\x00" in name or "\x00" in value:
            # No field of ours may hold NUL (PostgreSQL text refuses it: found by schemathesis).
            return None
        fields.setdefault(name, value)  # the first value of a repeated field wins
    return fields


def _with_pre_session_csrf(request: Request, build: Callable[[str], HTMLResponse]) -> HTMLResponse:
    """Render a pre-session form with its CSRF token, setting the nonce cookie if new."""
    token, fresh = pre_session_token(request, _ctx(request).csrf_key)
    response = build(token)
    if fresh is not None:
        set_cookie(response, CSRF_COOKIE, fresh)
    return response


async def _pre_session_post(request: Request) -> dict[str, str] | HTMLResponse:
    """The form of a pre-session POST, or the refusal page (origin, CSRF, malformed)."""
    ctx = _ctx(request)
    if not same_origin(request, ctx.settings):
        return _refused(_CSRF_REFUSED)
    form = await _form(request)
    if form is None:
        return _refused("The form could not be read.", 400)
    if not check_pre_session(request, ctx.csrf_key, form.get("csrf")):
        return _refused(_CSRF_REFUSED)
    return form


async def _pending_post(request: Request) -> tuple[str, dict[str, str]] | Response:
    """The pending sign-in's token and the form of a POST that continues it, or the answer
    that ends the request (as `_pre_session_post`; back to `/login` when nothing is pending)."""
    form = await _pre_session_post(request)
    if not isinstance(form, dict):
        return form
    pending = cookie_token(request, PENDING_COOKIE)
    if pending is None:
        return _redirect("/login?notice=expired")
    return pending, form


async def _signed_in(request: Request) -> sessions.SessionInfo | None:
    ctx = _ctx(request)
    token = cookie_token(request, SESSION_COOKIE)
    if token is None:
        return None
    return await _tx(
        ctx,
        lambda s: sessions.validate_session(s, token=token, clock=ctx.clock, settings=ctx.settings),
    )


def _to_login() -> RedirectResponse:
    response = _redirect("/login")
    clear_cookie(response, SESSION_COOKIE)
    return response


async def _session_post(
    request: Request,
) -> tuple[sessions.SessionInfo, dict[str, str]] | Response:
    """The session and form of a signed-in POST, or the answer that ends the request."""
    ctx = _ctx(request)
    if not same_origin(request, ctx.settings):
        return _refused(_CSRF_REFUSED)
    info = await _signed_in(request)
    if info is None:
        return _to_login()
    form = await _form(request)
    if form is None:
        return _refused("The form could not be read.", 400)
    # Synchronizer token (ASVS V3.5.1): the session's own secret, checked in constant time.
    if not check_csrf(info.csrf_secret, form.get("csrf")):
        return _refused(_CSRF_REFUSED)
    return info, form


def _csrf_for(info: sessions.SessionInfo) -> str:
    return csrf_token_for(info.csrf_secret)


def _refusal_status(result: login.LoginResult) -> tuple[int, dict[str, str]]:
    """401 for wrong credentials (one message whatever was wrong, ASVS V6.3.8); 429 with
    Retry-After when throttled or locked (ASVS V6.3.1, V2.4.1)."""
    if result.retry_after is not None:
        return 429, {"Retry-After": str(max(1, result.retry_after))}
    if result.message == login.ACCOUNT_LOCKED:
        return 429, {}
    return 401, {}


def _start_again() -> RedirectResponse:
    """The pending sign-in is spent or expired: back to the first step."""
    response = _redirect("/login?notice=expired")
    clear_cookie(response, PENDING_COOKIE)
    return response


async def _step(request: Request, work: Callable[[Session], T]) -> T:
    """Run a sign-in step; when it signs in, the session this browser had (if any) is ended
    in the same transaction: a new token at every authentication, and the current one
    terminated (ASVS V7.2.4, against session fixation)."""
    ctx = _ctx(request)
    old = cookie_token(request, SESSION_COOKIE)

    def in_tx(session: Session) -> T:
        outcome = work(session)
        result = outcome[0] if isinstance(outcome, tuple) else outcome
        signed_in = isinstance(result, login.LoginResult) and result.outcome == "signed_in"
        if old is not None and signed_in:
            sessions.logout(session, token=old, clock=ctx.clock)
        return outcome

    return await _tx(ctx, in_tx)


def _after_step(result: login.LoginResult) -> RedirectResponse | None:
    """Where a successful or partial sign-in step leads; None when it was refused."""
    if result.outcome == "signed_in" and result.session_token:
        response = _redirect("/account")
        # A new token at every sign-in, whatever cookie the browser had (ASVS V7.2.4,
        # against session fixation); a session cookie: no Max-Age.
        set_cookie(response, SESSION_COOKIE, result.session_token)
        clear_cookie(response, PENDING_COOKIE)
        return response
    if result.outcome in {"mfa_required", "enrolment_required"} and result.pending_token:
        target = "/login/mfa" if result.outcome == "mfa_required" else "/login/enrol"
        response = _redirect(target)
        # The browser's current session (if any) is ended only when the new one starts.
        set_cookie(response, PENDING_COOKIE, result.pending_token, max_age=PENDING_MAX_AGE)
        return response
    return None


async def _sign_in_step(request: Request, step: Callable[..., T], **fields: str) -> T:
    """A `login` sign-in step with `fields`, this request's client and the context, run by
    `_step` (so the browser's previous session ends when it signs in)."""
    ctx = _ctx(request)
    ip, device = _client(request)
    return await _step(
        request,
        lambda s: step(
            s,
            **fields,
            clock=ctx.clock,
            settings=ctx.settings,
            envelope=ctx.envelope,
            ip=ip,
            device=device,
        ),
    )


def _refused_step(result: login.LoginResult, page: Callable[..., HTMLResponse]) -> Response:
    """A refused step of a pending sign-in: back to the first step when it expired, else
    `page` again with the message, 401 or 429 (`_refusal_status`)."""
    if result.message == login.PENDING_EXPIRED:
        return _start_again()
    status, headers = _refusal_status(result)
    return page(error=result.message, status=status, headers=headers)


def _notice(request: Request) -> str | None:
    return NOTICES.get(request.query_params.get("notice", ""))


def _password_rules(role: str) -> dict[str, int]:
    staff = role != "patient"
    return {
        "min_length": MIN_LENGTH_WITH_MFA if staff else MIN_LENGTH_SINGLE_FACTOR,
        "max_length": MAX_LENGTH,
    }


def _fmt(moment: dt.datetime | None) -> str:
    return "" if moment is None else moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


# --- static ----------------------------------------------------------------------------------


@router.get("/static/{name}")
async def static(name: str) -> Response:
    media = _STATIC.get(name)
    if media is None:
        return Response("not found", status_code=404, media_type="text/plain; charset=utf-8")
    content = resources.files("egide.web").joinpath("static", name).read_bytes()
    return Response(content, media_type=media, headers={"Cache-Control": "public, max-age=3600"})


@router.get("/")
async def home() -> RedirectResponse:
    return _redirect("/account")


# --- sign-in ---------------------------------------------------------------------------------


def _login_page(
    request: Request,
    *,
    email: str = "",
    error: str | None = None,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    return _with_pre_session_csrf(
        request,
        lambda csrf: _page(
            "login.html",
            status=status,
            headers=headers,
            title="Sign in",
            csrf=csrf,
            email=email,
            error=error,
            notice=_notice(request),
        ),
    )


@router.get("/login")
async def login_form(request: Request) -> Response:
    # Shown even to a signed-in browser: signing in again (re-authentication, or another
    # person at a shared workstation) replaces its session (see `_step`).
    response = _login_page(request)
    remember_next(request, response)  # `/login?next=...`: where to go once signed in
    return response


@router.post("/login")
async def login_submit(request: Request) -> Response:
    form = await _pre_session_post(request)
    if not isinstance(form, dict):
        return form
    email = form.get("email", "").strip()
    password = form.get("password", "")
    if not email or not password:
        return _login_page(
            request, email=email, error="Enter your e-mail address and password.", status=400
        )
    result = await _sign_in_step(request, login.password_step, email=email, password=password)
    done = follow_next(request, _after_step(result))
    if done is not None:
        return done
    status, headers = _refusal_status(result)
    return _login_page(request, email=email, error=result.message, status=status, headers=headers)


def _mfa_page(
    request: Request,
    *,
    error: str | None = None,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    return _with_pre_session_csrf(
        request,
        lambda csrf: _page(
            "mfa.html",
            status=status,
            headers=headers,
            title="Second factor",
            csrf=csrf,
            error=error,
        ),
    )


@router.get("/login/mfa")
async def mfa_form(request: Request) -> Response:
    if cookie_token(request, PENDING_COOKIE) is None:
        return _redirect("/login?notice=expired")
    return _mfa_page(request)


@router.post("/login/mfa")
async def mfa_submit(request: Request) -> Response:
    checked = await _pending_post(request)
    if not isinstance(checked, tuple):
        return checked
    pending, form = checked
    code = form.get("code", "").strip()
    if not code:
        return _mfa_page(request, error="Enter the code.", status=400)
    result = await _sign_in_step(request, login.mfa_step, pending_token=pending, code=code)
    done = follow_next(request, _after_step(result))
    if done is not None:
        return done
    return _refused_step(result, functools.partial(_mfa_page, request))


def _enrol_page(
    request: Request,
    enrolment: accounts.TotpEnrolment | None,
    *,
    error: str | None = None,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    # The alternative text of the QR code never contains the seed.
    qr, secret = _qr_and_secret(enrolment) if enrolment is not None else (None, None)
    return _with_pre_session_csrf(
        request,
        lambda csrf: _page(
            "enrol.html",
            status=status,
            headers=headers,
            title="Set up your authenticator app",
            csrf=csrf,
            qr=qr,
            secret=secret,
            error=error,
        ),
    )


@router.get("/login/enrol")
async def enrol_form(request: Request) -> Response:
    ctx = _ctx(request)
    pending = cookie_token(request, PENDING_COOKIE)
    if pending is None:
        return _redirect("/login?notice=expired")
    try:
        # Each visit draws a new seed (the back end keeps only the latest as pending).
        enrolment = await _tx(
            ctx,
            lambda s: login.enrol_step(
                s,
                pending_token=pending,
                clock=ctx.clock,
                envelope=ctx.envelope,
                settings=ctx.settings,
            ),
        )
    except EgideError:
        return _start_again()
    return _enrol_page(request, enrolment)


@router.post("/login/enrol")
async def enrol_submit(request: Request) -> Response:
    checked = await _pending_post(request)
    if not isinstance(checked, tuple):
        return checked
    pending, form = checked
    code = form.get("code", "").strip()
    if not code:
        return _enrol_page(request, None, error="Enter the code your app shows.", status=400)
    try:
        result, codes = await _sign_in_step(
            request, login.confirm_enrol_step, pending_token=pending, code=code
        )
    except EgideError as exc:
        return _enrol_page(request, None, error=exc.message, status=exc.status)
    if result.outcome != "signed_in" or not result.session_token:
        return _refused_step(result, functools.partial(_enrol_page, request, None))
    # The recovery codes are shown once, on this page only (never stored in clear; the
    # page is not cached: Cache-Control no-store).
    response = _page("recovery_codes.html", title="Your recovery codes", codes=codes)
    set_cookie(response, SESSION_COOKIE, result.session_token)
    clear_cookie(response, PENDING_COOKIE)
    return response


# --- account ---------------------------------------------------------------------------------


@router.get("/account")
async def account(request: Request) -> Response:
    ctx = _ctx(request)
    info = await _signed_in(request)
    if info is None:
        return _to_login()
    active = await _tx(
        ctx,
        lambda s: sessions.list_sessions(
            s, account_id=info.account_id, clock=ctx.clock, settings=ctx.settings
        ),
    )
    rows = [
        {
            "id": item.id,
            "created": _fmt(item.created_at),
            "last_seen": _fmt(item.last_seen_at),
            "ip": item.ip or "unknown",
            "device": item.device or "unknown",
            "current": item.id == info.id,
        }
        for item in active
    ]
    keys = await _tx(ctx, lambda s: passkeys.list_passkeys(s, account_id=info.account_id))
    return _page(
        "account.html",
        title="Your account",
        signed_in=True,
        csrf=_csrf_for(info),
        name=info.principal.name,
        role=info.principal.role,
        sessions=rows,
        passkeys=[
            {
                "id": key.id,
                "name": key.name,
                "created": _fmt(key.created_at),
                "last_used": _fmt(key.last_used_at) or "never",
            }
            for key in keys
        ],
        notice=_notice(request),
    )


@router.post("/account/sessions/{session_id}/revoke")
async def revoke(request: Request, session_id: str) -> Response:
    ctx = _ctx(request)
    checked = await _session_post(request)
    if not isinstance(checked, tuple):
        return checked
    info, _ = checked
    if _ID_RE.fullmatch(session_id) is None:
        return _refused("No such session.", 404)
    if session_id != info.id:
        # Ending another session needs a recent re-authentication (ASVS V7.5.2), so a stolen
        # cookie cannot sign its owner out everywhere else; signing this one out does not.
        try:
            sessions.require_recent_mfa(info, clock=ctx.clock, settings=ctx.settings)
        except EgideError:
            return _redirect("/account/step-up?next=/account")
    try:
        await _tx(
            ctx,
            lambda s: sessions.revoke_session(
                s,
                account_id=info.account_id,
                session_id=session_id,
                clock=ctx.clock,
                reason="signed out from the account page",
            ),
        )
    except EgideError as exc:
        return _refused(exc.message, exc.status)
    if session_id == info.id:
        response = _redirect("/login?notice=signed-out")
        clear_cookie(response, SESSION_COOKIE)
        return response
    return _redirect("/account?notice=session-revoked")


@router.post("/logout")
async def logout(request: Request) -> Response:
    ctx = _ctx(request)
    checked = await _session_post(request)
    if not isinstance(checked, tuple):
        return checked
    token = cookie_token(request, SESSION_COOKIE)
    assert token is not None  # _session_post validated the session of this cookie
    await _tx(ctx, lambda s: sessions.logout(s, token=token, clock=ctx.clock))
    # ASVS V7.4.1: the session is revoked server-side; the cookies go too, and the browser is
    # told to drop what it cached of the signed-in pages (ASVS V14.3.1).
    response = _redirect("/login?notice=signed-out")
    response.headers["Clear-Site-Data"] = '"cache", "storage"'
    for name in (SESSION_COOKIE, PENDING_COOKIE):
        clear_cookie(response, name)
    return response


# --- step-up ----------------------------------------------------------------------------------

_STEP_UP_EMPTY = {"totp": "Enter the code.", "passkey": sessions.STEP_UP_USE_PASSKEY}


def _step_up_page(
    info: sessions.SessionInfo,
    *,
    factor: str,
    passkey: bool,
    next_url: str,
    minutes: int,
    error: str | None = None,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    return _page(
        "step_up.html",
        status=status,
        headers=headers,
        title="Confirm it is you",
        signed_in=True,
        csrf=_csrf_for(info),
        factor=factor,
        passkey=passkey,
        next=next_url,
        minutes=minutes,
        error=error,
    )


def _step_up_means(s: Session, account_id: str) -> tuple[str, bool]:
    """What the step-up page offers: the form's factor, and whether a passkey may be used
    (`passkeys.finish_step_up`, through `passkey_views`)."""
    factor = sessions.step_up_factor(s, account_id=account_id)
    return factor, factors.has_passkey(s, account_id)


@router.get("/account/step-up")
async def step_up_form(request: Request) -> Response:
    ctx = _ctx(request)
    info = await _signed_in(request)
    if info is None:
        return _to_login()
    factor, passkey = await _tx(ctx, lambda s: _step_up_means(s, info.account_id))
    return _step_up_page(
        info,
        factor=factor,
        passkey=passkey,
        next_url=safe_next(request.query_params.get("next")),
        minutes=ctx.settings.step_up_minutes,
    )


@router.post("/account/step-up")
async def step_up_submit(request: Request) -> Response:
    ctx = _ctx(request)
    checked = await _session_post(request)
    if not isinstance(checked, tuple):
        return checked
    info, form = checked
    next_url = safe_next(form.get("next"))
    code = form.get("code", "")
    if not code.strip():
        factor, passkey = await _tx(ctx, lambda s: _step_up_means(s, info.account_id))
        return _step_up_page(
            info,
            factor=factor,
            passkey=passkey,
            next_url=next_url,
            minutes=ctx.settings.step_up_minutes,
            error=_STEP_UP_EMPTY.get(factor, "Enter your password."),
            status=400,
        )

    def work(s: Session) -> tuple[sessions.StepUpResult, tuple[str, bool]]:
        result = sessions.step_up(
            s,
            session_id=info.id,
            account_id=info.account_id,
            code=code,
            clock=ctx.clock,
            envelope=ctx.envelope,
            settings=ctx.settings,
        )
        return result, _step_up_means(s, info.account_id)

    try:
        # A refusal is a result, so its ledger entry and failure count commit.
        result, (factor, passkey) = await _tx(ctx, work)
    except EgideError:
        return _to_login()  # the session ended meanwhile
    if result.ok and result.session_token:
        response = _redirect("/account?notice=step-up" if next_url == "/account" else next_url)
        # A re-authentication: the session's new token replaces the cookie (ASVS V7.2.4).
        set_cookie(response, SESSION_COOKIE, result.session_token)
        return response
    status, headers = 401, {}
    if result.retry_after is not None:
        status = 429
        if result.retry_after > 0:
            headers = {"Retry-After": str(result.retry_after)}
    return _step_up_page(
        info,
        factor=factor,
        passkey=passkey,
        next_url=next_url,
        minutes=ctx.settings.step_up_minutes,
        error=result.message,
        status=status,
        headers=headers,
    )


def _password_page(
    info: sessions.SessionInfo, *, error: str | None = None, status: int = 200
) -> HTMLResponse:
    return _page(
        "password.html",
        status=status,
        title="Change your password",
        signed_in=True,
        csrf=_csrf_for(info),
        error=error,
        rules=_password_rules(info.principal.role),
    )


@router.get("/account/password")
async def password_form(request: Request) -> Response:
    info = await _signed_in(request)
    if info is None:
        return _to_login()
    return _password_page(info)


@router.post("/account/password")
async def password_submit(request: Request) -> Response:
    ctx = _ctx(request)
    checked = await _session_post(request)
    if not isinstance(checked, tuple):
        return checked
    info, form = checked
    current = form.get("current_password", "")
    new = form.get("new_password", "")
    if not current or not new:
        return _password_page(info, error="Fill in both passwords.", status=400)
    if new != form.get("confirm_password", ""):
        return _password_page(info, error="The two new passwords differ.", status=400)
    try:
        await _tx(
            ctx,
            lambda s: accounts.change_password(
                s,
                account_id=info.account_id,
                current_password=current,
                new_password=new,
                clock=ctx.clock,
                settings=ctx.settings,
                keep_session_id=info.id,
            ),
        )
    except EgideError as exc:
        return _password_page(info, error=exc.message, status=exc.status)
    return _redirect("/account?notice=password-changed")


# --- authenticator app ----------------------------------------------------------------------

_TOTP_STEP_UP = "/account/step-up?next=/account/totp"


def _qr_and_secret(enrolment: accounts.TotpEnrolment) -> tuple[str, str]:
    """The QR code as a data: URL (allowed by the CSP's img-src, so the SVG cannot run
    anything in the page) and the seed in groups of four for typing."""
    qr = "data:image/svg+xml;base64," + base64.b64encode(enrolment.svg.encode("utf-8")).decode(
        "ascii"
    )
    compact = enrolment.secret_base32
    return qr, " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))


def _totp_page(
    info: sessions.SessionInfo,
    enrolment: accounts.TotpEnrolment | None,
    *,
    error: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    qr, secret = _qr_and_secret(enrolment) if enrolment is not None else (None, None)
    return _page(
        "account_totp.html",
        status=status,
        title="Your authenticator app",
        signed_in=True,
        csrf=_csrf_for(info),
        qr=qr,
        secret=secret,
        error=error,
    )


def _stepped_up(info: sessions.SessionInfo, ctx: WebContext) -> bool:
    try:
        sessions.require_recent_mfa(info, clock=ctx.clock, settings=ctx.settings)
    except EgideError:
        return False
    return True


@router.get("/account/totp")
async def totp_form(request: Request) -> Response:
    """A new TOTP seed for this account, shown once as a QR code (RFC 6238). Adding or
    replacing the authenticator needs a recent step-up (ASVS V7.5.1): the back end checks it
    too (`accounts.begin_totp_enrolment(actor_session=...)`)."""
    ctx = _ctx(request)
    info = await _signed_in(request)
    if info is None:
        return _to_login()
    if not _stepped_up(info, ctx):
        return _redirect(_TOTP_STEP_UP)
    try:
        # Each visit draws a new pending seed; the enrolled one stays until confirmed.
        enrolment = await _tx(
            ctx,
            lambda s: accounts.begin_totp_enrolment(
                s,
                account_id=info.account_id,
                clock=ctx.clock,
                envelope=ctx.envelope,
                settings=ctx.settings,
                actor_session=info,
            ),
        )
    except EgideError as exc:
        if exc.status == 403:
            return _redirect(_TOTP_STEP_UP)
        return _refused(exc.message, exc.status)
    return _totp_page(info, enrolment)


@router.post("/account/totp")
async def totp_submit(request: Request) -> Response:
    """Confirm the new seed with its first code: it replaces the enrolled one, ten new
    recovery codes are shown once, and the account's other sessions are revoked (ASVS
    V7.4.3, in `accounts.confirm_totp_enrolment`)."""
    ctx = _ctx(request)
    checked = await _session_post(request)
    if not isinstance(checked, tuple):
        return checked
    info, form = checked
    if not _stepped_up(info, ctx):
        return _redirect(_TOTP_STEP_UP)
    code = form.get("code", "").strip()
    if not code:
        return _totp_page(info, None, error="Enter the code your app shows.", status=400)
    try:
        codes = await _tx(
            ctx,
            lambda s: accounts.confirm_totp_enrolment(
                s,
                account_id=info.account_id,
                code=code,
                clock=ctx.clock,
                envelope=ctx.envelope,
                keep_session_id=info.id,
                actor_session=info,
                settings=ctx.settings,
            ),
        )
    except EgideError as exc:
        if exc.status == 403:
            return _redirect(_TOTP_STEP_UP)
        return _totp_page(info, None, error=exc.message, status=exc.status)
    # Shown once, on this page only (stored hashed; the page is not cached: no-store).
    return _page(
        "recovery_codes.html",
        title="Your recovery codes",
        signed_in=True,
        csrf=_csrf_for(info),
        codes=codes,
    )


# --- invitation ------------------------------------------------------------------------------

_BAD_INVITATION = "This invitation link is invalid, was already used or has expired."


def _invite_page(
    request: Request,
    token: str,
    view: accounts.AccountView,
    *,
    error: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    return _with_pre_session_csrf(
        request,
        lambda csrf: _page(
            "invite.html",
            status=status,
            title="Choose your password",
            csrf=csrf,
            token=token,
            name=view.name,
            email=view.email,
            error=error,
            rules=_password_rules(view.role),
        ),
    )


async def _invitation(ctx: WebContext, token: str) -> accounts.AccountView | None:
    if _INVITE_TOKEN_RE.fullmatch(token) is None:
        return None
    try:
        return await _tx(
            ctx, lambda s: accounts.invitation_account(s, token=token, clock=ctx.clock)
        )
    except EgideError:
        return None


@router.get("/invite/{token}")
async def invite_form(request: Request, token: str) -> Response:
    ctx = _ctx(request)
    view = await _invitation(ctx, token)
    if view is None:
        return _refused(_BAD_INVITATION, 404)
    return _invite_page(request, token, view)


@router.post("/invite/{token}")
async def invite_submit(request: Request, token: str) -> Response:
    ctx = _ctx(request)
    form = await _pre_session_post(request)
    if not isinstance(form, dict):
        return form
    view = await _invitation(ctx, token)
    if view is None:
        return _refused(_BAD_INVITATION, 404)
    password = form.get("password", "")
    if not password:
        return _invite_page(request, token, view, error="Choose a password.", status=400)
    if password != form.get("confirm_password", ""):
        return _invite_page(request, token, view, error="The two passwords differ.", status=400)
    ip, device = _client(request)
    try:
        await _tx(
            ctx,
            lambda s: accounts.accept_invitation(
                s,
                token=token,
                password=password,
                clock=ctx.clock,
                settings=ctx.settings,
                ip=ip,
                device=device,
            ),
        )
    except EgideError as exc:
        return _invite_page(request, token, view, error=exc.message, status=exc.status)
    return _redirect("/login?notice=password-set")

"""Break-the-glass and investigation grants, under `/api` (the alerts: `api.alerts`).

| route | who | what |
|---|---|---|
| `POST /api/break-glass` | a signed-in clinician, stepped up | open a record in an emergency |
| `POST /api/investigations` | the data-protection officer | an officer reads one record |

Break-the-glass authenticates with the web session only (the `__Host-egide_session` cookie of
the pages, with the session's CSRF token in the `X-CSRF-Token` header and a JSON body, which a
cross-site form cannot send): it needs a second factor checked within the step-up window (issue
5, item 5; OWASP ASVS 5.0 V7.5.3), and an API bearer token has no second factor to step up
with, so a request carrying one is refused (403, OperationOutcome) and the refusal ledgered.
The other routes take bearer tokens like the rest of the API. A refusal that depends only on
the caller's role answers 403. Every grant and refusal is in the ledger (DESIGN.md contract
2). Errors are FHIR OperationOutcomes, like every API error.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from egide.api.context import ApiContext
from egide.api.context import client_of as _client
from egide.api.context import in_transaction as _tx
from egide.api.fhir import principal_of
from egide.api.responses import NO_STORE
from egide.core.errors import (
    BadRequest,
    Forbidden,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from egide.core.principal import Principal
from egide.identity import sessions
from egide.identity.models import Account, ApiToken
from egide.identity.session_tokens import check_csrf, looks_like_session_token
from egide.incidents import alerts
from egide.ledger.service import Act, Action, Outcome, append
from egide.records.grants import Grant, open_investigation
from egide.records.repository import defer_audit

router = APIRouter(prefix="/api")

# The pages' session cookie (`egide.web.security.SESSION_COOKIE`; a test holds them equal:
# the API may not import the web room).
SESSION_COOKIE = "__Host-egide_session"
CSRF_HEADER = "x-csrf-token"
MAX_JSON_BYTES = 16 * 1024
BEARER_REFUSED = (
    "break-the-glass needs a signed-in session with a recent second-factor check (step-up); "
    "an API token cannot step up, so it cannot break the glass"
)


def _ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.egide
    return ctx


async def _json_object(request: Request) -> dict[str, Any]:
    """The JSON object of the body, read with a size limit."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        msg = "the body must be a JSON object (Content-Type: application/json)"
        raise UnsupportedMediaType(msg)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_JSON_BYTES:
            msg = f"the body is larger than the {MAX_JSON_BYTES} bytes allowed"
            raise PayloadTooLarge(msg)
        chunks.append(chunk)
    try:
        parsed = json.loads(b"".join(chunks).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        msg = "the body is not valid JSON"
        raise BadRequest(msg) from None
    if not isinstance(parsed, dict):
        msg = "the body must be a JSON object"
        raise BadRequest(msg)
    return parsed


def _json(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=NO_STORE)


def _stamp(value: Any) -> str | None:
    if value is None:
        return None
    text: str = value.isoformat(timespec="seconds").replace("+00:00", "Z")
    return text


def grant_document(grant: Grant) -> dict[str, Any]:
    return {
        "id": grant.id,
        "kind": grant.kind.value,
        "patient": grant.patient_id,
        "actor": grant.actor,
        "valid_from": _stamp(grant.valid_from),
        "valid_to": _stamp(grant.valid_to),
        "granted_by": grant.granted_by,
        "reason": grant.reason,
    }


def _refusal(principal: Principal, ctx: ApiContext, action: Action, message: str) -> Forbidden:
    """403 for a refusal that depends on the caller's role or credential only, ledgered."""
    act = Act(action, Outcome.DENIED, count=0, reasons=(message,))
    clock = ctx.records.clock
    error = defer_audit(
        Forbidden(message), lambda s: append(s, principal=principal, act=act, clock=clock)
    )
    assert isinstance(error, Forbidden)
    return error


# --- break-the-glass ---------------------------------------------------------------------------


@router.post("/break-glass", status_code=201)
async def break_glass(request: Request) -> JSONResponse:
    """Open one patient's record in an emergency: `{"patient", "reason_code", "reason_text"}`.

    201 with the grant (until when) and the id of the alert raised for the security officer;
    403 without a recent step-up or with a bearer token; 400 for a missing or malformed reason;
    404 for an unknown patient; 409 when the record is already open to the caller."""
    ctx = _ctx(request)
    clock = ctx.records.clock
    if request.headers.get("authorization"):
        principal = await principal_of(request)  # 401 (ledgered) when the token is not valid

        def refuse(_session: Session) -> None:
            raise _refusal(principal, ctx, Action.BREAK_GLASS, BEARER_REFUSED)

        await _tx(request, refuse)
    token = request.cookies.get(SESSION_COOKIE)
    if token is None or not looks_like_session_token(token):
        msg = "sign in first: break-the-glass needs a signed-in session"
        raise Unauthorized(msg)
    info = await _tx(
        request,
        lambda s: sessions.validate_session(s, token=token, clock=clock, settings=ctx.settings),
    )
    if info is None:
        msg = "the session has ended: sign in again"
        raise Unauthorized(msg)
    # Synchronizer token (ASVS V3.5.1): the session's own CSRF secret, in a header.
    if not check_csrf(info.csrf_secret, request.headers.get(CSRF_HEADER)):
        msg = "the X-CSRF-Token header is missing or does not belong to this session"
        raise Forbidden(msg)
    body = await _json_object(request)
    ip, device, request_id = _client(request)
    principal = info.principal.with_request(ip=ip, device=device, request_id=request_id)
    granted, alert = await _tx(
        request,
        lambda s: alerts.open_break_glass_with_alert(
            s,
            principal,
            patient_id=body.get("patient"),
            reason_code=body.get("reason_code"),
            reason_text=body.get("reason_text"),
            clock=clock,
            settings=ctx.settings,
            mfa_at=info.mfa_at,
        ),
    )
    return _json({"grant": grant_document(granted.grant), "alert": alert.id}, 201)


# --- investigations ------------------------------------------------------------------------------


def _role_of_account(session: Session, account_id: object) -> str | None:
    """The role of a signed-in account or of an API token with this id, if any."""
    if not isinstance(account_id, str) or not 0 < len(account_id) <= 64:
        return None
    account = session.get(Account, account_id)
    if account is not None:
        return account.role if account.status == "active" else None
    token = session.get(ApiToken, account_id)
    return token.role if token is not None and token.revoked_at is None else None


@router.post("/investigations", status_code=201)
async def investigation(
    request: Request, principal: Principal = Depends(principal_of)
) -> JSONResponse:
    """The DPO lets a security officer read one patient's record (never write) for `hours`:
    `{"officer": account id, "patient": id, "hours": number, "reason": text}`."""
    ctx = _ctx(request)
    if principal.role != "dpo":
        message = f"role {principal.role} may not grant investigations: the DPO does"

        def refuse(_session: Session) -> None:
            raise _refusal(principal, ctx, Action.ACCESS_GRANT, message)

        await _tx(request, refuse)
    body = await _json_object(request)
    hours = body.get("hours")
    if isinstance(hours, bool) or not isinstance(hours, int | float):
        msg = "hours must be a number"
        raise BadRequest(msg)
    officer, patient, reason = body.get("officer"), body.get("patient"), body.get("reason")
    if not all(isinstance(v, str) for v in (officer, patient, reason)):
        msg = "officer, patient and reason are required strings"
        raise BadRequest(msg)
    assert isinstance(officer, str)
    assert isinstance(patient, str)
    assert isinstance(reason, str)
    granted = await _tx(
        request,
        lambda s: open_investigation(
            s,
            principal,
            officer_id=officer,
            officer_role=_role_of_account(s, officer),
            patient_id=patient,
            clock=ctx.records.clock,
            hours=float(hours),
            reason=reason,
        ),
    )
    return _json({"grant": grant_document(granted.grant)}, 201)


def install(app: Any) -> None:
    app.include_router(router)

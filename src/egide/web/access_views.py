"""The break-the-glass page: a clinician opens a record in an emergency (issue 5, item 5).

| route | what |
|---|---|
| `GET /break-glass?patient=ID` | the form: patient, coded reason, the clinician's own words |
| `POST /break-glass` | open the grant; the page says until when |

Like the other signed-in pages it authenticates with the session cookie and its forms carry
the session's CSRF token (OWASP ASVS 5.0 V3.5.1, `views._session_post`). Only physicians,
residents and nurses reach the form (403 otherwise). Breaking the glass needs a second factor
checked within the step-up window (ASVS V7.5.3): without one the page sends the person to the
step-up page, which brings them back here (`next`). The back end
(`incidents.alerts.open_break_glass_with_alert`) checks all of it again, ledgers every grant and
refusal, and raises the security officer's alert in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from egide.core.errors import EgideError
from egide.incidents.alerts import open_break_glass_with_alert
from egide.records.grants import (
    BREAK_GLASS_ROLES,
    REASON_DISPLAY,
    REASON_TEXT_MAX,
    REASON_TEXT_MIN,
    ReasonCode,
)
from egide.web.views import (
    _client,
    _csrf_for,
    _ctx,
    _page,
    _redirect,
    _refused,
    _session_post,
    _signed_in,
    _stepped_up,
    _to_login,
    _tx,
)

router = APIRouter(include_in_schema=False)

PATH = "/break-glass"
_PATIENT_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_ROLE_REFUSED = "Only physicians, residents and nurses may open a record in an emergency."
# Most likely first: the select opens on emergency treatment.
_REASONS = [
    (code.value, f"{REASON_DISPLAY[code].capitalize()} ({code.value})")
    for code in (ReasonCode.ETREAT, ReasonCode.PATSFTY, ReasonCode.PUBHLTH, ReasonCode.OTHER)
]


def install(app: FastAPI) -> None:
    """Mount the page (after `egide.web.views.install`, whose context it uses)."""
    app.include_router(router)


def _patient_of(value: str | None) -> str:
    return value if value and _PATIENT_RE.fullmatch(value) else ""


def _step_up_url(patient: str) -> str:
    back = f"{PATH}?patient={patient}" if patient else PATH
    return "/account/step-up?next=" + quote(back, safe="")


def _form_page(
    request: Request,
    csrf: str,
    *,
    patient: str = "",
    reason_code: str = ReasonCode.ETREAT.value,
    reason_text: str = "",
    error: str | None = None,
    status: int = 200,
) -> Response:
    return _page(
        "break_glass.html",
        status=status,
        title="Emergency access (break the glass)",
        signed_in=True,
        csrf=csrf,
        granted=None,
        hours=f"{_ctx(request).settings.break_glass_hours:g}",
        reasons=_REASONS,
        patient=patient,
        reason_code=reason_code,
        reason_text=reason_text,
        min_text=REASON_TEXT_MIN,
        max_text=REASON_TEXT_MAX,
        error=error,
    )


def _clinician(role: str) -> bool:
    return role in {r.value for r in BREAK_GLASS_ROLES}


@router.get(PATH)
async def break_glass_form(request: Request) -> Response:
    ctx = _ctx(request)
    info = await _signed_in(request)
    if info is None:
        return _to_login()
    if not _clinician(info.principal.role):
        return _refused(_ROLE_REFUSED)
    patient = _patient_of(request.query_params.get("patient"))
    if not _stepped_up(info, ctx):
        return _redirect(_step_up_url(patient))
    return _form_page(request, _csrf_for(info), patient=patient)


@router.post(PATH)
async def break_glass_submit(request: Request) -> Response:
    ctx = _ctx(request)
    checked = await _session_post(request)
    if not isinstance(checked, tuple):
        return checked
    info, form = checked
    if not _clinician(info.principal.role):
        return _refused(_ROLE_REFUSED)
    patient = form.get("patient", "").strip()
    reason_code = form.get("reason_code", "")
    reason_text = form.get("reason_text", "")
    if not _stepped_up(info, ctx):
        # The back end would refuse (and ledger) it too; send the person to step up first.
        return _redirect(_step_up_url(_patient_of(patient)))
    ip, device = _client(request)
    principal = info.principal.with_request(ip=ip, device=device, request_id=None)
    try:
        granted, _alert = await _tx(
            ctx,
            lambda s: open_break_glass_with_alert(
                s,
                principal,
                patient_id=patient,
                reason_code=reason_code,
                reason_text=reason_text,
                clock=ctx.clock,
                settings=ctx.settings,
                mfa_at=info.mfa_at,
            ),
        )
    except EgideError as exc:
        return _form_page(
            request,
            _csrf_for(info),
            patient=_patient_of(patient),
            reason_code=reason_code if reason_code in ReasonCode.__members__ else "ETREAT",
            reason_text=reason_text[:REASON_TEXT_MAX],
            error=exc.message,
            status=exc.status,
        )
    grant = granted.grant
    assert grant.valid_to is not None
    until = grant.valid_to.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return _page(
        "break_glass.html",
        title="Emergency access (break the glass)",
        signed_in=True,
        csrf=_csrf_for(info),
        granted={"patient": grant.patient_id, "until": until},
    )

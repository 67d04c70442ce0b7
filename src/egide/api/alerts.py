"""The security officer's alerts under `/api/alerts`: list, detail with evidence, triage.

| route | what |
|---|---|
| `GET /api/alerts` | alerts, most suspicious first, then newest, filtered and paged |
| `GET /api/alerts/{id}` | one alert with its `evidence` (the ledger entries it names) |
| `PATCH /api/alerts/{id}` | triage: `{"status": ...}` |

The list's filters are `status` (open, acknowledged, false_positive, confirmed), `kind`,
`severity`, `user` and `patient`; its pages `limit` (1 to 200, default 50) and `offset`. An
alert is DESIGN.md's "Alert" plus its triage fields (`status`, `created_at`, `updated_at`,
`updated_by`).

Security role: bearer tokens (`api.fhir.principal_of`, like the rest of the API); only the
security officer's role may use these routes (issue 5, item 2), any other role gets 403, the
refusal ledgered (a refusal that depends on the role only reveals nothing about a patient). An
unknown alert answers 404. The reads are ledgered with the act (list: one `search` entry;
detail: a `read` of the evidence per patient shown) and every change of status is ledgered
(`alert_update`), in the same transaction (DESIGN.md contract 2); the rules live in
`incidents.evidence`, shared with the officer's pages. Unknown query parameters are refused
(400) rather than ignored: a dropped filter would list more than was asked for. The next page
of the list is announced in a `Link: <...>; rel="next"` header (RFC 8288), so the body stays
`{"alerts": [...]}`. Errors are FHIR OperationOutcomes, like every API error. Responses are
`Cache-Control: no-store`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from egide.api.access import _json_object
from egide.api.context import ApiContext
from egide.api.context import in_transaction as _tx
from egide.api.fhir import principal_of
from egide.api.responses import NO_STORE
from egide.core.errors import BadRequest, Issue
from egide.core.principal import Principal
from egide.incidents import alerts, evidence
from egide.ledger.service import Action

__all__ = ["install", "router"]

PATH = "/api/alerts"
DEFAULT_LIMIT = 50
_FILTERS = ("status", "kind", "severity", "user", "patient")
_PARAMETERS = frozenset({*_FILTERS, "limit", "offset"})

router = APIRouter(prefix=PATH)


def _ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.egide
    return ctx


def _json(body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, headers={**NO_STORE, **(headers or {})})


async def _officer(
    request: Request, principal: Principal, action: Action, alert_id: str | None
) -> None:
    """Refuse (403, ledgered) a caller whose role may not read or triage alerts, before
    anything else of the request is read."""
    if alerts.may_manage_alerts(principal):
        return
    clock = _ctx(request).records.clock

    def refuse(_session: Session) -> None:
        raise evidence.officer_refusal(principal, clock=clock, action=action, alert_id=alert_id)

    await _tx(request, refuse)


def _bad(message: str, where: str) -> BadRequest:
    return BadRequest(message, [Issue(message, where, "value")])


def _query(request: Request) -> dict[str, str]:
    """The query parameters, each known and given at most once."""
    params: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in _PARAMETERS:
            msg = f"unknown parameter {name[:40]!r}: the filters are {', '.join(_FILTERS)}"
            raise _bad(msg, name[:40])
        if name in params:
            msg = f"{name} may be given only once"
            raise _bad(msg, name)
        params[name] = value
    return params


def _number(params: dict[str, str], name: str, default: int) -> int:
    text = params.get(name)
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 6:
        msg = f"{name} must be a whole number"
        raise _bad(msg, name)
    return int(text)


@router.get("")
async def list_alerts(
    request: Request, principal: Principal = Depends(principal_of)
) -> JSONResponse:
    """The alerts matching every filter given, most suspicious first, then newest."""
    await _officer(request, principal, Action.SEARCH, None)
    params = _query(request)
    limit = _number(params, "limit", DEFAULT_LIMIT)
    offset = _number(params, "offset", 0)
    clock = _ctx(request).records.clock
    page = await _tx(
        request,
        lambda s: evidence.list_page(
            s,
            principal,
            status=params.get("status"),
            kind=params.get("kind"),
            severity=params.get("severity"),
            user=params.get("user"),
            patient=params.get("patient"),
            offset=offset,
            limit=limit,
            clock=clock,
        ),
    )
    headers = {}
    if page.more:
        following = {**params, "offset": str(offset + limit), "limit": str(limit)}
        headers["Link"] = f'<{PATH}?{urlencode(following)}>; rel="next"'
    return _json({"alerts": [a.document() for a in page.alerts]}, headers)


@router.get("/{alert_id}")
async def get_alert(
    request: Request, alert_id: str, principal: Principal = Depends(principal_of)
) -> JSONResponse:
    """One alert with `evidence`: `entries` (access events, oldest first, at most 200),
    `total` found in the ledger, `shown`, and the `missing` ids the ledger does not hold."""
    await _officer(request, principal, Action.READ, alert_id)
    clock = _ctx(request).records.clock
    detail = await _tx(
        request,
        lambda s: evidence.read_alert(s, principal, alert_id=alert_id, clock=clock),
    )
    return _json(detail.document())


@router.patch("/{alert_id}")
async def update_alert(
    request: Request, alert_id: str, principal: Principal = Depends(principal_of)
) -> JSONResponse:
    """Triage: `{"status": "acknowledged"}` (or false_positive, confirmed, open); ledgered."""
    await _officer(request, principal, Action.ALERT_UPDATE, alert_id)
    body = await _json_object(request)
    clock = _ctx(request).records.clock
    changed = await _tx(
        request,
        lambda s: evidence.triage(
            s, principal, alert_id=alert_id, status=body.get("status"), clock=clock
        ),
    )
    return _json(changed.document())


def install(app: Any) -> None:
    app.include_router(router)

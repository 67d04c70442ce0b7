"""The security officer's alert pages: the list, one alert with its evidence, triage.

| route | what |
|---|---|
| `GET /alerts?status=&kind=&severity=&offset=` | the alerts, most suspicious first, then newest |
| `GET /alerts/{id}` | one alert: its reasons, the evidence timeline, the triage buttons |
| `POST /alerts/{id}/status` | acknowledge, mark false positive, confirm or reopen |

Security role: like the other signed-in pages these authenticate with the session cookie only
and their forms carry the session's CSRF token, with the origin checked (OWASP ASVS 5.0 V3.5.1,
`views._session_post`); a triage is a POST answered by a redirect (303), so a reload does not
repeat it. Only the security officer may use them (issue 5, item 2): any other role gets a 403
page, and the refusal is ledgered as the API's is. The rules and the trail are
`incidents.evidence`'s, shared with `/api/alerts`: a list page is one ledgered search, opening
an alert ledgers the read of its evidence per patient shown (DESIGN.md contract 2), and every
change of status is ledgered (`alert_update`). Everything shown is autoescaped text (ids,
reasons, user agents may hold markup); no script, so the pages' CSP holds as it is. Filters
come from fixed lists, and a notice after a triage is chosen by a fixed key: nothing from the
URL is echoed into a page unchecked.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from egide.core.errors import EgideError, Forbidden
from egide.core.principal import Principal
from egide.detect.events import KINDS
from egide.identity import sessions
from egide.incidents.alerts import BREAK_GLASS_KIND, MAX_LISTED, Alert, Severity, Status
from egide.incidents.evidence import list_page, read_alert, triage
from egide.web.views import (
    _client,
    _csrf_for,
    _ctx,
    _fmt,
    _page,
    _redirect,
    _refused,
    _session_post,
    _signed_in,
    _to_login,
    _tx,
)

router = APIRouter(include_in_schema=False)

PATH = "/alerts"
PAGE_SIZE = 50
_ALERT_ID_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")  # the ids `incidents.alerts` accepts
_KIND_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_ROLE_REFUSED = "Only the security officer may see and triage alerts."
_NOT_FOUND = "No such alert."
_BAD_FILTER = "That filter is not known."
STATUS_LABELS = {
    Status.OPEN.value: "Open",
    Status.ACKNOWLEDGED.value: "Acknowledged",
    Status.FALSE_POSITIVE.value: "False positive",
    Status.CONFIRMED.value: "Confirmed",
}
# The triage buttons, in the order an officer works: (status it sets, its label).
_ACTIONS = (
    (Status.ACKNOWLEDGED.value, "Acknowledge"),
    (Status.FALSE_POSITIVE.value, "Mark false positive"),
    (Status.CONFIRMED.value, "Confirm misuse"),
    (Status.OPEN.value, "Reopen"),
)
_SEVERITIES = tuple(
    s.value for s in (Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW)
)
_KINDS = (*KINDS, BREAK_GLASS_KIND)
_NOTICES = {"status": "The alert's status is changed; the change is in the ledger."}


def install(app: FastAPI) -> None:
    """Mount the pages (after `egide.web.views.install`, whose context they use)."""
    app.include_router(router)


def _principal(request: Request, info: sessions.SessionInfo) -> Principal:
    ip, device = _client(request)
    return info.principal.with_request(ip=ip, device=device, request_id=None)


def _failed(exc: EgideError) -> Response:
    """The page for a refused or failed step: the role refusal in plain words (it was
    ledgered by `incidents.evidence`), else the error's own message and status."""
    if isinstance(exc, Forbidden):
        return _refused(_ROLE_REFUSED)
    return _refused(exc.message, exc.status)


def _when(text: object) -> str:
    if not isinstance(text, str):
        return ""
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _span(alert: Alert) -> str:
    start, end = _fmt(alert.start), _fmt(alert.end)
    return start if start == end else f"{start} – {end}"


def _row(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.id,
        "href": f"{PATH}/{quote(alert.id, safe='')}",
        "severity": alert.severity,
        "kind": alert.kind.replace("_", " "),
        "user": alert.user or "—",
        "patient": alert.patient or "—",
        "span": _span(alert),
        "score": f"{alert.score:.2f}",
        "status": STATUS_LABELS.get(alert.status, alert.status),
    }


def _choice(value: str | None, allowed: tuple[str, ...]) -> str | None:
    """The filter's value when it is one of `allowed`, None for none; raises on anything else."""
    if not value:
        return None
    if value not in allowed:
        raise ValueError(value)
    return value


def _filters(request: Request) -> tuple[dict[str, str | None], int] | None:
    params = request.query_params
    offset_text = params.get("offset", "0")
    try:
        chosen = {
            "status": _choice(params.get("status"), tuple(STATUS_LABELS)),
            "kind": _choice(params.get("kind"), _KINDS),
            "severity": _choice(params.get("severity"), _SEVERITIES),
        }
    except ValueError:
        return None
    if not offset_text.isascii() or not offset_text.isdigit() or len(offset_text) > 5:
        return None
    offset = int(offset_text)
    if offset + PAGE_SIZE > MAX_LISTED:
        return None
    return chosen, offset


def _page_link(chosen: dict[str, str | None], offset: int) -> str:
    query = {name: value for name, value in chosen.items() if value}
    if offset:
        query["offset"] = str(offset)
    return f"{PATH}?{urlencode(query)}" if query else PATH


@router.get(PATH)
async def alert_list(request: Request) -> Response:
    ctx = _ctx(request)
    info = await _signed_in(request)
    if info is None:
        return _to_login()
    principal = _principal(request, info)
    parsed = _filters(request)
    if parsed is None:
        return _refused(_BAD_FILTER, 400)
    chosen, offset = parsed
    try:
        page = await _tx(
            ctx,
            lambda s: list_page(
                s,
                principal,
                status=chosen["status"],
                kind=chosen["kind"],
                severity=chosen["severity"],
                offset=offset,
                limit=PAGE_SIZE,
                clock=ctx.clock,
            ),
        )
    except EgideError as exc:
        return _failed(exc)
    return _page(
        "alerts.html",
        title="Alerts",
        signed_in=True,
        csrf=_csrf_for(info),
        rows=[_row(a) for a in page.alerts],
        chosen={name: value or "" for name, value in chosen.items()},
        statuses=list(STATUS_LABELS.items()),
        kinds=[(k, k.replace("_", " ")) for k in _KINDS],
        severities=list(_SEVERITIES),
        first=offset + 1,
        previous=_page_link(chosen, max(0, offset - PAGE_SIZE)) if offset else None,
        following=_page_link(chosen, offset + PAGE_SIZE) if page.more else None,
    )


def _entry_row(entry: dict[str, Any]) -> dict[str, Any]:
    resource = "/".join(str(v) for v in (entry["resource_type"], entry["resource_id"]) if v)
    return {
        "time": _when(entry["time"]),
        "user": entry["user"] or "—",
        "role": entry["role"] or "—",
        "action": str(entry["action"]).replace("_", " "),
        "outcome": entry["outcome"] or "",
        "patient": entry["patient"] or "—",
        "resource": resource or "—",
        "count": entry["count"],
        "where": ", ".join(str(v) for v in (entry["ip"], entry["device"]) if v) or "—",
        "why": "; ".join(str(v) for v in (entry["purpose"], *(entry["reasons"] or ())) if v),
    }


@router.get(PATH + "/{alert_id}")
async def alert_detail(request: Request, alert_id: str) -> Response:
    ctx = _ctx(request)
    info = await _signed_in(request)
    if info is None:
        return _to_login()
    principal = _principal(request, info)
    if _ALERT_ID_RE.fullmatch(alert_id) is None:
        return _refused(_NOT_FOUND, 404)
    try:
        detail = await _tx(
            ctx, lambda s: read_alert(s, principal, alert_id=alert_id, clock=ctx.clock)
        )
    except EgideError as exc:
        return _failed(exc)
    alert, evidence = detail.alert, detail.evidence
    return _page(
        "alerts_detail.html",
        title=f"Alert: {alert.kind.replace('_', ' ')}",
        signed_in=True,
        csrf=_csrf_for(info),
        notice=_NOTICES.get(request.query_params.get("notice", "")),
        alert={
            **_row(alert),
            "reasons": list(alert.reasons),
            "created": _fmt(alert.created_at),
            "updated": _fmt(alert.updated_at),
            "updated_by": alert.updated_by or "",
        },
        action=f"{PATH}/{quote(alert.id, safe='')}/status",
        choices=[(status, label) for status, label in _ACTIONS if status != alert.status],
        entries=[_entry_row(e) for e in evidence.entries],
        total=evidence.total,
        missing=list(evidence.missing),
        missing_total=evidence.missing_total,
    )


@router.post(PATH + "/{alert_id}/status")
async def alert_status(request: Request, alert_id: str) -> Response:
    ctx = _ctx(request)
    checked = await _session_post(request)
    if not isinstance(checked, tuple):
        return checked
    info, form = checked
    principal = _principal(request, info)
    if _ALERT_ID_RE.fullmatch(alert_id) is None:
        return _refused(_NOT_FOUND, 404)
    try:
        await _tx(
            ctx,
            lambda s: triage(
                s, principal, alert_id=alert_id, status=form.get("status"), clock=ctx.clock
            ),
        )
    except EgideError as exc:
        return _failed(exc)
    return _redirect(f"{PATH}/{quote(alert_id, safe='')}?notice=status")

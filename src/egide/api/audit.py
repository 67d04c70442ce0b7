"""`/fhir/AuditEvent`: the audit ledger served read-only as FHIR R4 AuditEvents (IHE BALP).

Security role: the security officer reads who did what to which record, when, from where and
why — every entry of the tamper-evident ledger, mapped by `egide.ledger.auditevent` to a FHIR
R4 AuditEvent following IHE Basic Audit Log Patterns (BALP). Rules kept here:

- Only a role holding `ledger:audit:read` (the security officer) may search or read. Any other
  role gets 403 for a search (the interaction is closed to it as a whole, which reveals nothing
  about any patient) and 404 for a read by id (contract 1: nothing about what exists). Every
  refusal is appended to the ledger.
- Every search and read is itself audited in the same transaction as the query (contract 2,
  action `search` / `read`, resource type `AuditEvent`, count = events returned, the searched
  patient or the read event's patient), so watching the watchers is possible; if that entry
  cannot be written, no event is returned.
- The ledger is append-only and AuditEvents are written by the server only: create, update,
  delete, patch and history answer 405 with an OperationOutcome, and a write attempt by an
  authenticated caller is audited as a denied act (forging or erasing audit records is what an
  intruder covering their tracks would try). Request bodies are never read.
- This router is installed before the generic FHIR routes, so no AuditEvent path reaches the
  generic resource store, where a client could otherwise create "audit events" of its own.

Search parameters (FHIR R4 AuditEvent search parameters, a subset): `patient` (id or
Patient/id), `agent` (the acting account id), `date` (on `recorded`, prefixes eq ge gt le lt,
repeatable), `action` (C R U D E, comma = or), `subtype` (restful-interaction, DICOM or Égide
action codes, optionally `system|code`), `_count`, `_offset`. Unknown parameters are refused
(400) rather than ignored: a dropped filter would return more than was asked for. Results are
newest first. `POST /fhir/AuditEvent/_search` takes the same parameters in a form body.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import format_datetime
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy.orm import Session

from egide.access.permissions import Permission
from egide.access.policy import has_permission
from egide.api.context import ApiContext
from egide.api.fhir import MAX_OFFSET, base_url, page_links, principal_of
from egide.api.responses import fhir_response, outcome_response
from egide.core.errors import BadRequest, Forbidden, Issue, NotFound, UnsupportedMediaType
from egide.core.principal import Principal
from egide.fhir.bundle import searchset
from egide.fhir.search import date_range
from egide.ledger.auditevent import ACTION_SYSTEM, actions_with_code, audit_event
from egide.ledger.queries import get_entry, search_entries
from egide.ledger.service import Act, Action, Outcome, append
from egide.records.unit_of_work import run_in_transaction

__all__ = ["install", "router"]

T = TypeVar("T")
RESOURCE = "AuditEvent"
_ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # FHIR R4 datatypes.html#id
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_\-:.]{0,63}")
_CODE_RE = re.compile(r"[A-Za-z0-9_\-.]{1,64}")
_PARAMETERS = frozenset({"patient", "agent", "date", "action", "subtype", "_count", "_offset"})
_DATE_PREFIXES = ("eq", "ge", "gt", "le", "lt")
_NOT_SUPPORTED = "the audit ledger is append-only: AuditEvents are written by the server only"

router = APIRouter(prefix=f"/fhir/{RESOURCE}")


@dataclass(frozen=True)
class AuditQuery:
    """A parsed AuditEvent search: filters for `ledger.queries.search_entries`, and paging."""

    patient: str | None
    agent: str | None
    actions: frozenset[str] | None  # None: any action
    since: dt.datetime | None
    until: dt.datetime | None
    count: int
    offset: int


def _ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.egide
    return ctx


def _single(params: Sequence[tuple[str, str]], name: str) -> str | None:
    values = [v for k, v in params if k == name]
    if not values:
        return None
    if len(values) > 1:
        msg = f"{name} may be given only once"
        raise BadRequest(msg, [Issue(msg, name, "invalid")])
    return values[0]


def _patient(value: str | None) -> str | None:
    if value is None:
        return None
    patient_id = value.removeprefix("Patient/")
    if not _ID_RE.fullmatch(patient_id):
        msg = "patient must be a patient id or Patient/id"
        raise BadRequest(msg, [Issue(msg, "patient", "value")])
    return patient_id


def _agent(value: str | None) -> str | None:
    if value is None:
        return None
    if not value or len(value) > 64:
        msg = "agent must be an account id of 1 to 64 characters"
        raise BadRequest(msg, [Issue(msg, "agent", "value")])
    return value


def _codes(value: str, name: str) -> list[str]:
    codes = value.split(",")
    if not all(codes) or len(codes) > 20:
        msg = f"{name} takes 1 to 20 comma-separated codes"
        raise BadRequest(msg, [Issue(msg, name, "value")])
    return codes


def _actions(params: Sequence[tuple[str, str]]) -> frozenset[str] | None:
    """The ledger actions allowed by every `action` and `subtype` parameter (and), each the
    union of its comma-separated codes (or)."""
    allowed: frozenset[str] | None = None
    for name, value in params:
        if name not in ("action", "subtype"):
            continue
        matched: set[str] = set()
        for code in _codes(value, name):
            if name == "action":
                if code not in ("C", "R", "U", "D", "E"):
                    msg = "action must be C, R, U, D or E"
                    raise BadRequest(msg, [Issue(msg, "action", "value")])
                matched |= actions_with_code(code)
                continue
            system, bar, bare = code.rpartition("|")
            if not bar:
                system, bare = "", code
            if not _CODE_RE.fullmatch(bare):
                msg = "subtype codes are letters, digits, '-', '_' or '.'"
                raise BadRequest(msg, [Issue(msg, "subtype", "value")])
            if system != ACTION_SYSTEM:
                matched |= actions_with_code(bare)
            if system in ("", ACTION_SYSTEM):
                matched.add(bare)  # Égide's own code: the ledger action itself
        allowed = frozenset(matched) if allowed is None else allowed & matched
    return allowed


def _dates(params: Sequence[tuple[str, str]]) -> tuple[dt.datetime | None, dt.datetime | None]:
    """`date` values on `recorded` (search.html#date; an event time is a point, so a value's
    range [low, high) gives eq: low <= t < high, ge: t >= low, gt: t >= high, le: t < high,
    lt: t < low). Several values narrow the window (and)."""
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    for name, value in params:
        if name != "date":
            continue
        prefix, text = (value[:2], value[2:]) if value[:2].isalpha() else ("eq", value)
        bounds = date_range(text) if prefix in _DATE_PREFIXES else None
        if bounds is None:
            msg = "date must be a FHIR date or instant with an optional eq, ge, gt, le or lt prefix"
            raise BadRequest(msg, [Issue(msg, "date", "value")])
        low, high = bounds
        start = {"eq": low, "ge": low, "gt": high}.get(prefix)
        end = {"eq": high, "le": high, "lt": low}.get(prefix)
        if start is not None:
            since = start if since is None else max(since, start)
        if end is not None:
            until = end if until is None else min(until, end)
    return since, until


def _paging(request: Request, params: Sequence[tuple[str, str]]) -> tuple[int, int]:
    settings = _ctx(request).settings
    raw_count = _single(params, "_count")
    raw_offset = _single(params, "_offset")
    try:
        count = settings.default_page_size if raw_count is None else int(raw_count)
        offset = 0 if raw_offset is None else int(raw_offset)
    except ValueError:
        msg = "_count and _offset must be whole numbers"
        raise BadRequest(msg) from None
    if count < 0 or offset < 0 or offset > MAX_OFFSET:
        msg = f"_count and _offset must be between 0 and {MAX_OFFSET}"
        raise BadRequest(msg)
    return min(count, settings.max_page_size), offset


def parse_audit_query(request: Request, params: Sequence[tuple[str, str]]) -> AuditQuery:
    """Check every parameter and build the query; raise BadRequest naming what is wrong."""
    for name, _value in params:
        if name not in _PARAMETERS:
            shown = f" {name}" if _NAME_RE.fullmatch(name) else ""
            msg = f"unsupported AuditEvent search parameter{shown}"
            raise BadRequest(msg, [Issue(msg, code="not-supported")])
    since, until = _dates(params)
    count, offset = _paging(request, params)
    return AuditQuery(
        patient=_patient(_single(params, "patient")),
        agent=_agent(_single(params, "agent")),
        actions=_actions(params),
        since=since,
        until=until,
        count=count,
        offset=offset,
    )


async def _in_transaction(request: Request, work: Callable[[Session], T]) -> T:
    ctx = _ctx(request)
    return await run_in_threadpool(run_in_transaction, ctx.session_factory, work)


def _refusal(request: Request, principal: Principal, act: Act) -> Callable[[Session], None]:
    clock = _ctx(request).records.clock

    def work(session: Session) -> None:
        append(session, principal=principal, act=act, clock=clock)

    return work


def _may_read(principal: Principal) -> bool:
    return has_permission(principal, Permission.LEDGER_AUDIT_READ)


def _lacks(principal: Principal) -> tuple[str, ...]:
    return (f"role {principal.role} lacks permission {Permission.LEDGER_AUDIT_READ}",)


def _grants(principal: Principal) -> tuple[str, ...]:
    return (f"role {principal.role} grants {Permission.LEDGER_AUDIT_READ}",)


async def _search(
    request: Request, principal: Principal, params: Sequence[tuple[str, str]]
) -> Response:
    if not _may_read(principal):
        denied = Act(
            Action.SEARCH,
            Outcome.DENIED,
            resource_type=RESOURCE,
            count=0,
            reasons=_lacks(principal),
        )
        await _in_transaction(request, _refusal(request, principal, denied))
        msg = f"this token's role may not search {RESOURCE} resources"
        raise Forbidden(msg)
    query = parse_audit_query(request, params)
    clock = _ctx(request).records.clock

    def work(session: Session) -> tuple[list[dict[str, Any]], int]:
        entries, total = search_entries(
            session,
            patient=query.patient,
            agent=query.agent,
            action=query.actions,
            since=query.since,
            until=query.until,
            count=query.count,
            offset=query.offset,
        )
        events = [audit_event(entry) for entry in entries]
        # One ledger entry per patient whose audit trail was shown, so each of those patients'
        # access reports lists the officer's look (and one for the query itself if none).
        shown = Counter(entry.get("patient") for entry in entries if entry.get("patient"))
        if query.patient and not shown:
            shown[query.patient] = 0
        for patient_id, count in sorted(shown.items()) or [(None, 0)]:
            act = Act(
                Action.SEARCH,
                patient=patient_id,
                resource_type=RESOURCE,
                count=count,
                reasons=_grants(principal),
            )
            append(session, principal=principal, act=act, clock=clock)
        return events, total

    events, total = await _in_transaction(request, work)
    base = base_url(request)
    links = page_links(base, RESOURCE, params, total=total, count=query.count, offset=query.offset)
    return fhir_response(searchset(events, total=total, links=links, base_url=base))


@router.get("")
async def search(request: Request, principal: Principal = Depends(principal_of)) -> Response:
    """Search the ledger as AuditEvents (security officer only), newest first."""
    return await _search(request, principal, list(request.query_params.multi_items()))


@router.post("/_search")
async def search_post(request: Request, principal: Principal = Depends(principal_of)) -> Response:
    """Search with parameters in an x-www-form-urlencoded body (R4 3.1.0.11)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        msg = "POST _search takes an application/x-www-form-urlencoded body"
        raise UnsupportedMediaType(msg)
    form = await request.form()
    params = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    params += list(request.query_params.multi_items())
    return await _search(request, principal, params)


@router.get("/_history")
async def type_history() -> Response:
    """No history: ledger entries have one version only (and `_history` is not an id)."""
    return _not_supported()


@router.get("/{event_id}")
async def read(
    event_id: str, request: Request, principal: Principal = Depends(principal_of)
) -> Response:
    """One AuditEvent by id (security officer only); 404 for anyone else, as for absent ids."""
    if not _ID_RE.fullmatch(event_id):
        msg = "invalid resource id (FHIR ids are 1-64 of A-Z a-z 0-9 - .)"
        raise BadRequest(msg)
    clock = _ctx(request).records.clock
    label = f"{RESOURCE}/{event_id} is not known"
    if not _may_read(principal):
        denied = Act(
            Action.READ,
            Outcome.DENIED,
            resource_type=RESOURCE,
            resource_id=event_id,
            count=0,
            reasons=_lacks(principal),
        )
        await _in_transaction(request, _refusal(request, principal, denied))
        raise NotFound(label)

    def work(session: Session) -> dict[str, Any] | None:
        entry = get_entry(session, event_id)
        event = None if entry is None else audit_event(entry)
        act = Act(
            Action.READ,
            Outcome.SUCCESS if entry is not None else Outcome.ERROR,
            patient=None if entry is None else entry.get("patient"),
            resource_type=RESOURCE,
            resource_id=event_id,
            count=0 if entry is None else 1,
            reasons=_grants(principal) if entry is not None else ("not found",),
        )
        append(session, principal=principal, act=act, clock=clock)
        return event

    event = await _in_transaction(request, work)
    if event is None:
        raise NotFound(label)
    return fhir_response(event, 200, {"Last-Modified": _http_date(event["recorded"])})


def _http_date(recorded: str) -> str:
    moment = dt.datetime.fromisoformat(recorded.replace("Z", "+00:00")).astimezone(dt.UTC)
    return format_datetime(moment, usegmt=True)


async def _write_refused(
    request: Request, principal: Principal, action: Action, event_id: str | None
) -> Response:
    attempt = Act(
        action,
        Outcome.DENIED,
        resource_type=RESOURCE,
        resource_id=event_id if event_id and _ID_RE.fullmatch(event_id) else None,
        count=0,
        reasons=("the audit ledger is append-only",),
    )
    await _in_transaction(request, _refusal(request, principal, attempt))
    return _not_supported()


def _not_supported() -> Response:
    return outcome_response(405, [Issue(_NOT_SUPPORTED, code="not-supported")])


@router.post("")
async def create(request: Request, principal: Principal = Depends(principal_of)) -> Response:
    return await _write_refused(request, principal, Action.CREATE, None)


@router.put("/{event_id}")
async def update(
    event_id: str, request: Request, principal: Principal = Depends(principal_of)
) -> Response:
    return await _write_refused(request, principal, Action.UPDATE, event_id)


@router.delete("/{event_id}")
async def delete(
    event_id: str, request: Request, principal: Principal = Depends(principal_of)
) -> Response:
    return await _write_refused(request, principal, Action.DELETE, event_id)


@router.api_route("", methods=["PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
@router.api_route(
    "/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
)
async def unsupported() -> Response:
    """Everything else on AuditEvent (history, vread, patch, conditional writes): 405.

    Matched after the routes above, and before the generic FHIR routes (see `install`)."""
    return _not_supported()


def install(app: Any) -> None:
    """Attach the AuditEvent router; call it before `egide.api.fhir.install` so that its
    routes take precedence over the generic `/fhir/{resource_type}` ones."""
    app.include_router(router)

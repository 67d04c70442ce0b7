"""The FHIR R4 REST API under `/fhir` (http://hl7.org/fhir/R4/http.html).

Routes parse and authenticate, then hand one function to the unit of work, which runs it in a
single transaction with its access decisions and ledger entries. Bodies are read with a hard
size limit before any parsing (413), must be FHIR JSON (415), and are parsed with duplicate-key
and depth checks (400) before validation (422).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable, Sequence
from email.utils import format_datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy.orm import Session

from egide.access.scopes import scope_allows
from egide.api.context import ApiContext
from egide.api.context import client_of as _client
from egide.api.responses import fhir_response, outcome_response
from egide.core.errors import (
    BadRequest,
    EgideError,
    Forbidden,
    Issue,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from egide.core.principal import Principal
from egide.fhir.bundle import HistoryInfo, history_bundle, searchset
from egide.fhir.capability import capability_statement
from egide.fhir.outcome import informational, operation_outcome
from egide.fhir.search import SearchQuery, parse_everything_query, parse_search_query
from egide.fhir.validation import parse_json, resource_types
from egide.identity.oauth import authenticate_access_token, looks_like_access_token
from egide.identity.tokens import authenticate
from egide.ledger.service import Act, Action, Outcome, append
from egide.records.bundles import process_bundle
from egide.records.repository import MAX_INCLUDED, Repository, Stored, repository_for
from egide.records.unit_of_work import run_in_transaction

T = TypeVar("T")
_ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")  # FHIR R4 datatypes.html#id
MAX_OFFSET = 1_000_000_000  # paging cursor bound, as for search (no overflow in SQL)
_JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")


def _ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.egide
    return ctx


async def principal_of(request: Request) -> Principal:
    """Authenticate the bearer token (RFC 6750); a failure is audited as a failed login."""
    ctx = _ctx(request)
    ip, device, request_id = _client(request)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()

    def work(session: Session) -> Principal | str | None:
        if scheme.lower() == "bearer" and token:
            found = authenticate(session, token=token, clock=ctx.records.clock)
            if found is None and looks_like_access_token(token):
                # An OAuth access token (SMART App Launch 2, Backend Services).
                found = authenticate_access_token(session, token=token, clock=ctx.records.clock)
            if found is not None:
                return _within_scopes(session, request, found, ctx)
        anonymous = Principal(
            id="anonymous", role="anonymous", ip=ip, device=device, request_id=request_id
        )
        reason = "invalid bearer token" if token else "no credentials"
        append(
            session,
            principal=anonymous,
            clock=ctx.records.clock,
            act=Act(Action.LOGIN_FAILED, Outcome.DENIED, count=0, reasons=(reason,)),
        )
        return None

    found = await run_in_threadpool(run_in_transaction, ctx.session_factory, work)
    if found is None:
        msg = "a valid bearer token is required"
        raise Unauthorized(msg)
    if isinstance(found, str):
        raise Forbidden(found)
    return found.with_request(ip=ip, device=device, request_id=request_id)


_LETTER_OF = {"GET": "s", "POST": "c"}
_INSTANCE_LETTER_OF = {"GET": "r", "PUT": "u", "DELETE": "d"}


def scope_requirement(request: Request) -> tuple[str, str] | None:
    """The SMART scope a request needs, as (resource type or "*", interaction letter), from
    its matched route (SMART App Launch 2, "Scopes for requesting FHIR resources"): search and
    type or system history need `s`, read, vread and instance history `r`, create `c`, update
    `u`, delete `d`. ("", "") for a batch or transaction (each entry is checked when the
    Bundle is read); None when the route is not a FHIR interaction (refused to scoped tokens).
    """
    template = getattr(request.scope.get("route"), "path", "")
    if template != "/fhir" and not template.startswith("/fhir/"):
        return None
    segments = template.split("/")[2:]
    method = request.method
    if not segments:
        return ("", "") if method == "POST" else None
    if segments == ["_history"]:
        return ("*", "s") if method == "GET" else None
    resource_type = str(request.path_params.get("resource_type", segments[0]))
    rest = segments[1:]
    if not rest:
        letter = _LETTER_OF.get(method)
    elif rest[0] in ("_search", "_history"):
        letter = "s" if len(rest) == 1 and method in ("GET", "POST") else None
    elif len(rest) == 1:
        letter = _INSTANCE_LETTER_OF.get(method)
    else:
        letter = "r" if method == "GET" else None
    return None if letter is None else (resource_type, letter)


def _within_scopes(
    session: Session, request: Request, principal: Principal, ctx: ApiContext
) -> Principal | str:
    """The principal, or the reason of a refusal (audited) when its token's scopes do not
    allow this request: scopes bound what an OAuth token may do (ASVS 5.0 V10.3.2)."""
    if principal.scopes is None:
        return principal
    needed = scope_requirement(request)
    if needed is not None and (needed == ("", "") or scope_allows(principal.scopes, *needed)):
        return principal
    what = "this endpoint" if needed is None else f"{needed[1]} on {needed[0][:64]}"
    reason = f"the token's scopes do not allow {what}"
    _audit_scope_denial(session, principal, ctx, reason, None if needed is None else needed[0])
    return reason


def _audit_scope_denial(
    session: Session,
    principal: Principal,
    ctx: ApiContext,
    reason: str,
    resource_type: str | None,
) -> None:
    append(
        session,
        principal=principal,
        clock=ctx.records.clock,
        act=Act(
            Action.LOGIN_FAILED,
            Outcome.DENIED,
            resource_type=None if resource_type is None else resource_type[:64],
            count=0,
            reasons=(reason, "scopes " + " ".join(sorted(principal.scopes or ()))),
        ),
    )


_BUNDLE_LETTER = {"POST": "c", "PUT": "u", "DELETE": "d"}


async def check_bundle_scopes(
    request: Request, principal: Principal, bundle: dict[str, Any]
) -> None:
    """Refuse (audited) a batch or transaction with an entry the token's scopes do not allow
    (the records layer decides on each entry again, behind this check)."""
    if principal.scopes is None:
        return
    ctx = _ctx(request)
    entries = bundle.get("entry") or []
    for entry in entries if isinstance(entries, list) else [None]:
        asked = entry.get("request") if isinstance(entry, dict) else None
        method = asked.get("method") if isinstance(asked, dict) else None
        url = asked.get("url") if isinstance(asked, dict) else None
        if not isinstance(method, str) or not isinstance(url, str):
            msg = "every Bundle entry needs request.method and request.url"
            raise BadRequest(msg)
        path = url.split("?", 1)[0].strip("/").split("/")
        if method == "GET":
            letter = "r" if len(path) >= 2 and not path[1].startswith(("_", "$")) else "s"
        else:
            letter = _BUNDLE_LETTER.get(method, "")
        resource_type = "*" if path[0] in ("", "_history") else path[0]
        if not scope_allows(principal.scopes, resource_type, letter):
            msg = f"the token's scopes do not allow {method[:8]} {resource_type[:64]} in a Bundle"
            await run_in_threadpool(
                run_in_transaction,
                ctx.session_factory,
                lambda s, msg=msg, kind=resource_type: _audit_scope_denial(
                    s, principal, ctx, msg, kind
                ),
            )
            raise Forbidden(msg)


async def _run(request: Request, principal: Principal, work: Callable[[Repository], T]) -> T:
    ctx = _ctx(request)

    def in_tx(session: Session) -> T:
        return work(repository_for(session, principal, ctx.records))

    return await run_in_threadpool(run_in_transaction, ctx.session_factory, in_tx)


async def _body(request: Request) -> dict[str, Any]:
    """Read the body with the size limit enforced while streaming, then parse it."""
    ctx = _ctx(request)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in _JSON_TYPES:
        msg = "the body must be FHIR JSON (Content-Type: application/fhir+json)"
        raise UnsupportedMediaType(msg)
    limit = ctx.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        msg = f"the body is larger than the {limit} bytes allowed"
        raise PayloadTooLarge(msg)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            msg = f"the body is larger than the {limit} bytes allowed"
            raise PayloadTooLarge(msg)
        chunks.append(chunk)
    return parse_json(b"".join(chunks), max_depth=ctx.settings.max_json_depth)


def _check_type(resource_type: str) -> None:
    if resource_type not in resource_types():
        msg = f"unknown resource type {resource_type[:64]!r}"
        raise NotFound(msg, [Issue(msg, code="not-supported")])


def _check_id(resource_id: str) -> None:
    if not _ID_RE.fullmatch(resource_id):
        msg = "invalid resource id (FHIR ids are 1-64 of A-Z a-z 0-9 - .)"
        raise BadRequest(msg)


def base_url(request: Request) -> str:
    """The FHIR base URL as clients see it (configured, or from the request)."""
    configured = _ctx(request).settings.public_base_url
    if configured:
        return configured.rstrip("/") + "/fhir"
    return str(request.base_url).rstrip("/") + "/fhir"


def _headers(stored: Stored, base: str) -> dict[str, str]:
    return {
        "ETag": stored.etag,
        "Last-Modified": format_datetime(stored.last_updated.astimezone(dt.UTC), usegmt=True),
        "Location": f"{base}/{stored.resource_type}/{stored.id}/_history/{stored.version}",
    }


def _prefer_minimal(request: Request) -> bool:
    return "return=minimal" in request.headers.get("prefer", "")


def page_links(
    base: str,
    path: str,
    params: Sequence[tuple[str, str]],
    *,
    total: int,
    count: int,
    offset: int,
) -> dict[str, str]:
    """Bundle paging links (R4 3.1.1.5.7) for the query `params`, by `_count` and `_offset`."""
    kept = [(k, v) for k, v in params if k not in ("_offset", "_count")]

    def url(at: int) -> str:
        return f"{base}/{path}?" + urlencode([*kept, ("_count", str(count)), ("_offset", str(at))])

    links = {"self": url(offset), "first": url(0)}
    if count and offset + count < total:
        links["next"] = url(offset + count)
    if offset > 0 and count:
        links["previous"] = url(max(0, offset - count))
    last = max(0, (total - 1) // count * count) if count and total else 0
    links["last"] = url(last)
    return links


def _paging(request: Request) -> tuple[int, int]:
    settings = _ctx(request).settings
    try:
        count = int(request.query_params.get("_count", settings.default_page_size))
        offset = int(request.query_params.get("_offset", 0))
    except ValueError:
        msg = "_count and _offset must be whole numbers"
        raise BadRequest(msg) from None
    if count < 0 or offset < 0 or offset > MAX_OFFSET:
        msg = f"_count and _offset must be between 0 and {MAX_OFFSET}"
        raise BadRequest(msg)
    return min(count, settings.max_page_size), offset


def _since(request: Request) -> dt.datetime | None:
    raw = request.query_params.get("_since")
    if raw is None:
        return None
    try:
        value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        msg = "_since must be an instant such as 2026-01-31T12:00:00Z"
        raise BadRequest(msg) from None
    if value.tzinfo is None:
        msg = "_since must include a timezone"
        raise BadRequest(msg)
    return value


router = APIRouter(prefix="/fhir")


@router.get("/metadata")
async def metadata(request: Request) -> Response:
    """The CapabilityStatement (R4 3.1.0.12); readable without a token, as FHIR requires."""
    ctx = _ctx(request)
    return fhir_response(_capability(base_url(request), ctx.version, ctx.started))


@functools.lru_cache(maxsize=16)
def _capability(base: str, version: str, started: dt.datetime) -> dict[str, Any]:
    # Built once per base URL: it describes the software, which does not change while it runs
    # (its `date` is the start of this process).
    statement = capability_statement(
        base_url=base,
        software_version=version,
        resource_types=sorted(resource_types()),
        now=started,
    )
    for resource in statement["rest"][0]["resource"]:
        if resource["type"] == "AuditEvent":
            # The ledger's read-only view (api.audit), for the security officer.
            resource.update(
                interaction=[{"code": "read"}, {"code": "search-type"}],
                updateCreate=False,
                conditionalCreate=False,
                readHistory=False,
                versioning="no-version",
                documentation="The audit ledger, read-only, as IHE BALP AuditEvents; "
                "security officer role only.",
                searchParam=[
                    {"name": name, "type": kind}
                    for name, kind in (
                        ("patient", "reference"),
                        ("agent", "token"),
                        ("date", "date"),
                        ("action", "token"),
                        ("subtype", "token"),
                    )
                ],
            )
    # SMART App Launch 2 ("Conformance"): the OAuth endpoints, also in
    # /fhir/.well-known/smart-configuration (api.oauth).
    root = base.removesuffix("/fhir")
    statement["rest"][0].setdefault("security", {}).update(
        service=[
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ]
            }
        ],
        extension=[
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [
                    {"url": "authorize", "valueUri": f"{root}/oauth/authorize"},
                    {"url": "token", "valueUri": f"{root}/oauth/token"},
                ],
            }
        ],
    )
    return statement


@router.post("")
async def batch_or_transaction(
    request: Request, principal: Principal = Depends(principal_of)
) -> Response:
    bundle = await _body(request)
    await check_bundle_scopes(request, principal, bundle)
    base = base_url(request)
    result = await _run(request, principal, lambda repo: process_bundle(repo, bundle, base=base))
    return fhir_response(result)


@router.get("/_history")
async def system_history(
    request: Request, principal: Principal = Depends(principal_of)
) -> Response:
    return await _history(request, principal, None, None)


@router.get("/{resource_type}")
async def search(
    resource_type: str, request: Request, principal: Principal = Depends(principal_of)
) -> Response:
    _check_type(resource_type)
    return await _search(
        request, principal, resource_type, list(request.query_params.multi_items())
    )


@router.post("/{resource_type}/_search")
async def search_post(
    resource_type: str, request: Request, principal: Principal = Depends(principal_of)
) -> Response:
    """Search with parameters in an x-www-form-urlencoded body (R4 3.1.0.11)."""
    _check_type(resource_type)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        msg = "POST _search takes an application/x-www-form-urlencoded body"
        raise UnsupportedMediaType(msg)
    form = await request.form()
    params = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    params += list(request.query_params.multi_items())
    return await _search(request, principal, resource_type, params)


async def _search(
    request: Request, principal: Principal, resource_type: str, params: list[tuple[str, str]]
) -> Response:
    settings = _ctx(request).settings
    query = parse_search_query(
        resource_type,
        params,
        default_count=settings.default_page_size,
        max_count=settings.max_page_size,
    )
    found, included, total = await _run(request, principal, lambda repo: search_page(repo, query))
    base = base_url(request)
    links = page_links(
        base,
        resource_type,
        request.query_params.multi_items(),
        total=total,
        count=query.count,
        offset=query.offset,
    )
    return fhir_response(
        searchset(
            [s.resource for s in found], total=total, links=links, base_url=base, included=included
        )
    )


def search_page(
    repo: Repository, query: SearchQuery
) -> tuple[list[Stored], list[dict[str, Any]], int]:
    """A page of matches, what its `_include`/`_revinclude` add (same policy, same
    transaction), and the total of matches; a warning entry when the includes were cut."""
    found, total = repo.search(query)
    extra, truncated = repo.included(query, found)
    included = [s.resource for s in extra]
    if truncated:
        message = f"only the first {MAX_INCLUDED} included resources are returned"
        included.append(operation_outcome([Issue(message, code="too-costly", severity="warning")]))
    return found, included, total


@router.post("/{resource_type}")
async def create(
    resource_type: str, request: Request, principal: Principal = Depends(principal_of)
) -> Response:
    _check_type(resource_type)
    body = await _body(request)
    if body.get("resourceType") != resource_type:
        msg = f"the body's resourceType must be {resource_type}"
        raise BadRequest(msg)
    if_none_exist = request.headers.get("if-none-exist")
    if if_none_exist is not None:
        # Conditional create (R4 3.1.0.8): the query must match at most one resource.
        query = parse_search_query(resource_type, parse_qsl(if_none_exist, keep_blank_values=True))
        stored, created = await _run(
            request, principal, lambda repo: repo.create_unless_exists(body, query)
        )
        if not created:
            return fhir_response(None, 200, _headers(stored, base_url(request)))
    else:
        stored = await _run(request, principal, lambda repo: repo.create(body))
    return fhir_response(
        None if _prefer_minimal(request) else stored.resource,
        201,
        _headers(stored, base_url(request)),
    )


@router.get("/{resource_type}/_history")
async def type_history(
    resource_type: str, request: Request, principal: Principal = Depends(principal_of)
) -> Response:
    _check_type(resource_type)
    return await _history(request, principal, resource_type, None)


@router.get("/Patient/{resource_id}/$everything")
async def patient_everything(
    resource_id: str, request: Request, principal: Principal = Depends(principal_of)
) -> Response:
    """Patient `$everything` (FHIR R4 operation-patient-everything.html): a searchset of the
    patient's compartment that the caller may read, paged by `_count`/`_offset`, filtered by
    `_type` and `_since`; a patient the caller may not read answers 404."""
    _check_id(resource_id)
    settings = _ctx(request).settings
    query = parse_everything_query(
        list(request.query_params.multi_items()),
        default_count=settings.default_page_size,
        max_count=settings.max_page_size,
    )
    found, total = await _run(request, principal, lambda repo: repo.everything(resource_id, query))
    base = base_url(request)
    links = page_links(
        base,
        f"Patient/{resource_id}/$everything",
        request.query_params.multi_items(),
        total=total,
        count=query.count,
        offset=query.offset,
    )
    return fhir_response(
        searchset([s.resource for s in found], total=total, links=links, base_url=base)
    )


@router.get("/{resource_type}/{resource_id}")
async def read(
    resource_type: str,
    resource_id: str,
    request: Request,
    principal: Principal = Depends(principal_of),
) -> Response:
    _check_type(resource_type)
    _check_id(resource_id)
    stored = await _run(request, principal, lambda repo: repo.read(resource_type, resource_id))
    headers = _headers(stored, base_url(request))
    del headers["Location"]
    return fhir_response(stored.resource, 200, headers)


@router.put("/{resource_type}/{resource_id}")
async def update(
    resource_type: str,
    resource_id: str,
    request: Request,
    principal: Principal = Depends(principal_of),
) -> Response:
    _check_type(resource_type)
    _check_id(resource_id)
    body = await _body(request)
    if body.get("resourceType") != resource_type:
        msg = f"the body's resourceType must be {resource_type}"
        raise BadRequest(msg)
    if_match = request.headers.get("if-match")
    stored = await _run(
        request,
        principal,
        lambda repo: repo.update(resource_type, resource_id, body, if_match=if_match),
    )
    status = 201 if stored.created else 200
    return fhir_response(
        None if _prefer_minimal(request) else stored.resource,
        status,
        _headers(stored, base_url(request)),
    )


@router.delete("/{resource_type}/{resource_id}")
async def delete(
    resource_type: str,
    resource_id: str,
    request: Request,
    principal: Principal = Depends(principal_of),
) -> Response:
    _check_type(resource_type)
    _check_id(resource_id)
    deleted = await _run(request, principal, lambda repo: repo.delete(resource_type, resource_id))
    text = "deleted" if deleted else "already deleted"
    return fhir_response(informational(f"{resource_type}/{resource_id} {text}"))


@router.get("/{resource_type}/{resource_id}/_history")
async def instance_history(
    resource_type: str,
    resource_id: str,
    request: Request,
    principal: Principal = Depends(principal_of),
) -> Response:
    _check_type(resource_type)
    _check_id(resource_id)
    return await _history(request, principal, resource_type, resource_id)


@router.get("/{resource_type}/{resource_id}/_history/{version_id}")
async def vread(
    resource_type: str,
    resource_id: str,
    version_id: str,
    request: Request,
    principal: Principal = Depends(principal_of),
) -> Response:
    _check_type(resource_type)
    _check_id(resource_id)
    if not version_id.isdigit() or len(version_id) > 9:
        msg = "version ids are whole numbers"
        raise NotFound(msg)
    stored = await _run(
        request, principal, lambda repo: repo.vread(resource_type, resource_id, int(version_id))
    )
    headers = _headers(stored, base_url(request))
    del headers["Location"]
    return fhir_response(stored.resource, 200, headers)


async def _history(
    request: Request, principal: Principal, resource_type: str | None, resource_id: str | None
) -> Response:
    count, offset = _paging(request)
    since = _since(request)
    items, total = await _run(
        request,
        principal,
        lambda repo: repo.history(
            resource_type, resource_id, count=count, offset=offset, since=since
        ),
    )
    base = base_url(request)
    path = "/".join(p for p in (resource_type, resource_id, "_history") if p)
    entries = [
        (
            item.resource,
            HistoryInfo(
                item.resource_type, item.id, str(item.version), item.last_updated, item.method
            ),
        )
        for item in items
    ]
    links = page_links(
        base, path, request.query_params.multi_items(), total=total, count=count, offset=offset
    )
    return fhir_response(history_bundle(entries, total=total, links=links, base_url=base))


@router.api_route("/{rest:path}", methods=["PATCH", "HEAD", "OPTIONS"])
async def unsupported(rest: str) -> Response:
    del rest
    return outcome_response(405, [Issue("this interaction is not supported", code="not-supported")])


def install(app: Any) -> None:
    """Attach the FHIR router to an application."""
    app.include_router(router)


__all__ = ["EgideError", "install", "router"]

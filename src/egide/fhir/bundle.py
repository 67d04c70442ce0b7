"""FHIR R4 Bundles: searchset, history, batch/transaction requests and responses.

Implements Bundle (http://hl7.org/fhir/R4/bundle.html) and the batch/transaction interactions
(http://hl7.org/fhir/R4/http.html#transaction). Security role: `parse_bundle_request` is the
gate for the largest requests the server takes (a whole patient export arrives as one
transaction), so every entry is checked for a known method, a plain relative URL and a resource
where one is needed before anything is processed, and errors name the entry
(`Bundle.entry[3].request.method`) without echoing its content. The builders emit only what they
are given: callers pass resources already filtered by access control.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from egide.core.errors import BadRequest, Issue

__all__ = [
    "BundleEntryRequest",
    "BundleRequest",
    "EntryResponse",
    "HistoryInfo",
    "batch_response",
    "format_instant",
    "history_bundle",
    "parse_bundle_request",
    "searchset",
    "transaction_order",
    "transaction_response",
]


def format_instant(moment: datetime) -> str:
    """A FHIR `instant` (datatypes.html#instant) in UTC with milliseconds, e.g. `...T08:15:02.000Z`.

    Naive datetimes are refused: every time in Égide is timezone-aware (DESIGN.md contract 6).
    """
    if moment.tzinfo is None:
        msg = "a FHIR instant needs a timezone-aware datetime"
        raise ValueError(msg)
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _base(base_url: str) -> str:
    return base_url.rstrip("/")


def _links(links: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"relation": relation, "url": url} for relation, url in links.items()]


def searchset(
    entries: Sequence[dict[str, Any]],
    *,
    total: int | None,
    links: Mapping[str, str],
    base_url: str,
    included: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """A `searchset` Bundle (search.html#return): one entry per resource, `search.mode` match,
    then the `included` ones (`_include`, `_revinclude`) with `search.mode` include.

    An OperationOutcome among the entries is given `search.mode` outcome and no fullUrl.
    `total` is omitted when None (e.g. `_total=none`); it counts matches only.
    """
    base = _base(base_url)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    if links:
        bundle["link"] = _links(links)
    items: list[dict[str, Any]] = []
    for mode, resources in (("match", entries), ("include", included)):
        for resource in resources:
            if resource.get("resourceType") == "OperationOutcome":
                items.append({"resource": resource, "search": {"mode": "outcome"}})
                continue
            items.append(
                {
                    "fullUrl": f"{base}/{resource['resourceType']}/{resource['id']}",
                    "resource": resource,
                    "search": {"mode": mode},
                }
            )
    if items:
        bundle["entry"] = items
    return bundle


@dataclass(frozen=True)
class HistoryInfo:
    """One version in a history: what happened to which resource, and when."""

    resource_type: str
    id: str
    version_id: str
    last_updated: datetime
    method: str  # "POST" | "PUT" | "DELETE"


_HISTORY_STATUS = {"POST": "201 Created", "PUT": "200 OK", "DELETE": "204 No Content"}


def history_bundle(
    entries: Sequence[tuple[dict[str, Any] | None, HistoryInfo]],
    *,
    total: int,
    links: Mapping[str, str],
    base_url: str,
) -> dict[str, Any]:
    """A `history` Bundle (http.html#history), newest first as given by the caller.

    Every entry carries `request` and `response` (bdl-3, bdl-4); a deleted version has no
    resource, method DELETE and status 204.
    """
    base = _base(base_url)
    items: list[dict[str, Any]] = []
    for resource, info in entries:
        if info.method not in _HISTORY_STATUS:
            msg = "history method must be POST, PUT or DELETE"
            raise ValueError(msg)
        url = info.resource_type if info.method == "POST" else f"{info.resource_type}/{info.id}"
        item: dict[str, Any] = {"fullUrl": f"{base}/{info.resource_type}/{info.id}"}
        if resource is not None and info.method != "DELETE":
            item["resource"] = resource
        item["request"] = {"method": info.method, "url": url}
        item["response"] = {
            "status": _HISTORY_STATUS[info.method],
            "etag": f'W/"{info.version_id}"',
            "lastModified": format_instant(info.last_updated),
        }
        items.append(item)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "history", "total": total}
    if links:
        bundle["link"] = _links(links)
    if items:
        bundle["entry"] = items
    return bundle


@dataclass(frozen=True)
class EntryResponse:
    """The outcome of one batch/transaction entry (Bundle.entry.response)."""

    status: str  # e.g. "201 Created": the HTTP status code first (bundle.html)
    location: str | None = None
    etag: str | None = None
    last_modified: datetime | None = None
    resource: dict[str, Any] | None = None
    outcome: dict[str, Any] | None = None


def _response_bundle(
    kind: str, responses: Sequence[EntryResponse], base_url: str | None
) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    for response in responses:
        item: dict[str, Any] = {}
        resource = response.resource
        if resource is not None:
            if base_url is not None and "id" in resource:
                item["fullUrl"] = f"{_base(base_url)}/{resource['resourceType']}/{resource['id']}"
            item["resource"] = resource
        answer: dict[str, Any] = {"status": response.status}
        if response.location is not None:
            answer["location"] = response.location
        if response.etag is not None:
            answer["etag"] = response.etag
        if response.last_modified is not None:
            answer["lastModified"] = format_instant(response.last_modified)
        if response.outcome is not None:
            answer["outcome"] = response.outcome
        item["response"] = answer
        items.append(item)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": kind}
    if items:
        bundle["entry"] = items
    return bundle


def transaction_response(
    responses: Sequence[EntryResponse], *, base_url: str | None = None
) -> dict[str, Any]:
    """A `transaction-response` Bundle, entries in the order of the request's entries."""
    return _response_bundle("transaction-response", responses, base_url)


def batch_response(
    responses: Sequence[EntryResponse], *, base_url: str | None = None
) -> dict[str, Any]:
    """A `batch-response` Bundle, entries in the order of the request's entries."""
    return _response_bundle("batch-response", responses, base_url)


# --------------------------------------------------------------------------------------------
# Parsing batch and transaction requests (http.html#transaction)
# --------------------------------------------------------------------------------------------

_METHODS: frozenset[str] = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"})
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
# A request URL is relative to the base: `Type`, `Type/id`, `Type?query`, `Type/id/_history`...
# No scheme, no leading slash, no whitespace or backslash, no dot segments.
_BAD_URL = re.compile(r"[\s\\]|^/|://|(?:^|/)\.\.?(?:/|$|\?)")
_MAX_URL = 4096


@dataclass(frozen=True)
class BundleEntryRequest:
    """One entry of a batch or transaction, as the client asked for it."""

    index: int
    full_url: str | None
    method: str
    url: str
    resource: dict[str, Any] | None
    if_match: str | None
    if_none_exist: str | None


@dataclass(frozen=True)
class BundleRequest:
    """A parsed batch or transaction Bundle."""

    type: str  # "batch" | "transaction"
    entries: list[BundleEntryRequest]


def _optional_string(
    container: dict[str, Any], key: str, location: str, issues: list[Issue]
) -> str | None:
    value = container.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        issues.append(Issue("must be a non-empty string", f"{location}.{key}", "structure"))
        return None
    return value


def _parse_entry(index: int, entry: Any, issues: list[Issue]) -> BundleEntryRequest | None:
    where = f"Bundle.entry[{index}]"
    if not isinstance(entry, dict):
        issues.append(Issue("entry must be an object", where, "structure"))
        return None
    request = entry.get("request")
    if not isinstance(request, dict):
        issues.append(Issue("request is required", f"{where}.request", "required"))
        return None
    before = len(issues)
    method = request.get("method")
    if method is None:
        issues.append(Issue("method is required", f"{where}.request.method", "required"))
    elif method not in _METHODS:
        issues.append(Issue("unknown method", f"{where}.request.method", "code-invalid"))
    url = request.get("url")
    if not isinstance(url, str) or not url:
        issues.append(Issue("url is required", f"{where}.request.url", "required"))
    elif len(url) > _MAX_URL or _BAD_URL.search(url):
        issues.append(
            Issue("url must be relative to the server base", f"{where}.request.url", "value")
        )
    full_url = _optional_string(entry, "fullUrl", where, issues)
    if_match = _optional_string(request, "ifMatch", f"{where}.request", issues)
    if_none_exist = _optional_string(request, "ifNoneExist", f"{where}.request", issues)
    resource = entry.get("resource")
    if method in _WITH_BODY:
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            issues.append(Issue(f"{method} needs a resource", f"{where}.resource", "required"))
    elif resource is not None:
        issues.append(Issue(f"{method} takes no resource", f"{where}.resource", "structure"))
    if len(issues) > before:
        return None
    return BundleEntryRequest(
        index=index,
        full_url=full_url,
        method=str(method),
        url=str(url),
        resource=resource,
        if_match=if_match,
        if_none_exist=if_none_exist,
    )


def parse_bundle_request(bundle: dict[str, Any]) -> BundleRequest:
    """Check a batch or transaction Bundle and return its entries in document order.

    Raises BadRequest when the body is not a Bundle or its type is not batch/transaction, and
    BadRequest with one Issue per problem (entry index and element named) when entries lack a
    request, use an unknown method, have an unusable URL, lack a resource for POST/PUT/PATCH,
    carry one for GET/HEAD/DELETE, or (transaction) repeat a fullUrl (bdl-7).
    """
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        msg = "a batch or transaction must be a Bundle"
        raise BadRequest(msg, [Issue(msg, "resourceType", "invalid")])
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        msg = "Bundle.type must be batch or transaction"
        raise BadRequest(msg, [Issue(msg, "Bundle.type", "value")])
    raw_entries = bundle.get("entry", [])
    if not isinstance(raw_entries, list):
        msg = "Bundle.entry must be an array"
        raise BadRequest(msg, [Issue(msg, "Bundle.entry", "structure")])
    issues: list[Issue] = []
    entries: list[BundleEntryRequest] = []
    for index, raw in enumerate(raw_entries):
        entry = _parse_entry(index, raw, issues)
        if entry is not None:
            entries.append(entry)
    if kind == "transaction":
        seen: set[str] = set()
        for entry in entries:
            if entry.full_url is None:
                continue
            if entry.full_url in seen:
                where = f"Bundle.entry[{entry.index}].fullUrl"
                issues.append(Issue("fullUrl repeats an earlier entry's", where, "duplicate"))
            seen.add(entry.full_url)
    if issues:
        msg = f"the {kind} Bundle has invalid entries"
        raise BadRequest(msg, issues[:100])
    return BundleRequest(type=str(kind), entries=entries)


# Processing rank of each method in a transaction (FHIR R4 http.html#trules).
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


def transaction_order(entries: Sequence[BundleEntryRequest]) -> list[BundleEntryRequest]:
    """The entries in FHIR's transaction processing order; document order within a method."""
    return sorted(entries, key=lambda e: (_ORDER.get(e.method, 4), e.index))

"""Batch and transaction Bundles (FHIR R4 http.html#transaction).

A transaction is all or nothing: its entries run in the caller's single database transaction,
in FHIR's processing order (DELETE, POST, PUT, GET), with `urn:uuid:` full URLs resolved to the
ids the server assigns, conditional creates (`ifNoneExist`) and conditional references
(`Practitioner?identifier=...`, as Synthea writes them) resolved by search. The first failing
entry fails the whole Bundle, naming the entry. A batch runs each entry in its own savepoint:
one entry's failure is reported in its response and leaves the others standing. Every entry
goes through the same repository, hence the same access decisions and ledger entries, as the
single-resource interactions: a Bundle is not a side door.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy.exc import IntegrityError

from egide.core.errors import (
    BadRequest,
    Conflict,
    EgideError,
    Issue,
    PreconditionFailed,
    Unprocessable,
)
from egide.core.ids import new_id
from egide.fhir.bundle import (
    BundleEntryRequest,
    EntryResponse,
    batch_response,
    parse_bundle_request,
    searchset,
    transaction_order,
    transaction_response,
)
from egide.fhir.outcome import outcome_for
from egide.fhir.references import parse_reference, rewrite_references
from egide.fhir.search import SearchQuery, parse_search_query
from egide.fhir.validation import resource_types
from egide.ledger.service import append, discard_pending, flush_pending
from egide.records.repository import Repository, Stored, pending_audits

MAX_ENTRIES = 10_000


def _status(code: int) -> str:
    text = {200: "OK", 201: "Created", 204: "No Content"}.get(code, "")
    return f"{code} {text}".strip()


def _split_url(url: str) -> tuple[str, str]:
    """(path, query) of an entry's request URL, relative to the FHIR base."""
    path, _, query = url.partition("?")
    return path.strip("/"), query


def _ok(stored: Stored, *, status: int) -> EntryResponse:
    return EntryResponse(
        status=_status(status),
        location=f"{stored.resource_type}/{stored.id}/_history/{stored.version}",
        etag=stored.etag,
        last_modified=stored.last_updated,
        resource=None,
        outcome=None,
    )


def _entry_error(index: int, exc: EgideError) -> EgideError:
    """The same error, its messages prefixed with the failing entry (audits carried over)."""
    issues = [
        Issue(f"Bundle.entry[{index}]: {i.message}", i.location, i.code, i.severity)
        for i in exc.all_issues()
    ]
    wrapped = type(exc)(f"Bundle.entry[{index}]: {exc.message}", issues)
    wrapped.after_rollback = pending_audits(exc)  # type: ignore[attr-defined]
    return wrapped


class _Processor:
    def __init__(self, repo: Repository, base: str) -> None:
        self.repo = repo
        self.base = base
        self.mapping: dict[str, str] = {}

    # -- references -------------------------------------------------------------------------

    def _resolve_conditional(self, reference: str) -> str:
        resource_type, query = _split_url(reference)
        stored = self._search(resource_type, query, limit=2)
        if len(stored) != 1:
            msg = (
                f"conditional reference to {resource_type} matched {len(stored)} "
                "resources; exactly one is required"
            )
            raise Unprocessable(msg)
        return f"{resource_type}/{stored[0].id}"

    def _conditional_references(self, resource: dict[str, Any]) -> Iterator[str]:
        stack: list[Any] = [resource]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                ref = node.get("reference")
                if isinstance(ref, str) and "?" in ref and "/" not in ref.split("?")[0]:
                    yield ref
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)

    def _prepare(self, resource: dict[str, Any]) -> dict[str, Any]:
        mapping = dict(self.mapping)
        for ref in self._conditional_references(resource):
            if ref not in mapping:
                mapping[ref] = self._resolve_conditional(ref)
        return rewrite_references(resource, mapping) if mapping else copy.deepcopy(resource)

    def _search(self, resource_type: str, query: str, *, limit: int) -> list[Stored]:
        found, _total = self.repo.search(self._query(resource_type, query, limit=limit))
        return found

    def _query(self, resource_type: str, query: str, *, limit: int) -> SearchQuery:
        if resource_type not in resource_types():
            msg = f"unknown resource type {resource_type[:64]!r}"
            raise BadRequest(msg)
        params = [*parse_qsl(query, keep_blank_values=True), ("_count", str(limit))]
        return parse_search_query(resource_type, params)

    # -- entries ----------------------------------------------------------------------------

    def assign_ids(self, entries: list[BundleEntryRequest]) -> dict[int, str]:
        """Server ids for POST entries, decided before any runs so references resolve."""
        assigned: dict[int, str] = {}
        for entry in entries:
            path, _ = _split_url(entry.url)
            if entry.method == "POST":
                new = new_id(self.repo.services.random)
                assigned[entry.index] = new
                self.repo.pending_ids.add((path, new))
                if entry.full_url:
                    self.mapping[entry.full_url] = f"{path}/{new}"
            elif entry.method == "PUT" and entry.full_url:
                parsed = parse_reference(path)
                if parsed is not None:
                    self.mapping[entry.full_url] = f"{parsed[0]}/{parsed[1]}"
                    self.repo.pending_ids.add(parsed)
        return assigned

    def run(self, entry: BundleEntryRequest, assigned_id: str | None) -> EntryResponse:
        path, query = _split_url(entry.url)
        method = entry.method
        if method == "POST":
            resource = self._prepare(self._resource(entry, path))
            if entry.if_none_exist:
                existing = self._search(path, entry.if_none_exist, limit=2)
                if len(existing) > 1:
                    msg = "ifNoneExist matched more than one resource"
                    raise PreconditionFailed(msg)
                if existing:
                    if entry.full_url:
                        self.mapping[entry.full_url] = f"{path}/{existing[0].id}"
                    return _ok(existing[0], status=200)
            return _ok(self.repo.create(resource, resource_id=assigned_id), status=201)
        if method == "PUT":
            parsed = parse_reference(path)
            if parsed is None or query:
                msg = (
                    "PUT entries need a url of the form Type/id (conditional update is "
                    "not supported)"
                )
                raise BadRequest(msg)
            resource = self._prepare(self._resource(entry, parsed[0]))
            stored = self.repo.update(parsed[0], parsed[1], resource, if_match=entry.if_match)
            return _ok(stored, status=201 if stored.created else 200)
        if method == "DELETE":
            parsed = parse_reference(path)
            if parsed is None or query:
                msg = "DELETE entries need a url of the form Type/id"
                raise BadRequest(msg)
            self.repo.delete(*parsed)
            return EntryResponse(
                status=_status(204),
                location=None,
                etag=None,
                last_modified=None,
                resource=None,
                outcome=None,
            )
        if method == "GET":
            return self._get(path, query)
        msg = f"method {method} is not supported in a Bundle"
        raise BadRequest(msg)

    def _resource(self, entry: BundleEntryRequest, resource_type: str) -> dict[str, Any]:
        if entry.resource is None:
            msg = f"{entry.method} entries need a resource"
            raise BadRequest(msg)
        if entry.resource.get("resourceType") != resource_type:
            msg = f"the entry's resource must be a {resource_type}"
            raise BadRequest(msg)
        return entry.resource

    def _get(self, path: str, query: str) -> EntryResponse:
        parts = path.split("/")
        if len(parts) == 1:
            parsed = self._query(parts[0], query, limit=100)
            found, _total = self.repo.search(parsed)
            # `_include`/`_revinclude` under the search's own policy (Repository.included).
            included, _cut = self.repo.included(parsed, found)
            bundle = searchset(
                [s.resource for s in found],
                total=len(found),
                links={},
                base_url=self.base,
                included=[s.resource for s in included],
            )
            return EntryResponse(
                status=_status(200),
                location=None,
                etag=None,
                last_modified=None,
                resource=bundle,
                outcome=None,
            )
        if len(parts) == 2:
            stored = self.repo.read(parts[0], parts[1])
        elif len(parts) == 4 and parts[2] == "_history" and parts[3].isdigit():
            stored = self.repo.vread(parts[0], parts[1], int(parts[3]))
        else:
            msg = "GET entries support Type/id, Type/id/_history/n and Type?query"
            raise BadRequest(msg)
        response = _ok(stored, status=200)
        return EntryResponse(
            status=response.status,
            location=None,
            etag=response.etag,
            last_modified=response.last_modified,
            resource=stored.resource,
            outcome=None,
        )


def process_bundle(repo: Repository, bundle: dict[str, Any], *, base: str) -> dict[str, Any]:
    """Run a batch or transaction Bundle for the repository's principal; return the response
    Bundle. Raises (failing the whole unit of work) for a transaction's failing entry."""
    if bundle.get("resourceType") != "Bundle":
        msg = "POST to the base URL takes a Bundle of type batch or transaction"
        raise BadRequest(msg)
    request = parse_bundle_request(bundle)
    if len(request.entries) > MAX_ENTRIES:
        msg = f"a Bundle may hold at most {MAX_ENTRIES} entries"
        raise BadRequest(msg)
    processor = _Processor(repo, base)
    if request.type == "transaction":
        assigned = processor.assign_ids(request.entries)
        responses: dict[int, EntryResponse] = {}
        for entry in transaction_order(request.entries):
            try:
                responses[entry.index] = processor.run(entry, assigned.get(entry.index))
            except EgideError as exc:
                # The whole transaction rolls back; the reads and searches it made on patient
                # data must still reach the ledger (contract 2), so they are re-appended after.
                wrapped = _entry_error(entry.index, exc)
                raise repo.audit_later(wrapped, repo.reads_since(0)) from exc
        return transaction_response([responses[e.index] for e in request.entries])
    results: list[EntryResponse] = []
    for entry in request.entries:
        start = len(repo.acts)
        # Entries appended before the savepoint are written now, so that rolling it back
        # removes exactly the entries of this Bundle entry.
        flush_pending(repo.session)
        savepoint = repo.session.begin_nested()
        try:
            result = processor.run(
                entry, None if entry.method != "POST" else new_id(repo.services.random)
            )
            try:
                flush_pending(repo.session)
                savepoint.commit()
            except IntegrityError as exc:
                msg = "a concurrent change to the same resource won; retry"
                raise Conflict(msg) from exc
        except EgideError as exc:
            discard_pending(repo.session)
            savepoint.rollback()
            for audit in pending_audits(exc):
                audit(repo.session)
            # The entry's reads and searches happened even though its writes are undone.
            for act in repo.reads_since(start):
                append(repo.session, principal=repo.principal, act=act, clock=repo.services.clock)
            result = EntryResponse(
                status=str(exc.status),
                location=None,
                etag=None,
                last_modified=None,
                resource=None,
                outcome=outcome_for(_entry_error(entry.index, exc)),
            )
        results.append(result)
    return batch_response(results)

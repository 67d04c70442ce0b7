"""The server's CapabilityStatement (FHIR R4 capabilitystatement.html, http.html#capabilities).

Security role: it tells clients exactly what is supported so they do not probe. It states the
truths that matter to a security reviewer: every interaction needs a bearer token, CORS is off,
conditional interactions are not supported (they would let a caller test for the existence of
records it may not see), and search on patient data is limited to blind-index matching.
It lists only what `SEARCH_PARAMETERS` declares, so the statement and the parser cannot drift:
the `_include` and `_revinclude` values are its reference parameters (no `:iterate`, no `*`),
and the one operation, Patient `$everything`, is declared with what it does and does not take.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from egide.fhir.search import SEARCH_PARAMETERS, SearchParam

__all__ = ["capability_statement"]

_INTERACTIONS = (
    "read", "vread", "update", "delete", "history-instance", "history-type", "create",
    "search-type",
)  # fmt: skip

_SECURITY = (
    "Every interaction requires an OAuth 2.0 bearer token (RFC 6750) in the Authorization "
    "header. Access is decided per resource from the token's role and, for patient tokens, "
    "the patient's own compartment; a resource the caller may not see answers 404 Not Found. "
    "Every access, denial and failed authentication is recorded in the audit ledger in the "
    "same transaction as the act."
)


def _documentation(param: SearchParam) -> str:
    if param.type == "reference":
        return "Reference: Type/id, id, or an absolute URL ending in Type/id; no chaining."
    if param.type == "date" and not param.secret:
        return "Date: prefixes eq, ne, lt, gt, le, ge, sa, eb, ap; ranges follow the precision."
    if param.type == "date":
        return "Date stored as a keyed blind index (HMAC-SHA256): equality at the given precision."
    if param.type == "token":
        return "Token: code, system|code or |code; exact match through a keyed blind index."
    return (
        "String: matched on the normalised (case- and accent-folded) value through a keyed blind "
        "index; the :exact modifier is supported."
    )


def _search_params(resource_type: str) -> list[dict[str, str]]:
    entries = [
        {"name": "_id", "type": "token", "documentation": "Logical id, exact match."},
        {
            "name": "_lastUpdated",
            "type": "date",
            "documentation": "Last update instant; prefixes eq, ne, lt, gt, le, ge, sa, eb, ap.",
        },
    ]
    entries.extend(
        {"name": param.name, "type": param.type, "documentation": _documentation(param)}
        for param in SEARCH_PARAMETERS.get(resource_type, {}).values()
    )
    return entries


def _includes(resource_type: str) -> list[str]:
    """`_include` values (R4 CapabilityStatement.rest.resource.searchInclude): the type's own
    reference parameters, with no `:iterate`."""
    return [
        f"{resource_type}:{param.name}"
        for param in SEARCH_PARAMETERS.get(resource_type, {}).values()
        if param.type == "reference"
    ]


def _revincludes(resource_type: str) -> list[str]:
    """`_revinclude` values: every reference parameter that may point at this type."""
    return [
        f"{source}:{param.name}"
        for source, params in sorted(SEARCH_PARAMETERS.items())
        for param in params.values()
        if param.type == "reference" and (not param.targets or resource_type in param.targets)
    ]


_EVERYTHING = {
    "name": "everything",
    "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
    "documentation": (
        "GET Patient/[id]/$everything: a searchset Bundle of the patient's compartment (the "
        "resources sealed under the patient, and those naming the patient through an indexed "
        "compartment reference), the Patient first, under the same access policy as a read: "
        "what the caller may not see is absent and not counted, masked elements stay masked, "
        "a patient the caller may not read answers 404. Parameters: _type, _since, _count; "
        "start and end (care dates) are not supported, nor POST. Referenced resources outside "
        "the compartment are not added."
    ),
}


def _resource(resource_type: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": resource_type,
        "interaction": [{"code": code} for code in _INTERACTIONS],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "not-supported",
        "conditionalUpdate": False,
        "conditionalDelete": "not-supported",
        "searchParam": _search_params(resource_type),
    }
    includes, revincludes = _includes(resource_type), _revincludes(resource_type)
    if includes:
        entry["searchInclude"] = includes
    if revincludes:
        entry["searchRevInclude"] = revincludes
    if resource_type == "Patient":
        entry["operation"] = [dict(_EVERYTHING)]
    return entry


def capability_statement(
    *,
    base_url: str,
    software_version: str,
    resource_types: Iterable[str],
    now: datetime,
) -> dict[str, Any]:
    """The CapabilityStatement for this server instance (kind `instance`, FHIR 4.0.1, JSON)."""
    moment = now.astimezone(UTC) if now.tzinfo is not None else now.replace(tzinfo=UTC)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": moment.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "publisher": "Égide",
        "kind": "instance",
        "software": {"name": "Égide", "version": software_version},
        "implementation": {
            "description": "Égide FHIR R4 server",
            "url": base_url.rstrip("/"),
        },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "documentation": (
                    "FHIR R4 RESTful API. Resources are encrypted at rest under a per-patient "
                    "key; search on patient data uses keyed blind indexes."
                ),
                "security": {"cors": False, "description": _SECURITY},
                "resource": [_resource(t) for t in sorted(set(resource_types))],
                "interaction": [{"code": "transaction"}, {"code": "batch"}],
            }
        ],
    }

"""Finding, parsing and rewriting FHIR references (FHIR R4 references.html).

Security role: references decide which patient compartment a resource falls in, and so which
patient's data key seals it and who may read it. Parsing is therefore strict: only the shapes of
FHIR R4 references.html#literal (`Type/id`, `Type/id/_history/vid`, or an absolute http(s) URL
ending so) with a known resource type and a valid id count; anything else (`#contained`,
`urn:uuid:`, identifiers, garbage) is "not a resolvable reference" and never guessed at.

All walks are iterative so a deeply nested resource cannot exhaust the stack.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from egide.fhir.validation import resource_types

__all__ = ["iter_references", "parse_reference", "rewrite_references"]

# FHIR R4 references.html#regex, with the resource-type alternation checked against the known
# types afterwards. Ids are FHIR `id` (datatypes.html#id): [A-Za-z0-9\-\.]{1,64}.
_LITERAL = re.compile(
    r"(?:https?://(?:[A-Za-z0-9\-\\.:%$]*/)+)?"
    r"(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/[A-Za-z0-9\-.]{1,64})?"
)


def parse_reference(ref: str) -> tuple[str, str] | None:
    """`(type, id)` for a literal reference to a known resource type, else None.

    Accepts `Patient/123`, `Patient/123/_history/2` and `https://host/fhir/Patient/123`
    (FHIR R4 references.html#literal). Refuses contained (`#x`), `urn:uuid:`/`urn:oid:`
    references, unknown types, invalid ids and anything with a query or fragment.
    Absolute URLs are accepted whatever their host: callers that must tell local from remote
    resources compare the base themselves.
    """
    if not isinstance(ref, str) or len(ref) > 4096:
        return None
    match = _LITERAL.fullmatch(ref)
    if match is None or match.group("type") not in resource_types():
        return None
    return match.group("type"), match.group("id")


def _child_path(path: str, key: str | int) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}"


def iter_references(resource: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Yield `(path, reference)` for every `Reference.reference` string in the resource.

    Walks everything, including contained resources, extensions and Bundle entries; paths are
    FHIRPath-like (`Observation.subject`, `Patient.contained[0].managingOrganization`). Order is
    document order.
    """
    root = resource.get("resourceType")
    start = root if isinstance(root, str) else "Resource"
    stack: list[tuple[str, Any]] = [(start, resource)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            value = node.get("reference")
            if isinstance(value, str):
                yield f"{path}.reference", value
            children = [(k, v) for k, v in node.items() if isinstance(v, dict | list)]
            stack.extend((_child_path(path, k), v) for k, v in reversed(children))
        elif isinstance(node, list):
            stack.extend(
                (_child_path(path, i), v)
                for i, v in reversed(list(enumerate(node)))
                if isinstance(v, dict | list)
            )


def rewrite_references(resource: dict[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    """A deep copy of `resource` with every reference found in `mapping` replaced.

    Used to resolve the `urn:uuid:` fullUrls of a transaction Bundle to the ids the server
    assigned (FHIR R4 http.html#trules). Following that rule, the replacement applies to
    `Reference.reference` and also to any other string element whose whole value is a mapped
    key (elements of type uri, url, uuid, canonical), but not inside longer text. The input is
    not modified.
    """
    # One iterative pass that copies and rewrites, so depth never meets the recursion limit.
    result: dict[str, Any] = {}
    stack: list[tuple[Any, Any]] = [(resource, result)]
    while stack:
        source, target = stack.pop()
        pairs = source.items() if isinstance(source, dict) else enumerate(source)
        for key, value in pairs:
            if isinstance(value, dict | list):
                child: Any = {} if isinstance(value, dict) else [None] * len(value)
                stack.append((value, child))
            elif isinstance(value, str) and value in mapping:
                child = mapping[value]
            else:
                child = value
            target[key] = child
    return result

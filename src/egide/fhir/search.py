"""FHIR R4 search: the parameters Égide supports, index extraction and query parsing.

Implements the subset of FHIR R4 search (http://hl7.org/fhir/R4/search.html) that can be served
from keyed blind indexes: token, string, date and reference parameters, with `_id`,
`_lastUpdated`, `_count`, `_offset`, `_sort` and `_total` (the storage layer handles `_id` and
`_lastUpdated` itself; they are not in `SEARCH_PARAMETERS`).

Security role: `SearchParam.secret` marks every parameter whose values are patient data (names,
identifiers, birth dates, codes, gender, status, category). The storage layer keeps those only as
HMAC blind indexes (DESIGN.md contract 3), which is why only exact-match kinds of queries on them
are useful. Query parsing is strict: an unknown, chained or unsupported parameter is refused with
BadRequest rather than ignored, because silently dropping a filter would return more records than
the caller asked for. Limits on the number of parameters and values keep a query's cost bounded.

Dates: a FHIR date, dateTime or instant denotes a range whose width is its precision
(search.html#date): "2024" is [2024-01-01, 2025-01-01). Ranges are [low, high) in UTC. A value
without a timezone (a date, or a partial dateTime) is taken as UTC, a documented simplification of
the spec's "local time of the server".
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from egide.core.errors import BadRequest
from egide.fhir.references import parse_reference
from egide.fhir.validation import resource_types

__all__ = [
    "SEARCH_PARAMETERS",
    "Criterion",
    "DateValue",
    "EverythingQuery",
    "Include",
    "IndexValue",
    "ReferenceValue",
    "SearchParam",
    "SearchQuery",
    "SortKey",
    "StringValue",
    "TokenValue",
    "date_range",
    "extract_index_values",
    "include_targets",
    "parse_everything_query",
    "parse_search_query",
]


@dataclass(frozen=True)
class SearchParam:
    """One search parameter of one resource type.

    `paths` are dotted element paths from the resource root; a step ending in `[x]` is a choice
    element (`effective[x]` matches effectiveDateTime, effectivePeriod, effectiveInstant).
    `secret` means the values are patient data and may only be stored as blind indexes.
    `targets` restricts a reference parameter to resource types (`patient` -> Patient).
    """

    name: str
    type: str  # "token" | "string" | "date" | "reference"
    paths: tuple[str, ...]
    secret: bool
    targets: tuple[str, ...] = ()


def _token(name: str, *paths: str) -> SearchParam:
    return SearchParam(name, "token", paths, secret=True)


def _string(name: str, *paths: str) -> SearchParam:
    return SearchParam(name, "string", paths, secret=True)


def _date(name: str, *paths: str, secret: bool = False) -> SearchParam:
    return SearchParam(name, "date", paths, secret=secret)


def _ref(name: str, *paths: str, targets: tuple[str, ...] = ()) -> SearchParam:
    return SearchParam(name, "reference", paths, secret=False, targets=targets)


def _patient(*paths: str) -> SearchParam:
    return _ref("patient", *paths, targets=("Patient",))


def _table(*params: SearchParam) -> Mapping[str, SearchParam]:
    return {p.name: p for p in params}


# The R4 target types of Observation.performer and of the `based-on` requests.
_PERFORMERS = (
    "CareTeam", "Organization", "Patient", "Practitioner", "PractitionerRole", "RelatedPerson",
)  # fmt: skip
_REQUESTERS = ("Organization", "Patient", "Practitioner", "PractitionerRole", "RelatedPerson")
_REQUESTS = (
    "CarePlan", "DeviceRequest", "ImmunizationRecommendation", "MedicationRequest",
    "NutritionOrder", "ServiceRequest",
)  # fmt: skip

# Paths follow the R4 SearchParameter expressions (searchparameter-registry.html), reduced to
# plain element paths.
SEARCH_PARAMETERS: Mapping[str, Mapping[str, SearchParam]] = {
    "Patient": _table(
        _token("identifier", "identifier"),
        _string("name", "name"),
        _string("family", "name.family"),
        _string("given", "name.given"),
        _date("birthdate", "birthDate", secret=True),
        _token("gender", "gender"),
    ),
    "Practitioner": _table(
        _token("identifier", "identifier"),
        _string("name", "name"),
        _string("family", "name.family"),
        _string("given", "name.given"),
    ),
    "PractitionerRole": _table(
        _ref("practitioner", "practitioner", targets=("Practitioner",)),
        _ref("organization", "organization", targets=("Organization",)),
        _token("identifier", "identifier"),
    ),
    "Organization": _table(
        _token("identifier", "identifier"),
        _string("name", "name", "alias"),
    ),
    "Encounter": _table(
        _patient("subject"),
        _ref("subject", "subject"),
        _date("date", "period"),
        _token("status", "status"),
        _token("class", "class"),
        _token("identifier", "identifier"),
    ),
    "EpisodeOfCare": _table(
        _patient("patient"),
        _token("status", "status"),
        _date("date", "period"),
    ),
    "CareTeam": _table(
        _patient("subject"),
        _ref("subject", "subject"),
        _token("status", "status"),
        _token("category", "category"),
    ),
    "Appointment": _table(
        _patient("participant.actor"),
        _ref("actor", "participant.actor"),
        _date("date", "start"),
        _token("status", "status"),
    ),
    "Observation": _table(
        _patient("subject"),
        _ref("subject", "subject"),
        _token("code", "code"),
        _date("date", "effective[x]"),
        _token("status", "status"),
        _token("category", "category"),
        _ref("encounter", "encounter", targets=("Encounter",)),
        _token("identifier", "identifier"),
        _ref("performer", "performer", targets=_PERFORMERS),
        _ref("based-on", "basedOn", targets=_REQUESTS),
    ),
    "ServiceRequest": _table(
        _patient("subject"),
        _ref("subject", "subject"),
        _token("code", "code"),
        _token("status", "status"),
        _token("intent", "intent"),
        _token("category", "category"),
        _ref("encounter", "encounter", targets=("Encounter",)),
        _ref("performer", "performer", targets=(*_PERFORMERS, "Device", "HealthcareService")),
        _ref("requester", "requester", targets=(*_REQUESTERS, "Device")),
        _token("identifier", "identifier"),
    ),
    "Condition": _table(
        _patient("subject"),
        _ref("subject", "subject"),
        _token("code", "code"),
        _token("category", "category"),
        _ref("encounter", "encounter", targets=("Encounter",)),
        _token("identifier", "identifier"),
    ),
    "AllergyIntolerance": _table(
        _patient("patient"),
        _token("code", "code", "reaction.substance"),
    ),
    "MedicationRequest": _table(
        _patient("subject"),
        _ref("subject", "subject"),
        _token("code", "medicationCodeableConcept"),
        _token("status", "status"),
        _token("intent", "intent"),
        _ref("encounter", "encounter", targets=("Encounter",)),
    ),
    "Procedure": _table(
        _patient("subject"),
        _ref("subject", "subject"),
        _token("code", "code"),
        _date("date", "performed[x]"),
        _token("status", "status"),
        _ref("encounter", "encounter", targets=("Encounter",)),
    ),
    "Immunization": _table(
        _patient("patient"),
        _date("date", "occurrence[x]"),
        _token("status", "status"),
        _token("vaccine-code", "vaccineCode"),
    ),
    "DiagnosticReport": _table(
        _patient("subject"),
        _ref("subject", "subject"),
        _token("code", "code"),
        _date("date", "effective[x]"),
        _token("status", "status"),
        _token("category", "category"),
        _ref("encounter", "encounter", targets=("Encounter",)),
        _ref("result", "result", targets=("Observation",)),
        _ref("based-on", "basedOn", targets=tuple(t for t in _REQUESTS if t != "DeviceRequest")),
    ),
    "DocumentReference": _table(
        _patient("subject"),
        _ref("subject", "subject"),
        _token("type", "type"),
        _date("date", "date"),
        _token("status", "status"),
        _token("category", "category"),
        _ref("encounter", "context.encounter", targets=("Encounter", "EpisodeOfCare")),
    ),
    "Consent": _table(
        _patient("patient"),
        _token("status", "status"),
        _token("category", "category"),
        _date("date", "dateTime"),
    ),
    "Provenance": _table(
        _patient("target"),
        _ref("target", "target"),
    ),
}


# --------------------------------------------------------------------------------------------
# Dates (FHIR R4 datatypes.html#dateTime, search.html#date)
# --------------------------------------------------------------------------------------------

_DATE = re.compile(
    r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d{1,9}))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?",
    re.ASCII,  # \d must not match other scripts' digits
)
_MAX = datetime.max.replace(tzinfo=UTC)


def _add_months(moment: datetime, months: int) -> datetime:
    total = moment.year * 12 + (moment.month - 1) + months
    return moment.replace(year=total // 12, month=total % 12 + 1)


def date_range(value: str) -> tuple[datetime, datetime] | None:
    """The [low, high) UTC range a FHIR date, dateTime or instant denotes, or None if invalid.

    The width is the precision: year, month, day, minute, second or the fraction given. Without
    a timezone the value is read as UTC. The high end of year 9999 is clamped to datetime.max.
    """
    match = _DATE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return None
    g = match.groupdict()
    tz_text = g["tz"]
    if tz_text in (None, "Z"):
        tz = UTC
    else:
        sign = 1 if tz_text[0] == "+" else -1
        hours, minutes = int(tz_text[1:3]), int(tz_text[4:6])
        if hours > 14 or minutes > 59:
            return None
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        fraction = g["f"] or ""
        low = datetime(
            int(g["y"]),
            int(g["m"] or 1),
            int(g["d"] or 1),
            int(g["H"] or 0),
            int(g["M"] or 0),
            int(g["S"] or 0),
            int((fraction + "000000")[:6]),
            tzinfo=tz,
        )
        if g["f"]:
            # Precision of the digits given, but never finer than a microsecond.
            step = timedelta(microseconds=10 ** max(0, 6 - len(fraction)))
            high = low + step
        elif g["S"]:
            high = low + timedelta(seconds=1)
        elif g["M"]:
            high = low + timedelta(minutes=1)
        elif g["d"]:
            high = low + timedelta(days=1)
        elif g["m"]:
            high = _add_months(low, 1)
        else:
            high = _add_months(low, 12)
        return low.astimezone(UTC), high.astimezone(UTC)
    except (ValueError, OverflowError):
        # Invalid calendar dates (2023-02-30) and the year-9999 overflow end up here.
        if g["y"] == "9999" and g["H"] is None:
            try:
                start = datetime(9999, int(g["m"] or 1), int(g["d"] or 1), tzinfo=UTC)
            except ValueError:
                return None
            return start, _MAX
        return None


# --------------------------------------------------------------------------------------------
# Index extraction
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexValue:
    """One value a resource holds for one search parameter, ready to be indexed.

    token: `system`/`code`; string: `text` (raw, the storage layer normalises); date: `low` and
    `high` ([low, high) in UTC, None for an open end) and, for a single date rather than a
    Period, the original string in `text` (its length gives the precision); reference:
    `ref_type`/`ref_id`.
    """

    param: str
    type: str
    system: str | None = None
    code: str | None = None
    text: str | None = None
    low: datetime | None = None
    high: datetime | None = None
    ref_type: str | None = None
    ref_id: str | None = None


def _values_at(resource: dict[str, Any], path: str) -> Iterator[Any]:
    """The values at a dotted path, through arrays; `x[x]` steps match every choice type."""
    nodes: list[Any] = [resource]
    for step in path.split("."):
        found: list[Any] = []
        for node in nodes:
            if not isinstance(node, dict):
                continue
            if step.endswith("[x]"):
                prefix = step[:-3]
                keys = [
                    k
                    for k in node
                    if k.startswith(prefix) and len(k) > len(prefix) and k[len(prefix)].isupper()
                ]
            else:
                keys = [step] if step in node else []
            for key in keys:
                value = node[key]
                found.extend(value if isinstance(value, list) else [value])
        nodes = found
    yield from nodes


def _tokens(value: Any) -> Iterator[tuple[str | None, str]]:
    if isinstance(value, str):  # a code primitive
        yield None, value
    elif isinstance(value, bool):
        yield None, "true" if value else "false"
    elif isinstance(value, dict):
        if "coding" in value:  # CodeableConcept
            for coding in value.get("coding") or []:
                yield from _tokens(coding)
        elif isinstance(value.get("code"), str):  # Coding
            system = value.get("system")
            yield (system if isinstance(system, str) else None), value["code"]
        elif isinstance(value.get("value"), str):  # Identifier
            system = value.get("system")
            yield (system if isinstance(system, str) else None), value["value"]


# The parts of a HumanName (and Address, for completeness) a string search matches.
_STRING_PARTS = (
    "text", "family", "given", "prefix", "suffix",
    "line", "city", "district", "state", "postalCode", "country",
)  # fmt: skip


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for part in _STRING_PARTS:
            item = value.get(part)
            for text in item if isinstance(item, list) else [item]:
                if isinstance(text, str):
                    yield text


def _dates(value: Any) -> Iterator[tuple[datetime | None, datetime | None, str | None]]:
    """(low, high, original text) for a date/dateTime/instant string or a Period."""
    if isinstance(value, str):
        bounds = date_range(value)
        if bounds is not None:
            yield bounds[0], bounds[1], value
    elif isinstance(value, dict) and ("start" in value or "end" in value):  # Period
        start = date_range(value["start"]) if isinstance(value.get("start"), str) else None
        end = date_range(value["end"]) if isinstance(value.get("end"), str) else None
        if start is not None or end is not None:
            yield (start[0] if start else None), (end[1] if end else None), None


def _is_relative(reference: str) -> bool:
    return not reference.startswith(("http://", "https://"))


def extract_index_values(resource: dict[str, Any]) -> list[IndexValue]:
    """Every index value of `resource` for the parameters of its type, deduplicated, in order.

    Reference parameters keep only relative literal references (`Type/id`) whose type fits the
    parameter's targets; absolute, contained and `urn:uuid:` references are not indexed.
    """
    resource_type = resource.get("resourceType")
    params = SEARCH_PARAMETERS.get(resource_type, {}) if isinstance(resource_type, str) else {}
    result: dict[IndexValue, None] = {}
    for param in params.values():
        for path in param.paths:
            for value in _values_at(resource, path):
                for item in _index_items(param, value):
                    result[item] = None
    return list(result)


def _index_items(param: SearchParam, value: Any) -> Iterator[IndexValue]:
    name, kind = param.name, param.type
    if kind == "token":
        for system, code in _tokens(value):
            yield IndexValue(name, kind, system=system, code=code)
    elif kind == "string":
        for text in _strings(value):
            yield IndexValue(name, kind, text=text)
    elif kind == "date":
        for low, high, original in _dates(value):
            yield IndexValue(name, kind, text=original, low=low, high=high)
    elif kind == "reference" and isinstance(value, dict):
        reference = value.get("reference")
        if isinstance(reference, str) and _is_relative(reference):
            parsed = parse_reference(reference)
            if parsed is not None and (not param.targets or parsed[0] in param.targets):
                yield IndexValue(name, kind, ref_type=parsed[0], ref_id=parsed[1])


# --------------------------------------------------------------------------------------------
# Query parsing (search.html#syntax)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenValue:
    """`code`, `system|code` or `|code` (search.html#token).

    `system_given` tells `code` (any system) from `|code` (no system): with it, system None
    means "the code has no system".
    """

    system: str | None
    code: str
    system_given: bool


@dataclass(frozen=True)
class StringValue:
    """A string search: by default case- and accent-insensitive prefix (search.html#string)."""

    text: str
    exact: bool
    contains: bool


@dataclass(frozen=True)
class DateValue:
    """A date comparison: `prefix` applied between the resource's range and [low, high).

    search.html#prefix: eq = the resource range is within [low, high); ne = it is not;
    lt/gt = it starts before low / ends after high; le/ge = lt/gt or eq; sa = it starts at or
    after high; eb = it ends at or before low; ap = approximately (server-defined, e.g. ±10%).
    """

    prefix: str
    low: datetime
    high: datetime


@dataclass(frozen=True)
class ReferenceValue:
    """A reference search value; `ref_type` None means "any type with this id"."""

    ref_type: str | None
    ref_id: str


SearchValue = TokenValue | StringValue | DateValue | ReferenceValue


@dataclass(frozen=True)
class Criterion:
    """One query parameter: its values are ORed; the criteria of a query are ANDed.

    `modifier` is "exact" or "contains" for strings, otherwise None (a reference type modifier
    such as `subject:Patient` is folded into each value's `ref_type`).
    """

    param: str
    type: str
    modifier: str | None
    values: tuple[SearchValue, ...]


@dataclass(frozen=True)
class SortKey:
    """One `_sort` key (search.html#sort): `_id`, `_lastUpdated` or a clear date parameter."""

    param: str
    descending: bool


@dataclass(frozen=True)
class Include:
    """One `_include` or `_revinclude` (search.html#include): `SourceType:param[:TargetType]`.

    `_include` (reverse False) adds the resources that the page's matches reference through
    `source_type`'s reference parameter `param`; `_revinclude` (reverse True) adds the
    `source_type` resources whose `param` references a match. `target_type` None means every
    type the parameter may reference.
    """

    source_type: str
    param: str
    target_type: str | None
    reverse: bool

    def __str__(self) -> str:
        name = "_revinclude" if self.reverse else "_include"
        target = f":{self.target_type}" if self.target_type else ""
        return f"{name}={self.source_type}:{self.param}{target}"


@dataclass(frozen=True)
class SearchQuery:
    """A parsed search. `ids` are ORed (from `_id`); `last_updated` comparisons are ANDed."""

    resource_type: str
    criteria: tuple[Criterion, ...]
    ids: tuple[str, ...]
    last_updated: tuple[DateValue, ...]
    count: int
    offset: int
    sort: tuple[SortKey, ...] = ()
    total: str | None = None
    includes: tuple[Include, ...] = ()


_DATE_PREFIXES = frozenset({"eq", "ne", "lt", "gt", "le", "ge", "sa", "eb", "ap"})
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}")
_IGNORED = frozenset({"_format", "_pretty"})
_UNSUPPORTED = frozenset(
    {
        "_summary", "_elements", "_contained", "_containedType",
        "_query", "_filter", "_list", "_has", "_text", "_content", "_security", "_tag",
        "_profile", "_source", "_type",
    }
)  # fmt: skip
_MAX_PARAMETERS = 50
_MAX_INCLUDES = 10  # each include is one more query per page
_INCLUDES = frozenset({"_include", "_revinclude"})
_MAX_VALUES = 100
_MAX_VALUE_LENGTH = 1024
_MAX_OFFSET = 1_000_000_000


def _shown(name: str) -> str:
    """The parameter name for an error message, only when it looks like a parameter name."""
    return f" '{name}'" if _PARAM_NAME.fullmatch(name) else ""


def _split_escaped(text: str, separator: str) -> list[str]:
    """Split on `separator` except where escaped with a backslash (search.html#escaping)."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(text)
    for char in chars:
        if char == "\\":
            following = next(chars, "")
            current.append(char + following)
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\([\\,$|])", r"\1", text)


def _parse_date_value(name: str, raw: str) -> DateValue:
    prefix = "eq"
    if raw[:2].isalpha():
        prefix, raw = raw[:2], raw[2:]
        if prefix not in _DATE_PREFIXES:
            msg = f"parameter{_shown(name)}: unknown date prefix"
            raise BadRequest(msg)
    bounds = date_range(raw)
    if bounds is None:
        msg = f"parameter{_shown(name)}: not a valid date (expected YYYY[-MM[-DD[Thh:mm[:ss]]]])"
        raise BadRequest(msg)
    return DateValue(prefix, bounds[0], bounds[1])


def _parse_token(name: str, raw: str) -> TokenValue:
    parts = _split_escaped(raw, "|")
    if len(parts) > 2:
        msg = f"parameter{_shown(name)}: a token has at most one '|'"
        raise BadRequest(msg)
    if len(parts) == 1:
        return TokenValue(None, _unescape(parts[0]), system_given=False)
    system, code = _unescape(parts[0]), _unescape(parts[1])
    if not code:
        msg = f"parameter{_shown(name)}: a code is required after '|'"
        raise BadRequest(msg)
    return TokenValue(system or None, code, system_given=True)


def _parse_reference(
    name: str, param: SearchParam, type_modifier: str | None, raw: str
) -> ReferenceValue:
    if _ID.fullmatch(raw):
        ref_type = type_modifier or (param.targets[0] if len(param.targets) == 1 else None)
        return ReferenceValue(ref_type, raw)
    parsed = parse_reference(raw)
    if parsed is None:
        msg = f"parameter{_shown(name)}: expected an id, Type/id or an absolute reference"
        raise BadRequest(msg)
    ref_type, ref_id = parsed
    if (type_modifier and ref_type != type_modifier) or (
        param.targets and ref_type not in param.targets
    ):
        msg = f"parameter{_shown(name)}: reference to a type this parameter does not allow"
        raise BadRequest(msg)
    return ReferenceValue(ref_type, ref_id)


def _values(name: str, raw: str) -> list[str]:
    values = _split_escaped(raw, ",")
    if len(values) > _MAX_VALUES:
        msg = f"parameter{_shown(name)}: more than {_MAX_VALUES} values"
        raise BadRequest(msg)
    if any(v == "" for v in values):
        msg = f"parameter{_shown(name)}: empty value"
        raise BadRequest(msg)
    return values


def _criterion(name: str, modifier: str | None, param: SearchParam, raw: str) -> Criterion:
    kind = param.type
    values = _values(name, raw)
    if kind == "token":
        if modifier is not None:
            raise BadRequest(f"parameter{_shown(name)}: modifier not supported")
        return Criterion(name, kind, None, tuple(_parse_token(name, v) for v in values))
    if kind == "string":
        if modifier not in (None, "exact", "contains"):
            raise BadRequest(f"parameter{_shown(name)}: modifier not supported")
        parsed = tuple(
            StringValue(_unescape(v), exact=modifier == "exact", contains=modifier == "contains")
            for v in values
        )
        return Criterion(name, kind, modifier, parsed)
    if kind == "date":
        if modifier is not None:
            raise BadRequest(f"parameter{_shown(name)}: modifier not supported")
        return Criterion(name, kind, None, tuple(_parse_date_value(name, v) for v in values))
    # reference: the only modifier is a resource type (search.html#reference)
    if modifier is not None and (
        modifier not in resource_types() or (param.targets and modifier not in param.targets)
    ):
        raise BadRequest(f"parameter{_shown(name)}: modifier not supported")
    refs = tuple(_parse_reference(name, param, modifier, _unescape(v)) for v in values)
    return Criterion(name, kind, None, refs)


def _non_negative(name: str, raw: str) -> int:
    if not raw.isdigit() or not raw.isascii() or len(raw) > 10:
        msg = f"parameter '{name}' must be a non-negative integer"
        raise BadRequest(msg)
    return int(raw)


def _parse_sort(resource_type: str, raw: str) -> tuple[SortKey, ...]:
    keys: list[SortKey] = []
    params = SEARCH_PARAMETERS.get(resource_type, {})
    for item in _values("_sort", raw):
        descending = item.startswith("-")
        name = item[1:] if descending else item
        param = params.get(name)
        sortable = name in ("_id", "_lastUpdated") or (
            param is not None and param.type == "date" and not param.secret
        )
        if not sortable:
            # Blind-indexed values have no order, so only clear dates sort.
            msg = f"_sort: cannot sort by{_shown(name)}"
            raise BadRequest(msg)
        keys.append(SortKey(name, descending))
    return tuple(keys)


def parse_search_query(
    resource_type: str,
    params: Sequence[tuple[str, str]],
    *,
    default_count: int = 20,
    max_count: int = 500,
) -> SearchQuery:
    """Parse search parameters (name, value pairs, already URL-decoded) for `resource_type`.

    Repeated parameters AND, comma-separated values OR (search.html#combining). Raises
    BadRequest naming the parameter for unknown or unsupported parameters, chained or reverse
    chained parameters, unsupported modifiers, malformed values and bad paging values, and for
    an `_include` or `_revinclude` that is not one of the declared reference parameters.
    `_count` is clamped to `max_count`; `_format` and `_pretty` are ignored.
    """
    if resource_type not in resource_types():
        msg = "unknown resource type"
        raise BadRequest(msg)
    if len(params) > _MAX_PARAMETERS:
        msg = f"more than {_MAX_PARAMETERS} search parameters"
        raise BadRequest(msg)
    table = SEARCH_PARAMETERS.get(resource_type, {})
    criteria: list[Criterion] = []
    last_updated: list[DateValue] = []
    includes: list[Include] = []
    singles: dict[str, str] = {}  # result parameters, each allowed once
    for full_name, raw in params:
        name, colon, modifier_text = full_name.partition(":")
        modifier = modifier_text if colon else None
        if name in _INCLUDES:
            _add_include(includes, _parse_include(resource_type, name, modifier, raw))
            continue
        _check_name(name, modifier, raw)
        if name in _IGNORED:
            continue
        if name in _SINGLE:
            if name in singles:
                msg = f"parameter '{name}' may be given only once"
                raise BadRequest(msg)
            singles[name] = raw
        elif name == "_lastUpdated":
            if "," in raw:
                msg = "parameter '_lastUpdated' takes one value; repeat it to combine"
                raise BadRequest(msg)
            last_updated.append(_parse_date_value(name, raw))
        else:
            param = table.get(name)
            if param is None:
                msg = f"unknown search parameter{_shown(name)} for {resource_type}"
                raise BadRequest(msg)
            criteria.append(_criterion(name, modifier, param, raw))
    count = min(default_count, max_count)
    if "_count" in singles:
        count = min(_non_negative("_count", singles["_count"]), max_count)
    offset = _non_negative("_offset", singles["_offset"]) if "_offset" in singles else 0
    if offset > _MAX_OFFSET:
        msg = "parameter '_offset' is too large"
        raise BadRequest(msg)
    total = singles.get("_total")
    if total not in (None, "none", "estimate", "accurate"):
        msg = "parameter '_total' must be none, estimate or accurate"
        raise BadRequest(msg)
    return SearchQuery(
        resource_type=resource_type,
        criteria=tuple(criteria),
        ids=_parse_ids(singles["_id"]) if "_id" in singles else (),
        last_updated=tuple(last_updated),
        count=count,
        offset=offset,
        sort=_parse_sort(resource_type, singles["_sort"]) if "_sort" in singles else (),
        total=total,
        includes=tuple(includes),
    )


_SINGLE = frozenset({"_id", "_count", "_offset", "_sort", "_total"})


def _check_name(name: str, modifier: str | None, raw: str) -> None:
    """Refuse what no resource type supports: chains, unsupported and modified specials."""
    if len(raw) > _MAX_VALUE_LENGTH * 4:
        msg = f"parameter{_shown(name)}: value too long"
        raise BadRequest(msg)
    if "." in name or (modifier is not None and "." in modifier) or name == "_has":
        msg = f"parameter{_shown(name)}: chained search is not supported"
        raise BadRequest(msg)
    if name in _UNSUPPORTED:
        msg = f"parameter '{name}' is not supported"
        raise BadRequest(msg)
    if name.startswith("_") and modifier is not None:
        msg = f"parameter{_shown(name)}: modifier not supported"
        raise BadRequest(msg)


def _parse_ids(raw: str) -> tuple[str, ...]:
    values = _values("_id", raw)
    if not all(_ID.fullmatch(v) for v in values):
        msg = "parameter '_id': not a valid id"
        raise BadRequest(msg)
    return tuple(values)


# --------------------------------------------------------------------------------------------
# _include and _revinclude (search.html#include)
# --------------------------------------------------------------------------------------------


def _parse_include(resource_type: str, name: str, modifier: str | None, raw: str) -> Include:
    """`SourceType:param[:TargetType]`, checked against `SEARCH_PARAMETERS`.

    Refused with BadRequest: `:iterate` (and R3's `:recurse`), which would follow references
    to any depth; the `*` wildcard; a parameter that is not a declared reference parameter; a
    target type the parameter cannot reference; an `_include` whose source is not the type
    searched, and a `_revinclude` whose references cannot point at it (both would be no-ops
    that hide a client's mistake).
    """
    if modifier is not None:
        if modifier in ("iterate", "recurse"):
            msg = f"{name}:{modifier} is not supported: only the page's own matches are followed"
        else:
            msg = f"parameter '{name}': modifier not supported"
        raise BadRequest(msg)
    if len(raw) > _MAX_VALUE_LENGTH:
        msg = f"parameter '{name}': value too long"
        raise BadRequest(msg)
    if "*" in raw:
        msg = f"{name}: the '*' wildcard is not supported; name each reference parameter"
        raise BadRequest(msg)
    if "," in raw:
        msg = f"{name}: one SourceType:param[:TargetType] per parameter; repeat {name}"
        raise BadRequest(msg)
    parts = raw.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        msg = f"{name}: expected SourceType:param or SourceType:param:TargetType"
        raise BadRequest(msg)
    source, param_name = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    types = resource_types()
    if source not in types:
        msg = f"{name}: unknown source type{_shown(source)}"
        raise BadRequest(msg)
    param = SEARCH_PARAMETERS.get(source, {}).get(param_name)
    if param is None or param.type != "reference":
        msg = f"{name}: {source} has no reference search parameter{_shown(param_name)}"
        raise BadRequest(msg)
    if target is not None and (
        target not in types or (param.targets and target not in param.targets)
    ):
        msg = f"{name}: {source}:{param_name} cannot reference{_shown(target)}"
        raise BadRequest(msg)
    reverse = name == "_revinclude"
    if not reverse and source != resource_type:
        msg = (
            f"_include: the source type must be the type searched ({resource_type}); "
            "_include:iterate is not supported"
        )
        raise BadRequest(msg)
    if reverse and (
        (target is not None and target != resource_type)
        or (target is None and param.targets and resource_type not in param.targets)
    ):
        msg = f"_revinclude: {source}:{param_name} cannot reference {resource_type}"
        raise BadRequest(msg)
    return Include(source, param_name, target, reverse)


def _add_include(includes: list[Include], include: Include) -> None:
    if include not in includes:
        includes.append(include)
    if len(includes) > _MAX_INCLUDES:
        msg = f"more than {_MAX_INCLUDES} _include and _revinclude parameters"
        raise BadRequest(msg)


def include_targets(include: Include) -> tuple[str, ...] | None:
    """The types an `_include` may add (None: any type the parameter references)."""
    if include.reverse:
        return (include.source_type,)
    if include.target_type is not None:
        return (include.target_type,)
    targets = SEARCH_PARAMETERS[include.source_type][include.param].targets
    return targets or None


# --------------------------------------------------------------------------------------------
# Patient $everything (operation-patient-everything.html)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EverythingQuery:
    """The parameters of `GET Patient/{id}/$everything`: `_type` (None: every type), `_since`
    (only resources updated at or after it), and paging by `_count` and `_offset`."""

    types: tuple[str, ...] | None
    since: datetime | None
    count: int
    offset: int


_EVERYTHING_PARAMETERS = frozenset({"_type", "_since", "_count", "_offset"})


def parse_everything_query(
    params: Sequence[tuple[str, str]], *, default_count: int = 20, max_count: int = 500
) -> EverythingQuery:
    """Parse the parameters of Patient `$everything`, strictly: `start` and `end` (care dates)
    are refused as unsupported rather than ignored, since ignoring them would return more than
    was asked; so is any other parameter."""
    if len(params) > _MAX_PARAMETERS:
        msg = f"more than {_MAX_PARAMETERS} parameters"
        raise BadRequest(msg)
    singles: dict[str, str] = {}
    for name, raw in params:
        if name in _IGNORED:
            continue
        if name in ("start", "end"):
            msg = f"$everything: '{name}' (care dates) is not supported; use _since"
            raise BadRequest(msg)
        if name not in _EVERYTHING_PARAMETERS:
            msg = f"$everything: unknown parameter{_shown(name)}"
            raise BadRequest(msg)
        if name in singles:
            msg = f"parameter '{name}' may be given only once"
            raise BadRequest(msg)
        if len(raw) > _MAX_VALUE_LENGTH * 4:
            msg = f"parameter '{name}': value too long"
            raise BadRequest(msg)
        singles[name] = raw
    types: tuple[str, ...] | None = None
    if "_type" in singles:
        wanted = _values("_type", singles["_type"])
        unknown = [t for t in wanted if t not in resource_types()]
        if unknown:
            msg = f"_type: unknown resource type{_shown(unknown[0])}"
            raise BadRequest(msg)
        types = tuple(dict.fromkeys(wanted))
    since = None
    if "_since" in singles:
        since = _instant(singles["_since"])
    count = min(default_count, max_count)
    if "_count" in singles:
        count = min(_non_negative("_count", singles["_count"]), max_count)
    offset = _non_negative("_offset", singles["_offset"]) if "_offset" in singles else 0
    if offset > _MAX_OFFSET:
        msg = "parameter '_offset' is too large"
        raise BadRequest(msg)
    return EverythingQuery(types, since, count, offset)


def _instant(raw: str) -> datetime:
    """A FHIR instant (`_since`): to the second at least, with a timezone."""
    match = _DATE.fullmatch(raw)
    bounds = date_range(raw) if match is not None and match["S"] and match["tz"] else None
    if bounds is None:
        msg = "_since must be an instant such as 2026-01-31T12:00:00Z"
        raise BadRequest(msg)
    return bounds[0]

"""Strict parsing and validation of FHIR R4 JSON resources.

Security role: this is the gate every client-supplied resource passes before it is sealed and
stored. It refuses ambiguous JSON (duplicate keys, a classic request-smuggling vector between
parsers that keep the first or the last value), non-finite numbers, oversized integers and
nesting deep enough to exhaust a recursive parser; it then checks the resource against the FHIR
model, element by element, with the JSON types FHIR requires (FHIR R4 JSON format,
http://hl7.org/fhir/R4/json.html). Error messages name the element and what is wrong, never the
offending value: values may be patient data and errors are shown to callers.

Models: validation uses the R4B (4.3.0) models of `fhir.resources` 8.3. R4B is wire-compatible
with R4 (4.0.1) for the clinical and administrative resources Égide stores (R4B only added
resources and removed the draft MedicinalProduct*/Substance* family), so R4 JSON validates as-is.
Required code bindings (e.g. Patient.gender, Observation.status) come from the same models.

Checks made here before the model runs (the model alone is lenient: it coerces "true" to true,
accepts a JSON string where an object is expected, and accepts nulls):

- every key is a known element of its type (unknown elements are refused, json.html#resources);
- arrays where the element repeats and single values where it does not;
- JSON booleans for boolean, integers for integer types, numbers for decimal, strings for the
  other primitives (json.html#primitive);
- null only inside primitive arrays and their `_element` siblings (json.html#primitive);
- codes with a required binding are in their value set;
- narrative XHTML is restricted to safe content (FHIR R4 narrative.html, invariants txt-1 and
  txt-2: no scripts, forms, frames or event attributes).
"""

from __future__ import annotations

import decimal
import json
import math
import re
import types
import typing
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from html.parser import HTMLParser
from typing import Any, Literal

import pydantic
from fhir.resources.R4B import get_fhir_model_class

from egide.core.errors import BadRequest, Issue, Unprocessable

__all__ = ["parse_json", "resource_types", "validate_resource"]

# Every concrete resource type of FHIR R4B 4.3.0 as packaged by fhir.resources 8.3 (abstract
# Resource and DomainResource left out). A test checks this list against the package itself; it
# is written out so that answering "is this a resource type?" does not import 141 models.
_RESOURCE_TYPES: frozenset[str] = frozenset(
    """
    Account ActivityDefinition AdministrableProductDefinition AdverseEvent AllergyIntolerance
    Appointment AppointmentResponse AuditEvent Basic Binary BiologicallyDerivedProduct BodyStructure
    Bundle CapabilityStatement CarePlan CareTeam CatalogEntry ChargeItem ChargeItemDefinition
    Citation Claim ClaimResponse ClinicalImpression ClinicalUseDefinition CodeSystem Communication
    CommunicationRequest CompartmentDefinition Composition ConceptMap Condition Consent Contract
    Coverage CoverageEligibilityRequest CoverageEligibilityResponse DetectedIssue Device
    DeviceDefinition DeviceMetric DeviceRequest DeviceUseStatement DiagnosticReport DocumentManifest
    DocumentReference Encounter Endpoint EnrollmentRequest EnrollmentResponse EpisodeOfCare
    EventDefinition Evidence EvidenceReport EvidenceVariable ExampleScenario ExplanationOfBenefit
    FamilyMemberHistory Flag Goal GraphDefinition Group GuidanceResponse HealthcareService
    ImagingStudy Immunization ImmunizationEvaluation ImmunizationRecommendation ImplementationGuide
    Ingredient InsurancePlan Invoice Library Linkage List Location ManufacturedItemDefinition
    Measure MeasureReport Media Medication MedicationAdministration MedicationDispense
    MedicationKnowledge MedicationRequest MedicationStatement MedicinalProductDefinition
    MessageDefinition MessageHeader MolecularSequence NamingSystem NutritionOrder NutritionProduct
    Observation ObservationDefinition OperationDefinition OperationOutcome Organization
    OrganizationAffiliation PackagedProductDefinition Parameters Patient PaymentNotice
    PaymentReconciliation Person PlanDefinition Practitioner PractitionerRole Procedure Provenance
    Questionnaire QuestionnaireResponse RegulatedAuthorization RelatedPerson RequestGroup
    ResearchDefinition ResearchElementDefinition ResearchStudy ResearchSubject RiskAssessment
    Schedule SearchParameter ServiceRequest Slot Specimen SpecimenDefinition StructureDefinition
    StructureMap Subscription SubscriptionStatus SubscriptionTopic Substance SubstanceDefinition
    SupplyDelivery SupplyRequest Task TerminologyCapabilities TestReport TestScript ValueSet
    VerificationResult VisionPrescription
    """.split()  # noqa: SIM905 - one readable block rather than 141 quoted strings
)

# Limits on what a single error answer may hold, so a hostile resource cannot make the error
# itself large.
_MAX_ISSUES = 100
# No FHIR integer is wider than 64 bits and decimals beyond 40 digits are not meaningful; longer
# literals are refused before Python spends time converting them (CVE-2020-10735 class).
_MAX_NUMBER_LITERAL = 40

_TYPE_NAME = re.compile(r"[A-Z][A-Za-z]{0,63}")


def resource_types() -> frozenset[str]:
    """Every concrete FHIR resource type Égide accepts (Bundle included)."""
    return _RESOURCE_TYPES


# --------------------------------------------------------------------------------------------
# JSON parsing (RFC 8259)
# --------------------------------------------------------------------------------------------


class _RejectedError(ValueError):
    """Raised inside json.loads hooks; turned into BadRequest by parse_json."""


# A JSON string token (RFC 8259 section 7) or a bracket. Possessive quantifiers keep the scan
# linear on hostile input.
_TOKENS = re.compile(r'"(?:[^"\\]++|\\.)*+"|[\[\]{}]', re.DOTALL)
# A \u escape of a UTF-16 surrogate; only when one appears do we look for lone surrogates.
_OPENERS = frozenset("[{")
_CLOSERS = frozenset("]}")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _max_depth(text: str, limit: int) -> bool:
    """True when the brackets outside strings nest deeper than `limit`.

    Scans tokens instead of recursing, so a body of ten thousand `[` costs a linear scan, not
    a RecursionError. An unterminated string makes the scan count its brackets too, which can
    only over-estimate the depth (a refusal either way).
    """
    depth = 0
    for match in _TOKENS.finditer(text):
        lexeme = match.group()
        if lexeme in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        elif lexeme in _CLOSERS:
            depth -= 1
    return False


def _object_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            # The key is not echoed: keys are element names but could be anything.
            msg = "duplicate key in a JSON object"
            raise _RejectedError(msg)
        result[key] = value
    return result


def _parse_constant(_name: str) -> Any:
    msg = "NaN and Infinity are not valid JSON numbers"
    raise _RejectedError(msg)


def _parse_float(literal: str) -> float:
    if len(literal) > _MAX_NUMBER_LITERAL + 10:  # room for sign, point and exponent
        msg = "number literal too long"
        raise _RejectedError(msg)
    value = float(literal)
    if not math.isfinite(value):
        msg = "number out of range"
        raise _RejectedError(msg)
    return value


def _parse_int(literal: str) -> int:
    if len(literal.lstrip("-")) > _MAX_NUMBER_LITERAL:
        msg = "number literal too long"
        raise _RejectedError(msg)
    return int(literal)


def _has_lone_surrogate(value: Any) -> bool:
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def parse_json(body: bytes, *, max_depth: int = 64) -> dict[str, Any]:
    """Parse a request body as one strict JSON object.

    Refuses (BadRequest): invalid UTF-8 or a byte-order mark, malformed JSON (RFC 8259),
    a top level that is not an object, duplicate keys in any object, NaN/Infinity and numbers
    that overflow, number literals longer than 40 digits, escaped lone surrogates, and nesting
    deeper than `max_depth` (the top-level object is depth 1).
    """
    if not body:
        msg = "request body is empty"
        raise BadRequest(msg)
    try:
        text = body.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        msg = "request body is not valid UTF-8"
        raise BadRequest(msg) from None
    if text.startswith("\ufeff"):
        # RFC 8259 section 8.1: senders MUST NOT add a byte-order mark.
        msg = "request body starts with a byte-order mark"
        raise BadRequest(msg)
    if _max_depth(text, max_depth):
        msg = f"JSON nesting deeper than {max_depth} levels"
        raise BadRequest(msg)
    try:
        value = json.loads(
            text,
            object_pairs_hook=_object_hook,
            parse_constant=_parse_constant,
            parse_float=_parse_float,
            parse_int=_parse_int,
        )
    except _RejectedError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    except json.JSONDecodeError as exc:
        # exc.msg and the position carry no content from the body.
        msg = f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        raise BadRequest(msg) from None
    except (ValueError, RecursionError):
        msg = "malformed JSON"
        raise BadRequest(msg) from None
    if not isinstance(value, dict):
        msg = "the JSON body must be an object"
        raise BadRequest(msg)
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        msg = "malformed JSON: unpaired UTF-16 surrogate escape"
        raise BadRequest(msg)
    return value


# --------------------------------------------------------------------------------------------
# Element schema, derived once per type from the fhir.resources models
# --------------------------------------------------------------------------------------------

_Kind = Literal["bool", "int", "number", "string", "complex", "resource"]


@dataclass(frozen=True)
class _Element:
    """What the JSON of one element must look like."""

    is_list: bool
    kind: _Kind
    fhir_type: Any  # the fhir_core type whose model describes a complex element
    enum: frozenset[str] | None
    null_items: bool  # primitive arrays and their `_x` siblings may hold nulls (json.html)


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _classify(annotation: Any) -> tuple[_Kind, Any] | None:
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if annotation is bool:
        return "bool", None
    if annotation is int:
        return "int", None
    if annotation in (decimal.Decimal, float):
        return "number", None
    if annotation in (str, bytes, date, datetime, time, uuid.UUID):
        return "string", None
    origin = typing.get_origin(annotation)
    if (origin is typing.Union or origin is types.UnionType) and str in typing.get_args(
        annotation
    ):  # uri/url types: Union[AnyUrl, str]
        return "string", None
    if isinstance(annotation, type) and hasattr(annotation, "get_model_klass"):
        if annotation.__name__ == "ResourceType":
            return "resource", None
        return "complex", annotation
    return None


def _codes(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Required bindings whose value set the generated models list incompletely (they end the list
# with "+"): the full R4 value sets, from the R4 specification's valueset pages.
_OBSERVATION_STATUS = _codes(
    "registered preliminary final amended corrected cancelled entered-in-error unknown"
)
_FULL_ENUMS: dict[str, frozenset[str]] = {
    "Observation.status": _OBSERVATION_STATUS,  # valueset-observation-status.html
    "RiskAssessment.status": _OBSERVATION_STATUS,
    "DetectedIssue.status": _OBSERVATION_STATUS,
    # valueset-encounter-status.html
    "Encounter.status": _codes(
        "planned arrived triaged in-progress onleave finished cancelled entered-in-error unknown"
    ),
    # valueset-diagnostic-report-status.html
    "DiagnosticReport.status": _codes(
        "registered partial preliminary final amended corrected appended cancelled "
        "entered-in-error unknown"
    ),
    # valueset-device-statement-status.html
    "DeviceUseStatement.status": _codes(
        "active completed entered-in-error intended stopped on-hold"
    ),
    # valueset-task-status.html
    "Task.status": _codes(
        "draft requested received accepted rejected ready cancelled in-progress on-hold failed "
        "completed entered-in-error"
    ),
    # valueset-supplyrequest-status.html
    "SupplyRequest.status": _codes(
        "draft active suspended cancelled completed entered-in-error unknown"
    ),
}
_FULL_ENUMS["EncounterStatusHistory.status"] = _FULL_ENUMS["Encounter.status"]


def _enum(model: type[Any], key: str, field: Any) -> frozenset[str] | None:
    """The codes a required binding allows, when the model lists them completely."""
    full = _FULL_ENUMS.get(f"{model.__name__}.{key}")
    if full is not None:
        return full
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    values = extra.get("enum_values")
    if not isinstance(values, list) or not values:
        return None
    # Lists that end in "+" or "etc." are truncated, and the one of CapabilityStatement.format
    # is placeholder text (its binding is to MIME types): trust neither.
    if any(v in ("+", "etc.", "formats", "mime") for v in values):
        return None
    return frozenset(values)


_ELEMENTS_CACHE: dict[type[Any], dict[str, _Element]] = {}


def _elements(model: type[Any]) -> dict[str, _Element]:
    """The JSON keys a model accepts, keyed by their JSON name (alias); cached per model."""
    cached = _ELEMENTS_CACHE.get(model)
    if cached is not None:
        return cached
    result: dict[str, _Element] = {}
    for name, field in model.model_fields.items():
        if name == "fhir_comments":  # a library artefact, not a FHIR element
            continue
        annotation, _ = _strip_optional(field.annotation)
        is_list = typing.get_origin(annotation) in (list, typing.List)  # noqa: UP006
        null_items = False
        if is_list:
            annotation, null_items = _strip_optional(typing.get_args(annotation)[0])
        classified = _classify(annotation)
        if classified is None:
            continue
        kind, fhir_type = classified
        key = field.alias or name
        result[key] = _Element(is_list, kind, fhir_type, _enum(model, key, field), null_items)
    _ELEMENTS_CACHE[model] = result
    return result


def _model_of(fhir_type: Any) -> type[Any]:
    model: type[Any] = fhir_type.get_model_klass()
    return model


_EXPECTED = {
    "bool": "a JSON boolean",
    "int": "a JSON integer",
    "number": "a JSON number",
    "string": "a JSON string",
    "complex": "a JSON object",
    "resource": "a resource (JSON object)",
}


# --------------------------------------------------------------------------------------------
# Narrative safety (FHIR R4 narrative.html#security, invariants txt-1 and txt-2)
# --------------------------------------------------------------------------------------------

_XHTML_NS = "http://www.w3.org/1999/xhtml"
_FORBIDDEN_TAGS = frozenset(
    {
        "script", "style", "head", "body", "html", "form", "input", "button", "select",
        "textarea", "base", "link", "meta", "frame", "frameset", "iframe", "object", "applet",
        "embed", "svg", "math", "template", "noscript", "xlink",
    }
)  # fmt: skip
_URL_ATTRIBUTES = frozenset({"href", "src", "background", "cite", "longdesc", "usemap"})
_BAD_SCHEME = re.compile(r"^\s*(?:javascript|vbscript|data|file)\s*:", re.IGNORECASE)


class _NarrativeCheck(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self.first_tag: str | None = None
        self.first_attrs: dict[str, str | None] = {}
        self.has_text = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.first_tag is None:
            self.first_tag = tag
            self.first_attrs = dict(attrs)
        if tag in _FORBIDDEN_TAGS:
            self.problems.append(f"narrative contains a forbidden <{tag}> element")
        if tag == "img":
            self.has_text = True  # an image is content (txt-2)
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append("narrative contains an event-handler attribute")
            elif (
                name in _URL_ATTRIBUTES
                and value is not None
                # Entities are decoded by the parser, so "&#106;avascript:" is caught too.
                and _BAD_SCHEME.match(value.replace("\x00", ""))
            ):
                self.problems.append("narrative contains a script or data URL")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.has_text = True

    def handle_pi(self, data: str) -> None:  # noqa: ARG002
        self.problems.append("narrative contains a processing instruction")

    def unknown_decl(self, data: str) -> None:  # noqa: ARG002
        self.problems.append("narrative contains a markup declaration")


def _narrative_problems(div: str) -> list[str]:
    checker = _NarrativeCheck()
    checker.feed(div)
    checker.close()
    problems = list(dict.fromkeys(checker.problems))
    if not div.lstrip().startswith("<div") or checker.first_tag != "div":
        problems.insert(0, "narrative must be a single XHTML <div> element")
    elif checker.first_attrs.get("xmlns") != _XHTML_NS:
        problems.insert(0, "narrative <div> must declare the XHTML namespace")
    if not checker.has_text:
        problems.append("narrative has no content (txt-2)")
    return problems


# --------------------------------------------------------------------------------------------
# The structural walk
# --------------------------------------------------------------------------------------------


def _walk(data: dict[str, Any], resource_type: str) -> list[Issue]:
    """Check keys, JSON types, cardinality, required codes and narratives, breadth first.

    Iterative, so resources are checked without recursion whatever their depth.
    """
    issues: list[Issue] = []
    queue: deque[tuple[dict[str, Any], type[Any], str, bool]] = deque(
        [(data, get_fhir_model_class(resource_type), resource_type, True)]
    )
    while queue and len(issues) < _MAX_ISSUES:
        obj, model, path, is_resource = queue.popleft()
        elements = _elements(model)
        for key, value in obj.items():
            if is_resource and key == "resourceType":
                continue
            location = f"{path}.{key}"
            element = elements.get(key)
            if element is None:
                issues.append(Issue("unknown element", location, "structure"))
                continue
            if value is None:
                issues.append(Issue("null is not allowed here", location, "structure"))
                continue
            if element.is_list != isinstance(value, list):
                what = "an array" if element.is_list else "a single value, not an array"
                issues.append(Issue(f"expected {what}", location, "structure"))
                continue
            items = enumerate(value) if element.is_list else [(None, value)]
            for index, item in items:
                item_location = location if index is None else f"{location}[{index}]"
                if item is None:
                    if not element.null_items:
                        issues.append(Issue("null is not allowed here", item_location, "structure"))
                    continue
                child = _check_item(element, item, item_location, issues)
                if child is not None:
                    queue.append(child)
            if model.__name__ == "Narrative" and key == "div" and isinstance(value, str):
                issues.extend(Issue(p, location, "value") for p in _narrative_problems(value))
    return issues[:_MAX_ISSUES]


def _check_item(
    element: _Element, item: Any, location: str, issues: list[Issue]
) -> tuple[dict[str, Any], type[Any], str, bool] | None:
    kind = element.kind
    ok = {
        "bool": isinstance(item, bool),
        "int": isinstance(item, int) and not isinstance(item, bool),
        "number": isinstance(item, int | float) and not isinstance(item, bool),
        "string": isinstance(item, str),
        "complex": isinstance(item, dict),
        "resource": isinstance(item, dict),
    }[kind]
    if not ok:
        issues.append(Issue(f"wrong type: expected {_EXPECTED[kind]}", location, "structure"))
        return None
    if element.enum is not None and item not in element.enum:
        issues.append(Issue("code is not in the required value set", location, "code-invalid"))
        return None
    if kind == "complex":
        return item, _model_of(element.fhir_type), location, False
    if kind == "resource":
        inner_type = item.get("resourceType")
        if not isinstance(inner_type, str):
            issues.append(Issue("resourceType is missing", f"{location}.resourceType", "required"))
            return None
        if inner_type not in _RESOURCE_TYPES:
            issues.append(Issue("unknown resource type", f"{location}.resourceType", "value"))
            return None
        return item, get_fhir_model_class(inner_type), location, True
    return None


# --------------------------------------------------------------------------------------------
# pydantic errors -> Issues, without the input values
# --------------------------------------------------------------------------------------------

_KEY = re.compile(r"_?[A-Za-z][A-Za-z0-9]*")
_CHOICE_FIELDS = re.compile(r"\[([^\]]*)\]")
_SPEC_REGEX = re.compile(r"(Date|DateTime|Instant|Time|Decimal|Id|Uri|Url|Code|Oid|Uuid)\b")


def _location(resource_type: str, loc: tuple[int | str, ...]) -> str:
    path = resource_type
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _KEY.fullmatch(part) and part != "root":
            path += f".{part}"
    return path


def _choice_message(msg: str) -> str:
    match = _CHOICE_FIELDS.search(msg)
    names = re.findall(r"'(\w+)'", match.group(1)) if match else []
    prefix = ""
    if names:
        prefix = names[0]
        for name in names[1:]:
            while not name.startswith(prefix):
                prefix = prefix[:-1]
    choice = f"{prefix}[x]" if prefix else "a choice element"
    if "got multiple" in msg:
        return f"only one type of {choice} may be present"
    return f"{choice} is required"


def _issue_for(resource_type: str, error: Any) -> Issue:
    kind: str = error.get("type", "")
    location = _location(resource_type, tuple(error.get("loc", ())))
    msg: str = str(error.get("msg", ""))
    if kind == "extra_forbidden":
        return Issue("unknown element", location, "structure")
    if kind in {"missing", "model_field_validation.missing"}:
        return Issue("required element is missing", location, "required")
    if "field value" in msg and "list" in msg:
        return Issue(_choice_message(msg), location, "structure")
    if kind == "string_pattern_mismatch":
        return Issue("value does not have the format this element requires", location, "value")
    if kind in {"less_than", "less_than_equal", "greater_than", "greater_than_equal"}:
        return Issue("number is out of range", location, "value")
    if kind.startswith(("string_too", "too_")):
        return Issue("value length is out of bounds", location, "value")
    if kind.endswith(("_type", "_parsing")):
        return Issue("wrong type", location, "structure")
    if kind == "value_error":
        spec = _SPEC_REGEX.search(msg)
        if "timezone" in msg:
            return Issue("a time must include a timezone", location, "value")
        if spec:
            return Issue(f"not a valid FHIR {spec.group(1).lower()}", location, "value")
    return Issue("invalid value", location, "invalid")


def _model_issues(resource_type: str, data: dict[str, Any]) -> list[Issue]:
    """What the R4B model finds: formats, ranges, required elements, choice rules."""
    model = get_fhir_model_class(resource_type)
    try:
        model.model_validate(data)
    except pydantic.ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        issues = list(dict.fromkeys(_issue_for(resource_type, e) for e in errors))
        return issues[:_MAX_ISSUES]
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError):
        # The library can fail outside pydantic's error reporting on input the structural
        # walk did not foresee; it is still the client's input that is wrong.
        return [Issue("resource could not be validated", resource_type, "structure")]
    return []


def _iter_type_problem(
    data: Any, expected_type: str | None
) -> Iterator[tuple[type[BadRequest], str, Issue]]:
    if not isinstance(data, dict):
        yield BadRequest, "a resource must be a JSON object", Issue("not an object")
        return
    resource_type = data.get("resourceType")
    if resource_type is None:
        issue = Issue("resourceType is missing", "resourceType", "required")
        yield BadRequest, "resourceType is missing", issue
        return
    if not isinstance(resource_type, str) or resource_type not in _RESOURCE_TYPES:
        shown = (
            f" '{resource_type}'"
            if isinstance(resource_type, str) and _TYPE_NAME.fullmatch(resource_type)
            else ""
        )
        message = f"unknown resource type{shown}"
        yield BadRequest, message, Issue(message, "resourceType", "not-supported")
        return
    if expected_type is not None and resource_type != expected_type:
        message = f"resourceType {resource_type} does not match the expected type {expected_type}"
        yield BadRequest, message, Issue(message, "resourceType", "invalid")


def _json_copy(value: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a JSON object, iterative so depth cannot exhaust the stack."""
    result: dict[str, Any] = {}
    stack: list[tuple[Any, Any]] = [(value, result)]
    while stack:
        source, target = stack.pop()
        pairs = source.items() if isinstance(source, dict) else enumerate(source)
        for key, item in pairs:
            if isinstance(item, dict | list):
                child: Any = {} if isinstance(item, dict) else [None] * len(item)
                stack.append((item, child))
                target[key] = child
            else:
                target[key] = item
    return result


def validate_resource(data: dict[str, Any], *, expected_type: str | None = None) -> dict[str, Any]:
    """Validate one FHIR R4 resource and return it as a JSON-able dict.

    Raises BadRequest when `resourceType` is missing, unknown or differs from `expected_type`;
    Unprocessable with one Issue per bad element otherwise. What is returned is a deep copy of
    the input, which the checks above have proven to be FHIR JSON in normal form (known
    elements, exact JSON types, no nulls outside primitive arrays): the model's own
    serialisation is not used because it rewrites values (an instant's `.123` becomes
    `.123000`), and FHIR servers must keep what clients sent. Element names and primitive
    extensions (`_birthDate`) are therefore kept as they are.

    A Bundle is checked as a Bundle, entries' resources included; callers still validate each
    entry's resource on its own (with its expected type) before storing it.
    """
    for error_class, message, issue in _iter_type_problem(data, expected_type):
        raise error_class(message, [issue])
    resource_type: str = data["resourceType"]
    issues = _walk(data, resource_type)
    if not issues:
        issues = _model_issues(resource_type, data)
    if issues:
        raise Unprocessable(f"the {resource_type} resource is not valid FHIR R4", issues)
    return _json_copy(data)

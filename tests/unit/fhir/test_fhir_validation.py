"""Strict JSON parsing and FHIR R4 resource validation (egide.fhir.validation)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from fhir.resources.R4B import fhirtypes as ft
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from fhir_examples import EXAMPLES, example
from hypothesis import given, settings
from hypothesis import strategies as st

from egide.core.errors import BadRequest, Unprocessable
from egide.fhir.validation import parse_json, resource_types, validate_resource

# -- resource_types ---------------------------------------------------------------------------


def test_resource_types_matches_the_r4b_package() -> None:
    # Every fhirtypes name whose model is a concrete Resource, computed the slow way.
    found = set()
    for name in dir(ft):
        if not name.endswith("Type") or name.startswith("_"):
            continue
        try:
            model = get_fhir_model_class(name[:-4])
        except ValueError:
            continue
        if isinstance(model, type) and issubclass(model, Resource):
            found.add(name[:-4])
    assert resource_types() == found - {"Resource", "DomainResource"}


def test_resource_types_contents() -> None:
    types = resource_types()
    assert {"Patient", "Observation", "Bundle", "Claim", "Coverage", "ImagingStudy"} <= types
    assert "Resource" not in types
    assert "DomainResource" not in types
    assert "HumanName" not in types
    assert "CodeableConcept" not in types


# -- parse_json ---------------------------------------------------------------------------------


def test_parse_json_accepts_an_object() -> None:
    body = json.dumps(EXAMPLES["Patient"], ensure_ascii=False).encode()
    assert parse_json(body) == EXAMPLES["Patient"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "empty"),
        (b"{", "malformed"),
        (b'{"a": 1,}', "malformed"),
        (b"[1, 2]", "object"),
        (b'"text"', "object"),
        (b"null", "object"),
        (b'{"a": 1, "a": 2}', "duplicate"),
        (b'{"a": {"b": 1, "b": 1}}', "duplicate"),
        (b'{"a": [{"x": 1}, {"x": 2, "x": 3}]}', "duplicate"),
        (b'{"a": NaN}', "NaN"),
        (b'{"a": Infinity}', "NaN"),
        (b'{"a": -Infinity}', "NaN"),
        (b'{"a": 1e400}', "range"),
        (b'{"a": -1e999}', "range"),
        (b'{"a": ' + b"9" * 5000 + b"}", "too long"),
        (b'{"a": "\xff"}', "UTF-8"),
        (b'{"a": "\xed\xa0\x80"}', "UTF-8"),  # a surrogate encoded in UTF-8 is invalid
        (b'{"a": "\\ud800"}', "surrogate"),
        (b'{"\\udc00": 1}', "surrogate"),
        (b'\xef\xbb\xbf{"a": 1}', "byte-order mark"),
        (b'{"a": "line\nbreak"}', "malformed"),  # raw control character in a string
        (b"{'a': 1}", "malformed"),
    ],
)
def test_parse_json_refuses(body: bytes, fragment: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_json(body)
    assert fragment.lower() in caught.value.message.lower()


def test_parse_json_accepts_paired_surrogates_and_escapes() -> None:
    assert parse_json(b'{"a": "\\ud83d\\ude00 \\"\\\\"}') == {"a": '😀 "\\'}


def test_duplicate_key_message_does_not_echo_the_key() -> None:
    with pytest.raises(BadRequest) as caught:
        parse_json(b'{"Durand": 1, "Durand": 2}')
    assert "Durand" not in caught.value.message


def test_parse_json_depth_limit() -> None:
    nested = b'{"a":' * 63 + b"1" + b"}" * 63
    assert parse_json(nested, max_depth=64)
    deeper = b'{"a":' * 65 + b"1" + b"}" * 65
    with pytest.raises(BadRequest, match="nesting"):
        parse_json(deeper, max_depth=64)
    # Arrays count as well as objects.
    with pytest.raises(BadRequest, match="nesting"):
        parse_json(b'{"a":' + b"[" * 70 + b"]" * 70 + b"}")


@pytest.mark.parametrize("opener", [b"[", b'{"a":', b'{"a":['])
def test_parse_json_deep_nesting_is_refused_without_recursion_error(opener: bytes) -> None:
    body = b'{"x":' + opener * 10_000
    with pytest.raises(BadRequest, match="nesting"):
        parse_json(body)
    closed = b'{"x":' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    with pytest.raises(BadRequest, match="nesting"):
        parse_json(closed)


def test_brackets_inside_strings_do_not_count_towards_depth() -> None:
    text = "[" * 500 + '\\"{' * 100
    assert parse_json(json.dumps({"a": text}).encode(), max_depth=2) == {"a": text}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_parse_json_only_ever_raises_bad_request_on_bytes(body: bytes) -> None:
    try:
        result = parse_json(body)
    except BadRequest:
        return
    assert isinstance(result, dict)


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), _json_values, max_size=5))
def test_parse_json_round_trips_valid_json(value: dict[str, Any]) -> None:
    body = json.dumps(value).encode()
    assert parse_json(body) == json.loads(body)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet='{}[]",:\\ 0a1-eE.tfn', max_size=200))
def test_parse_json_only_raises_bad_request_on_json_like_text(text: str) -> None:
    with contextlib.suppress(BadRequest):
        parse_json(text.encode())


# -- validate_resource: valid examples -----------------------------------------------------------


@pytest.mark.parametrize("resource_type", sorted(EXAMPLES))
def test_each_example_validates_and_round_trips(resource_type: str) -> None:
    resource = example(resource_type)
    result = validate_resource(resource, expected_type=resource_type)
    assert result["resourceType"] == resource_type
    # What was sent is kept exactly (the instant's ".123" included), as a copy.
    assert result == EXAMPLES[resource_type]
    assert result is not resource
    result["resourceType"] = "changed"
    assert resource["resourceType"] == resource_type


def test_primitive_extensions_and_null_alignment_are_kept() -> None:
    resource = example("Patient")
    resource["name"][0]["given"] = ["Léa", None]
    resource["name"][0]["_given"] = [None, {"extension": [{"url": "http://x", "valueCode": "a"}]}]
    result = validate_resource(resource)
    assert result["name"][0]["given"] == ["Léa", None]
    assert result["name"][0]["_given"][1]["extension"][0]["valueCode"] == "a"
    assert result["_birthDate"] == EXAMPLES["Patient"]["_birthDate"]


def test_contained_resources_are_validated_and_kept() -> None:
    resource = example("Patient")
    resource["contained"] = [{"resourceType": "Organization", "id": "org", "name": "X"}]
    resource["managingOrganization"] = {"reference": "#org"}
    assert validate_resource(resource)["contained"][0]["name"] == "X"
    resource["contained"][0]["bogus"] = True
    with pytest.raises(Unprocessable) as caught:
        validate_resource(resource)
    assert caught.value.issues[0].location == "Patient.contained[0].bogus"


def test_safe_narrative_is_accepted() -> None:
    resource = example("Patient")
    resource["text"] = {
        "status": "generated",
        "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>Léa <b>Durand</b></p>'
        '<a href="https://example.org/x">lien</a></div>',
    }
    assert validate_resource(resource)["text"]["status"] == "generated"


# -- validate_resource: errors ---------------------------------------------------------------


def _issues(resource: dict[str, Any], **kwargs: Any) -> dict[str, tuple[str, str]]:
    with pytest.raises(Unprocessable) as caught:
        validate_resource(resource, **kwargs)
    return {i.location or "": (i.code, i.message) for i in caught.value.issues}


def test_resource_type_problems_are_bad_requests() -> None:
    with pytest.raises(BadRequest, match="resourceType is missing"):
        validate_resource({"id": "x"})
    with pytest.raises(BadRequest, match="unknown resource type"):
        validate_resource({"resourceType": "Patientx"})
    with pytest.raises(BadRequest, match="unknown resource type"):
        validate_resource({"resourceType": ["Patient"]})  # type: ignore[dict-item]
    for abstract in ("Resource", "DomainResource", "HumanName"):
        with pytest.raises(BadRequest, match="unknown resource type"):
            validate_resource({"resourceType": abstract})
    with pytest.raises(BadRequest, match="expected type"):
        validate_resource(example("Patient"), expected_type="Observation")
    with pytest.raises(BadRequest):
        validate_resource([1, 2])  # type: ignore[arg-type]


def test_unknown_resource_type_message_does_not_echo_odd_text() -> None:
    with pytest.raises(BadRequest) as caught:
        validate_resource({"resourceType": "<script>alert(1)</script>"})
    assert "script" not in caught.value.message


@pytest.mark.parametrize(
    ("mutate", "location", "code"),
    [
        (lambda r: r.update(foo=1), "Patient.foo", "structure"),
        (lambda r: r.update(fhir_comments="x"), "Patient.fhir_comments", "structure"),
        (lambda r: r.update(birthDate="1984-13-45"), "Patient.birthDate", "value"),
        (lambda r: r.update(birthDate=19840207), "Patient.birthDate", "structure"),
        (lambda r: r["name"][0].update(family=5), "Patient.name[0].family", "structure"),
        (lambda r: r["name"][0].update(given="Léa"), "Patient.name[0].given", "structure"),
        (lambda r: r.update(name={"family": "X"}), "Patient.name", "structure"),
        (lambda r: r.update(gender="f"), "Patient.gender", "code-invalid"),
        (lambda r: r.update(active="true"), "Patient.active", "structure"),
        (lambda r: r.update(active=1), "Patient.active", "structure"),
        (lambda r: r.update(active=None), "Patient.active", "structure"),
        (lambda r: r.update(multipleBirthInteger=2.5), "Patient.multipleBirthInteger", "structure"),
        (lambda r: r.update(multipleBirthInteger="2"), "Patient.multipleBirthInteger", "structure"),
        (lambda r: r.update(multipleBirthInteger=10**15), "Patient.multipleBirthInteger", "value"),
        (lambda r: r.update(multipleBirthBoolean=1), "Patient.multipleBirthBoolean", "structure"),
        (lambda r: r.update(id="has space"), "Patient.id", "value"),
        (lambda r: r["address"][0].update(city=["Lyon"]), "Patient.address[0].city", "structure"),
        (lambda r: r.update(maritalStatus='{"text": "x"}'), "Patient.maritalStatus", "structure"),
        (
            lambda r: r.update(contained=[{"id": "x"}]),
            "Patient.contained[0].resourceType",
            "required",
        ),
        (
            lambda r: r.update(contained=[{"resourceType": "Nope"}]),
            "Patient.contained[0].resourceType",
            "value",
        ),
        (lambda r: r.update(contained=["{}"]), "Patient.contained[0]", "structure"),
        (lambda r: r["identifier"].append(None), "Patient.identifier[1]", "structure"),
    ],
)
def test_invalid_patient_names_the_element(mutate: Any, location: str, code: str) -> None:
    resource = example("Patient")
    mutate(resource)
    issues = _issues(resource)
    assert location in issues, issues
    assert issues[location][0] == code


def test_observation_errors_name_nested_elements() -> None:
    resource = example("Observation")
    resource["valueQuantity"]["value"] = "61.5"
    assert _issues(resource)["Observation.valueQuantity.value"][0] == "structure"
    resource = example("Observation")
    del resource["status"]
    assert _issues(resource)["Observation.status"][0] == "required"
    resource = example("Observation")
    resource["status"] = "done"
    assert _issues(resource)["Observation.status"][0] == "code-invalid"
    resource = example("Observation")
    resource["effectiveDateTime"] = "2024-03-01T09:10:00"  # a time needs a timezone
    assert "Observation.effectiveDateTime" in _issues(resource)


def test_full_value_sets_replace_truncated_ones() -> None:
    for status in ("cancelled", "entered-in-error", "corrected", "unknown"):
        resource = example("Observation")
        resource["status"] = status
        assert validate_resource(resource)["status"] == status
    encounter = example("Encounter")
    encounter["status"] = "entered-in-error"
    assert validate_resource(encounter)["status"] == "entered-in-error"


def test_two_choice_types_are_refused() -> None:
    resource = example("Observation")
    resource["valueString"] = "61.5 kg"
    issues = _issues(resource)
    assert issues["Observation"] == ("structure", "only one type of value[x] may be present")


def test_messages_never_echo_values() -> None:
    secret = "Durand-1984-SECRET"
    resource = example("Patient")
    resource["birthDate"] = secret
    resource["gender"] = secret
    resource["id"] = secret + " x"
    resource["name"][0]["family"] = [secret]
    resource["telecom"] = [{"system": secret, "value": "x"}]
    with pytest.raises(Unprocessable) as caught:
        validate_resource(resource)
    text = repr(caught.value.issues) + caught.value.message
    assert secret not in text
    assert len(caught.value.issues) == 3
    resource = example("Patient")
    resource["id"] = secret + " x"  # passes the walk, fails in the model
    with pytest.raises(Unprocessable) as caught:
        validate_resource(resource)
    assert secret not in repr(caught.value.issues)
    resource = example("Patient")
    resource["birthDate"] = "1984-02-31"  # passes the walk, fails in the model
    with pytest.raises(Unprocessable) as caught:
        validate_resource(resource)
    assert "1984-02-31" not in repr(caught.value.issues)


@pytest.mark.parametrize(
    "div",
    [
        '<div xmlns="http://www.w3.org/1999/xhtml"><script>alert(1)</script>x</div>',
        '<div xmlns="http://www.w3.org/1999/xhtml"><img src="x.png" onerror="alert(1)"/></div>',
        '<div xmlns="http://www.w3.org/1999/xhtml"><a href="javascript:alert(1)">x</a></div>',
        '<div xmlns="http://www.w3.org/1999/xhtml"><a href="&#106;avascript:x">x</a></div>',
        '<div xmlns="http://www.w3.org/1999/xhtml"><iframe src="https://e.org"></iframe>x</div>',
        '<div xmlns="http://www.w3.org/1999/xhtml"><form>x</form></div>',
        '<div xmlns="http://www.w3.org/1999/xhtml">   </div>',
        "<div>no namespace</div>",
        "<p>not a div</p>",
        "plain text",
    ],
)
def test_unsafe_narrative_is_refused(div: str) -> None:
    resource = example("Patient")
    resource["text"] = {"status": "generated", "div": div}
    issues = _issues(resource)
    assert issues["Patient.text.div"][0] == "value"


def test_bundle_validates_its_entries_structurally() -> None:
    bundle = example("Bundle")
    bundle["entry"][0]["resource"]["name"][0]["family"] = 7
    issues = _issues(bundle)
    assert "Bundle.entry[0].resource.name[0].family" in issues
    bundle = example("Bundle")
    bundle["type"] = "nonsense"
    assert _issues(bundle)["Bundle.type"][0] == "code-invalid"


def test_issue_count_is_bounded() -> None:
    resource = example("Patient")
    for i in range(500):
        resource[f"x{i}"] = i
    with pytest.raises(Unprocessable) as caught:
        validate_resource(resource)
    assert 1 <= len(caught.value.issues) <= 100


_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
_junk = st.recursive(
    _scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=12), c, max_size=3),
    max_leaves=15,
)
_patient_keys = st.sampled_from(
    ["name", "gender", "birthDate", "identifier", "telecom", "address", "contained", "active",
     "text", "_birthDate", "deceasedBoolean", "deceasedDateTime", "link", "meta", "extension"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_patient_keys, _junk, max_size=5))
def test_validate_resource_only_raises_egide_errors_on_junk(fields: dict[str, Any]) -> None:
    resource = {"resourceType": "Patient", **fields}
    try:
        result = validate_resource(resource)
    except (BadRequest, Unprocessable):  # anything else escapes and fails the test
        return
    assert result["resourceType"] == "Patient"
    json.dumps(result)  # JSON-able

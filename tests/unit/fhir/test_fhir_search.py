"""Search parameters, index extraction and query parsing (egide.fhir.search)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fhir_examples import example
from hypothesis import given
from hypothesis import strategies as st

from egide.core.errors import BadRequest
from egide.fhir.search import (
    SEARCH_PARAMETERS,
    DateValue,
    IndexValue,
    ReferenceValue,
    SortKey,
    StringValue,
    TokenValue,
    date_range,
    extract_index_values,
    parse_search_query,
)
from egide.fhir.validation import resource_types


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


# -- the table ---------------------------------------------------------------------------------


def test_required_parameters_exist_with_the_right_types() -> None:
    expected = {
        "Patient": {"identifier", "name", "family", "given", "birthdate", "gender"},
        "Practitioner": {"identifier", "name", "family", "given"},
        "PractitionerRole": {"practitioner", "organization", "identifier"},
        "Organization": {"identifier", "name"},
        "Encounter": {"patient", "subject", "date", "status", "identifier"},
        "EpisodeOfCare": {"patient", "status", "date"},
        "CareTeam": {"patient", "subject", "status", "category"},
        "Appointment": {"patient", "actor", "date", "status"},
        "Observation": {"patient", "subject", "code", "date", "status", "category", "encounter",
                        "identifier"},
        "Condition": {"patient", "subject", "code", "category", "encounter", "identifier"},
        "AllergyIntolerance": {"patient", "code"},
        "MedicationRequest": {"patient", "subject", "code", "status", "encounter"},
        "Procedure": {"patient", "subject", "code", "date", "status", "encounter"},
        "Immunization": {"patient", "date", "status", "vaccine-code"},
        "DiagnosticReport": {"patient", "subject", "code", "date", "status", "category",
                             "encounter"},
        "DocumentReference": {"patient", "subject", "type", "date", "status", "category",
                              "encounter"},
        "Consent": {"patient", "status", "category", "date"},
        "Provenance": {"patient", "target"},
    }  # fmt: skip
    for resource_type, names in expected.items():
        assert names <= set(SEARCH_PARAMETERS[resource_type]), resource_type
    assert set(SEARCH_PARAMETERS) <= resource_types()


def test_secret_flags_follow_the_contract() -> None:
    for table in SEARCH_PARAMETERS.values():
        for name, param in table.items():
            assert param.name == name
            if param.type in ("token", "string"):
                assert param.secret, name
            elif param.type == "reference":
                assert not param.secret, name
            elif param.type == "date":
                assert param.secret == (name == "birthdate"), name
            else:
                pytest.fail(f"unexpected type {param.type}")
    assert SEARCH_PARAMETERS["Patient"]["birthdate"].secret


# -- dates ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("2024", _utc(2024, 1, 1), _utc(2025, 1, 1)),
        ("2024-02", _utc(2024, 2, 1), _utc(2024, 3, 1)),
        ("2024-12", _utc(2024, 12, 1), _utc(2025, 1, 1)),
        ("2024-02-29", _utc(2024, 2, 29), _utc(2024, 3, 1)),
        ("2024-03-01T09:10", _utc(2024, 3, 1, 9, 10), _utc(2024, 3, 1, 9, 11)),
        ("2024-03-01T09:10:05Z", _utc(2024, 3, 1, 9, 10, 5), _utc(2024, 3, 1, 9, 10, 6)),
        ("2024-03-01T09:10:05+01:00", _utc(2024, 3, 1, 8, 10, 5), _utc(2024, 3, 1, 8, 10, 6)),
        ("2024-03-01T00:30:00-05:30", _utc(2024, 3, 1, 6, 0), _utc(2024, 3, 1, 6, 0, 1)),
        ("2024-03-01T09:10:05.5Z", _utc(2024, 3, 1, 9, 10, 5, 500000),
         _utc(2024, 3, 1, 9, 10, 5, 600000)),
        ("2024-03-01T09:10:05.123456789Z", _utc(2024, 3, 1, 9, 10, 5, 123456),
         _utc(2024, 3, 1, 9, 10, 5, 123457)),
        ("2024-03-01T09:10:05", _utc(2024, 3, 1, 9, 10, 5), _utc(2024, 3, 1, 9, 10, 6)),
        ("9999", _utc(9999, 1, 1), datetime.max.replace(tzinfo=UTC)),
    ],
)  # fmt: skip
def test_date_range_precision(text: str, low: datetime, high: datetime) -> None:
    assert date_range(text) == (low, high)


@pytest.mark.parametrize(
    "text",
    ["", "24", "2024-13", "2023-02-29", "2024-02-30", "2024-1-1", "2024-01-01T25:00:00Z",
     "2024-01-01T10:00:00+15:00", "0000", "2024-01-01T10", "2024-01-01 10:00:00", "soon",
     "2024-01-01T10:00:00ZZ", "２０２４"],
)  # fmt: skip
def test_date_range_rejects(text: str) -> None:
    assert date_range(text) is None


@given(st.datetimes(timezones=st.just(UTC)))
def test_date_range_second_precision_contains_the_instant(moment: datetime) -> None:
    text = moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")
    bounds = date_range(text)
    if bounds is None:  # the last second of year 9999 cannot have an exclusive end
        assert moment.year == 9999
        return
    low, high = bounds
    assert low <= moment < high
    assert high - low == timedelta(seconds=1)


# -- extraction ----------------------------------------------------------------------------------


def _values(resource_type: str, param: str) -> list[IndexValue]:
    values = extract_index_values(example(resource_type))
    return [v for v in values if v.param == param]


def test_patient_index_values() -> None:
    assert _values("Patient", "identifier") == [
        IndexValue("identifier", "token", system="urn:oid:1.2.250.1.213.1.4.8",
                   code="1840275123456")
    ]  # fmt: skip
    assert {v.text for v in _values("Patient", "name")} == {"Durand", "Léa", "Marie"}
    assert [v.text for v in _values("Patient", "family")] == ["Durand"]
    assert [v.text for v in _values("Patient", "given")] == ["Léa", "Marie"]
    assert _values("Patient", "gender") == [IndexValue("gender", "token", code="female")]
    (birth,) = _values("Patient", "birthdate")
    assert (birth.low, birth.high, birth.text) == (_utc(1984, 2, 7), _utc(1984, 2, 8),
                                                   "1984-02-07")  # fmt: skip


def test_observation_index_values() -> None:
    values = extract_index_values(example("Observation"))
    by_param = {v.param: v for v in values}
    assert by_param["patient"] == IndexValue("patient", "reference", ref_type="Patient",
                                             ref_id="p1")  # fmt: skip
    assert by_param["subject"].ref_id == "p1"
    assert by_param["encounter"] == IndexValue("encounter", "reference", ref_type="Encounter",
                                               ref_id="e1")  # fmt: skip
    assert by_param["code"] == IndexValue("code", "token", system="http://loinc.org",
                                          code="29463-7")  # fmt: skip
    assert by_param["status"] == IndexValue("status", "token", code="final")
    assert by_param["category"].code == "vital-signs"
    assert (by_param["date"].low, by_param["date"].high) == (
        _utc(2024, 3, 1, 8, 10),
        _utc(2024, 3, 1, 8, 10, 1),
    )


def test_choice_types_and_periods() -> None:
    obs = example("Observation")
    del obs["effectiveDateTime"]
    obs["effectivePeriod"] = {"start": "2024-01-01", "end": "2024-01-31"}
    (date,) = [v for v in extract_index_values(obs) if v.param == "date"]
    assert (date.low, date.high, date.text) == (_utc(2024, 1, 1), _utc(2024, 2, 1), None)
    obs["effectivePeriod"] = {"start": "2024-01-01"}
    (date,) = [v for v in extract_index_values(obs) if v.param == "date"]
    assert (date.low, date.high) == (_utc(2024, 1, 1), None)
    del obs["effectivePeriod"]
    obs["effectiveInstant"] = "2024-01-01T10:00:00.000Z"
    (date,) = [v for v in extract_index_values(obs) if v.param == "date"]
    assert date.low == _utc(2024, 1, 1, 10)
    (proc_date,) = [v for v in extract_index_values(example("Procedure")) if v.param == "date"]
    assert (proc_date.low, proc_date.high) == (_utc(2023, 11, 20, 8), _utc(2023, 11, 20, 9, 15, 1))


def test_reference_extraction_keeps_relative_references_of_the_right_type() -> None:
    obs = example("Observation")
    obs["subject"] = {"reference": "Group/g1"}
    values = extract_index_values(obs)
    assert not [v for v in values if v.param == "patient"]  # patient targets Patient only
    assert [v.ref_type for v in values if v.param == "subject"] == ["Group"]
    for ref in ("https://elsewhere.org/fhir/Patient/p1", "urn:uuid:1", "#c", "Patient/bad id"):
        obs["subject"] = {"reference": ref}
        assert not [v for v in extract_index_values(obs) if v.param == "subject"], ref
    appointment = extract_index_values(example("Appointment"))
    assert [(v.param, v.ref_type, v.ref_id) for v in appointment if v.type == "reference"] == [
        ("patient", "Patient", "p1"),
        ("actor", "Patient", "p1"),
        ("actor", "Practitioner", "dr1"),
    ]


def test_extraction_ignores_unknown_types_and_garbage() -> None:
    assert extract_index_values({"resourceType": "Basic"}) == []
    assert extract_index_values({"resourceType": 5}) == []  # type: ignore[dict-item]
    weird = {"resourceType": "Patient", "name": "x", "gender": 5, "birthDate": "1984-02-31",
             "identifier": [{"system": 1, "value": "v"}, "junk", None]}  # fmt: skip
    values = extract_index_values(weird)
    assert IndexValue("identifier", "token", system=None, code="v") in values
    assert not [v for v in values if v.param in ("gender", "birthdate")]


# -- query parsing -------------------------------------------------------------------------------


def test_token_parsing() -> None:
    query = parse_search_query(
        "Observation",
        [("code", "http://loinc.org|29463-7,|local,8302-2"), ("status", "final")],
    )
    code, status = query.criteria
    assert code.values == (
        TokenValue("http://loinc.org", "29463-7", system_given=True),
        TokenValue(None, "local", system_given=True),
        TokenValue(None, "8302-2", system_given=False),
    )
    assert status.values == (TokenValue(None, "final", system_given=False),)
    escaped = parse_search_query("Patient", [("identifier", r"urn:x|a\,b\|c")])
    assert escaped.criteria[0].values == (TokenValue("urn:x", "a,b|c", system_given=True),)


@pytest.mark.parametrize("value", ["a|b|c", "urn:x|", "a,,b", "", ","])
def test_token_errors(value: str) -> None:
    with pytest.raises(BadRequest, match="identifier"):
        parse_search_query("Patient", [("identifier", value)])


def test_string_parsing_and_modifiers() -> None:
    query = parse_search_query(
        "Patient", [("family", "Dur"), ("given:exact", "Léa"), ("name:contains", "ura")]
    )
    family, given, name = query.criteria
    assert family.values == (StringValue("Dur", exact=False, contains=False),)
    assert (given.modifier, given.values) == (
        "exact",
        (StringValue("Léa", exact=True, contains=False),),
    )
    assert (name.modifier, name.values) == (
        "contains",
        (StringValue("ura", exact=False, contains=True),),
    )
    with pytest.raises(BadRequest, match="modifier"):
        parse_search_query("Patient", [("family:missing", "true")])
    with pytest.raises(BadRequest, match="modifier"):
        parse_search_query("Patient", [("gender:not", "male")])


def test_date_parsing() -> None:
    query = parse_search_query("Observation", [("date", "ge2024-01"), ("date", "lt2024-02-15")])
    assert [c.values for c in query.criteria] == [
        (DateValue("ge", _utc(2024, 1, 1), _utc(2024, 2, 1)),),
        (DateValue("lt", _utc(2024, 2, 15), _utc(2024, 2, 16)),),
    ]
    (plain,) = parse_search_query("Patient", [("birthdate", "1984")]).criteria
    assert plain.values == (DateValue("eq", _utc(1984, 1, 1), _utc(1985, 1, 1)),)
    for prefix in ("eq", "ne", "lt", "gt", "le", "ge", "sa", "eb", "ap"):
        (crit,) = parse_search_query("Encounter", [("date", prefix + "2024")]).criteria
        assert crit.values[0].prefix == prefix  # type: ignore[union-attr]


@pytest.mark.parametrize("value", ["xx2024", "2024-13", "yesterday", "ge", "2024-01-01T10",
                                   "gte2024", "2024/01/01", "ge 2024"])  # fmt: skip
def test_date_errors(value: str) -> None:
    with pytest.raises(BadRequest, match="date"):
        parse_search_query("Observation", [("date", value)])


def test_reference_parsing() -> None:
    query = parse_search_query(
        "Observation",
        [
            ("patient", "123"),
            ("subject", "Patient/456,Group/g1,https://x.org/fhir/Patient/789"),
            ("subject:Patient", "abc"),
            ("subject", "bare"),
        ],
    )
    patient, subject, typed, bare = query.criteria
    assert patient.values == (ReferenceValue("Patient", "123"),)
    assert subject.values == (
        ReferenceValue("Patient", "456"),
        ReferenceValue("Group", "g1"),
        ReferenceValue("Patient", "789"),
    )
    assert (typed.modifier, typed.values) == (None, (ReferenceValue("Patient", "abc"),))
    assert bare.values == (ReferenceValue(None, "bare"),)


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("patient", "Practitioner/1", "does not allow"),
        ("subject:Patient", "Group/1", "does not allow"),
        ("patient:Group", "1", "modifier"),
        ("subject:Nope", "1", "modifier"),
        ("subject", "bad id!", "expected an id"),
        ("subject", "urn:uuid:1", "expected an id"),
        ("subject.name", "Durand", "chained"),
        ("subject:Patient.name", "Durand", "chained"),
        ("_has:Observation:patient:code", "x", "chained"),
    ],
)
def test_reference_errors(name: str, value: str, fragment: str) -> None:
    with pytest.raises(BadRequest, match=fragment):
        parse_search_query("Observation", [(name, value)])


def test_comma_is_or_and_repetition_is_and() -> None:
    query = parse_search_query("Observation", [("status", "final,amended"), ("status", "final")])
    assert [len(c.values) for c in query.criteria] == [2, 1]


def test_result_parameters() -> None:
    query = parse_search_query(
        "Patient",
        [("_id", "a,b"), ("_lastUpdated", "ge2024"), ("_lastUpdated", "lt2025"),
         ("_count", "10"), ("_offset", "40"), ("_sort", "-_lastUpdated,_id"),
         ("_total", "accurate"), ("_format", "json"), ("_pretty", "true")],
    )  # fmt: skip
    assert query.resource_type == "Patient"
    assert query.ids == ("a", "b")
    assert [v.prefix for v in query.last_updated] == ["ge", "lt"]
    assert (query.count, query.offset, query.total) == (10, 40, "accurate")
    assert query.sort == (
        SortKey("_lastUpdated", descending=True),
        SortKey("_id", descending=False),
    )
    assert query.criteria == ()
    default = parse_search_query("Patient", [], default_count=20, max_count=500)
    assert (default.count, default.offset, default.ids, default.sort) == (20, 0, (), ())
    assert parse_search_query("Patient", [("_count", "100000")], max_count=500).count == 500
    assert parse_search_query("Patient", [("_count", "0")]).count == 0
    assert parse_search_query("Patient", [], default_count=50, max_count=10).count == 10
    assert parse_search_query("Encounter", [("_sort", "date")]).sort == (
        SortKey("date", descending=False),
    )


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ([("_count", "-1")], "_count"),
        ([("_count", "ten")], "_count"),
        ([("_count", "1.5")], "_count"),
        ([("_count", "１０")], "_count"),
        ([("_count", "1"), ("_count", "2")], "only once"),
        ([("_offset", "-5")], "_offset"),
        ([("_offset", "99999999999")], "_offset"),
        ([("_id", "a"), ("_id", "b")], "only once"),
        ([("_id", "bad id")], "_id"),
        ([("_lastUpdated", "ge2024,lt2025")], "_lastUpdated"),
        ([("_lastUpdated", "banana")], "_lastUpdated"),
        ([("_total", "maybe")], "_total"),
        ([("_sort", "family")], "_sort"),
        ([("_sort", "birthdate")], "_sort"),
        ([("_summary", "true")], "_summary"),
        ([("_elements", "name")], "_elements"),
        ([("_include", "Patient:organization")], "_include"),
        ([("_id:not", "a")], "modifier"),
        ([("address", "Lyon")], "unknown search parameter 'address' for Patient"),
        ([("Dupont Léa", "1")], "unknown search parameter for Patient"),
        ([("name", "x" * 5000)], "too long"),
        ([("gender", "male")] * 51, "more than 50"),
        ([("name", ",".join(["a"] * 101))], "more than 100"),
    ],
)
def test_query_errors(params: list[tuple[str, str]], fragment: str) -> None:
    with pytest.raises(BadRequest, match=fragment):
        parse_search_query("Patient", params)


def test_unknown_resource_type_and_types_without_parameters() -> None:
    with pytest.raises(BadRequest, match="unknown resource type"):
        parse_search_query("Nope", [])
    query = parse_search_query("Claim", [("_id", "c1")])
    assert query.ids == ("c1",)
    with pytest.raises(BadRequest, match="unknown search parameter"):
        parse_search_query("Claim", [("patient", "1")])


_names = st.sampled_from(["name", "gender", "birthdate", "identifier", "_count", "_id",
                          "_lastUpdated", "_sort", "family:exact", "x", "_offset"])  # fmt: skip


@given(st.lists(st.tuples(_names | st.text(max_size=10), st.text(max_size=30)), max_size=6))
def test_query_parsing_only_raises_bad_request(params: list[tuple[str, str]]) -> None:
    try:
        query = parse_search_query("Patient", params)
    except BadRequest:
        return
    assert 0 <= query.count <= 500

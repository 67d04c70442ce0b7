"""`_include` / `_revinclude` and Patient `$everything` parameter parsing (FHIR R4 search
3.1.1.5.4, operation-patient-everything.html).

What a search may pull in must be exactly the declared reference parameters: `:iterate` and
`*` would let one request walk the whole graph, and a silently ignored or misread include would
hide a client's mistake. Every refusal is a BadRequest (400 OperationOutcome at the API).
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from egide.core.errors import BadRequest
from egide.fhir.capability import capability_statement
from egide.fhir.search import (
    SEARCH_PARAMETERS,
    Include,
    include_targets,
    parse_everything_query,
    parse_search_query,
)


def test_include_and_revinclude_are_parsed() -> None:
    query = parse_search_query(
        "Observation",
        [
            ("_include", "Observation:subject"),
            ("_include", "Observation:performer:CareTeam"),
            ("_revinclude", "Provenance:target"),
            ("code", "8867-4"),
        ],
    )
    assert query.includes == (
        Include("Observation", "subject", None, reverse=False),
        Include("Observation", "performer", "CareTeam", reverse=False),
        Include("Provenance", "target", None, reverse=True),
    )
    assert [c.param for c in query.criteria] == ["code"]
    assert str(query.includes[1]) == "_include=Observation:performer:CareTeam"


def test_repeated_includes_count_once() -> None:
    query = parse_search_query(
        "Patient", [("_revinclude", "Observation:subject")] * 2 + [("_count", "5")]
    )
    assert query.includes == (Include("Observation", "subject", None, reverse=True),)
    assert query.count == 5


def test_include_targets() -> None:
    assert include_targets(Include("Observation", "subject", None, reverse=False)) is None
    assert include_targets(Include("Observation", "encounter", None, reverse=False)) == (
        "Encounter",
    )
    assert include_targets(Include("Observation", "subject", "Patient", reverse=False)) == (
        "Patient",
    )
    # A reverse include adds resources of its source type only.
    assert include_targets(Include("Observation", "subject", None, reverse=True)) == (
        "Observation",
    )


@pytest.mark.parametrize(
    ("resource_type", "params", "fragment"),
    [
        ("Observation", [("_include:iterate", "Observation:subject")], "iterate"),
        ("Observation", [("_include:recurse", "Observation:subject")], "recurse"),
        ("Patient", [("_revinclude:iterate", "Observation:subject")], "iterate"),
        ("Observation", [("_include:missing", "Observation:subject")], "modifier"),
        ("Observation", [("_include", "*")], "wildcard"),
        ("Observation", [("_include", "Observation:*")], "wildcard"),
        ("Patient", [("_revinclude", "*")], "wildcard"),
        ("Observation", [("_include", "Observation")], "SourceType:param"),
        ("Observation", [("_include", "Observation:")], "SourceType:param"),
        ("Observation", [("_include", ":subject")], "SourceType:param"),
        ("Observation", [("_include", "Observation:subject:Patient:x")], "SourceType:param"),
        ("Observation", [("_include", "Observation:subject,Observation:encounter")], "repeat"),
        ("Observation", [("_include", "Nope:subject")], "unknown source type 'Nope'"),
        ("Observation", [("_include", "Observation:nope")], "no reference search parameter"),
        # A token parameter is not a reference: nothing to follow.
        ("Observation", [("_include", "Observation:code")], "no reference search parameter"),
        ("Observation", [("_include", "Observation:encounter:Patient")], "cannot reference"),
        ("Observation", [("_include", "Observation:subject:Nope")], "cannot reference"),
        # `_include` follows the searched type's own references (no :iterate).
        ("Patient", [("_include", "Observation:subject")], "source type must be"),
        ("Patient", [("_revinclude", "Observation:encounter")], "cannot reference Patient"),
        ("Patient", [("_revinclude", "Observation:subject:Group")], "cannot reference Patient"),
        ("Observation", [("_include", "Observation:subject" + "x" * 2000)], "too long"),
        (
            "Observation",
            [("_include", "Observation:subject:" + t) for t in sorted(SEARCH_PARAMETERS)[:11]],
            "more than 10",
        ),
    ],
)
def test_malformed_includes_are_refused(
    resource_type: str, params: list[tuple[str, str]], fragment: str
) -> None:
    with pytest.raises(BadRequest, match=fragment):
        parse_search_query(resource_type, params)


def test_error_messages_do_not_echo_arbitrary_text() -> None:
    with pytest.raises(BadRequest) as caught:
        parse_search_query("Observation", [("_include", "Observation:<script>")])
    assert "<script>" not in caught.value.message


@given(st.text(max_size=40))
def test_include_parsing_only_raises_bad_request(raw: str) -> None:
    for name in ("_include", "_revinclude", "_include:iterate"):
        try:
            query = parse_search_query("Observation", [(name, raw)])
        except BadRequest:
            continue
        for include in query.includes:
            param = SEARCH_PARAMETERS[include.source_type][include.param]
            assert param.type == "reference"


def test_capability_statement_lists_exactly_the_parseable_includes() -> None:
    statement = capability_statement(
        base_url="https://example.org/fhir",
        software_version="test",
        resource_types=["Observation", "Patient", "Encounter"],
        now=dt.datetime(2026, 3, 2, tzinfo=dt.UTC),
    )
    by_type = {r["type"]: r for r in statement["rest"][0]["resource"]}
    for resource_type, resource in by_type.items():
        for value in resource.get("searchInclude", []):
            query = parse_search_query(resource_type, [("_include", value)])
            assert query.includes[0].source_type == resource_type
        for value in resource.get("searchRevInclude", []):
            parse_search_query(resource_type, [("_revinclude", value)])
    assert "Observation:performer" in by_type["Observation"]["searchInclude"]
    assert "Observation:subject" in by_type["Patient"]["searchRevInclude"]
    assert "Observation:encounter" not in by_type["Patient"]["searchRevInclude"]
    assert "Observation:encounter" in by_type["Encounter"]["searchRevInclude"]
    assert [o["name"] for o in by_type["Patient"]["operation"]] == ["everything"]
    assert "operation" not in by_type["Observation"]


def test_everything_parameters() -> None:
    query = parse_everything_query(
        [
            ("_type", "Observation,Encounter,Observation"),
            ("_since", "2026-01-31T12:00:00+01:00"),
            ("_count", "7"),
            ("_offset", "14"),
            ("_format", "json"),
        ]
    )
    assert query.types == ("Observation", "Encounter")
    assert query.since == dt.datetime(2026, 1, 31, 11, 0, tzinfo=dt.UTC)
    assert (query.count, query.offset) == (7, 14)
    default = parse_everything_query([], default_count=30, max_count=10)
    assert (default.types, default.since, default.count, default.offset) == (None, None, 10, 0)


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ([("start", "2026-01-01")], "care dates"),
        ([("end", "2026-01-01")], "care dates"),
        ([("_type", "Nope")], "unknown resource type 'Nope'"),
        ([("_type", "Observation,")], "empty value"),
        ([("_since", "2026-01-31")], "_since"),  # a date, not an instant
        ([("_since", "2026-01-31T12:00:00")], "_since"),  # no timezone
        ([("_since", "yesterday")], "_since"),
        ([("_count", "-1")], "_count"),
        ([("_offset", "99999999999")], "_offset"),
        ([("_count", "1"), ("_count", "2")], "only once"),
        ([("patient", "x")], "unknown parameter 'patient'"),
        ([("_include", "Patient:link")], "unknown parameter '_include'"),
    ],
)
def test_everything_parameter_errors(params: list[tuple[str, str]], fragment: str) -> None:
    with pytest.raises(BadRequest, match=fragment):
        parse_everything_query(params)

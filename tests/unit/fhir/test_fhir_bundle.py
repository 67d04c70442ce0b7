"""Bundles, OperationOutcome and the CapabilityStatement (egide.fhir bundle/outcome/capability)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fhir_examples import example
from hypothesis import given
from hypothesis import strategies as st

from egide.core.errors import BadRequest, Conflict, Issue, NotFound, Unprocessable
from egide.fhir.bundle import (
    BundleEntryRequest,
    EntryResponse,
    HistoryInfo,
    batch_response,
    format_instant,
    history_bundle,
    parse_bundle_request,
    searchset,
    transaction_order,
    transaction_response,
)
from egide.fhir.capability import capability_statement
from egide.fhir.outcome import informational, operation_outcome, outcome_for
from egide.fhir.search import SEARCH_PARAMETERS
from egide.fhir.validation import resource_types, validate_resource

BASE = "https://egide.example/fhir/"
NOW = datetime(2024, 3, 1, 9, 0, 0, 123456, tzinfo=UTC)


def test_format_instant() -> None:
    assert format_instant(NOW) == "2024-03-01T09:00:00.123Z"
    paris = NOW.astimezone(timezone(timedelta(hours=1)))
    assert format_instant(paris) == "2024-03-01T09:00:00.123Z"
    with pytest.raises(ValueError, match="timezone"):
        format_instant(datetime(2024, 1, 1))  # noqa: DTZ001


def test_searchset() -> None:
    patient = example("Patient")
    outcome = informational("results limited")
    bundle = searchset(
        [patient, outcome], total=1, links={"self": BASE + "Patient?_count=1"}, base_url=BASE
    )
    assert validate_resource(bundle, expected_type="Bundle") == bundle
    assert bundle["type"] == "searchset"
    assert bundle["total"] == 1
    assert bundle["link"] == [{"relation": "self", "url": BASE + "Patient?_count=1"}]
    first, second = bundle["entry"]
    assert first == {
        "fullUrl": "https://egide.example/fhir/Patient/p1",
        "resource": patient,
        "search": {"mode": "match"},
    }
    assert second["search"] == {"mode": "outcome"}
    assert "fullUrl" not in second
    empty = searchset([], total=None, links={}, base_url=BASE)
    assert empty == {"resourceType": "Bundle", "type": "searchset"}
    assert validate_resource(empty) == empty


def test_history_bundle() -> None:
    v1 = example("Patient")
    v2 = example("Patient") | {"gender": "other"}
    entries: list[tuple[dict[str, Any] | None, HistoryInfo]] = [
        (None, HistoryInfo("Patient", "p1", "3", NOW, "DELETE")),
        (v2, HistoryInfo("Patient", "p1", "2", NOW - timedelta(days=1), "PUT")),
        (v1, HistoryInfo("Patient", "p1", "1", NOW - timedelta(days=2), "POST")),
    ]
    bundle = history_bundle(entries, total=3, links={"self": BASE + "Patient/p1/_history"},
                            base_url=BASE)  # fmt: skip
    assert validate_resource(bundle, expected_type="Bundle") == bundle
    deleted, updated, created = bundle["entry"]
    assert "resource" not in deleted
    assert deleted["request"] == {"method": "DELETE", "url": "Patient/p1"}
    assert deleted["response"]["status"] == "204 No Content"
    assert deleted["response"]["etag"] == 'W/"3"'
    assert updated["resource"]["gender"] == "other"
    assert updated["request"] == {"method": "PUT", "url": "Patient/p1"}
    assert created["request"] == {"method": "POST", "url": "Patient"}
    assert created["response"]["status"] == "201 Created"
    assert created["response"]["lastModified"] == "2024-02-28T09:00:00.123Z"
    assert created["fullUrl"] == "https://egide.example/fhir/Patient/p1"
    with pytest.raises(ValueError, match="method"):
        history_bundle([(None, HistoryInfo("Patient", "p1", "1", NOW, "PATCH"))], total=1,
                       links={}, base_url=BASE)  # fmt: skip


def test_transaction_and_batch_responses() -> None:
    created = EntryResponse(
        status="201 Created",
        location="Patient/p1/_history/1",
        etag='W/"1"',
        last_modified=NOW,
        resource=example("Patient"),
    )
    failed = EntryResponse(status="404", outcome=outcome_for(NotFound("Patient/x is not known")))
    bundle = transaction_response([created], base_url=BASE)
    assert validate_resource(bundle) == bundle
    (entry,) = bundle["entry"]
    assert entry["fullUrl"] == "https://egide.example/fhir/Patient/p1"
    assert entry["response"] == {
        "status": "201 Created",
        "location": "Patient/p1/_history/1",
        "etag": 'W/"1"',
        "lastModified": "2024-03-01T09:00:00.123Z",
    }
    batch = batch_response([created, failed])
    assert validate_resource(batch) == batch
    assert batch["type"] == "batch-response"
    assert "fullUrl" not in batch["entry"][0]
    assert batch["entry"][1]["response"]["outcome"]["issue"][0]["code"] == "not-found"


def _transaction(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def test_parse_bundle_request() -> None:
    patient = {"resourceType": "Patient"}
    request = parse_bundle_request(
        _transaction(
            {"fullUrl": "urn:uuid:1", "resource": patient,
             "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=a|1"}},
            {"resource": patient, "request": {"method": "PUT", "url": "Patient/p2",
                                              "ifMatch": 'W/"3"'}},
            {"request": {"method": "DELETE", "url": "Observation/o1"}},
            {"request": {"method": "GET", "url": "Patient?name=Durand"}},
        )
    )  # fmt: skip
    assert request.type == "transaction"
    post, put, delete, get = request.entries
    assert post == BundleEntryRequest(0, "urn:uuid:1", "POST", "Patient", patient, None,
                                      "identifier=a|1")  # fmt: skip
    assert (put.index, put.method, put.url, put.if_match) == (1, "PUT", "Patient/p2", 'W/"3"')
    assert (delete.resource, get.url) == (None, "Patient?name=Durand")
    assert parse_bundle_request(_transaction(kind="batch")).entries == []
    assert parse_bundle_request({"resourceType": "Bundle", "type": "batch"}).type == "batch"


def _get(url: str) -> dict[str, Any]:
    return _transaction({"request": {"method": "GET", "url": url}})


_URL = "Bundle.entry[0].request.url"
_RESOURCE = "Bundle.entry[0].resource"


@pytest.mark.parametrize(
    ("bundle", "location"),
    [
        ({"resourceType": "Patient"}, "resourceType"),
        ({"resourceType": "Bundle", "type": "collection"}, "Bundle.type"),
        ({"resourceType": "Bundle", "type": "searchset"}, "Bundle.type"),
        ({"resourceType": "Bundle"}, "Bundle.type"),
        ({"resourceType": "Bundle", "type": "batch", "entry": {}}, "Bundle.entry"),
        (_transaction("x"), "Bundle.entry[0]"),
        (_transaction({"resource": {"resourceType": "Patient"}}), "Bundle.entry[0].request"),
        (_transaction({"request": {"url": "Patient/1"}}), "Bundle.entry[0].request.method"),
        (
            _transaction(
                {"request": {"method": "GET", "url": "Patient/1"}},
                {"request": {"method": "GET", "url": "Patient/1"}},
                {"request": {"method": "OPTIONS", "url": "Patient/1"}},
                {"request": {"method": "get", "url": "Patient/1"}},
            ),
            "Bundle.entry[2].request.method",
        ),
        (_transaction({"request": {"method": "GET"}}), "Bundle.entry[0].request.url"),
        (_transaction({"request": {"method": "GET", "url": 5}}), "Bundle.entry[0].request.url"),
        (
            _transaction({"request": {"method": "GET", "url": "https://evil.example/Patient"}}),
            "Bundle.entry[0].request.url",
        ),
        (_get("/Patient"), _URL),
        (_get("Patient/../admin"), _URL),
        (_get("Patient/1 x"), _URL),
        (_transaction({"request": {"method": "POST", "url": "Patient"}}), _RESOURCE),
        (
            _transaction({"resource": "{}", "request": {"method": "PUT", "url": "Patient/1"}}),
            "Bundle.entry[0].resource",
        ),
        (
            _transaction({"resource": {"resourceType": "Patient"},
                          "request": {"method": "DELETE", "url": "Patient/1"}}),
            "Bundle.entry[0].resource",
        ),
        (
            _transaction({"request": {"method": "GET", "url": "Patient/1", "ifMatch": 3}}),
            "Bundle.entry[0].request.ifMatch",
        ),
        (
            _transaction(
                {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient"},
                 "request": {"method": "POST", "url": "Patient"}},
                {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient"},
                 "request": {"method": "POST", "url": "Patient"}},
            ),
            "Bundle.entry[1].fullUrl",
        ),
    ],
)  # fmt: skip
def test_parse_bundle_request_errors_name_the_element(
    bundle: dict[str, Any], location: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_bundle_request(bundle)
    locations = [i.location for i in caught.value.issues]
    assert location in locations, locations


def test_bundle_errors_do_not_echo_content() -> None:
    bundle = _transaction({"request": {"method": "Durand Léa", "url": "Patient/1"}})
    with pytest.raises(BadRequest) as caught:
        parse_bundle_request(bundle)
    assert "Durand" not in repr(caught.value.issues) + caught.value.message


def _entry(index: int, method: str) -> BundleEntryRequest:
    resource = {"resourceType": "Patient"} if method in ("POST", "PUT", "PATCH") else None
    return BundleEntryRequest(index, None, method, f"Patient/{index}", resource, None, None)


def test_transaction_order() -> None:
    methods = ["GET", "PUT", "POST", "DELETE", "HEAD", "PATCH", "POST", "DELETE"]
    ordered = transaction_order([_entry(i, m) for i, m in enumerate(methods)])
    assert [(e.method, e.index) for e in ordered] == [
        ("DELETE", 3), ("DELETE", 7), ("POST", 2), ("POST", 6), ("PUT", 1), ("PATCH", 5),
        ("GET", 0), ("HEAD", 4),
    ]  # fmt: skip


@given(st.lists(st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]), max_size=20))
def test_transaction_order_is_a_stable_permutation(methods: list[str]) -> None:
    entries = [_entry(i, m) for i, m in enumerate(methods)]
    ordered = transaction_order(entries)
    assert sorted(ordered, key=lambda e: e.index) == entries
    rank = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
    keys = [(rank[e.method], e.index) for e in ordered]
    assert keys == sorted(keys)


# -- OperationOutcome ------------------------------------------------------------------------------


def test_operation_outcome() -> None:
    outcome = operation_outcome(
        [
            Issue("unknown element", "Patient.foo", "structure"),
            Issue("odd", None, "not-a-real-code", "catastrophic"),
        ]
    )
    assert validate_resource(outcome, expected_type="OperationOutcome") == outcome
    first, second = outcome["issue"]
    assert first == {
        "severity": "error",
        "code": "structure",
        "diagnostics": "unknown element",
        "expression": ["Patient.foo"],
    }
    assert (second["severity"], second["code"]) == ("error", "processing")
    assert "expression" not in second
    empty = operation_outcome([])
    assert validate_resource(empty) == empty
    assert empty["issue"][0]["severity"] == "information"


def test_outcome_for_errors() -> None:
    plain = outcome_for(Conflict("Patient/p1 already exists"))
    assert plain["issue"] == [
        {"severity": "error", "code": "conflict", "diagnostics": "Patient/p1 already exists"}
    ]
    detailed = outcome_for(
        Unprocessable("the Patient resource is not valid", [Issue("bad", "Patient.gender")])
    )
    assert [i["diagnostics"] for i in detailed["issue"]] == [
        "the Patient resource is not valid",
        "bad",
    ]
    assert detailed["issue"][0]["code"] == "processing"
    assert detailed["issue"][1]["expression"] == ["Patient.gender"]
    assert validate_resource(detailed) == detailed


def test_informational() -> None:
    outcome = informational("Patient/p1 deleted")
    assert outcome["issue"] == [
        {"severity": "information", "code": "informational", "diagnostics": "Patient/p1 deleted"}
    ]
    assert validate_resource(outcome) == outcome


# -- CapabilityStatement ---------------------------------------------------------------------------


def test_capability_statement_is_valid_and_complete() -> None:
    statement = capability_statement(
        base_url=BASE, software_version="0.1.0", resource_types=resource_types(), now=NOW
    )
    assert validate_resource(statement, expected_type="CapabilityStatement") == statement
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["kind"] == "instance"
    assert statement["date"] == "2024-03-01T09:00:00Z"
    assert statement["implementation"]["url"] == "https://egide.example/fhir"
    (rest,) = statement["rest"]
    assert rest["mode"] == "server"
    assert rest["security"]["cors"] is False
    assert "bearer" in rest["security"]["description"].lower()
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch"}
    by_type = {r["type"]: r for r in rest["resource"]}
    assert set(by_type) == resource_types()
    patient = by_type["Patient"]
    assert {i["code"] for i in patient["interaction"]} == {
        "read", "vread", "update", "delete", "history-instance", "history-type", "create",
        "search-type",
    }  # fmt: skip
    assert patient["versioning"] == "versioned-update"
    assert patient["conditionalDelete"] == "not-supported"
    assert patient["updateCreate"] is True  # PUT to a new id creates it (migrations)
    assert patient["conditionalCreate"] is True  # If-None-Exist on create
    params = {p["name"]: p for p in patient["searchParam"]}
    assert set(params) == {"_id", "_lastUpdated", *SEARCH_PARAMETERS["Patient"]}
    assert params["birthdate"]["type"] == "date"
    assert "blind index" in params["birthdate"]["documentation"]
    assert "blind index" in params["family"]["documentation"]
    assert {p["name"] for p in by_type["Claim"]["searchParam"]} == {"_id", "_lastUpdated"}

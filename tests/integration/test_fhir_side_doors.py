"""Regression tests for the side doors a security review found (each was a real leak).

- Resource types outside the patient compartment table that still name a patient (Task.for,
  Device.patient, Binary.securityContext, a stored Bundle) are patient data, not directory
  data: sealed under the patient's key, hidden from other patients, admins and secretaries, in
  reads, searches, history and totals.
- Writes are refused by type before any lookup, so a 403/404/412 difference cannot reveal
  whether a resource exists.
- Reads and searches made inside a Bundle that fails are still audited.
- Paging cursors are bounded.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from egide.cli.runtime import Services
from egide.db.engine import transaction
from egide.ledger.models import LedgerEntry
from egide.records.models import ResourceVersion
from tests.helpers import issue_token
from tests.integration.fhir_support import create, headers, patient


def _ledger(services: Services) -> list[LedgerEntry]:
    with transaction(services.session_factory) as session:
        return list(session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq)))


def _odd_types(pid: str) -> list[dict[str, Any]]:
    doc = base64.b64encode(b"HIV test result: positive").decode()
    return [
        {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "for": {"reference": f"Patient/{pid}"},
            "description": "psychiatric referral",
        },
        {
            "resourceType": "Device",
            "patient": {"reference": f"Patient/{pid}"},
            "serialNumber": "PACEMAKER-1",
        },
        {
            "resourceType": "Binary",
            "contentType": "text/plain",
            "data": doc,
            "securityContext": {"reference": f"Patient/{pid}"},
        },
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {
                    "resource": {
                        "resourceType": "Condition",
                        "subject": {"reference": f"Patient/{pid}"},
                        "code": {"text": "HIV positive"},
                    }
                }
            ],
        },
    ]


@pytest.fixture
def victim(client: TestClient, service_token: str) -> dict[str, Any]:
    pid = create(client, service_token, patient(family="Victime"))["id"]
    made = {r["resourceType"]: create(client, service_token, r)["id"] for r in _odd_types(pid)}
    return {"patient": pid, "resources": made}


def test_odd_types_are_sealed_under_their_patient(
    services: Services, victim: dict[str, Any]
) -> None:
    with transaction(services.session_factory) as session:
        rows = session.scalars(
            select(ResourceVersion).where(
                ResourceVersion.resource_type.in_(list(victim["resources"]))
            )
        ).all()
    assert len(rows) == 4
    assert {r.key_owner for r in rows} == {victim["patient"]}


@pytest.mark.parametrize("role", ["patient", "admin", "secretary", "dpo", "security_officer"])
def test_odd_types_are_hidden_from_those_without_clinical_reach(
    client: TestClient,
    services: Services,
    service_token: str,
    victim: dict[str, Any],
    role: str,
) -> None:
    other = create(client, service_token, patient(family="Curieux"))["id"]
    token = issue_token(services, role, patient_id=other if role == "patient" else None)
    for resource_type, resource_id in victim["resources"].items():
        read = client.get(f"/fhir/{resource_type}/{resource_id}", headers=headers(token))
        assert read.status_code == 404, (resource_type, read.text)
        search = client.get(f"/fhir/{resource_type}", headers=headers(token))
        assert search.status_code in (200, 403)
        if search.status_code == 200:
            assert search.json()["total"] == 0, (resource_type, search.text)
        history = client.get(f"/fhir/{resource_type}/_history", headers=headers(token))
        if history.status_code == 200:
            assert history.json()["total"] == 0
    system = client.get("/fhir/_history", headers=headers(token))
    assert system.status_code == 200
    leaked = [
        e
        for e in system.json().get("entry", [])
        if e.get("resource", {}).get("resourceType") in victim["resources"]
    ]
    assert leaked == []


def test_system_history_total_counts_only_visible_rows(
    client: TestClient, services: Services, victim: dict[str, Any]
) -> None:
    admin = issue_token(services, "admin")
    body = client.get("/fhir/_history?_count=1", headers=headers(admin)).json()
    assert body["total"] == 0
    org = client.post(
        "/fhir/Organization",
        json={"resourceType": "Organization", "name": "X"},
        headers=headers(admin),
    )
    assert org.status_code == 201
    assert client.get("/fhir/_history", headers=headers(admin)).json()["total"] == 1


def test_the_patient_sees_their_own_odd_types(
    client: TestClient, services: Services, victim: dict[str, Any]
) -> None:
    token = issue_token(services, "patient", patient_id=victim["patient"])
    for resource_type, resource_id in victim["resources"].items():
        response = client.get(f"/fhir/{resource_type}/{resource_id}", headers=headers(token))
        assert response.status_code == 200, resource_type


@pytest.mark.parametrize("role", ["patient", "secretary", "admin"])
def test_writes_answer_the_same_whether_or_not_the_target_exists(
    client: TestClient, services: Services, service_token: str, role: str
) -> None:
    pid = create(client, service_token, patient())["id"]
    obs = create(
        client,
        service_token,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": f"Patient/{pid}"},
        },
    )["id"]
    token = issue_token(services, role, patient_id=pid if role == "patient" else None)
    body = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "y"},
        "subject": {"reference": f"Patient/{pid}"},
    }
    answers = set()
    for target in (obs, "no-such-observation"):
        for extra in ({}, {"If-Match": 'W/"1"'}):
            response = client.put(
                f"/fhir/Observation/{target}",
                json={**body, "id": target},
                headers=headers(token, **extra),
            )
            answers.add(response.status_code)
        answers.add(
            client.delete(f"/fhir/Observation/{target}", headers=headers(token)).status_code
        )
    for subject in (pid, "no-such-patient"):
        response = client.post(
            "/fhir/Observation",
            json={**body, "subject": {"reference": f"Patient/{subject}"}},
            headers=headers(token),
        )
        answers.add(response.status_code)
    assert answers == {403}


def test_missing_resource_with_if_match_answers_like_a_hidden_one(
    client: TestClient, service_token: str
) -> None:
    response = client.put(
        "/fhir/Patient/nobody",
        json=patient(id="nobody"),
        headers=headers(service_token, **{"If-Match": 'W/"1"'}),
    )
    assert response.status_code == 404


def test_conditional_create_needs_the_right_to_create(
    client: TestClient, services: Services, service_token: str
) -> None:
    pid = create(client, service_token, patient())["id"]
    token = issue_token(services, "patient", patient_id=pid)
    response = client.post(
        "/fhir/Patient",
        json=patient(),
        headers=headers(
            token, **{"If-None-Exist": "identifier=urn:oid:1.2.250.1.213.1.4.8|287047512345678"}
        ),
    )
    assert response.status_code == 403


def test_searches_inside_a_failed_transaction_are_still_audited(
    client: TestClient, services: Services, service_token: str
) -> None:
    pid = create(client, service_token, patient(family="Cherchée"))["id"]
    before = len(_ledger(services))
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "x"},
                    "subject": {"reference": "Patient?family=cherchee"},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
            {
                "resource": {"resourceType": "Patient", "gender": "sometimes"},
                "request": {"method": "POST", "url": "Patient"},
            },
        ],
    }
    response = client.post("/fhir", json=bundle, headers=headers(service_token))
    assert response.status_code == 422
    added = _ledger(services)[before:]
    assert [(e.action, e.patient) for e in added] == [("search", pid)]


def test_searches_inside_a_failed_batch_entry_are_still_audited(
    client: TestClient, services: Services, service_token: str
) -> None:
    pid = create(client, service_token, patient(family="Cherchée"))["id"]
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "resource": {"resourceType": "Patient", "name": [{"family": "Cherchée"}]},
                "request": {
                    "method": "POST",
                    "url": "Patient",
                    "ifNoneExist": "family=cherchee&gender=female",
                },
            },
        ],
    }
    client.put(
        f"/fhir/Patient/{pid}-twin",
        json=patient(id=f"{pid}-twin", family="Cherchée"),
        headers=headers(service_token),
    )
    before = len(_ledger(services))
    response = client.post("/fhir", json=bundle, headers=headers(service_token))
    assert response.status_code == 200
    assert response.json()["entry"][0]["response"]["status"].startswith("412")
    searched = {e.patient for e in _ledger(services)[before:] if e.action == "search"}
    assert searched == {pid, f"{pid}-twin"}


def test_history_offset_is_bounded(client: TestClient, service_token: str) -> None:
    response = client.get(
        "/fhir/_history?_offset=9223372036854775808", headers=headers(service_token)
    )
    assert response.status_code == 400


def test_audit_events_cannot_be_forged_through_a_bundle(
    client: TestClient, service_token: str
) -> None:
    forged = {
        "resourceType": "AuditEvent",
        "recorded": "2026-01-01T00:00:00Z",
        "type": {"code": "rest"},
        "agent": [{"requestor": True, "who": {"display": "nobody"}}],
        "source": {"observer": {"display": "forger"}},
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": forged, "request": {"method": "POST", "url": "AuditEvent"}},
            {
                "resource": {**forged, "id": "x"},
                "request": {"method": "PUT", "url": "AuditEvent/x"},
            },
            {"request": {"method": "GET", "url": "AuditEvent?agent=nobody"}},
        ],
    }
    response = client.post("/fhir", json=bundle, headers=headers(service_token))
    assert response.status_code == 200
    statuses = [e["response"]["status"][:3] for e in response.json()["entry"]]
    assert statuses == ["405", "405", "400"]
    transaction_bundle = {**bundle, "type": "transaction", "entry": bundle["entry"][:1]}
    response = client.post("/fhir", json=transaction_bundle, headers=headers(service_token))
    assert response.status_code == 405

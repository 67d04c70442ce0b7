"""Batch and transaction Bundles, conditional create and sorting, on both databases."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from egide.cli.runtime import Services
from egide.db.engine import transaction
from egide.records.models import ResourceHead
from tests.integration.fhir_support import create, headers, observation, outcome_text, patient


def _heads(services: Services) -> int:
    with transaction(services.session_factory) as session:
        return session.scalar(select(func.count()).select_from(ResourceHead)) or 0


def _synthea_like_bundle() -> dict[str, Any]:
    """A transaction as exporters write it: urn:uuid full URLs, the Observation before the
    Patient it refers to, a conditional create of the practitioner, a conditional reference."""
    pat, enc, obs, prac = (
        f"urn:uuid:{n}"
        for n in (
            "1b0b1d43-5b4f-4bb0-9a4f-5d1e2a7e0001",
            "1b0b1d43-5b4f-4bb0-9a4f-5d1e2a7e0002",
            "1b0b1d43-5b4f-4bb0-9a4f-5d1e2a7e0003",
            "1b0b1d43-5b4f-4bb0-9a4f-5d1e2a7e0004",
        )
    )
    practitioner = {
        "resourceType": "Practitioner",
        "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "9999912345"}],
        "name": [{"family": "House", "given": ["Greg"]}],
    }
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": obs,
                "resource": {
                    **observation("placeholder"),
                    "subject": {"reference": pat},
                    "encounter": {"reference": enc},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
            {
                "fullUrl": pat,
                "resource": patient(family="Transactionnel"),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": prac,
                "resource": practitioner,
                "request": {
                    "method": "POST",
                    "url": "Practitioner",
                    "ifNoneExist": "identifier=http://hl7.org/fhir/sid/us-npi|9999912345",
                },
            },
            {
                "fullUrl": enc,
                "resource": {
                    "resourceType": "Encounter",
                    "status": "finished",
                    "class": {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                        "code": "AMB",
                    },
                    "subject": {"reference": pat},
                    "participant": [
                        {
                            "individual": {
                                "reference": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999912345"
                            }
                        }
                    ],
                },
                "request": {"method": "POST", "url": "Encounter"},
            },
        ],
    }


def test_transaction_resolves_urn_uuids_and_conditional_references(
    client: TestClient, service_token: str
) -> None:
    response = client.post("/fhir", json=_synthea_like_bundle(), headers=headers(service_token))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses == ["201 Created"] * 4
    locations = [e["response"]["location"] for e in body["entry"]]
    obs_id = locations[0].split("/")[1]
    pat_id = locations[1].split("/")[1]
    prac_id = locations[2].split("/")[1]
    obs = client.get(f"/fhir/Observation/{obs_id}", headers=headers(service_token)).json()
    assert obs["subject"]["reference"] == f"Patient/{pat_id}"
    enc_ref = obs["encounter"]["reference"]
    encounter = client.get(f"/fhir/{enc_ref}", headers=headers(service_token)).json()
    assert encounter["participant"][0]["individual"]["reference"] == f"Practitioner/{prac_id}"
    # Run again: the conditional create finds the practitioner instead of duplicating it.
    again = client.post("/fhir", json=_synthea_like_bundle(), headers=headers(service_token))
    assert again.status_code == 200
    assert again.json()["entry"][2]["response"]["status"] == "200 OK"
    practitioners = client.get("/fhir/Practitioner", headers=headers(service_token)).json()
    assert practitioners["total"] == 1


def test_transaction_is_all_or_nothing(
    client: TestClient, services: Services, service_token: str
) -> None:
    bundle = _synthea_like_bundle()
    bundle["entry"].append(
        {
            "resource": {"resourceType": "Patient", "birthDate": "not-a-date"},
            "request": {"method": "POST", "url": "Patient"},
        }
    )
    response = client.post("/fhir", json=bundle, headers=headers(service_token))
    assert response.status_code == 422
    assert "Bundle.entry[4]" in outcome_text(response)
    assert _heads(services) == 0


def test_batch_entries_succeed_or_fail_on_their_own(
    client: TestClient, services: Services, service_token: str
) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "resource": patient(family="Premier"),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {"resourceType": "Patient", "gender": "sometimes"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {"request": {"method": "GET", "url": "Patient/nope"}},
            {
                "resource": patient(family="Dernier"),
                "request": {"method": "POST", "url": "Patient"},
            },
        ],
    }
    response = client.post("/fhir", json=bundle, headers=headers(service_token))
    assert response.status_code == 200
    entries = response.json()["entry"]
    assert [e["response"]["status"][:3] for e in entries] == ["201", "422", "404", "201"]
    assert entries[1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert _heads(services) == 2


def test_bundle_of_the_wrong_type_is_refused(
    client: TestClient, services: Services, service_token: str
) -> None:
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": patient()}]}
    response = client.post("/fhir", json=bundle, headers=headers(service_token))
    assert response.status_code in (400, 422)
    assert _heads(services) == 0


def test_transaction_update_with_stale_if_match_rolls_back(
    client: TestClient, services: Services, service_token: str
) -> None:
    pid = create(client, service_token, patient())["id"]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": patient(family="Nouveau"),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": patient(id=pid, family="Changé"),
                "request": {"method": "PUT", "url": f"Patient/{pid}", "ifMatch": 'W/"7"'},
            },
        ],
    }
    response = client.post("/fhir", json=bundle, headers=headers(service_token))
    assert response.status_code == 412
    assert _heads(services) == 1
    current = client.get(f"/fhir/Patient/{pid}", headers=headers(service_token)).json()
    assert current["name"][0]["family"] == "Lefèvre"


def test_conditional_create_header(client: TestClient, service_token: str) -> None:
    query = "identifier=urn:oid:1.2.250.1.213.1.4.8|287047512345678"
    first = client.post(
        "/fhir/Patient", json=patient(), headers=headers(service_token, **{"If-None-Exist": query})
    )
    assert first.status_code == 201
    second = client.post(
        "/fhir/Patient", json=patient(), headers=headers(service_token, **{"If-None-Exist": query})
    )
    assert second.status_code == 200
    assert second.headers["location"].split("/_history")[0].endswith(first.json()["id"])
    client.put("/fhir/Patient/twin", json=patient(id="twin"), headers=headers(service_token))
    third = client.post(
        "/fhir/Patient", json=patient(), headers=headers(service_token, **{"If-None-Exist": query})
    )
    assert third.status_code == 412


def test_sort_by_date_and_id(client: TestClient, service_token: str) -> None:
    pid = create(client, service_token, patient())["id"]
    dates = ["2026-01-05T00:00:00Z", "2025-06-01T00:00:00Z", "2026-02-11T00:00:00Z"]
    made = [create(client, service_token, observation(pid, date=d))["id"] for d in dates]
    ascending = client.get(
        f"/fhir/Observation?patient={pid}&_sort=date", headers=headers(service_token)
    ).json()
    assert [e["resource"]["id"] for e in ascending["entry"]] == [made[1], made[0], made[2]]
    descending = client.get(
        f"/fhir/Observation?patient={pid}&_sort=-date", headers=headers(service_token)
    ).json()
    assert [e["resource"]["id"] for e in descending["entry"]] == [made[2], made[0], made[1]]
    by_id = client.get(
        f"/fhir/Observation?patient={pid}&_sort=_id", headers=headers(service_token)
    ).json()
    assert [e["resource"]["id"] for e in by_id["entry"]] == sorted(made)
    refused = client.get("/fhir/Patient?_sort=family", headers=headers(service_token))
    assert refused.status_code == 400

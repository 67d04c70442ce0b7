"""Small helpers for the API tests: FHIR JSON headers and example resources."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

FHIR = "application/fhir+json"


def headers(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": FHIR, **extra}


def patient(family: str = "Lefèvre", given: str = "Élodie", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "name": [{"family": family, "given": [given]}],
        "gender": "female",
        "birthDate": "1987-04-12",
        "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "287047512345678"}],
    }
    body.update(extra)
    return body


def observation(
    patient_id: str,
    *,
    code: str = "8867-4",
    value: float = 72,
    date: str = "2026-02-01T10:00:00Z",
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": date,
        "valueQuantity": {
            "value": value,
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    }
    body.update(extra)
    return body


def create(client: TestClient, token: str, resource: dict[str, Any]) -> dict[str, Any]:
    response = client.post(
        f"/fhir/{resource['resourceType']}", json=resource, headers=headers(token)
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def outcome_text(response: Any) -> str:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return " ".join(
        str(i.get("diagnostics", "")) + " " + " ".join(i.get("expression", []))
        for i in body["issue"]
    )

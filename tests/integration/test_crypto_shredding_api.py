"""Crypto-shredding through the whole stack: once a patient's data key is destroyed, their
rows cannot be read by anyone, they leave searches and histories, and others are untouched."""

from __future__ import annotations

from fastapi.testclient import TestClient

from egide.cli.runtime import Services
from egide.db.engine import transaction
from tests.integration.fhir_support import create, headers, observation, patient


def test_a_shredded_patient_is_gone_for_everyone(
    client: TestClient, services: Services, service_token: str
) -> None:
    erased = create(client, service_token, patient(family="Effacée"))["id"]
    kept = create(client, service_token, patient(family="Gardée"))["id"]
    erased_obs = create(client, service_token, observation(erased))["id"]
    kept_obs = create(client, service_token, observation(kept))["id"]

    with transaction(services.session_factory) as session:
        assert services.records.envelope.shred(session, owner=erased)

    auth = headers(service_token)
    assert client.get(f"/fhir/Patient/{erased}", headers=auth).status_code == 410
    assert client.get(f"/fhir/Observation/{erased_obs}", headers=auth).status_code == 410
    assert client.get(f"/fhir/Patient/{erased}/_history/1", headers=auth).status_code == 410
    # Searches and histories skip the erased rows instead of failing or counting them.
    found = client.get("/fhir/Patient?family=effacee", headers=auth).json()
    assert found["total"] == 0
    everyone = client.get("/fhir/Observation", headers=auth).json()
    assert [e["resource"]["id"] for e in everyone["entry"]] == [kept_obs]
    history = client.get("/fhir/_history", headers=auth).json()
    assert {e["resource"]["id"] for e in history["entry"]} == {kept, kept_obs}
    # The other patient is untouched, and nothing new can be written for the erased one.
    assert client.get(f"/fhir/Patient/{kept}", headers=auth).status_code == 200
    response = client.post("/fhir/Observation", json=observation(erased), headers=auth)
    assert response.status_code in (404, 410, 422)

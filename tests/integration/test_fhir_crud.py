"""FHIR R4 REST interactions through real HTTP (ASGI) on SQLite and PostgreSQL.

Create, read, vread, update with If-Match, delete, history; each answer checked for status,
headers and body as a FHIR client would.
"""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.integration.fhir_support import FHIR, create, headers, observation, outcome_text, patient


def test_create_then_read_returns_the_resource_with_meta(
    client: TestClient, service_token: str
) -> None:
    response = client.post("/fhir/Patient", json=patient(), headers=headers(service_token))
    assert response.status_code == 201
    assert response.headers["content-type"].startswith(FHIR)
    body = response.json()
    pid = body["id"]
    assert response.headers["location"].endswith(f"/fhir/Patient/{pid}/_history/1")
    assert response.headers["etag"] == 'W/"1"'
    assert body["meta"]["versionId"] == "1"
    read = client.get(f"/fhir/Patient/{pid}", headers=headers(service_token))
    assert read.status_code == 200
    assert read.json()["name"][0]["family"] == "Lefèvre"
    assert read.json()["birthDate"] == "1987-04-12"
    assert read.headers["etag"] == 'W/"1"'
    assert read.headers["cache-control"] == "no-store"


def test_client_supplied_id_on_create_is_ignored(client: TestClient, service_token: str) -> None:
    body = create(client, service_token, patient(id="chosen-by-client"))
    assert body["id"] != "chosen-by-client"


def test_update_creates_a_new_version_and_vread_sees_both(
    client: TestClient, service_token: str
) -> None:
    pid = create(client, service_token, patient())["id"]
    changed = patient(family="Martin", id=pid)
    response = client.put(
        f"/fhir/Patient/{pid}",
        json=changed,
        headers=headers(service_token, **{"If-Match": 'W/"1"'}),
    )
    assert response.status_code == 200, response.text
    assert response.json()["meta"]["versionId"] == "2"
    assert response.headers["etag"] == 'W/"2"'
    v1 = client.get(f"/fhir/Patient/{pid}/_history/1", headers=headers(service_token))
    v2 = client.get(f"/fhir/Patient/{pid}/_history/2", headers=headers(service_token))
    assert v1.json()["name"][0]["family"] == "Lefèvre"
    assert v2.json()["name"][0]["family"] == "Martin"
    missing = client.get(f"/fhir/Patient/{pid}/_history/3", headers=headers(service_token))
    assert missing.status_code == 404


def test_update_with_a_stale_if_match_is_refused_with_412(
    client: TestClient, service_token: str
) -> None:
    pid = create(client, service_token, patient())["id"]
    ok = client.put(
        f"/fhir/Patient/{pid}",
        json=patient(id=pid, gender="male"),
        headers=headers(service_token, **{"If-Match": 'W/"1"'}),
    )
    assert ok.status_code == 200
    stale = client.put(
        f"/fhir/Patient/{pid}",
        json=patient(id=pid, gender="other"),
        headers=headers(service_token, **{"If-Match": 'W/"1"'}),
    )
    assert stale.status_code == 412
    assert "version" in outcome_text(stale)
    current = client.get(f"/fhir/Patient/{pid}", headers=headers(service_token)).json()
    assert current["gender"] == "male"
    assert current["meta"]["versionId"] == "2"


def test_malformed_if_match_is_a_400(client: TestClient, service_token: str) -> None:
    pid = create(client, service_token, patient())["id"]
    response = client.put(
        f"/fhir/Patient/{pid}",
        json=patient(id=pid),
        headers=headers(service_token, **{"If-Match": "yesterday"}),
    )
    assert response.status_code == 400


def test_update_with_mismatched_body_id_is_refused(client: TestClient, service_token: str) -> None:
    pid = create(client, service_token, patient())["id"]
    other = create(client, service_token, patient(family="Autre"))["id"]
    response = client.put(
        f"/fhir/Patient/{pid}", json=patient(id=other), headers=headers(service_token)
    )
    assert response.status_code == 400
    assert (
        client.get(f"/fhir/Patient/{other}", headers=headers(service_token)).json()["meta"][
            "versionId"
        ]
        == "1"
    )


def test_update_as_create_with_client_id(client: TestClient, service_token: str) -> None:
    response = client.put(
        "/fhir/Patient/migrated-42", json=patient(id="migrated-42"), headers=headers(service_token)
    )
    assert response.status_code == 201
    assert (
        client.get("/fhir/Patient/migrated-42", headers=headers(service_token)).status_code == 200
    )


def test_delete_is_versioned_and_read_answers_410(client: TestClient, service_token: str) -> None:
    pid = create(client, service_token, patient())["id"]
    response = client.delete(f"/fhir/Patient/{pid}", headers=headers(service_token))
    assert response.status_code == 200
    assert response.json()["resourceType"] == "OperationOutcome"
    gone = client.get(f"/fhir/Patient/{pid}", headers=headers(service_token))
    assert gone.status_code == 410
    assert (
        client.get(f"/fhir/Patient/{pid}/_history/1", headers=headers(service_token)).status_code
        == 200
    )
    history = client.get(f"/fhir/Patient/{pid}/_history", headers=headers(service_token)).json()
    assert history["type"] == "history"
    assert history["total"] == 2
    assert history["entry"][0]["request"]["method"] == "DELETE"
    assert "resource" not in history["entry"][0]
    assert history["entry"][1]["resource"]["id"] == pid
    again = client.delete(f"/fhir/Patient/{pid}", headers=headers(service_token))
    assert again.status_code == 200


def test_read_unknown_resource_is_404_operation_outcome(
    client: TestClient, service_token: str
) -> None:
    response = client.get("/fhir/Patient/does-not-exist", headers=headers(service_token))
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


def test_unknown_resource_type_is_404(client: TestClient, service_token: str) -> None:
    response = client.get("/fhir/Spaceship/1", headers=headers(service_token))
    assert response.status_code == 404
    assert "unknown resource type" in outcome_text(response)


def test_type_history_lists_versions_newest_first(client: TestClient, service_token: str) -> None:
    pid = create(client, service_token, patient())["id"]
    create(client, service_token, observation(pid))
    create(client, service_token, observation(pid, value=80))
    history = client.get("/fhir/Observation/_history", headers=headers(service_token)).json()
    assert history["total"] == 2
    assert all(e["request"]["method"] == "POST" for e in history["entry"])
    system = client.get("/fhir/_history", headers=headers(service_token)).json()
    assert system["total"] == 3


def test_observation_for_a_missing_patient_is_refused(
    client: TestClient, service_token: str
) -> None:
    response = client.post(
        "/fhir/Observation", json=observation("no-such-patient"), headers=headers(service_token)
    )
    assert response.status_code == 422
    assert client.get("/fhir/Observation", headers=headers(service_token)).json()["total"] == 0


def test_metadata_is_a_capability_statement(client: TestClient) -> None:
    response = client.get("/fhir/metadata")
    assert response.status_code == 200
    body = response.json()
    assert body["resourceType"] == "CapabilityStatement"
    assert body["fhirVersion"] == "4.0.1"
    types = {r["type"] for r in body["rest"][0]["resource"]}
    required = {
        "Patient",
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "Encounter",
        "EpisodeOfCare",
        "CareTeam",
        "Appointment",
        "Observation",
        "Condition",
        "AllergyIntolerance",
        "MedicationRequest",
        "Procedure",
        "Immunization",
        "DiagnosticReport",
        "DocumentReference",
        "Consent",
        "Provenance",
    }
    assert required <= types


def test_security_headers_on_every_answer(client: TestClient) -> None:
    response = client.get("/fhir/metadata")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert "x-powered-by" not in {k.lower() for k in response.headers}

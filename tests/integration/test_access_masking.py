"""The secretary's view, end to end: demographics and scheduling of every patient, with the
clinical elements masked (issue 5, item 2; `access.masking`).

A secretary books appointments for anyone, so they read every Patient and Appointment; the
reason for the visit is clinical and is withheld, and the copy they get is labelled with the
HL7 v3 ObservationValue security label REDACTED so a client knows something was removed. The
mask holds on every path that returns a body (read, vread, search, history, Bundle entries),
and a secretary's update can neither erase nor forge the reason they cannot see. Clinical
resources stay out of reach: 404 on read (nothing learnt about existence), 403 on search (a
refusal that depends on the role only). OWASP ASVS 5.0 V8.2.3 (field-level access), V8.2.2.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from fastapi.testclient import TestClient

from egide.cli.runtime import Services
from tests.helpers import issue_token
from tests.integration.access_support import (
    appointment,
    condition,
    encounter,
    new_observation,
    new_patient,
    put,
    search_ids,
    staff,
    status_of,
)
from tests.integration.fhir_support import create, headers

REASON = "suspicion of HIV infection"
DAY = dt.timedelta(days=1)


@pytest.fixture
def secretary(services: Services) -> str:
    return issue_token(services, "secretary")


@pytest.fixture
def booked(client: TestClient, services: Services, service_token: str) -> dict[str, Any]:
    """An Appointment with a clinical reason, booked by the scheduling interface."""
    pid = new_patient(client, service_token)
    doctor = staff(client, services, service_token)
    start = services.records.clock.now() + 2 * DAY
    return create(client, service_token, appointment(pid, doctor.practitioner, start=start))


def _codes(resource: dict[str, Any]) -> list[str]:
    return [label.get("code") for label in resource.get("meta", {}).get("security", [])]


def _is_masked(resource: dict[str, Any]) -> bool:
    return "reasonCode" not in resource and "REDACTED" in _codes(resource)


def _stored(client: TestClient, service_token: str, appointment_id: str) -> dict[str, Any]:
    response = client.get(f"/fhir/Appointment/{appointment_id}", headers=headers(service_token))
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def test_the_secretary_reads_every_patient(
    client: TestClient, service_token: str, secretary: str
) -> None:
    ids = {new_patient(client, service_token, name) for name in ("Un", "Deux", "Trois")}
    for pid in ids:
        assert status_of(client, secretary, f"Patient/{pid}") == 200
    assert search_ids(client, secretary, "Patient") == (200, ids)


def test_the_appointment_reason_is_masked_and_labelled(
    client: TestClient, service_token: str, secretary: str, booked: dict[str, Any]
) -> None:
    response = client.get(f"/fhir/Appointment/{booked['id']}", headers=headers(secretary))
    assert response.status_code == 200
    seen = response.json()
    assert _is_masked(seen), seen
    assert REASON not in response.text
    assert seen["start"] == booked["start"]  # what a secretary needs is there
    assert seen["participant"] == booked["participant"]
    # The service token (no mask) still reads the reason: masking is a view, not an erasure.
    assert _stored(client, service_token, booked["id"])["reasonCode"] == [{"text": REASON}]


def test_search_vread_and_history_are_masked_too(
    client: TestClient, service_token: str, secretary: str, booked: dict[str, Any]
) -> None:
    # A second version, so history has more than one body to mask.
    assert put(client, service_token, {**booked, "status": "arrived"}) == 200
    searched = client.get("/fhir/Appointment", headers=headers(secretary))
    assert searched.status_code == 200
    [entry] = searched.json()["entry"]
    assert _is_masked(entry["resource"])
    vread = client.get(f"/fhir/Appointment/{booked['id']}/_history/1", headers=headers(secretary))
    assert vread.status_code == 200
    assert _is_masked(vread.json())
    for path in (f"Appointment/{booked['id']}/_history", "Appointment/_history", "_history"):
        response = client.get(f"/fhir/{path}", headers=headers(secretary))
        assert response.status_code == 200, path
        bodies = [e["resource"] for e in response.json()["entry"] if "resource" in e]
        appointments = [b for b in bodies if b["resourceType"] == "Appointment"]
        assert len(appointments) == 2, path
        assert all(_is_masked(b) for b in appointments), path
        assert REASON not in response.text, path


def test_bundle_reads_are_masked(
    client: TestClient, service_token: str, secretary: str, booked: dict[str, Any]
) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"Appointment/{booked['id']}"}},
            {"request": {"method": "GET", "url": "Appointment"}},
        ],
    }
    response = client.post("/fhir", json=bundle, headers=headers(secretary))
    assert response.status_code == 200
    assert REASON not in response.text
    read, search = response.json()["entry"]
    assert _is_masked(read["resource"])
    assert all(_is_masked(e["resource"]) for e in search["resource"]["entry"])


def test_updating_an_appointment_keeps_the_stored_reason(
    client: TestClient, service_token: str, secretary: str, booked: dict[str, Any]
) -> None:
    seen = client.get(f"/fhir/Appointment/{booked['id']}", headers=headers(secretary)).json()
    moved = {**seen, "start": "2026-03-10T09:00:00Z", "end": "2026-03-10T09:30:00Z"}
    assert put(client, secretary, moved) == 200
    stored = _stored(client, service_token, booked["id"])
    assert stored["start"] == "2026-03-10T09:00:00Z"
    assert stored["reasonCode"] == [{"text": REASON}]
    # The REDACTED label describes the secretary's copy; it is never stored.
    assert "REDACTED" not in _codes(stored)


def test_a_secretary_cannot_forge_or_erase_the_reason(
    client: TestClient, service_token: str, secretary: str, booked: dict[str, Any]
) -> None:
    forged = {**booked, "reasonCode": [{"text": "routine check-up"}], "comment": "no HIV"}
    assert put(client, secretary, forged) == 200
    stored = _stored(client, service_token, booked["id"])
    assert stored["reasonCode"] == [{"text": REASON}]
    assert "comment" not in stored


def test_a_secretary_books_an_appointment_without_a_reason(
    client: TestClient, services: Services, service_token: str, secretary: str
) -> None:
    pid = new_patient(client, service_token)
    doctor = staff(client, services, service_token)
    body = appointment(
        pid, doctor.practitioner, start=services.records.clock.now() + DAY, reason="chest pain"
    )
    made = create(client, secretary, body)
    assert "reasonCode" not in _stored(client, service_token, made["id"])


def test_an_encounter_diagnosis_is_masked(
    client: TestClient, service_token: str, secretary: str
) -> None:
    pid = new_patient(client, service_token)
    diagnosis = create(client, service_token, condition(pid, "major depressive disorder"))
    body = {
        **encounter(pid),
        "reasonCode": [{"text": "major depressive disorder"}],
        "diagnosis": [{"condition": {"reference": f"Condition/{diagnosis['id']}"}}],
    }
    stay = create(client, service_token, body)
    response = client.get(f"/fhir/Encounter/{stay['id']}", headers=headers(secretary))
    assert response.status_code == 200
    seen = response.json()
    assert "diagnosis" not in seen
    assert "reasonCode" not in seen
    assert "REDACTED" in _codes(seen)
    assert "depressive" not in response.text


@pytest.mark.parametrize("resource_type", ["Observation", "Condition"])
def test_the_secretary_reads_no_clinical_resource(
    client: TestClient,
    service_token: str,
    secretary: str,
    booked: dict[str, Any],
    resource_type: str,
) -> None:
    pid = booked["participant"][0]["actor"]["reference"].split("/")[1]
    made = (
        new_observation(client, service_token, pid)
        if resource_type == "Observation"
        else create(client, service_token, condition(pid))["id"]
    )
    assert status_of(client, secretary, f"{resource_type}/{made}") == 404
    assert status_of(client, secretary, f"{resource_type}/{made}/_history") == 404
    assert search_ids(client, secretary, f"{resource_type}?patient={pid}")[0] == 403
    assert search_ids(client, secretary, resource_type)[0] == 403
    assert search_ids(client, secretary, f"{resource_type}/_history")[0] == 403
    # Nor through the system history: only demographics and scheduling are listed.
    everything = client.get("/fhir/_history", headers=headers(secretary)).json()
    listed = {e["resource"]["resourceType"] for e in everything.get("entry", [])}
    assert resource_type not in listed
    assert listed <= {"Patient", "Appointment", "Practitioner", "Organization"}

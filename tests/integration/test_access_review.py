"""Holes a security review of the access-control work found, each proved closed over HTTP on
SQLite and PostgreSQL: a clinician withdrawing the consent that names them, promoting a
department link into a personal one, a secretary's write echoing masked content back, an
update-as-create telling which ids exist, a deleted labelled resource losing its label, and a
scope-limited token failing (500) on a system history instead of being filtered."""

from __future__ import annotations

import datetime as dt

from fastapi.testclient import TestClient

from egide.cli.runtime import Services
from egide.core.principal import Principal
from egide.db.engine import transaction
from egide.records.repository import repository_for
from egide.records.visibility import research_opted_out
from tests.helpers import issue_token
from tests.integration.access_support import (
    appointment,
    care_team,
    clock_of,
    condition,
    consent,
    encounter,
    labelled,
    ledger,
    new_observation,
    new_patient,
    organization,
    put,
    staff,
    status_of,
)
from tests.integration.fhir_support import create, headers, observation


def _ward(client: TestClient, service_token: str) -> str:
    return str(create(client, service_token, organization("Cardiologie"))["id"])


def test_a_clinician_cannot_write_or_withdraw_a_consent(
    client: TestClient, services: Services, service_token: str
) -> None:
    """The Consent naming Dr X is the patient's: a colleague who treats the patient may read it,
    not withdraw it (which would let Dr X back in)."""
    ward = _ward(client, service_token)
    patient = new_patient(client, service_token)
    create(client, service_token, encounter(patient, department=ward))
    x = staff(client, services, service_token, department=ward, family="X")
    colleague = staff(client, services, service_token, department=ward, family="Collègue")
    obs = new_observation(client, service_token, patient)
    assert status_of(client, x.token, f"Observation/{obs}") == 200
    refusal = create(
        client, service_token, consent(patient, deny=(f"Practitioner/{x.practitioner}",))
    )
    assert status_of(client, x.token, f"Observation/{obs}") == 404
    # The colleague reads the consent but may not withdraw, delete or replace it.
    path = f"/fhir/Consent/{refusal['id']}"
    assert client.get(path, headers=headers(colleague.token)).status_code == 200
    withdrawn = {**refusal, "status": "inactive"}
    assert client.put(path, json=withdrawn, headers=headers(colleague.token)).status_code == 403
    assert client.delete(path, headers=headers(colleague.token)).status_code == 403
    assert (
        client.post("/fhir/Consent", json=consent(patient), headers=headers(colleague.token))
    ).status_code == 403
    assert status_of(client, x.token, f"Observation/{obs}") == 404


def test_a_department_link_cannot_be_promoted_to_a_personal_one(
    client: TestClient, services: Services, service_token: str
) -> None:
    """Labelled records kept to the treating team stay out of reach of a department colleague
    who adds themself to the patient's CareTeam; a clinician already treating the patient may
    still document their care, and may name a colleague."""
    ward = _ward(client, service_token)
    patient = new_patient(client, service_token)
    create(client, service_token, encounter(patient, department=ward))
    nurse = staff(client, services, service_token, role="nurse", department=ward, family="N")
    doctor = staff(client, services, service_token, department=ward, family="D")
    create(client, service_token, encounter(patient, practitioners=(doctor.practitioner,)))
    hiv = create(client, service_token, labelled(observation(patient), "HIV"))["id"]
    create(client, service_token, consent(patient, labels=("HIV",)))
    assert status_of(client, nurse.token, f"Observation/{hiv}") == 404
    team = care_team(patient, {nurse.practitioner: (None, None)})
    answer = client.post("/fhir/CareTeam", json=team, headers=headers(nurse.token))
    assert answer.status_code == 403
    assert "already treating" in answer.text
    assert status_of(client, nurse.token, f"Observation/{hiv}") == 404
    refused = [
        e
        for e in ledger(services)
        if e.get("resource_type") == "CareTeam" and e.get("outcome") == "denied"
    ]
    assert refused, "the refusal is in the ledger"
    assert "already treating" in str(refused[-1]["reasons"])
    # The treating doctor documents their own care, and may name the nurse.
    mine = care_team(patient, {doctor.practitioner: (None, None), nurse.practitioner: (None, None)})
    assert (
        client.post("/fhir/CareTeam", json=mine, headers=headers(doctor.token)).status_code == 201
    )
    assert status_of(client, nurse.token, f"Observation/{hiv}") == 200


def test_a_secretarys_update_does_not_echo_the_masked_reason(
    client: TestClient, services: Services, service_token: str
) -> None:
    secretary = issue_token(services, "secretary")
    patient = new_patient(client, service_token)
    doctor = create(client, service_token, {"resourceType": "Practitioner"})["id"]
    when = clock_of(services).now() + dt.timedelta(days=2)
    booked = create(
        client,
        service_token,
        appointment(patient, doctor, start=when, reason="suspicion of HIV infection"),
    )
    seen = client.get(f"/fhir/Appointment/{booked['id']}", headers=headers(secretary)).json()
    assert "reasonCode" not in seen
    moved = {**seen, "status": "arrived"}
    answer = client.put(f"/fhir/Appointment/{booked['id']}", json=moved, headers=headers(secretary))
    assert answer.status_code == 200
    assert "HIV" not in answer.text
    stored = client.get(f"/fhir/Appointment/{booked['id']}", headers=headers(service_token))
    assert stored.json()["reasonCode"] == [{"text": "suspicion of HIV infection"}]


def test_update_as_create_is_for_services_only(
    client: TestClient, services: Services, service_token: str
) -> None:
    """PUT to an unknown id answers 404 for anyone but a service, exactly like PUT to a hidden
    resource, so it tells nothing about which ids exist."""
    physician = staff(client, services, service_token)
    patient = new_patient(client, service_token)
    hidden = new_observation(client, service_token, patient)
    fresh = {**observation(patient), "id": "brand-new"}
    assert put(client, physician.token, {**observation(patient), "id": hidden}) == 404
    assert put(client, physician.token, fresh) == 404
    assert put(client, service_token, fresh) == 201


def test_a_label_outlives_the_version_that_carried_it(
    client: TestClient, services: Services, service_token: str
) -> None:
    """Deleting or un-labelling a restricted record does not open its older versions."""
    ward = _ward(client, service_token)
    patient = new_patient(client, service_token)
    create(client, service_token, encounter(patient, department=ward))
    colleague = staff(client, services, service_token, department=ward)
    create(client, service_token, consent(patient, labels=("PSY",)))
    note = create(client, service_token, labelled(observation(patient), "PSY"))
    rid = note["id"]
    assert status_of(client, colleague.token, f"Observation/{rid}") == 404
    plain = {**observation(patient), "id": rid}
    assert put(client, service_token, plain) == 200
    assert status_of(client, colleague.token, f"Observation/{rid}/_history/1") == 404
    assert client.delete(
        f"/fhir/Observation/{rid}", headers=headers(service_token)
    ).status_code in (
        200,
        204,
    )
    assert status_of(client, colleague.token, f"Observation/{rid}") == 404
    assert status_of(client, colleague.token, f"Observation/{rid}/_history/1") == 404
    history = client.get("/fhir/Observation/_history", headers=headers(colleague.token)).json()
    assert all(e.get("resource", {}).get("id") != rid for e in history.get("entry", []))


def test_a_scope_limited_token_gets_a_filtered_system_history(
    client: TestClient, services: Services, service_token: str
) -> None:
    """A patient app allowed Observations only sees Observations in the system history,
    instead of the fail-closed error a Condition on the page would cause."""
    patient = new_patient(client, service_token)
    obs = new_observation(client, service_token, patient)
    create(client, service_token, condition(patient))
    app = Principal(
        id="app-user",
        role="patient",
        patient_id=patient,
        fhir_user=f"Patient/{patient}",
        scopes=frozenset({"patient/Observation.rs"}),
    )
    with transaction(services.session_factory) as session:
        repo = repository_for(session, app, services.records)
        items, total = repo.history(None, None, count=50, offset=0)
    assert total == len(items) == 1
    assert {(i.resource_type, i.id) for i in items} == {("Observation", obs)}


def test_a_patient_opts_out_of_research_and_back_in(
    client: TestClient, services: Services, service_token: str
) -> None:
    """A research Consent (scope `research`, provision deny) written by the patient puts them
    on the opt-out list the pseudonymised research export reads; withdrawing it takes them
    off at once; another patient is never on it."""
    me, other = new_patient(client, service_token), new_patient(client, service_token, "Autre")
    mine = issue_token(services, "patient", patient_id=me)
    research = {
        **consent(me),
        "scope": {"coding": [{"code": "research"}]},
        "provision": {"type": "deny"},
    }
    written = client.post("/fhir/Consent", json=research, headers=headers(mine))
    assert written.status_code == 201

    def opted_out() -> set[str]:
        with transaction(services.session_factory) as session:
            return research_opted_out(session, [me, other], clock_of(services).now())

    assert opted_out() == {me}
    withdrawn = {**written.json(), "status": "inactive"}
    path = f"/fhir/Consent/{withdrawn['id']}"
    assert client.put(path, json=withdrawn, headers=headers(mine)).status_code == 200
    assert opted_out() == set()

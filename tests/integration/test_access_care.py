"""Care relationships computed from the clinical data, end to end over HTTP (issue 5, item 3).

A clinician reaches a patient's clinical data only while the stored FHIR resources say they
treat that patient: an Encounter naming them or served by their department, an EpisodeOfCare,
an Appointment (from 7 days before), a CareTeam membership (within its own period), with a
grace period after the end of care (`care_grace_days`, default 30). Every link is rebuilt when
its resource is written, so admitting, discharging, cancelling, deleting or re-staffing an
Encounter changes who may read at once. Whoever has no link gets 404 (DESIGN.md, contract 1)
and the denial, with its reasons, is in the ledger (contract 2; OWASP ASVS 5.0 V8.2.2, V8.3.1,
V16.3.2). Order-based roles (lab, radiology, pharmacy) reach only the results of their service
for patients with an active order for it.

Every resource is written through the API, as the service token (an admission or order-entry
interface) or as the clinician, and every assertion is an HTTP answer a real caller would get.
"""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient

from egide.cli.runtime import Services
from tests.helpers import issue_token
from tests.integration.access_support import (
    IMAGING_CATEGORY,
    LAB_CATEGORY,
    appointment,
    care_team,
    clock_of,
    condition,
    denials,
    diagnostic_report,
    encounter,
    episode_of_care,
    medication_request,
    new_observation,
    new_patient,
    organization,
    practitioner_role,
    put,
    search_ids,
    service_request,
    specimen,
    staff,
    status_of,
)
from tests.integration.fhir_support import create, headers, observation

DAY = dt.timedelta(days=1)
NOBODY_REASON = "no appointment, admission, care-team, order or other care link"


@pytest.fixture
def pid(client: TestClient, service_token: str) -> str:
    return new_patient(client, service_token)


@pytest.fixture
def obs(client: TestClient, service_token: str, pid: str) -> str:
    return new_observation(client, service_token, pid)


@pytest.fixture
def cardio(client: TestClient, service_token: str) -> str:
    return str(create(client, service_token, organization("Cardiologie"))["id"])


def test_a_physician_named_on_an_in_progress_encounter_reads_the_observations(
    client: TestClient, services: Services, service_token: str, pid: str, obs: str
) -> None:
    doctor = staff(client, services, service_token)
    assert status_of(client, doctor.token, f"Observation/{obs}") == 404
    create(client, service_token, encounter(pid, practitioners=(doctor.practitioner,)))
    assert status_of(client, doctor.token, f"Observation/{obs}") == 200
    assert search_ids(client, doctor.token, f"Observation?patient={pid}") == (200, {obs})
    # Treating allows writing too: the physician records a result of their own.
    mine = new_observation(client, doctor.token, pid, value=80)
    assert status_of(client, doctor.token, f"Observation/{mine}") == 200


def test_a_physician_of_the_department_reads_through_the_service_provider(
    client: TestClient, services: Services, service_token: str, pid: str, obs: str, cardio: str
) -> None:
    colleague = staff(client, services, service_token, department=cardio)
    elsewhere = staff(
        client,
        services,
        service_token,
        department=create(client, service_token, organization("Dermatologie"))["id"],
    )
    create(client, service_token, encounter(pid, department=cardio))
    assert status_of(client, colleague.token, f"Observation/{obs}") == 200
    assert status_of(client, elsewhere.token, f"Observation/{obs}") == 404


def test_the_department_link_ends_with_the_practitioner_role(
    client: TestClient, services: Services, service_token: str, pid: str, obs: str, cardio: str
) -> None:
    colleague = staff(client, services, service_token)
    role = create(client, service_token, practitioner_role(colleague.practitioner, cardio))
    create(client, service_token, encounter(pid, department=cardio))
    assert status_of(client, colleague.token, f"Observation/{obs}") == 200
    # They leave the department: its patients are no longer theirs.
    assert put(client, service_token, {**role, "active": False}) == 200
    assert status_of(client, colleague.token, f"Observation/{obs}") == 404


def test_another_physician_gets_404_and_the_denial_is_ledgered_with_reasons(
    client: TestClient, services: Services, service_token: str, pid: str, obs: str
) -> None:
    treating = staff(client, services, service_token)
    create(client, service_token, encounter(pid, practitioners=(treating.practitioner,)))
    other = staff(client, services, service_token, family="Curieux")
    response = client.get(f"/fhir/Observation/{obs}", headers=headers(other.token))
    assert response.status_code == 404
    # Same answer as for an id that does not exist: nothing to learn from the status.
    assert status_of(client, other.token, "Observation/no-such-id") == 404
    assert search_ids(client, other.token, f"Observation?patient={pid}") == (200, set())
    [denied] = denials(services, obs)
    assert denied["action"] == "read"
    assert denied["patient"] == pid
    assert denied["role"] == "physician"
    assert any(NOBODY_REASON in reason for reason in denied["reasons"]), denied
    # The allowed read names its link in the ledger too, for the patient's access report.
    assert status_of(client, treating.token, f"Observation/{obs}") == 200


def test_after_discharge_access_holds_for_the_grace_period_then_stops(
    client: TestClient, services: Services, service_token: str, pid: str, obs: str
) -> None:
    clock = clock_of(services)
    doctor = staff(client, services, service_token)
    stay = create(
        client,
        service_token,
        encounter(pid, practitioners=(doctor.practitioner,), start=clock.now() - 3 * DAY),
    )
    discharged = clock.now()
    stay = {
        **stay,
        "status": "finished",
        "period": {"start": stay["period"]["start"], "end": discharged.isoformat()},
    }
    assert put(client, service_token, stay) == 200
    assert status_of(client, doctor.token, f"Observation/{obs}") == 200
    clock.advance(30 * DAY)  # the last moment of the default 30-day grace period
    assert status_of(client, doctor.token, f"Observation/{obs}") == 200
    assert search_ids(client, doctor.token, f"Observation?patient={pid}") == (200, {obs})
    clock.advance(dt.timedelta(seconds=1))
    assert status_of(client, doctor.token, f"Observation/{obs}") == 404
    assert search_ids(client, doctor.token, f"Observation?patient={pid}") == (200, set())


def test_a_finished_encounter_without_an_end_runs_its_grace_period_from_its_start(
    client: TestClient, services: Services, service_token: str, pid: str, obs: str
) -> None:
    """No end time: the grace period runs from the start, and saving the Encounter again
    later does not renew it (were it "from now", every re-save would extend access)."""
    clock = clock_of(services)
    doctor = staff(client, services, service_token)
    stay = create(
        client,
        service_token,
        encounter(
            pid,
            status="finished",
            practitioners=(doctor.practitioner,),
            start=clock.now() - 2 * DAY,
        ),
    )
    clock.advance(27 * DAY)
    assert status_of(client, doctor.token, f"Observation/{obs}") == 200
    assert put(client, service_token, stay) == 200  # re-saved: no renewal
    clock.advance(2 * DAY)
    assert status_of(client, doctor.token, f"Observation/{obs}") == 404


def test_an_appointment_gives_access_from_seven_days_before(
    client: TestClient, services: Services, service_token: str, pid: str, obs: str
) -> None:
    clock = clock_of(services)
    doctor = staff(client, services, service_token)
    visit = clock.now() + 10 * DAY
    create(client, service_token, appointment(pid, doctor.practitioner, start=visit))
    assert status_of(client, doctor.token, f"Observation/{obs}") == 404
    clock.advance(3 * DAY - dt.timedelta(seconds=1))
    assert status_of(client, doctor.token, f"Observation/{obs}") == 404
    clock.advance(dt.timedelta(seconds=1))  # exactly 7 days before
    assert status_of(client, doctor.token, f"Observation/{obs}") == 200
    clock.advance(7 * DAY + 30 * DAY)  # the visit (30 min) plus the grace period
    assert status_of(client, doctor.token, f"Observation/{obs}") == 200
    clock.advance(dt.timedelta(minutes=31))
    assert status_of(client, doctor.token, f"Observation/{obs}") == 404


def test_a_cancelled_appointment_gives_nothing(
    client: TestClient, services: Services, service_token: str, pid: str, obs: str
) -> None:
    clock = clock_of(services)
    doctor = staff(client, services, service_token)
    booked = create(
        client, service_token, appointment(pid, doctor.practitioner, start=clock.now() + DAY)
    )
    assert status_of(client, doctor.token, f"Observation/{obs}") == 200
    assert put(client, service_token, {**booked, "status": "cancelled"}) == 200
    assert status_of(client, doctor.token, f"Observation/{obs}") == 404


def test_care_team_membership_follows_each_member_period(
    client: TestClient, services: Services, service_token: str, pid: str, obs: str
) -> None:
    clock = clock_of(services)
    now = clock.now()
    leaving = staff(client, services, service_token, family="Partant")
    joining = staff(client, services, service_token, family="Arrivant")
    team = care_team(
        pid,
        {
            leaving.practitioner: (now - 10 * DAY, now + 2 * DAY),
            joining.practitioner: (now + 5 * DAY, None),
        },
    )
    create(client, service_token, team)
    assert status_of(client, leaving.token, f"Observation/{obs}") == 200
    assert status_of(client, joining.token, f"Observation/{obs}") == 404
    clock.advance(5 * DAY)
    assert status_of(client, joining.token, f"Observation/{obs}") == 200
    assert status_of(client, leaving.token, f"Observation/{obs}") == 200  # grace period
    clock.advance(30 * DAY)
    assert status_of(client, leaving.token, f"Observation/{obs}") == 404
    assert status_of(client, joining.token, f"Observation/{obs}") == 200


def test_an_inactive_care_team_gives_nothing(
    client: TestClient, services: Services, service_token: str, pid: str, obs: str
) -> None:
    member = staff(client, services, service_token)
    team = care_team(pid, {member.practitioner: (None, None)}, status="inactive")
    create(client, service_token, team)
    assert status_of(client, member.token, f"Observation/{obs}") == 404


def test_an_episode_of_care_links_its_care_manager_and_managing_department(
    client: TestClient, services: Services, service_token: str, pid: str, obs: str, cardio: str
) -> None:
    manager = staff(client, services, service_token, family="Référent")
    colleague = staff(client, services, service_token, department=cardio)
    outsider = staff(client, services, service_token, family="Curieux")
    episode = create(
        client,
        service_token,
        episode_of_care(pid, care_manager=manager.practitioner, department=cardio),
    )
    for person in (manager, colleague):
        assert status_of(client, person.token, f"Observation/{obs}") == 200
    assert status_of(client, outsider.token, f"Observation/{obs}") == 404
    assert put(client, service_token, {**episode, "status": "entered-in-error"}) == 200
    for person in (manager, colleague):
        assert status_of(client, person.token, f"Observation/{obs}") == 404


@pytest.mark.parametrize("status", ["entered-in-error", "cancelled"])
def test_an_encounter_entered_in_error_or_cancelled_gives_nothing(
    client: TestClient,
    services: Services,
    service_token: str,
    pid: str,
    obs: str,
    cardio: str,
    status: str,
) -> None:
    doctor = staff(client, services, service_token, department=cardio)
    create(
        client,
        service_token,
        encounter(pid, status=status, practitioners=(doctor.practitioner,), department=cardio),
    )
    assert status_of(client, doctor.token, f"Observation/{obs}") == 404
    assert search_ids(client, doctor.token, f"Observation?patient={pid}") == (200, set())


def test_an_encounter_corrected_to_entered_in_error_withdraws_access(
    client: TestClient, services: Services, service_token: str, pid: str, obs: str
) -> None:
    doctor = staff(client, services, service_token)
    stay = create(client, service_token, encounter(pid, practitioners=(doctor.practitioner,)))
    assert status_of(client, doctor.token, f"Observation/{obs}") == 200
    assert put(client, service_token, {**stay, "status": "entered-in-error"}) == 200
    assert status_of(client, doctor.token, f"Observation/{obs}") == 404


def test_deleting_the_encounter_removes_the_link(
    client: TestClient, services: Services, service_token: str, pid: str, obs: str
) -> None:
    doctor = staff(client, services, service_token)
    stay = create(client, service_token, encounter(pid, practitioners=(doctor.practitioner,)))
    assert status_of(client, doctor.token, f"Observation/{obs}") == 200
    deleted = client.delete(f"/fhir/Encounter/{stay['id']}", headers=headers(service_token))
    assert deleted.status_code in (200, 204)
    assert status_of(client, doctor.token, f"Observation/{obs}") == 404
    assert search_ids(client, doctor.token, "Observation") == (200, set())


def test_updating_the_encounter_participants_moves_access(
    client: TestClient, services: Services, service_token: str, pid: str, obs: str
) -> None:
    first = staff(client, services, service_token, family="Premier")
    second = staff(client, services, service_token, family="Second")
    stay = create(client, service_token, encounter(pid, practitioners=(first.practitioner,)))
    assert status_of(client, first.token, f"Observation/{obs}") == 200
    assert status_of(client, second.token, f"Observation/{obs}") == 404
    handed_over = {
        **stay,
        "participant": [{"individual": {"reference": f"Practitioner/{second.practitioner}"}}],
    }
    assert put(client, service_token, handed_over) == 200
    assert status_of(client, first.token, f"Observation/{obs}") == 404
    assert status_of(client, second.token, f"Observation/{obs}") == 200


def test_the_treating_physician_may_hand_over_but_not_keep_a_removed_link(
    client: TestClient, services: Services, service_token: str, pid: str, obs: str
) -> None:
    """The physician updates the Encounter themself (they may write their patient's data):
    once they are no longer named, they can no longer write it back to name themselves."""
    first = staff(client, services, service_token, family="Premier")
    second = staff(client, services, service_token, family="Second")
    stay = create(client, service_token, encounter(pid, practitioners=(first.practitioner,)))
    handed_over = {
        **stay,
        "participant": [{"individual": {"reference": f"Practitioner/{second.practitioner}"}}],
    }
    assert put(client, first.token, handed_over) == 200
    assert status_of(client, first.token, f"Observation/{obs}") == 404
    assert put(client, first.token, stay) == 404  # the Encounter is out of their reach now
    assert status_of(client, second.token, f"Observation/{obs}") == 200


def test_a_nurse_on_the_encounter_reads_but_may_not_prescribe(
    client: TestClient, services: Services, service_token: str, pid: str, obs: str
) -> None:
    nurse = staff(client, services, service_token, role="nurse")
    create(client, service_token, encounter(pid, practitioners=(nurse.practitioner,)))
    assert status_of(client, nurse.token, f"Observation/{obs}") == 200
    answer = client.post(
        "/fhir/MedicationRequest", json=medication_request(pid), headers=headers(nurse.token)
    )
    assert answer.status_code == 403
    new_observation(client, nurse.token, pid, value=90)  # vital signs are a nurse's to record


def test_a_physician_without_a_link_may_not_write_to_the_record(
    client: TestClient, services: Services, service_token: str, pid: str
) -> None:
    other = staff(client, services, service_token)
    answer = client.post("/fhir/Observation", json=observation(pid), headers=headers(other.token))
    # 403, not 404: the patient is not hidden from a physician (they may search patients),
    # only their record is.
    assert answer.status_code == 403
    assert search_ids(client, service_token, f"Observation?patient={pid}") == (200, set())
    # A patient id that does not exist gets the same answer (no oracle of which ids do).
    nobody = observation("no-such-patient")
    assert (
        client.post("/fhir/Observation", json=nobody, headers=headers(other.token)).status_code
        == 403
    )


# -- order-based roles (lab, radiology, pharmacy) ------------------------------------------


@pytest.fixture
def results(client: TestClient, service_token: str, pid: str) -> dict[str, str]:
    """A result of each kind for `pid`: what lab, radiology and pharmacy might read."""
    made = {
        "Observation": create(client, service_token, observation(pid))["id"],
        "DiagnosticReport": create(client, service_token, diagnostic_report(pid))["id"],
        "Specimen": create(client, service_token, specimen(pid))["id"],
        "Condition": create(client, service_token, condition(pid))["id"],
        "MedicationRequest": create(client, service_token, medication_request(pid))["id"],
    }
    return {k: str(v) for k, v in made.items()}


LAB_READS = ("Observation", "DiagnosticReport", "Specimen")


@pytest.mark.parametrize("performer", ["department", "none"])
def test_the_lab_reads_results_of_a_patient_with_an_active_laboratory_order(
    client: TestClient,
    services: Services,
    service_token: str,
    pid: str,
    cardio: str,
    performer: str,
) -> None:
    lab_dept = str(create(client, service_token, organization("Biologie"))["id"])
    lab = staff(client, services, service_token, role="lab", department=lab_dept)
    made = {
        "Observation": create(client, service_token, observation(pid))["id"],
        "DiagnosticReport": create(client, service_token, diagnostic_report(pid))["id"],
        "Specimen": create(client, service_token, specimen(pid))["id"],
        "Condition": create(client, service_token, condition(pid))["id"],
    }
    for resource_type in LAB_READS:
        assert status_of(client, lab.token, f"{resource_type}/{made[resource_type]}") == 404
    order = create(
        client,
        service_token,
        service_request(
            pid, LAB_CATEGORY, performer=lab_dept if performer == "department" else None
        ),
    )
    for resource_type in LAB_READS:
        path = f"{resource_type}/{made[resource_type]}"
        assert status_of(client, lab.token, path) == 200, path
        assert search_ids(client, lab.token, resource_type) == (200, {made[resource_type]})
    # Never the diagnoses: those are not a laboratory's to read.
    assert status_of(client, lab.token, f"Condition/{made['Condition']}") == 404
    assert search_ids(client, lab.token, "Condition")[0] == 403
    # The order done, the access ends.
    assert put(client, service_token, {**order, "status": "completed"}) == 200
    for resource_type in LAB_READS:
        assert status_of(client, lab.token, f"{resource_type}/{made[resource_type]}") == 404


def test_a_laboratory_order_for_another_department_gives_the_lab_nothing(
    client: TestClient, services: Services, service_token: str, pid: str, results: dict[str, str]
) -> None:
    ours = str(create(client, service_token, organization("Biologie"))["id"])
    theirs = str(create(client, service_token, organization("Laboratoire externe"))["id"])
    lab = staff(client, services, service_token, role="lab", department=ours)
    create(client, service_token, service_request(pid, LAB_CATEGORY, performer=theirs))
    assert status_of(client, lab.token, f"Observation/{results['Observation']}") == 404


def test_an_imaging_order_gives_the_lab_nothing_and_radiology_its_results(
    client: TestClient, services: Services, service_token: str, pid: str, results: dict[str, str]
) -> None:
    lab = staff(client, services, service_token, role="lab")
    radiology = staff(client, services, service_token, role="radiology")
    order = create(client, service_token, service_request(pid, IMAGING_CATEGORY))
    for resource_type in LAB_READS:
        assert status_of(client, lab.token, f"{resource_type}/{results[resource_type]}") == 404
    for resource_type in ("Observation", "DiagnosticReport"):
        path = f"{resource_type}/{results[resource_type]}"
        assert status_of(client, radiology.token, path) == 200, path
    assert status_of(client, radiology.token, f"Specimen/{results['Specimen']}") == 404
    assert status_of(client, radiology.token, f"Condition/{results['Condition']}") == 404
    assert put(client, service_token, {**order, "status": "completed"}) == 200
    path = f"DiagnosticReport/{results['DiagnosticReport']}"
    assert status_of(client, radiology.token, path) == 404


def test_a_laboratory_order_gives_radiology_nothing(
    client: TestClient, services: Services, service_token: str, pid: str, results: dict[str, str]
) -> None:
    radiology = staff(client, services, service_token, role="radiology")
    create(client, service_token, service_request(pid, LAB_CATEGORY))
    path = f"DiagnosticReport/{results['DiagnosticReport']}"
    assert status_of(client, radiology.token, path) == 404


def test_the_pharmacist_reads_the_prescriptions_of_a_patient_with_an_active_one(
    client: TestClient, services: Services, service_token: str, pid: str
) -> None:
    pharmacist = staff(client, services, service_token, role="pharmacist")
    other = new_patient(client, service_token, "Autre")
    stopped = create(client, service_token, medication_request(other, status="stopped"))
    active = create(client, service_token, medication_request(pid))
    cond = create(client, service_token, condition(pid))
    assert status_of(client, pharmacist.token, f"MedicationRequest/{active['id']}") == 200
    assert status_of(client, pharmacist.token, f"MedicationRequest/{stopped['id']}") == 404
    assert status_of(client, pharmacist.token, f"Condition/{cond['id']}") == 404
    assert search_ids(client, pharmacist.token, "MedicationRequest") == (200, {active["id"]})
    assert put(client, service_token, {**active, "status": "completed"}) == 200
    assert status_of(client, pharmacist.token, f"MedicationRequest/{active['id']}") == 404


def test_order_roles_hold_no_care_relationship_through_an_encounter(
    client: TestClient, services: Services, service_token: str, pid: str, results: dict[str, str]
) -> None:
    """An Encounter naming a lab technician is not a laboratory order: it gives them nothing
    (their reach is their service's orders, issue 5 item 2)."""
    lab = staff(client, services, service_token, role="lab")
    create(client, service_token, encounter(pid, practitioners=(lab.practitioner,)))
    assert status_of(client, lab.token, f"Observation/{results['Observation']}") == 404


def test_the_service_token_is_not_a_clinician(
    client: TestClient, services: Services, pid: str, results: dict[str, str]
) -> None:
    """A token with no practitioner behind it reaches nobody through care links."""
    anonymous = issue_token(services, "physician")
    assert status_of(client, anonymous, f"Observation/{results['Observation']}") == 404

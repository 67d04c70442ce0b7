"""The patient's side of access control, end to end: guardians and consent (issue 5, item 4).

A parent or guardian reaches their minor's record because the data says so: the guardian's own
Patient resource names, through `Patient.link` (type `seealso`), the RelatedPerson they are,
and that RelatedPerson (relationship GUARD, PRN... from HL7 v3 RoleCode) names the minor, for
its period. A patient writes their own FHIR R4 Consent: a deny provision naming a practitioner
or a department shuts them out at once, in reads and searches (404, nothing listed); a deny
provision naming security labels and no actor keeps the labelled records (meta.security, e.g.
v3 ActCode HIV, PSY) to the personally treating team; withdrawing the consent (status
`inactive`) restores access at once. A patient writes consent for nobody else and no clinical
data (OWASP ASVS 5.0 V8.2.1, V8.2.2; GDPR art. 7(3) withdrawal as easy as giving).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from egide.cli.runtime import Services
from tests.helpers import issue_token
from tests.integration.access_support import (
    HIV,
    PSY,
    Staff,
    clock_of,
    consent,
    denials,
    encounter,
    labelled,
    new_observation,
    new_patient,
    organization,
    put,
    ref,
    related_person,
    search_ids,
    staff,
    status_of,
)
from tests.integration.fhir_support import create, headers, observation, patient

DAY = dt.timedelta(days=1)


# -- guardians of minors -----------------------------------------------------------------------


@dataclass
class Family:
    minor: str
    guardian: str  # the guardian's own Patient id
    related: dict[str, Any]  # the RelatedPerson the guardian is for the minor
    token: str  # the guardian's patient token
    record: str  # an Observation of the minor


def _family(
    client: TestClient,
    services: Services,
    service_token: str,
    relationship: str,
    *,
    end: dt.datetime | None = None,
    birth_date: str = "2016-05-01",
) -> Family:
    minor = create(client, service_token, patient(family="Enfant", birthDate=birth_date))["id"]
    related = create(client, service_token, related_person(minor, relationship, end=end))
    guardian = create(
        client,
        service_token,
        patient(
            family="Parent",
            link=[{"other": ref("RelatedPerson", related["id"]), "type": "seealso"}],
        ),
    )["id"]
    return Family(
        minor=minor,
        guardian=guardian,
        related=related,
        token=issue_token(services, "patient", patient_id=guardian),
        record=new_observation(client, service_token, minor),
    )


@pytest.mark.parametrize("relationship", ["GUARD", "PRN", "MTH"])
def test_a_guardian_reads_their_minor_record(
    client: TestClient, services: Services, service_token: str, relationship: str
) -> None:
    family = _family(client, services, service_token, relationship)
    assert status_of(client, family.token, f"Observation/{family.record}") == 200
    assert status_of(client, family.token, f"Patient/{family.minor}") == 200
    found = search_ids(client, family.token, f"Observation?patient={family.minor}")
    assert found == (200, {family.record})


def test_a_guardianship_ends_with_the_related_person_period(
    client: TestClient, services: Services, service_token: str
) -> None:
    clock = clock_of(services)
    ends = clock.now() + 10 * DAY  # e.g. a court order ending the guardianship
    family = _family(client, services, service_token, "GUARD", end=ends)
    assert status_of(client, family.token, f"Observation/{family.record}") == 200
    clock.advance(10 * DAY)
    assert status_of(client, family.token, f"Observation/{family.record}") == 200
    clock.advance(dt.timedelta(seconds=1))  # no grace period for a guardian
    assert status_of(client, family.token, f"Observation/{family.record}") == 404
    assert search_ids(client, family.token, "Observation") == (200, set())


def test_a_guardianship_ends_at_the_minor_majority(
    client: TestClient, services: Services, service_token: str
) -> None:
    """No period on the RelatedPerson: the link still ends on the ward's 18th birthday."""
    clock = clock_of(services)
    family = _family(client, services, service_token, "GUARD", birth_date="2008-03-12")
    assert status_of(client, family.token, f"Observation/{family.record}") == 200
    clock.advance(10 * DAY)  # 2026-03-12: of age
    assert status_of(client, family.token, f"Observation/{family.record}") == 404


def test_a_guardianship_of_an_adult_gives_nothing(
    client: TestClient, services: Services, service_token: str
) -> None:
    family = _family(client, services, service_token, "GUARD", birth_date="1987-04-12")
    assert status_of(client, family.token, f"Observation/{family.record}") == 404


@pytest.mark.parametrize("relationship", ["FRND", "NBOR", "SIB"])
def test_another_relationship_gives_nothing(
    client: TestClient, services: Services, service_token: str, relationship: str
) -> None:
    family = _family(client, services, service_token, relationship)
    assert status_of(client, family.token, f"Observation/{family.record}") == 404
    assert status_of(client, family.token, f"Patient/{family.minor}") == 404
    assert search_ids(client, family.token, "Observation") == (200, set())


def test_an_inactive_related_person_gives_nothing(
    client: TestClient, services: Services, service_token: str
) -> None:
    family = _family(client, services, service_token, "GUARD")
    assert put(client, service_token, {**family.related, "active": False}) == 200
    assert status_of(client, family.token, f"Observation/{family.record}") == 404


def test_a_patient_not_linked_to_the_related_person_gets_nothing(
    client: TestClient, services: Services, service_token: str
) -> None:
    """Only the patient whose own resource names the RelatedPerson acts as it."""
    family = _family(client, services, service_token, "GUARD")
    stranger = issue_token(
        services, "patient", patient_id=new_patient(client, service_token, "Inconnu")
    )
    assert status_of(client, stranger, f"Observation/{family.record}") == 404


def test_a_guardian_records_consent_for_their_minor_but_no_clinical_data(
    client: TestClient, services: Services, service_token: str
) -> None:
    family = _family(client, services, service_token, "GUARD")
    response = client.post(
        "/fhir/Consent",
        json=consent(family.minor, deny=("Practitioner/anyone",)),
        headers=headers(family.token),
    )
    assert response.status_code == 201, response.text
    response = client.post(
        "/fhir/Observation", json=observation(family.minor), headers=headers(family.token)
    )
    assert response.status_code == 403


# -- consent -----------------------------------------------------------------------------------


@dataclass
class Ward:
    """A patient in a department, two physicians of it, and one personally named."""

    patient: str
    token: str  # the patient's own token
    department: str
    denied: Staff  # a department physician the patient will name in a deny provision
    colleague: Staff  # another department physician
    named: Staff  # a physician personally named on the Encounter, from another department
    record: str  # an Observation


@pytest.fixture
def ward(client: TestClient, services: Services, service_token: str) -> Ward:
    pid = new_patient(client, service_token)
    cardio = str(create(client, service_token, organization("Cardiologie"))["id"])
    other = str(create(client, service_token, organization("Gériatrie"))["id"])
    denied = staff(client, services, service_token, department=cardio, family="Voisin")
    colleague = staff(client, services, service_token, department=cardio, family="Collègue")
    named = staff(client, services, service_token, department=other, family="Référent")
    create(
        client,
        service_token,
        encounter(pid, practitioners=(named.practitioner,), department=cardio),
    )
    return Ward(
        patient=pid,
        token=issue_token(services, "patient", patient_id=pid),
        department=cardio,
        denied=denied,
        colleague=colleague,
        named=named,
        record=new_observation(client, service_token, pid),
    )


def _consent(client: TestClient, token: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/fhir/Consent", json=body, headers=headers(token))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def test_everyone_of_the_ward_reads_before_any_consent(client: TestClient, ward: Ward) -> None:
    for person in (ward.denied, ward.colleague, ward.named):
        assert status_of(client, person.token, f"Observation/{ward.record}") == 200


def test_denying_a_practitioner_shuts_them_out_at_once(
    client: TestClient, services: Services, ward: Ward
) -> None:
    _consent(
        client,
        ward.token,
        consent(ward.patient, deny=(f"Practitioner/{ward.denied.practitioner}",)),
    )
    assert status_of(client, ward.denied.token, f"Observation/{ward.record}") == 404
    assert status_of(client, ward.denied.token, f"Patient/{ward.patient}") == 404
    assert search_ids(client, ward.denied.token, f"Observation?patient={ward.patient}") == (
        200,
        set(),
    )
    response = client.get("/fhir/Observation", headers=headers(ward.denied.token))
    assert response.json()["total"] == 0
    # Writing is refused too: they cannot add to a record they are kept out of.
    answer = client.post(
        "/fhir/Observation", json=observation(ward.patient), headers=headers(ward.denied.token)
    )
    assert answer.status_code == 403
    # A colleague of the same department still treats the patient.
    assert status_of(client, ward.colleague.token, f"Observation/{ward.record}") == 200
    assert search_ids(client, ward.colleague.token, f"Observation?patient={ward.patient}") == (
        200,
        {ward.record},
    )
    [denied] = [d for d in denials(services, ward.record) if d["action"] == "read"]
    assert any("consent" in reason for reason in denied["reasons"]), denied


def test_denying_a_department_shuts_out_its_members(client: TestClient, ward: Ward) -> None:
    _consent(client, ward.token, consent(ward.patient, deny=(f"Organization/{ward.department}",)))
    for person in (ward.denied, ward.colleague):
        assert status_of(client, person.token, f"Observation/{ward.record}") == 404
        assert search_ids(client, person.token, "Observation") == (200, set())
    # The physician named personally belongs to another department: not refused.
    assert status_of(client, ward.named.token, f"Observation/{ward.record}") == 200


def test_a_label_restriction_keeps_labelled_records_to_the_treating_team(
    client: TestClient, service_token: str, ward: Ward
) -> None:
    hiv = create(client, service_token, labelled(observation(ward.patient, code="75622-1"), HIV))
    psy = create(client, service_token, labelled(observation(ward.patient, code="44249-1"), PSY))
    _consent(client, ward.token, consent(ward.patient, labels=(HIV, PSY)))
    for person in (ward.denied, ward.colleague):  # department-level access only
        for hidden in (hiv["id"], psy["id"]):
            assert status_of(client, person.token, f"Observation/{hidden}") == 404
        assert status_of(client, person.token, f"Observation/{ward.record}") == 200
        assert search_ids(client, person.token, "Observation") == (200, {ward.record})
    # Personally named on the Encounter: part of the treating team.
    for shown in (hiv["id"], psy["id"], ward.record):
        assert status_of(client, ward.named.token, f"Observation/{shown}") == 200
    assert search_ids(client, ward.named.token, "Observation") == (
        200,
        {hiv["id"], psy["id"], ward.record},
    )
    # The patient always sees their own record.
    assert status_of(client, ward.token, f"Observation/{hiv['id']}") == 200


def test_a_label_restriction_covers_one_label_and_not_another(
    client: TestClient, service_token: str, ward: Ward
) -> None:
    hiv = create(client, service_token, labelled(observation(ward.patient), HIV))
    psy = create(client, service_token, labelled(observation(ward.patient), PSY))
    _consent(client, ward.token, consent(ward.patient, labels=(PSY,)))
    assert status_of(client, ward.colleague.token, f"Observation/{hiv['id']}") == 200
    assert status_of(client, ward.colleague.token, f"Observation/{psy['id']}") == 404


def test_denying_a_practitioner_one_label_only(
    client: TestClient, service_token: str, ward: Ward
) -> None:
    psy = create(client, service_token, labelled(observation(ward.patient), PSY))
    body = consent(ward.patient, deny=(f"Practitioner/{ward.denied.practitioner}",), labels=(PSY,))
    _consent(client, ward.token, body)
    assert status_of(client, ward.denied.token, f"Observation/{ward.record}") == 200
    assert status_of(client, ward.denied.token, f"Observation/{psy['id']}") == 404
    assert search_ids(client, ward.denied.token, "Observation") == (200, {ward.record})
    assert status_of(client, ward.colleague.token, f"Observation/{psy['id']}") == 200


def test_labelling_a_record_later_hides_it_at_once(
    client: TestClient, service_token: str, ward: Ward
) -> None:
    _consent(client, ward.token, consent(ward.patient, labels=(HIV,)))
    record = client.get(f"/fhir/Observation/{ward.record}", headers=headers(service_token)).json()
    assert status_of(client, ward.colleague.token, f"Observation/{ward.record}") == 200
    assert put(client, service_token, labelled(record, HIV)) == 200
    assert status_of(client, ward.colleague.token, f"Observation/{ward.record}") == 404


def test_withdrawing_consent_restores_access_at_once(client: TestClient, ward: Ward) -> None:
    given = _consent(
        client,
        ward.token,
        consent(ward.patient, deny=(f"Practitioner/{ward.denied.practitioner}",)),
    )
    assert status_of(client, ward.denied.token, f"Observation/{ward.record}") == 404
    assert put(client, ward.token, {**given, "status": "inactive"}) == 200
    assert status_of(client, ward.denied.token, f"Observation/{ward.record}") == 200
    assert search_ids(client, ward.denied.token, "Observation") == (200, {ward.record})


def test_deleting_the_consent_restores_access(client: TestClient, ward: Ward) -> None:
    given = _consent(
        client,
        ward.token,
        consent(ward.patient, deny=(f"Practitioner/{ward.denied.practitioner}",)),
    )
    deleted = client.delete(f"/fhir/Consent/{given['id']}", headers=headers(ward.token))
    assert deleted.status_code in (200, 204)
    assert status_of(client, ward.denied.token, f"Observation/{ward.record}") == 200


def test_a_consent_with_a_period_binds_only_within_it(
    client: TestClient, services: Services, ward: Ward
) -> None:
    clock = clock_of(services)
    body = consent(ward.patient, deny=(f"Practitioner/{ward.denied.practitioner}",))
    body["provision"]["provision"][0]["period"] = {
        "start": (clock.now() + DAY).isoformat(),
        "end": (clock.now() + 3 * DAY).isoformat(),
    }
    _consent(client, ward.token, body)
    assert status_of(client, ward.denied.token, f"Observation/{ward.record}") == 200
    clock.advance(2 * DAY)
    assert status_of(client, ward.denied.token, f"Observation/{ward.record}") == 404
    clock.advance(2 * DAY)
    assert status_of(client, ward.denied.token, f"Observation/{ward.record}") == 200


def test_a_patient_cannot_write_a_consent_for_another_patient(
    client: TestClient, service_token: str, ward: Ward
) -> None:
    other = new_patient(client, service_token, "Autre")
    response = client.post(
        "/fhir/Consent",
        json=consent(other, deny=(f"Practitioner/{ward.named.practitioner}",)),
        headers=headers(ward.token),
    )
    assert response.status_code == 403
    # The same answer for a patient id that does not exist: no oracle of which ids do.
    nobody = client.post(
        "/fhir/Consent", json=consent("no-such-patient"), headers=headers(ward.token)
    )
    assert nobody.status_code == 403
    # Nothing was recorded: the other patient's physicians are not shut out.
    other_record = new_observation(client, service_token, other)
    create(client, service_token, encounter(other, practitioners=(ward.named.practitioner,)))
    assert status_of(client, ward.named.token, f"Observation/{other_record}") == 200
    assert search_ids(client, service_token, f"Consent?patient={other}") == (200, set())


def test_a_patient_cannot_move_their_consent_to_another_patient(
    client: TestClient, service_token: str, ward: Ward
) -> None:
    other = new_patient(client, service_token, "Autre")
    given = _consent(
        client, ward.token, consent(ward.patient, deny=(f"Practitioner/{ward.named.practitioner}",))
    )
    moved = {**given, "patient": ref("Patient", other)}
    assert put(client, ward.token, moved) == 404
    nowhere = {**given, "patient": ref("Patient", "no-such-patient")}
    assert put(client, ward.token, nowhere) == 404
    assert search_ids(client, service_token, f"Consent?patient={other}") == (200, set())


def test_a_patient_cannot_write_an_observation(
    client: TestClient, service_token: str, ward: Ward
) -> None:
    response = client.post(
        "/fhir/Observation", json=observation(ward.patient), headers=headers(ward.token)
    )
    assert response.status_code == 403
    record = client.get(f"/fhir/Observation/{ward.record}", headers=headers(ward.token)).json()
    assert put(client, ward.token, {**record, "status": "cancelled"}) == 403
    assert search_ids(client, service_token, f"Observation?patient={ward.patient}") == (
        200,
        {ward.record},
    )


def test_another_patient_reads_nothing_of_this_one(
    client: TestClient, services: Services, service_token: str, ward: Ward
) -> None:
    other_id = new_patient(client, service_token, "X")
    other = issue_token(services, "patient", patient_id=other_id)
    assert status_of(client, other, f"Observation/{ward.record}") == 404
    assert status_of(client, other, f"Patient/{ward.patient}") == 404
    assert search_ids(client, other, "Observation") == (200, set())
    assert search_ids(client, other, "Patient") == (200, {other_id})

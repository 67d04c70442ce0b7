"""Builders for the access-control tests: the FHIR resources care relationships come from.

Access follows the clinical data (issue 5, item 3): a clinician reaches a record because an
Encounter, EpisodeOfCare, Appointment, CareTeam or order names them or their department, a
guardian because a RelatedPerson says so, and a patient's Consent narrows all of it. These
builders write those resources as the FHIR R4 (R4B-validated) JSON an admission system, a
scheduler or an order-entry system would send, so the tests exercise the same extraction
(`records.links`) real data goes through. Plus small HTTP and ledger helpers.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from egide.cli.runtime import Services
from egide.core.clock import FixedClock
from egide.db.engine import transaction
from egide.ledger.models import LedgerEntry
from tests.helpers import issue_token
from tests.integration.fhir_support import create, headers, observation, patient

# Code systems (FHIR R4 terminology).
V3_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
V3_ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
SNOMED = "http://snomed.info/sct"
LAB_CATEGORY = "108252007"  # SNOMED CT: Laboratory procedure
IMAGING_CATEGORY = "363679005"  # SNOMED CT: Imaging
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
CONSENT_CATEGORY = "http://loinc.org"  # LOINC 59284-0 Patient Consent
# HL7 v3 sensitivity labels used in meta.security and Consent.provision.securityLabel.
HIV = "HIV"
PSY = "PSY"


def ref(resource_type: str, resource_id: str) -> dict[str, str]:
    return {"reference": f"{resource_type}/{resource_id}"}


def instant(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def period(start: dt.datetime | None = None, end: dt.datetime | None = None) -> dict[str, str]:
    out: dict[str, str] = {}
    if start is not None:
        out["start"] = instant(start)
    if end is not None:
        out["end"] = instant(end)
    return out


def labelled(resource: dict[str, Any], *codes: str) -> dict[str, Any]:
    """`resource` with HL7 v3 ActCode sensitivity labels in meta.security."""
    security = [{"system": V3_ACT_CODE, "code": code} for code in codes]
    return {**resource, "meta": {"security": security}}


# -- directory -------------------------------------------------------------------------------


def practitioner(family: str = "Soignant") -> dict[str, Any]:
    return {"resourceType": "Practitioner", "name": [{"family": family}]}


def organization(name: str = "Cardiologie") -> dict[str, Any]:
    return {"resourceType": "Organization", "name": name, "active": True}


def practitioner_role(
    practitioner_id: str,
    organization_id: str,
    *,
    active: bool = True,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "PractitionerRole",
        "active": active,
        "practitioner": ref("Practitioner", practitioner_id),
        "organization": ref("Organization", organization_id),
    }
    if start or end:
        body["period"] = period(start, end)
    return body


# -- care --------------------------------------------------------------------------------------


def encounter(
    patient_id: str,
    *,
    status: str = "in-progress",
    practitioners: tuple[str, ...] = (),
    department: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Encounter",
        "status": status,
        "class": {"system": V3_ACT_CODE, "code": "IMP"},
        "subject": ref("Patient", patient_id),
        "participant": [{"individual": ref("Practitioner", p)} for p in practitioners],
    }
    if not practitioners:
        del body["participant"]
    if department is not None:
        body["serviceProvider"] = ref("Organization", department)
    if start or end:
        body["period"] = period(start, end)
    return body


def episode_of_care(
    patient_id: str,
    *,
    status: str = "active",
    care_manager: str | None = None,
    department: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "EpisodeOfCare",
        "status": status,
        "patient": ref("Patient", patient_id),
    }
    if care_manager is not None:
        body["careManager"] = ref("Practitioner", care_manager)
    if department is not None:
        body["managingOrganization"] = ref("Organization", department)
    if start or end:
        body["period"] = period(start, end)
    return body


def appointment(
    patient_id: str,
    practitioner_id: str,
    *,
    start: dt.datetime,
    minutes: int = 30,
    status: str = "booked",
    reason: str | None = "suspicion of HIV infection",
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Appointment",
        "status": status,
        "start": instant(start),
        "end": instant(start + dt.timedelta(minutes=minutes)),
        "participant": [
            {"actor": ref("Patient", patient_id), "status": "accepted"},
            {"actor": ref("Practitioner", practitioner_id), "status": "accepted"},
        ],
    }
    if reason is not None:
        body["reasonCode"] = [{"text": reason}]
    return body


def care_team(
    patient_id: str,
    members: dict[str, tuple[dt.datetime | None, dt.datetime | None]],
    *,
    status: str = "active",
) -> dict[str, Any]:
    """A CareTeam; `members` maps a practitioner id to its own membership period."""
    participants = []
    for member, (start, end) in members.items():
        item: dict[str, Any] = {"member": ref("Practitioner", member)}
        if start or end:
            item["period"] = period(start, end)
        participants.append(item)
    return {
        "resourceType": "CareTeam",
        "status": status,
        "subject": ref("Patient", patient_id),
        "participant": participants,
    }


def service_request(
    patient_id: str,
    category: str,
    *,
    status: str = "active",
    performer: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": status,
        "intent": "order",
        "category": [{"coding": [{"system": SNOMED, "code": category}]}],
        "code": {"text": "blood count" if category == LAB_CATEGORY else "chest X-ray"},
        "subject": ref("Patient", patient_id),
    }
    if performer is not None:
        body["performer"] = [ref("Organization", performer)]
    return body


def medication_request(patient_id: str, *, status: str = "active") -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": {"text": "amoxicillin 500 mg"},
        "subject": ref("Patient", patient_id),
    }


def related_person(
    minor_id: str,
    relationship: str = "GUARD",
    *,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "RelatedPerson",
        "active": True,
        "patient": ref("Patient", minor_id),
        "relationship": [{"coding": [{"system": V3_ROLE_CODE, "code": relationship}]}],
        "name": [{"family": "Tuteur"}],
    }
    if start or end:
        body["period"] = period(start, end)
    return body


def consent(
    patient_id: str,
    *,
    deny: tuple[str, ...] = (),
    labels: tuple[str, ...] = (),
    status: str = "active",
) -> dict[str, Any]:
    """A FHIR R4 privacy Consent (scope patient-privacy) whose provision denies access to the
    actors `deny` ("Practitioner/x", "Organization/y") or, with no actor, to the records
    carrying `labels` outside the treating team."""
    provision: dict[str, Any] = {"type": "deny"}
    if deny:
        provision["actor"] = [
            {
                "role": {"coding": [{"system": V3_ROLE_CODE, "code": "PROV"}]},
                "reference": {"reference": actor},
            }
            for actor in deny
        ]
    if labels:
        provision["securityLabel"] = [{"system": V3_ACT_CODE, "code": c} for c in labels]
    return {
        "resourceType": "Consent",
        "status": status,
        "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": CONSENT_CATEGORY, "code": "59284-0"}]}],
        "patient": ref("Patient", patient_id),
        "policyRule": {"coding": [{"system": V3_ACT_CODE, "code": "OPTIN"}]},
        "provision": {"type": "permit", "provision": [provision]},
    }


# -- clinical ----------------------------------------------------------------------------------


def condition(patient_id: str, text: str = "hypertension") -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "code": {"text": text},
        "subject": ref("Patient", patient_id),
    }


def diagnostic_report(patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "code": {"text": "blood count"},
        "subject": ref("Patient", patient_id),
    }


def specimen(patient_id: str) -> dict[str, Any]:
    return {"resourceType": "Specimen", "subject": ref("Patient", patient_id)}


# -- people and HTTP ---------------------------------------------------------------------------


@dataclass
class Staff:
    """A staff member: their Practitioner id and bearer token."""

    practitioner: str
    token: str


def staff(
    client: TestClient,
    services: Services,
    service_token: str,
    *,
    role: str = "physician",
    department: str | None = None,
    family: str = "Soignant",
) -> Staff:
    """A Practitioner (with an active PractitionerRole in `department`) and their token."""
    practitioner_id = create(client, service_token, practitioner(family))["id"]
    if department is not None:
        create(client, service_token, practitioner_role(practitioner_id, department))
    return Staff(practitioner_id, issue_token(services, role, practitioner_id=practitioner_id))


def new_patient(client: TestClient, service_token: str, family: str = "Lefèvre") -> str:
    return str(create(client, service_token, patient(family=family))["id"])


def new_observation(client: TestClient, token: str, patient_id: str, **extra: Any) -> str:
    return str(create(client, token, observation(patient_id, **extra))["id"])


def status_of(client: TestClient, token: str, path: str) -> int:
    return int(client.get(f"/fhir/{path}", headers=headers(token)).status_code)


def search_ids(client: TestClient, token: str, query: str) -> tuple[int, set[str]]:
    """(HTTP status, the ids of the resources in the search page) of `GET /fhir/{query}`."""
    response = client.get(f"/fhir/{query}", headers=headers(token))
    if response.status_code != 200:
        return response.status_code, set()
    return 200, {e["resource"]["id"] for e in response.json().get("entry", [])}


def put(client: TestClient, token: str, resource: dict[str, Any]) -> int:
    response = client.put(
        f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource, headers=headers(token)
    )
    return int(response.status_code)


def clock_of(services: Services) -> FixedClock:
    clock = services.records.clock
    assert isinstance(clock, FixedClock)
    return clock


def ledger(services: Services) -> list[dict[str, Any]]:
    """Every ledger entry's access event, in order."""
    with transaction(services.session_factory) as session:
        return [e.event for e in session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq))]


def denials(services: Services, resource_id: str) -> list[dict[str, Any]]:
    """The denied acts on `resource_id` in the ledger."""
    return [
        e
        for e in ledger(services)
        if e.get("resource_id") == resource_id and e.get("outcome") == "denied"
    ]

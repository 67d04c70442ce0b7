"""Small, realistic FHIR R4 resources for the fhir room's tests (fictional people)."""

from __future__ import annotations

import copy
from typing import Any

_PATIENT_REF = {"reference": "Patient/p1"}
_PRACT_REF = {"reference": "Practitioner/dr1"}
_LOINC = "http://loinc.org"
_SNOMED = "http://snomed.info/sct"

EXAMPLES: dict[str, dict[str, Any]] = {
    "Patient": {
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "1840275123456"}],
        "name": [{"use": "official", "family": "Durand", "given": ["Léa", "Marie"]}],
        "gender": "female",
        "birthDate": "1984-02-07",
        "_birthDate": {
            "extension": [
                {
                    "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                    "valueDateTime": "1984-02-07T04:30:00+01:00",
                }
            ]
        },
        "address": [{"city": "Lyon", "postalCode": "69003", "country": "FR"}],
    },
    "Practitioner": {
        "resourceType": "Practitioner",
        "id": "dr1",
        "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "810000000001"}],
        "name": [{"family": "Martin", "given": ["Paul"], "prefix": ["Dr"]}],
    },
    "PractitionerRole": {
        "resourceType": "PractitionerRole",
        "practitioner": _PRACT_REF,
        "organization": {"reference": "Organization/o1"},
        "code": [{"coding": [{"system": _SNOMED, "code": "309343006"}]}],
    },
    "Organization": {
        "resourceType": "Organization",
        "id": "o1",
        "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "690000001"}],
        "name": "Clinique du Parc",
        "alias": ["CDP"],
    },
    "Encounter": {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "AMB",
        },
        "subject": _PATIENT_REF,
        "participant": [{"individual": _PRACT_REF}],
        "period": {"start": "2024-03-01T09:00:00+01:00", "end": "2024-03-01T09:30:00+01:00"},
    },
    "EpisodeOfCare": {
        "resourceType": "EpisodeOfCare",
        "status": "active",
        "patient": _PATIENT_REF,
        "period": {"start": "2024-01-10"},
    },
    "CareTeam": {
        "resourceType": "CareTeam",
        "status": "active",
        "category": [{"coding": [{"system": _LOINC, "code": "LA27976-2"}]}],
        "subject": _PATIENT_REF,
        "participant": [{"member": _PRACT_REF}],
    },
    "Appointment": {
        "resourceType": "Appointment",
        "status": "booked",
        "start": "2024-04-02T14:00:00+02:00",
        "end": "2024-04-02T14:20:00+02:00",
        "participant": [
            {"actor": _PATIENT_REF, "status": "accepted"},
            {"actor": _PRACT_REF, "status": "accepted"},
        ],
    },
    "Observation": {
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
        "code": {"coding": [{"system": _LOINC, "code": "29463-7", "display": "Body weight"}]},
        "subject": _PATIENT_REF,
        "encounter": {"reference": "Encounter/e1"},
        "effectiveDateTime": "2024-03-01T09:10:00+01:00",
        "performer": [_PRACT_REF],
        "valueQuantity": {
            "value": 61.5,
            "unit": "kg",
            "system": "http://unitsofmeasure.org",
            "code": "kg",
        },
    },
    "Condition": {
        "resourceType": "Condition",
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "code": {"coding": [{"system": _SNOMED, "code": "44054006"}]},
        "subject": _PATIENT_REF,
        "onsetDateTime": "2019-05",
    },
    "AllergyIntolerance": {
        "resourceType": "AllergyIntolerance",
        "patient": _PATIENT_REF,
        "code": {"coding": [{"system": _SNOMED, "code": "91936005"}]},
        "criticality": "high",
    },
    "MedicationRequest": {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "860975"}]
        },
        "subject": _PATIENT_REF,
        "requester": _PRACT_REF,
        "authoredOn": "2024-03-01",
    },
    "Procedure": {
        "resourceType": "Procedure",
        "status": "completed",
        "code": {"coding": [{"system": _SNOMED, "code": "80146002"}]},
        "subject": _PATIENT_REF,
        "performedPeriod": {"start": "2023-11-20T08:00:00Z", "end": "2023-11-20T09:15:00Z"},
    },
    "Immunization": {
        "resourceType": "Immunization",
        "status": "completed",
        "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "207"}]},
        "patient": _PATIENT_REF,
        "occurrenceDateTime": "2021-05-12",
    },
    "DiagnosticReport": {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "code": {"coding": [{"system": _LOINC, "code": "58410-2"}]},
        "subject": _PATIENT_REF,
        "effectiveDateTime": "2024-02-28T07:45:00+01:00",
        "result": [{"reference": "Observation/o9"}],
    },
    "DocumentReference": {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"coding": [{"system": _LOINC, "code": "11488-4"}]},
        "subject": _PATIENT_REF,
        "date": "2024-03-01T10:00:00+01:00",
        "content": [{"attachment": {"contentType": "application/pdf", "url": "Binary/b1"}}],
    },
    "Consent": {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [{"coding": [{"system": _LOINC, "code": "59284-0"}]}],
        "patient": _PATIENT_REF,
        "dateTime": "2024-01-05",
        "policyRule": {"text": "opt-in"},
    },
    "Provenance": {
        "resourceType": "Provenance",
        "target": [{"reference": "Observation/o9"}, _PATIENT_REF],
        "recorded": "2024-03-01T09:11:00.123+01:00",
        "agent": [{"who": _PRACT_REF}],
    },
    "Bundle": {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:8c3f7a52-4c9b-4d4e-9a63-0d6f2b1b4a11",
                "resource": {"resourceType": "Patient", "name": [{"family": "Petit"}]},
                "request": {"method": "POST", "url": "Patient"},
            }
        ],
    },
}


def example(resource_type: str) -> dict[str, Any]:
    """A fresh deep copy, so a test may change it freely."""
    return copy.deepcopy(EXAMPLES[resource_type])

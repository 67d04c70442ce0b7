"""Patient compartment membership (FHIR R4 CompartmentDefinition `patient`).

Security role: this decides whose data a resource is. `primary_patient` names the patient whose
data key seals the resource (DESIGN.md contract 3); `patient_references` lists every patient
whose compartment the resource is in, which access control and the patient's own audit view use.
A wrong answer here either seals data under the wrong key or hides an access from a patient, so
the rules follow the published definition
(http://hl7.org/fhir/R4/compartmentdefinition-patient.html) element by element.

Only resolvable literal references count (`Patient/<id>`, or an absolute URL ending in
`/Patient/<id>`): `urn:uuid:` references of a transaction Bundle must be rewritten to the
assigned ids first (`egide.fhir.references.rewrite_references`), and contained (`#x`) or
identifier-only references are not compartment links.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from egide.fhir.references import parse_reference

__all__ = ["COMPARTMENT_PATHS", "patient_references", "primary_patient"]

# For each resource type of the R4 patient compartment, the element paths of its compartment
# search parameters (the parameter's FHIRPath with the `.where(resolve() is Patient)` filters
# left to the reference type check). Dotted paths descend through arrays.
COMPARTMENT_PATHS: dict[str, tuple[str, ...]] = {
    "Account": ("subject",),
    "AdverseEvent": ("subject",),
    "AllergyIntolerance": ("patient", "recorder", "asserter"),
    "Appointment": ("participant.actor",),
    "AppointmentResponse": ("actor",),
    "AuditEvent": ("agent.who", "entity.what"),
    "Basic": ("subject", "author"),
    "BodyStructure": ("patient",),
    "CarePlan": ("subject", "activity.detail.performer"),
    "CareTeam": ("subject", "participant.member"),
    "ChargeItem": ("subject",),
    "Claim": ("patient", "payee.party"),
    "ClaimResponse": ("patient",),
    "ClinicalImpression": ("subject",),
    "Communication": ("subject", "sender", "recipient"),
    "CommunicationRequest": ("subject", "sender", "recipient", "requester"),
    "Composition": ("subject", "author", "attester.party"),
    "Condition": ("subject", "asserter"),
    "Consent": ("patient",),
    "Coverage": ("policyHolder", "subscriber", "beneficiary", "payor"),
    "CoverageEligibilityRequest": ("patient",),
    "CoverageEligibilityResponse": ("patient",),
    "DetectedIssue": ("patient",),
    "DeviceRequest": ("subject", "performer"),
    "DeviceUseStatement": ("subject",),
    "DiagnosticReport": ("subject",),
    "DocumentManifest": ("subject", "author", "recipient"),
    "DocumentReference": ("subject", "author"),
    "Encounter": ("subject",),
    "EnrollmentRequest": ("candidate",),
    "EpisodeOfCare": ("patient",),
    "ExplanationOfBenefit": ("patient", "payee.party"),
    "FamilyMemberHistory": ("patient",),
    "Flag": ("subject",),
    "Goal": ("subject",),
    "Group": ("member.entity",),
    "ImagingStudy": ("subject",),
    "Immunization": ("patient",),
    "ImmunizationEvaluation": ("patient",),
    "ImmunizationRecommendation": ("patient",),
    "Invoice": ("subject", "recipient"),
    "List": ("subject", "source"),
    "MeasureReport": ("subject",),
    "Media": ("subject",),
    "MedicationAdministration": ("subject", "performer.actor"),
    "MedicationDispense": ("subject", "receiver"),
    "MedicationRequest": ("subject",),
    "MedicationStatement": ("subject",),
    "MolecularSequence": ("patient",),
    "NutritionOrder": ("patient",),
    "Observation": ("subject", "performer"),
    "Patient": ("link.other",),
    "Person": ("link.target",),
    "Procedure": ("subject", "performer.actor"),
    "Provenance": ("target",),
    "QuestionnaireResponse": ("subject", "author"),
    "RelatedPerson": ("patient",),
    "RequestGroup": ("subject", "action.participant"),
    "ResearchSubject": ("individual",),
    "RiskAssessment": ("subject",),
    "Schedule": ("actor",),
    "ServiceRequest": ("subject", "performer"),
    "Specimen": ("subject",),
    "SupplyDelivery": ("patient",),
    "SupplyRequest": ("deliverTo",),
    "VisionPrescription": ("patient",),
}

# For types outside the compartment definition (and for the choice of sealing patient), the
# conventional elements that name the patient a resource is about.
_GENERIC_PATHS = ("subject", "patient", "beneficiary")


def _values_at(resource: dict[str, Any], path: str) -> Iterator[Any]:
    """The values at a dotted path, descending through arrays (no recursion)."""
    nodes: list[Any] = [resource]
    for step in path.split("."):
        found: list[Any] = []
        for node in nodes:
            if isinstance(node, dict) and step in node:
                value = node[step]
                found.extend(value if isinstance(value, list) else [value])
        nodes = found
    yield from nodes


def _patient_id(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    reference = value.get("reference")
    # Only relative references name a local patient: an absolute URL points at another
    # server, and trusting its last two segments would file the resource under one of ours.
    if not isinstance(reference, str) or "://" in reference:
        return None
    parsed = parse_reference(reference)
    if parsed is not None and parsed[0] == "Patient":
        return parsed[1]
    return None


def _own_id(resource: dict[str, Any]) -> str | None:
    own = resource.get("id")
    return own if resource.get("resourceType") == "Patient" and isinstance(own, str) else None


def patient_references(resource: dict[str, Any]) -> list[str]:
    """The ids of the patients whose compartment this resource is in, without duplicates.

    A Patient is in its own compartment (its id first) and in those of the patients it links
    to. Other types follow `COMPARTMENT_PATHS`; types outside the definition fall back to
    `subject`, `patient` and `beneficiary`. Practitioners, Organizations and the like give [].
    """
    resource_type = resource.get("resourceType")
    paths: tuple[str, ...] = ()
    if isinstance(resource_type, str):
        paths = COMPARTMENT_PATHS.get(resource_type, _GENERIC_PATHS)
    found: dict[str, None] = {}
    own = _own_id(resource)
    if own is not None:
        found[own] = None
    for path in paths:
        for value in _values_at(resource, path):
            patient = _patient_id(value)
            if patient is not None:
                found[patient] = None
    return list(found)


def primary_patient(resource: dict[str, Any]) -> str | None:
    """The one patient whose data key seals this resource, or None.

    For a Patient, its own id. Otherwise the first of `subject`, `patient`, `beneficiary` that
    references a Patient; failing that, when the compartment links name exactly one patient
    (an Appointment with one patient participant, a ResearchSubject's individual), that one.
    Several candidate patients and no conventional element: None (the caller decides).
    """
    if resource.get("resourceType") == "Patient":
        return _own_id(resource)
    for path in _GENERIC_PATHS:
        for value in _values_at(resource, path):
            patient = _patient_id(value)
            if patient is not None:
                return patient
    candidates = patient_references(resource)
    return candidates[0] if len(candidates) == 1 else None

"""Which resources hold patient data, for the access policy and the search filters.

Deny by default (DESIGN.md, contract 1): directory data — resources about the organisation,
its staff and its terminology — is an explicit allow-list; every other type is patient data,
whether or not a given resource names its patient. A resource of any type that references a
Patient is patient data too, sealed under that patient's key when it names exactly one.
"""

from __future__ import annotations

from typing import Any

from egide.fhir.compartment import primary_patient
from egide.fhir.references import iter_references, parse_reference

DIRECTORY_TYPES = frozenset(
    {
        "ActivityDefinition",
        "CapabilityStatement",
        "CodeSystem",
        "CompartmentDefinition",
        "ConceptMap",
        "Endpoint",
        "HealthcareService",
        "ImplementationGuide",
        "Library",
        "Location",
        "Medication",
        "MedicationKnowledge",
        "NamingSystem",
        "ObservationDefinition",
        "OperationDefinition",
        "Organization",
        "OrganizationAffiliation",
        "PlanDefinition",
        "Practitioner",
        "PractitionerRole",
        "Questionnaire",
        "SearchParameter",
        "SpecimenDefinition",
        "StructureDefinition",
        "StructureMap",
        "Substance",
        "TerminologyCapabilities",
        "ValueSet",
    }
)


def is_patient_data(resource_type: str, patient_id: str | None = None) -> bool:
    return resource_type not in DIRECTORY_TYPES or patient_id is not None


def patient_of(resource: dict[str, Any]) -> str | None:
    """The patient whose key seals `resource`: its primary patient (subject, patient,
    beneficiary, or the single compartment link), else the only Patient it references
    anywhere (Task.for, Binary.securityContext, a stored Bundle's entries); None when it names
    none or several (it then stays patient data unless its type is directory data)."""
    found = primary_patient(resource)
    if found is not None:
        return found
    patients = set()
    for _path, reference in iter_references(resource):
        if "://" in reference:
            continue  # another server's patient is not one of ours
        parsed = parse_reference(reference)
        if parsed is not None and parsed[0] == "Patient":
            patients.add(parsed[1])
    return patients.pop() if len(patients) == 1 else None

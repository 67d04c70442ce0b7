"""Which resource types hold patient data, for the access policy and the search filters.

A type is patient data when the FHIR R4 patient CompartmentDefinition lists it (or it is
Patient itself); a resource of any other type that still names a patient in `subject`,
`patient` or `beneficiary` is sealed under that patient's key and treated as patient data too.
"""

from __future__ import annotations

from egide.fhir.compartment import COMPARTMENT_PATHS

PATIENT_DATA_TYPES = frozenset(COMPARTMENT_PATHS) | {"Patient"}


def is_patient_data(resource_type: str, patient_id: str | None = None) -> bool:
    return resource_type in PATIENT_DATA_TYPES or patient_id is not None

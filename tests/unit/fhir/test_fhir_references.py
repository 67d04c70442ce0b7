"""References and patient compartments (egide.fhir.references, egide.fhir.compartment)."""

from __future__ import annotations

import pytest
from fhir_examples import example
from hypothesis import given
from hypothesis import strategies as st

from egide.fhir.compartment import COMPARTMENT_PATHS, patient_references, primary_patient
from egide.fhir.references import iter_references, parse_reference, rewrite_references
from egide.fhir.validation import resource_types


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("Patient/123", ("Patient", "123")),
        ("Patient/a-b.c", ("Patient", "a-b.c")),
        ("Observation/o1/_history/2", ("Observation", "o1")),
        ("https://ehr.example.org/fhir/Patient/123", ("Patient", "123")),
        ("http://h:8080/base/r4/Encounter/e1/_history/3", ("Encounter", "e1")),
        ("#contained", None),
        ("urn:uuid:8c3f7a52-4c9b-4d4e-9a63-0d6f2b1b4a11", None),
        ("urn:oid:1.2.3", None),
        ("Patient", None),
        ("Patient/", None),
        ("Patient/has space", None),
        ("Patient/" + "x" * 65, None),
        ("Nope/123", None),
        ("patient/123", None),
        ("Patient/123?x=1", None),
        ("Patient/123#frag", None),
        ("ftp://h/Patient/123", None),
        ("Patient?identifier=x|1", None),
        ("/Patient/123", None),
        ("", None),
    ],
)
def test_parse_reference(ref: str, expected: tuple[str, str] | None) -> None:
    assert parse_reference(ref) == expected


@given(st.text(max_size=80))
def test_parse_reference_never_fails(text: str) -> None:
    result = parse_reference(text)
    if result is not None:
        assert result[0] in resource_types()
        assert text.endswith(result[1]) or "/_history/" in text


def test_iter_references_finds_nested_and_contained() -> None:
    resource = example("Observation")
    resource["contained"] = [
        {"resourceType": "Practitioner", "id": "x", "extension": [
            {"url": "http://e", "valueReference": {"reference": "Organization/o1"}}
        ]}
    ]  # fmt: skip
    found = list(iter_references(resource))
    assert ("Observation.subject.reference", "Patient/p1") in found
    assert ("Observation.encounter.reference", "Encounter/e1") in found
    assert ("Observation.performer[0].reference", "Practitioner/dr1") in found
    assert (
        "Observation.contained[0].extension[0].valueReference.reference",
        "Organization/o1",
    ) in found
    assert len(found) == 4


def test_iter_references_handles_deep_resources() -> None:
    node: dict[str, object] = {"reference": "Patient/deep"}
    for _ in range(5000):
        node = {"x": [node]}
    found = list(iter_references({"resourceType": "Basic", "a": node}))
    assert found[0][1] == "Patient/deep"


def test_rewrite_references_replaces_and_copies() -> None:
    urn = "urn:uuid:8c3f7a52-4c9b-4d4e-9a63-0d6f2b1b4a11"
    resource = example("Observation")
    resource["subject"] = {"reference": urn}
    resource["focus"] = [{"reference": urn}, {"reference": "Patient/keep"}]
    resource["note"] = [{"text": f"see {urn}"}]
    result = rewrite_references(resource, {urn: "Patient/new"})
    assert result["subject"] == {"reference": "Patient/new"}
    assert result["focus"] == [{"reference": "Patient/new"}, {"reference": "Patient/keep"}]
    assert result["note"][0]["text"] == f"see {urn}"  # text is never rewritten
    assert resource["subject"] == {"reference": urn}  # the input is untouched
    result["code"]["coding"][0]["code"] = "changed"
    assert resource["code"]["coding"][0]["code"] == "29463-7"  # a deep copy


def test_rewrite_references_handles_deep_resources() -> None:
    node: dict[str, object] = {"reference": "urn:uuid:1"}
    for _ in range(5000):
        node = {"x": [node]}
    result = rewrite_references({"resourceType": "Basic", "a": node}, {"urn:uuid:1": "Patient/1"})
    assert [ref for _, ref in iter_references(result)] == ["Patient/1"]


# -- compartment ---------------------------------------------------------------------------------


def test_patient_is_in_its_own_compartment() -> None:
    patient = example("Patient")
    assert patient_references(patient) == ["p1"]
    assert primary_patient(patient) == "p1"
    patient["link"] = [{"other": {"reference": "Patient/old"}, "type": "replaces"}]
    assert patient_references(patient) == ["p1", "old"]
    assert primary_patient(patient) == "p1"
    del patient["id"]
    assert primary_patient(patient) is None


def test_observation_compartment() -> None:
    obs = example("Observation")
    assert patient_references(obs) == ["p1"]
    assert primary_patient(obs) == "p1"
    obs["performer"].append({"reference": "Patient/self-reporter"})
    assert patient_references(obs) == ["p1", "self-reporter"]
    assert primary_patient(obs) == "p1"
    obs["subject"] = {"reference": "Group/g1"}
    assert patient_references(obs) == ["self-reporter"]
    assert primary_patient(obs) == "self-reporter"  # the one patient it links to


def test_encounter_compartment_ignores_absolute_and_unresolved_references() -> None:
    enc = example("Encounter")
    enc["subject"] = {"reference": "Patient/p7"}
    assert patient_references(enc) == ["p7"]
    assert primary_patient(enc) == "p7"
    # Another server's patient is not one of ours: trusting the URL's last segments would
    # file the resource under a local patient of the same id.
    enc["subject"] = {"reference": "https://ehr.example.org/fhir/Patient/p7"}
    assert patient_references(enc) == []
    assert primary_patient(enc) is None
    enc["subject"] = {"reference": "urn:uuid:8c3f7a52-4c9b-4d4e-9a63-0d6f2b1b4a11"}
    assert patient_references(enc) == []  # unresolved: rewrite first
    assert primary_patient(enc) is None
    enc["subject"] = {"identifier": {"value": "x"}}
    assert patient_references(enc) == []


def test_practitioner_and_organization_are_in_no_compartment() -> None:
    assert patient_references(example("Practitioner")) == []
    assert primary_patient(example("Practitioner")) is None
    assert patient_references(example("Organization")) == []


@pytest.mark.parametrize(
    ("resource_type", "expected"),
    [
        ("Appointment", ["p1"]),
        ("CareTeam", ["p1"]),
        ("Consent", ["p1"]),
        ("Provenance", ["p1"]),
        ("AllergyIntolerance", ["p1"]),
        ("MedicationRequest", ["p1"]),
        ("Immunization", ["p1"]),
        ("EpisodeOfCare", ["p1"]),
        ("DocumentReference", ["p1"]),
    ],
)
def test_compartment_examples(resource_type: str, expected: list[str]) -> None:
    resource = example(resource_type)
    assert patient_references(resource) == expected
    assert primary_patient(resource) == expected[0]


def test_multi_link_types() -> None:
    coverage = {
        "resourceType": "Coverage",
        "status": "active",
        "beneficiary": {"reference": "Patient/child"},
        "subscriber": {"reference": "Patient/parent"},
        "policyHolder": {"reference": "Patient/parent"},
        "payor": [{"reference": "Organization/ins"}],
    }
    assert patient_references(coverage) == ["parent", "child"]
    assert primary_patient(coverage) == "child"  # beneficiary, not the subscriber
    appointment = {
        "resourceType": "Appointment",
        "status": "booked",
        "participant": [
            {"actor": {"reference": "Patient/a"}, "status": "accepted"},
            {"actor": {"reference": "Patient/b"}, "status": "accepted"},
        ],
    }
    assert patient_references(appointment) == ["a", "b"]
    assert primary_patient(appointment) is None  # ambiguous: the caller decides
    claim = {"resourceType": "Claim", "patient": {"reference": "Patient/c"}}
    assert primary_patient(claim) == "c"
    research = {"resourceType": "ResearchSubject", "individual": {"reference": "Patient/r"}}
    assert primary_patient(research) == "r"


def test_generic_fallback_for_types_outside_the_definition() -> None:
    assert "ImagingStudy" in COMPARTMENT_PATHS
    resource = {"resourceType": "Task", "status": "draft", "for": {"reference": "Patient/x"}}
    assert patient_references(resource) == []  # `for` is not a conventional element
    guidance = {"resourceType": "GuidanceResponse", "subject": {"reference": "Patient/g"}}
    assert patient_references(guidance) == ["g"]
    assert primary_patient(guidance) == "g"


def test_compartment_table_names_known_types() -> None:
    assert set(COMPARTMENT_PATHS) <= resource_types()

"""Secretary masking (access.masking): what is removed, what is kept, what a masked write does.

A secretary reads appointments and stays without their clinical reason (issue 5, item 2); when
they reschedule, they can neither erase nor forge the clinical elements they never saw.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from egide.access.masking import MASKED_ELEMENTS, REDACTED, carry_masked, mask

# Written out from the FHIR R4 element lists: the clinical elements of each scheduling type.
# Narrative, contained resources and extensions can carry anything clinical.
ANYWHERE = {"contained", "extension", "modifierExtension", "text"}
CLINICAL = {
    "Appointment": ANYWHERE
    | {
        "comment",
        "description",
        "patientInstruction",
        "reasonCode",
        "reasonReference",
        "supportingInformation",
    },
    "CareTeam": ANYWHERE | {"note", "reasonCode", "reasonReference"},
    "Encounter": ANYWHERE | {"diagnosis", "reasonCode", "reasonReference"},
    "EpisodeOfCare": ANYWHERE | {"diagnosis"},
}
REASON = [{"coding": [{"system": "http://snomed.info/sct", "code": "35489007"}]}]  # depression
CONFIDENTIAL = {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}


def appointment(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Appointment",
        "id": "a1",
        "status": "booked",
        "start": "2026-03-02T09:00:00Z",
        "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"}],
        **extra,
    }


def redacted(resource: dict[str, Any]) -> list[dict[str, Any]]:
    return [x for x in resource.get("meta", {}).get("security", []) if x.get("code") == "REDACTED"]


def test_the_masked_elements_are_the_clinical_ones() -> None:
    assert {k: set(v) for k, v in MASKED_ELEMENTS.items()} == CLINICAL


@pytest.mark.parametrize("resource_type", sorted(CLINICAL))
def test_mask_removes_exactly_the_listed_elements(resource_type: str) -> None:
    resource: dict[str, Any] = {"resourceType": resource_type, "id": "x", "status": "active"}
    resource |= dict.fromkeys(CLINICAL[resource_type], REASON)
    resource["meta"] = {"versionId": "3", "security": [CONFIDENTIAL]}
    before = copy.deepcopy(resource)
    shown = mask(resource)
    assert resource == before, "the stored resource is not changed"
    assert set(resource) - set(shown) == CLINICAL[resource_type]
    assert {k: v for k, v in shown.items() if k != "meta"} == {
        k: v for k, v in before.items() if k not in CLINICAL[resource_type] and k != "meta"
    }
    assert shown["meta"]["versionId"] == "3"
    assert shown["meta"]["security"] == [CONFIDENTIAL, REDACTED]


def test_nothing_to_mask_means_no_label() -> None:
    plain = appointment()
    assert mask(plain) == plain
    assert not redacted(mask(plain))
    for other in (
        {"resourceType": "Patient", "id": "p1"},
        {"resourceType": "Observation", "note": []},
    ):
        assert mask(other) == other


def test_redacted_once_and_idempotent() -> None:
    # A label REDACTED already there (a clinician may have set it) is not doubled.
    resource = appointment(reasonCode=REASON, meta={"security": [REDACTED, CONFIDENTIAL]})
    once = mask(resource)
    assert redacted(once) == [REDACTED]
    assert mask(once) == once
    assert mask(mask(appointment(comment="x"))) == mask(appointment(comment="x"))


@settings(max_examples=300, deadline=None)
@given(
    resource_type=st.sampled_from([*sorted(CLINICAL), "Patient"]),
    present=st.sets(
        st.sampled_from(sorted(set().union(*CLINICAL.values()) | {"status", "start", "period"}))
    ),
)
def test_mask_properties(resource_type: str, present: set[str]) -> None:
    resource: dict[str, Any] = {"resourceType": resource_type, **dict.fromkeys(present, "v")}
    shown = mask(resource)
    removed = present & CLINICAL.get(resource_type, set())
    assert set(shown) - {"meta"} == {"resourceType"} | (present - removed)
    assert len(redacted(shown)) == (1 if removed else 0)
    assert mask(shown) == shown


def test_carry_masked_keeps_the_stored_clinical_elements() -> None:
    stored = appointment(
        reasonCode=REASON, comment="suicidal ideation", meta={"security": [CONFIDENTIAL]}
    )
    # What the secretary read (masked), rescheduled, and sent back with an attempt to forge.
    sent = mask(stored) | {"start": "2026-03-03T09:00:00Z", "description": "forged", "comment": ""}
    written = carry_masked(sent, stored)
    assert written["start"] == "2026-03-03T09:00:00Z"
    assert written["reasonCode"] == REASON
    assert written["comment"] == "suicidal ideation"
    assert "description" not in written  # not stored before: not forged now
    assert written["meta"]["security"] == [CONFIDENTIAL], "REDACTED labels a copy, not the record"


def test_carry_masked_on_create_drops_clinical_elements() -> None:
    written = carry_masked(appointment(reasonCode=REASON, patientInstruction="fast"), None)
    assert "reasonCode" not in written
    assert "patientInstruction" not in written
    assert written["status"] == "booked"


def test_carry_masked_cannot_erase() -> None:
    stored = appointment(reasonReference=[{"reference": "Condition/c1"}])
    sent = {k: v for k, v in stored.items() if k != "reasonReference"}
    assert carry_masked(sent, stored)["reasonReference"] == [{"reference": "Condition/c1"}]


def test_carry_masked_leaves_other_types_alone() -> None:
    patient = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Durand"}]}
    assert carry_masked(patient, None) == patient


def test_carry_masked_keeps_stored_sensitivity_labels() -> None:
    """A secretary's update cannot drop a label a consent relies on (it may add one)."""
    hiv = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HIV"}
    psy = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}
    old = {"resourceType": "Appointment", "status": "booked", "meta": {"security": [hiv]}}
    sent = {
        "resourceType": "Appointment",
        "status": "arrived",
        "meta": {"security": [dict(REDACTED), psy]},
    }
    out = carry_masked(sent, old)
    assert out["meta"]["security"] == [hiv, psy]
    dropped = carry_masked({"resourceType": "Appointment", "status": "arrived"}, old)
    assert dropped["meta"]["security"] == [hiv]
    none = carry_masked({"resourceType": "Appointment", "meta": {"security": [REDACTED]}}, None)
    assert "security" not in none.get("meta", {})


def test_a_contained_condition_and_the_narrative_are_masked() -> None:
    hidden = {"resourceType": "Condition", "id": "c1", "code": {"text": "HIV infection"}}
    masked = mask(
        appointment(
            contained=[hidden],
            text={"status": "generated", "div": "<div>HIV follow-up</div>"},
            extension=[{"url": "http://example.org/why", "valueString": "HIV"}],
        )
    )
    assert "HIV" not in repr({k: v for k, v in masked.items() if k != "meta"})
    assert redacted(masked)

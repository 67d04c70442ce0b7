"""`records.visibility.context_for`: how a patient's consent rules become the policy's facts
for one resource (which labels restrict it, which denials name the caller)."""

from __future__ import annotations

import pytest

from egide.access.rules import RESTRICT_ALL_EXEMPT
from egide.records.visibility import ALL_LABELS, PatientFacts, context_for

HIV = b"h" * 32
PSY = b"p" * 32


def test_no_facts_no_restriction() -> None:
    context, restricted = context_for(None, {HIV}, "Observation")
    assert context.facts == ()
    assert context.consent_denials == ()
    assert not restricted


def test_a_restricted_label_restricts_only_resources_carrying_it() -> None:
    facts = PatientFacts(restricted={HIV})
    assert context_for(facts, {HIV, PSY}, "Observation")[1]
    assert not context_for(facts, {PSY}, "Observation")[1]
    assert not context_for(facts, set(), "Observation")[1]


@pytest.mark.parametrize("resource_type", sorted(RESTRICT_ALL_EXEMPT))
def test_restrict_everything_spares_identity_scheduling_and_consents(resource_type: str) -> None:
    """A deny with no actor and no label keeps the clinical record to the treating team; the
    desks and the DPO still reach who the patient is, their appointments and consents."""
    facts = PatientFacts(restricted={ALL_LABELS})
    assert not context_for(facts, set(), resource_type)[1]
    assert context_for(facts, set(), "Observation")[1]
    assert context_for(facts, set(), "Condition")[1]
    # An explicit label on an exempt type still restricts it.
    labelled = PatientFacts(restricted={ALL_LABELS, PSY})
    assert context_for(labelled, {PSY}, resource_type)[1]


def test_denials_name_the_caller_for_all_or_for_labels() -> None:
    facts = PatientFacts(deny_all=["all"], deny_labels={HIV: "hiv"})
    assert context_for(facts, set(), "Observation")[0].consent_denials == ("all",)
    assert context_for(facts, {HIV}, "Observation")[0].consent_denials == ("all", "hiv")

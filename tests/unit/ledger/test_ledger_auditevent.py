"""The ledger -> FHIR R4 AuditEvent mapping (IHE BALP patterns, DICOM audit codes).

Every mapped event is checked against the FHIR R4 model by the same validator that guards
stored resources, so "valid AuditEvent" is not taken on the mapping's word.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from egide.core.errors import EgideError
from egide.fhir.validation import validate_resource
from egide.ledger.auditevent import (
    ACTION_SYSTEM,
    USER_SYSTEM,
    actions_with_code,
    audit_event,
    event_kind,
)
from egide.ledger.service import Action

REST = "http://terminology.hl7.org/CodeSystem/audit-event-type"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
INTERACTION = "http://hl7.org/fhir/restful-interaction"


def entry(**changes: Any) -> dict[str, Any]:
    """An access-event dict as `ledger.service.iter_events` yields it."""
    base: dict[str, Any] = {
        "id": "7d1b7f7e-0c1a-4d55-9a53-0e3f8f3c2a11",
        "time": "2026-03-02T08:15:02.123456Z",
        "user": "0f0e6a52-1b7c-4b0e-8d5e-3c7a0e9b1d22",
        "role": "physician",
        "action": "read",
        "outcome": "success",
        "patient": "pat-1",
        "resource_type": "Observation",
        "resource_id": "obs-1",
        "count": 1,
        "ip": "192.0.2.10",
        "device": "Mozilla/5.0 (X11; Linux x86_64)",
        "purpose": None,
        "request_id": "c0ffee00-1234-4abc-8def-000000000001",
        "reasons": ["role physician grants patient:clinical:read"],
        "seq": 42,
    }
    base.update(changes)
    return base


def valid(event: dict[str, Any]) -> dict[str, Any]:
    try:
        return validate_resource(event, expected_type="AuditEvent")
    except EgideError as exc:  # show every issue, not just the first
        pytest.fail(f"{exc.message}: {exc.all_issues()}")


# (action, type system, type code, subtype system, subtype code, action code)
MAPPING = [
    ("create", REST, "rest", INTERACTION, "create", "C"),
    ("read", REST, "rest", INTERACTION, "read", "R"),
    ("update", REST, "rest", INTERACTION, "update", "U"),
    ("delete", REST, "rest", INTERACTION, "delete", "D"),
    ("search", REST, "rest", INTERACTION, "search-type", "E"),
    ("export", DCM, "110106", None, None, "R"),
    ("ledger_archive", DCM, "110106", None, None, "R"),
    ("login", DCM, "110114", DCM, "110122", "E"),
    ("login_failed", DCM, "110114", DCM, "110122", "E"),
    ("mfa_failed", DCM, "110114", DCM, "110122", "E"),
    ("logout", DCM, "110114", DCM, "110123", "E"),
    ("break_glass", DCM, "110113", DCM, "110127", "E"),
    ("break_glass_end", DCM, "110113", DCM, "110128", "E"),
    ("access_grant", DCM, "110113", DCM, "110137", "C"),
    ("access_grant_end", DCM, "110113", DCM, "110137", "D"),
    ("alert_update", DCM, "110113", None, None, "U"),
    ("key_rotate", DCM, "110113", DCM, "110129", "U"),
    ("key_shred", DCM, "110113", DCM, "110129", "D"),
    ("token_create", DCM, "110113", DCM, "110137", "C"),
    ("system_init", DCM, "110100", DCM, "110120", "E"),
    ("account_create", DCM, "110113", DCM, "110137", "C"),
    ("account_disable", DCM, "110113", DCM, "110137", "U"),
    ("account_enable", DCM, "110113", DCM, "110137", "U"),
    ("account_lock", DCM, "110113", DCM, "110137", "U"),
    ("account_role_change", DCM, "110113", DCM, "110137", "U"),
    ("account_unlock", DCM, "110113", DCM, "110137", "U"),
    ("mfa_enrol", DCM, "110113", DCM, "110137", "U"),
    ("mfa_reset", DCM, "110113", DCM, "110137", "U"),
    ("oauth_revoke", DCM, "110113", DCM, "110137", "U"),
    ("passkey_remove", DCM, "110113", DCM, "110137", "U"),
    ("password_change", DCM, "110113", DCM, "110137", "U"),
    ("session_revoke", DCM, "110114", DCM, "110123", "E"),
    ("step_up_required", DCM, "110113", DCM, "110137", "U"),
    ("token_revoke", DCM, "110113", DCM, "110137", "D"),
]


def test_the_mapping_covers_every_ledger_action() -> None:
    assert {row[0] for row in MAPPING} == {a.value for a in Action}


@pytest.mark.parametrize(
    ("action", "type_system", "type_code", "sub_system", "sub_code", "code"), MAPPING
)
def test_each_action_maps_to_its_type_subtype_and_action(
    action: str,
    type_system: str,
    type_code: str,
    sub_system: str | None,
    sub_code: str | None,
    code: str,
) -> None:
    event = valid(audit_event(entry(action=action)))
    assert (event["type"]["system"], event["type"]["code"]) == (type_system, type_code)
    subtypes = [(s["system"], s["code"]) for s in event["subtype"]]
    # The ledger's own action is always there, last, so nothing is lost in translation.
    assert subtypes[-1] == (ACTION_SYSTEM, action)
    if sub_code is None:
        assert len(subtypes) == 1
    else:
        assert subtypes[0] == (sub_system, sub_code)
    assert event["action"] == code
    kind = event_kind(action, "Observation")
    assert kind.action == code


def test_a_search_without_a_type_is_a_system_search() -> None:
    event = valid(audit_event(entry(action="search", resource_type=None, resource_id=None)))
    assert event["subtype"][0]["code"] == "search-system"
    assert all(e["type"]["code"] != "2" for e in event.get("entity", []))


@pytest.mark.parametrize(
    ("outcome", "code"), [("success", "0"), ("denied", "4"), ("error", "8"), ("garbled", "8")]
)
def test_outcomes_follow_the_r4_audit_event_outcome_codes(outcome: str, code: str) -> None:
    # Something the ledger does not know is never reported as a success.
    event = valid(audit_event(entry(outcome=outcome, reasons=["role x lacks y"])))
    assert event["outcome"] == code
    assert event["outcomeDesc"] == "role x lacks y"


@pytest.mark.parametrize("action", [row[0] for row in MAPPING])
@pytest.mark.parametrize("outcome", ["success", "denied", "error"])
def test_every_action_and_outcome_validates_as_r4_even_with_nothing_optional(
    action: str, outcome: str
) -> None:
    valid(audit_event(entry(action=action, outcome=outcome)))
    bare = {
        "id": "e-1",
        "time": "2026-03-02T08:15:02Z",
        "action": action,
        "outcome": outcome,
        "user": None,
        "role": None,
        "patient": None,
        "resource_type": None,
        "resource_id": None,
        "count": 0,
        "ip": None,
        "device": None,
        "purpose": None,
        "request_id": None,
        "reasons": [],
    }
    event = valid(audit_event(bare))
    # AuditEvent.agent is 1..*: a system act still names who asked for it.
    assert event["agent"][0]["requestor"] is True
    assert "identifier" not in event["agent"][0]["who"]
    assert "entity" not in event


def test_unknown_actions_are_kept_with_egide_codes() -> None:
    event = valid(audit_event(entry(action="consent_withdrawn")))
    assert event["type"] == {"system": ACTION_SYSTEM, "code": "consent_withdrawn"}
    assert event["action"] == "E"
    # An action that is not even a valid FHIR code still yields a valid resource.
    odd = valid(audit_event(entry(action="two  spaces\n")))
    assert odd["type"]["code"] == "unknown"


def test_agent_carries_user_role_address_purpose_and_client() -> None:
    event = valid(audit_event(entry(action="break_glass", purpose="unconscious in ER")))
    user, client = event["agent"]
    assert user["who"]["identifier"] == {
        "system": USER_SYSTEM,
        "value": "0f0e6a52-1b7c-4b0e-8d5e-3c7a0e9b1d22",
    }
    assert user["role"][0]["text"] == "physician"
    assert user["requestor"] is True
    assert user["network"] == {"address": "192.0.2.10", "type": "2"}
    assert user["purposeOfUse"] == [{"text": "unconscious in ER"}]
    assert client["type"]["coding"][0]["code"] == "110153"
    assert client["who"]["display"] == "Mozilla/5.0 (X11; Linux x86_64)"
    assert client["requestor"] is False
    assert event["source"]["type"][0]["code"] == "4"


def test_entities_name_the_patient_the_resource_and_the_request() -> None:
    event = valid(audit_event(entry(action="update", count=1)))
    by_type = {e["type"]["code"]: e for e in event["entity"]}
    assert by_type["1"]["what"] == {"reference": "Patient/pat-1"}
    assert by_type["1"]["role"]["code"] == "1"
    assert by_type["2"]["what"] == {"reference": "Observation/obs-1"}
    assert by_type["2"]["role"]["code"] == "4"
    assert by_type["2"]["detail"] == [{"type": "count", "valueString": "1"}]
    assert by_type["XrequestId"]["what"]["identifier"]["value"] == (
        "c0ffee00-1234-4abc-8def-000000000001"
    )
    search = valid(audit_event(entry(action="search", resource_id=None, count=7)))
    query = next(e for e in search["entity"] if e["type"]["code"] == "2")
    assert query["role"]["code"] == "24"
    assert query["name"] == "Observation"
    assert query["detail"] == [{"type": "count", "valueString": "7"}]


def test_id_time_and_nothing_else_leak_through() -> None:
    secrets = {
        "token": "egide_SuperSecretTokenValue",
        "password": "correct horse battery staple",
        "totp_seed": "JBSWY3DPEHPK3PXP",
        "valueQuantity": "72 /min",
        "family": "Lefèvre",
        "resource": {"name": [{"family": "Lefèvre"}], "birthDate": "1987-04-12"},
    }
    event = valid(audit_event(entry(**secrets)))
    text = json.dumps(event, ensure_ascii=False)
    for needle in ("SuperSecret", "horse", "JBSWY3DP", "72 /min", "Lefèvre", "1987-04-12"):
        assert needle not in text
    assert event["id"] == "7d1b7f7e-0c1a-4d55-9a53-0e3f8f3c2a11"
    assert event["recorded"] == "2026-03-02T08:15:02.123456Z"


def test_an_entry_id_that_is_not_a_fhir_id_is_refused() -> None:
    with pytest.raises(ValueError, match="FHIR id"):
        audit_event(entry(id="../../etc/passwd"))


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("C", {"create", "token_create", "account_create", "access_grant"}),
        ("R", {"read", "export", "ledger_archive"}),
        (
            "U",
            {
                "update",
                "alert_update",
                "key_rotate",
                "account_disable",
                "account_enable",
                "account_lock",
                "account_role_change",
                "account_unlock",
                "mfa_enrol",
                "mfa_reset",
                "oauth_revoke",
                "passkey_remove",
                "password_change",
                "step_up_required",
            },
        ),
        ("D", {"delete", "key_shred", "access_grant_end", "token_revoke"}),
        ("search-type", {"search"}),
        ("search", {"search"}),
        ("110122", {"login", "login_failed", "mfa_failed"}),
        ("110127", {"break_glass"}),
        ("110128", {"break_glass_end"}),
        ("no-such-code", set()),
    ],
)
def test_codes_select_the_right_ledger_actions(code: str, expected: set[str]) -> None:
    assert actions_with_code(code) == expected


def test_action_e_selects_exactly_the_actions_mapped_to_e() -> None:
    mapped_to_e = {row[0] for row in MAPPING if row[5] == "E"}
    assert actions_with_code("E") == mapped_to_e

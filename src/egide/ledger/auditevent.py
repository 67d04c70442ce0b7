"""The ledger's entries as FHIR R4 `AuditEvent` resources, following IHE BALP.

Security role: this is how the security officer (and any SIEM speaking FHIR) reads the
tamper-evident ledger. The mapping is pure and one-way: it turns one access-event dict, as
`ledger.service.iter_events` or `ledger.queries` yield it, into an AuditEvent
(http://hl7.org/fhir/R4/auditevent.html). It only rearranges what the entry already holds —
ids, types, the action, the outcome, the stated purpose and the access decision's reasons — so
it can reveal no secret and no clinical value: the ledger never holds any (DESIGN.md contract 4).

Patterns (IHE ITI Basic Audit Log Patterns, BALP, https://profiles.ihe.net/ITI/BALP/):

- RESTful data acts follow BALP Create / Read / Update / Delete / Query and their
  PatientCreate / PatientRead / ... variants: `type` is audit-event-type `rest`, `subtype` the
  FHIR restful-interaction code (create, read, update, delete, search-type or search-system),
  `action` C / R / U / D / E, an entity for the patient (audit-entity-type 1 Person, object-role
  1 Patient), an entity for the resource (2 System Object, role 4 Domain Resource, or role 24
  Query for a search) and, when known, the X-Request-Id as a BALP `XrequestId` entity.
  BALP fixes `type` to `rest` for RESTful events, so the DICOM event IDs 110110 Patient Record
  and 110112 Query (the ATNA codes for non-FHIR transports) are not used for them.
- Sign-in events use DICOM 110114 User Authentication with subtype 110122 Login or 110123
  Logout (failed logins and failed MFA are Login events with a failure outcome).
- Break-the-glass uses DICOM 110113 Security Alert with subtype 110127 Emergency Override
  Started (110128 Emergency Override Stopped when the grant is ended early); an assignment or
  investigation grant, and its end, is a Security Alert with 110137 User Security Attributes
  Changed; an officer's triage of an alert a Security Alert; key and token operations are
  Security Alerts too (110129 Security Configuration, 110137 User Security Attributes
  Changed); initialisation is 110100 Application Activity /
  110120 Application Start; an export, and the archiving of old ledger segments, is 110106
  Export.
- Every event also carries the ledger's own action as an Égide-coded subtype, so an action the
  mapping does not know (the ledger keeps unknown actions) is still served and searchable.

`outcome` follows the R4 value set audit-event-outcome: 0 success, 4 minor failure (an access
denied by policy or a failed sign-in), 8 serious failure (an error).

`meta.profile` is not set: the BALP profiles require elements the ledger does not keep (the
Query profiles need the query's text, which may carry searched-for patient data and is
deliberately not stored; the profiles also describe successful events only), so claiming them
would be false. The structure follows their patterns so a BALP-aware reader finds what it
expects where it expects it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ACTION_SYSTEM",
    "ROLE_SYSTEM",
    "USER_SYSTEM",
    "EventKind",
    "actions_with_code",
    "audit_event",
    "event_kind",
]

# Égide's own code systems: the ledger action, the role of the acting account, its id.
ACTION_SYSTEM = "urn:egide:ledger-action"
ROLE_SYSTEM = "urn:egide:role"
USER_SYSTEM = "urn:egide:account"

_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_INTERACTION = "http://hl7.org/fhir/restful-interaction"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
_BALP_ENTITY_TYPE = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"

_OUTCOMES = {"success": "0", "denied": "4", "error": "8"}
_CODE = re.compile(r"[^\s]+( [^\s]+)*")  # FHIR R4 datatypes.html#code
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # FHIR R4 datatypes.html#id
_SYSTEM_NAME = "Égide"


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    coding = {"system": system, "code": code}
    if display is not None:
        coding["display"] = display
    return coding


_REST = _coding(_EVENT_TYPE, "rest", "Restful Operation")
_USER_AUTH = _coding(_DCM, "110114", "User Authentication")
_SECURITY_ALERT = _coding(_DCM, "110113", "Security Alert")
_LOGIN = _coding(_DCM, "110122", "Login")
_USER_SECURITY_ATTRIBUTES = _coding(_DCM, "110137", "User Security Attributes Changed")


@dataclass(frozen=True)
class EventKind:
    """What kind of event a ledger action is: AuditEvent type, subtype and action code."""

    type: Mapping[str, str]
    subtype: Mapping[str, str] | None
    action: str  # C | R | U | D | E (R4 value set audit-event-action)


_KINDS: Mapping[str, EventKind] = {
    "create": EventKind(_REST, _coding(_INTERACTION, "create", "create"), "C"),
    "read": EventKind(_REST, _coding(_INTERACTION, "read", "read"), "R"),
    "update": EventKind(_REST, _coding(_INTERACTION, "update", "update"), "U"),
    "delete": EventKind(_REST, _coding(_INTERACTION, "delete", "delete"), "D"),
    # "search": chosen per entry (search-type or search-system), see event_kind.
    "export": EventKind(_coding(_DCM, "110106", "Export"), None, "R"),
    # Old ledger segments written to an encrypted archive file (retention): an export of the
    # audit trail itself; the Égide subtype says which.
    "ledger_archive": EventKind(_coding(_DCM, "110106", "Export"), None, "R"),
    "login": EventKind(_USER_AUTH, _LOGIN, "E"),
    "login_failed": EventKind(_USER_AUTH, _LOGIN, "E"),
    "mfa_failed": EventKind(_USER_AUTH, _LOGIN, "E"),
    "logout": EventKind(_USER_AUTH, _coding(_DCM, "110123", "Logout"), "E"),
    "break_glass": EventKind(
        _SECURITY_ALERT, _coding(_DCM, "110127", "Emergency Override Started"), "E"
    ),
    # A break-the-glass grant ended before its time (by its holder or an administrator).
    "break_glass_end": EventKind(
        _SECURITY_ALERT, _coding(_DCM, "110128", "Emergency Override Stopped"), "E"
    ),
    # An explicit assignment or an investigation grant gives an account access it did not
    # have: a change of that user's security attributes, created then ended.
    "access_grant": EventKind(_SECURITY_ALERT, _USER_SECURITY_ATTRIBUTES, "C"),
    "access_grant_end": EventKind(_SECURITY_ALERT, _USER_SECURITY_ATTRIBUTES, "D"),
    # The security officer triages an alert (acknowledged, false positive, confirmed): a
    # Security Alert event with no finer DICOM subtype; the Égide subtype says which.
    "alert_update": EventKind(_SECURITY_ALERT, None, "U"),
    "key_rotate": EventKind(
        _SECURITY_ALERT, _coding(_DCM, "110129", "Security Configuration"), "U"
    ),
    # Destroying a patient's data key erases their data (crypto-shredding): a deletion.
    "key_shred": EventKind(_SECURITY_ALERT, _coding(_DCM, "110129", "Security Configuration"), "D"),
    "token_create": EventKind(
        _SECURITY_ALERT, _coding(_DCM, "110137", "User Security Attributes Changed"), "C"
    ),
    # Accounts and their factors (the identity issue): changes of a user's security
    # attributes; a revoked session is a logout the user did not ask for.
    "account_create": EventKind(_SECURITY_ALERT, _USER_SECURITY_ATTRIBUTES, "C"),
    "account_disable": EventKind(_SECURITY_ALERT, _USER_SECURITY_ATTRIBUTES, "U"),
    "account_enable": EventKind(_SECURITY_ALERT, _USER_SECURITY_ATTRIBUTES, "U"),
    "account_lock": EventKind(_SECURITY_ALERT, _USER_SECURITY_ATTRIBUTES, "U"),
    "account_role_change": EventKind(_SECURITY_ALERT, _USER_SECURITY_ATTRIBUTES, "U"),
    "account_unlock": EventKind(_SECURITY_ALERT, _USER_SECURITY_ATTRIBUTES, "U"),
    "mfa_enrol": EventKind(_SECURITY_ALERT, _USER_SECURITY_ATTRIBUTES, "U"),
    "mfa_reset": EventKind(_SECURITY_ALERT, _USER_SECURITY_ATTRIBUTES, "U"),
    # An app's access tokens revoked (RFC 7009, or the person's "Revoke access"): the user's
    # delegated authorizations change.
    "oauth_revoke": EventKind(_SECURITY_ALERT, _USER_SECURITY_ATTRIBUTES, "U"),
    # A passkey (a WebAuthn credential record) removed by its holder: like an MFA reset, a
    # change of the user's security attributes, not a deletion of data.
    "passkey_remove": EventKind(_SECURITY_ALERT, _USER_SECURITY_ATTRIBUTES, "U"),
    "password_change": EventKind(_SECURITY_ALERT, _USER_SECURITY_ATTRIBUTES, "U"),
    "session_revoke": EventKind(_USER_AUTH, _coding(_DCM, "110123", "Logout"), "E"),
    # Automatic containment after a critical alert (issue 6): the account's sessions must
    # authenticate again, or an API token is withdrawn: its security attributes change.
    "step_up_required": EventKind(_SECURITY_ALERT, _USER_SECURITY_ATTRIBUTES, "U"),
    "token_revoke": EventKind(_SECURITY_ALERT, _USER_SECURITY_ATTRIBUTES, "D"),
    "system_init": EventKind(
        _coding(_DCM, "110100", "Application Activity"),
        _coding(_DCM, "110120", "Application Start"),
        "E",
    ),
}
_SEARCH_TYPE = EventKind(_REST, _coding(_INTERACTION, "search-type", "search-type"), "E")
_SEARCH_SYSTEM = EventKind(_REST, _coding(_INTERACTION, "search-system", "search-system"), "E")


def _action_code(action: str) -> str:
    return action if _CODE.fullmatch(action) else "unknown"


def event_kind(action: str, resource_type: str | None = None) -> EventKind:
    """The AuditEvent type, subtype and action for a ledger action.

    An action the mapping does not know is typed with Égide's action code system and `E`.
    """
    if action == "search":
        return _SEARCH_TYPE if resource_type else _SEARCH_SYSTEM
    kind = _KINDS.get(action)
    if kind is not None:
        return kind
    return EventKind(_coding(ACTION_SYSTEM, _action_code(action)), None, "E")


def actions_with_code(code: str) -> frozenset[str]:
    """The known ledger actions whose AuditEvent `action` (C/R/U/D/E) or `subtype` code is
    `code`, for search by action or subtype; `search` also matches its restful-interaction
    parent code. A code no known action uses gives the empty set."""
    found = {
        action
        for action, kind in _KINDS.items()
        if code == kind.action or (kind.subtype is not None and code == kind.subtype["code"])
    }
    if code in ("E", "search", "search-type", "search-system"):
        found.add("search")
    return frozenset(found)


def _reference(resource_type: str | None, resource_id: str | None) -> dict[str, str] | None:
    if not resource_type or not resource_id:
        return None
    return {"reference": f"{resource_type}/{resource_id}"}


def _user_agent(entry: Mapping[str, Any]) -> dict[str, Any]:
    user = entry.get("user")
    role = entry.get("role")
    agent: dict[str, Any] = {}
    if role:
        agent["role"] = [{"coding": [_coding(ROLE_SYSTEM, _action_code(str(role)))], "text": role}]
    if user:
        agent["who"] = {"identifier": {"system": USER_SYSTEM, "value": user}, "display": user}
    else:
        agent["who"] = {"display": f"{_SYSTEM_NAME} (no signed-in user)"}
    agent["requestor"] = True
    ip = entry.get("ip")
    if ip:
        agent["network"] = {"address": ip, "type": "2"}  # 2 = IP address (network-type)
    purpose = entry.get("purpose")
    if purpose:
        agent["purposeOfUse"] = [{"text": purpose}]
    return agent


def _client_agent(device: str) -> dict[str, Any]:
    # DICOM 110153 Source Role ID: the client software or workstation the request came from.
    return {
        "type": {"coding": [_coding(_DCM, "110153", "Source Role ID")]},
        "who": {"display": device},
        "requestor": False,
    }


def _entities(entry: Mapping[str, Any], action: str) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    resource_type = entry.get("resource_type")
    resource_id = entry.get("resource_id")
    count = entry.get("count")
    data: dict[str, Any] | None = None
    what = _reference(resource_type, resource_id)
    if what is not None:
        data = {
            "what": what,
            "type": _coding(_ENTITY_TYPE, "2", "System Object"),
            "role": _coding(_OBJECT_ROLE, "4", "Domain Resource"),
        }
    elif resource_type:
        data = {"type": _coding(_ENTITY_TYPE, "2", "System Object")}
        if action == "search":
            data["role"] = _coding(_OBJECT_ROLE, "24", "Query")
        data["name"] = resource_type
    if data is not None:
        if isinstance(count, int) and not isinstance(count, bool):
            data["detail"] = [{"type": "count", "valueString": str(count)}]
        entities.append(data)
    patient = entry.get("patient")
    if patient:
        entities.append(
            {
                "what": {"reference": f"Patient/{patient}"},
                "type": _coding(_ENTITY_TYPE, "1", "Person"),
                "role": _coding(_OBJECT_ROLE, "1", "Patient"),
            }
        )
    request_id = entry.get("request_id")
    if request_id:
        entities.append(
            {
                "what": {"identifier": {"value": request_id}},
                "type": _coding(
                    _BALP_ENTITY_TYPE,
                    "XrequestId",
                    "transport specific unique identifier where http X-Request-Id is used",
                ),
            }
        )
    return entities


def audit_event(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The FHIR R4 AuditEvent for one ledger entry (an access-event dict).

    `id` is the entry's id, `recorded` (and `meta.lastUpdated`) its time as the ledger wrote
    it. Raises ValueError when the entry's id is not a FHIR id (the ledger only writes UUIDs).
    """
    entry_id = str(entry["id"])
    if not _ID.fullmatch(entry_id):
        msg = "a ledger entry id must be a valid FHIR id"
        raise ValueError(msg)
    action = str(entry.get("action") or "unknown")
    kind = event_kind(action, entry.get("resource_type"))
    subtypes: list[dict[str, str]] = []
    if kind.subtype is not None:
        subtypes.append(dict(kind.subtype))
    subtypes.append(_coding(ACTION_SYSTEM, _action_code(action)))
    recorded = str(entry["time"])
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": entry_id,
        "meta": {"lastUpdated": recorded},
        "type": dict(kind.type),
        "subtype": subtypes,
        "action": kind.action,
        "recorded": recorded,
        "outcome": _OUTCOMES.get(str(entry.get("outcome") or "success"), "8"),
    }
    reasons = [str(r) for r in entry.get("reasons") or () if str(r)]
    if reasons:
        event["outcomeDesc"] = "; ".join(reasons)
    agents = [_user_agent(entry)]
    device = entry.get("device")
    if device:
        agents.append(_client_agent(str(device)))
    event["agent"] = agents
    event["source"] = {
        "site": _SYSTEM_NAME,
        "observer": {"display": f"{_SYSTEM_NAME} FHIR server"},
        "type": [_coding(_SOURCE_TYPE, "4", "Application Server")],
    }
    entities = _entities(entry, action)
    if entities:
        event["entity"] = entities
    return event

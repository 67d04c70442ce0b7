"""`/api/alerts` (issue 6, "Live"): the officer's list, detail with evidence, triage, on SQLite
and PostgreSQL.

The evidence is real: ledger entries written by real acts over the API (records created by an
integration token, a break-the-glass through `incidents.alerts`), named by alerts stored in
the DESIGN.md format the detectors write. What is checked: the entries come back as access
events in time order whatever order the alert names them in, capped and counted; ids the
ledger does not hold are listed as missing; reading an alert is itself in the ledger, once per
patient shown; only the security officer gets in, and every refusal is ledgered; filters,
paging bounds and bad input answer 400 with an OperationOutcome.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from egide.cli.runtime import Services
from egide.core.principal import Principal
from egide.db.engine import transaction
from egide.incidents import alerts, evidence
from egide.incidents.evidence import EVENT_FIELDS, MAX_MISSING
from tests.helpers import issue_token
from tests.integration.access_support import clock_of, new_patient
from tests.integration.fhir_support import create, observation
from tests.integration.identity_support import ledger

PATH = "/api/alerts"


def _officer(services: Services) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(services, 'security_officer')}"}


def _store(services: Services, **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "al-evidence-1",
        "kind": "snooping",
        "severity": "medium",
        "score": 0.6,
        "user": "u-17",
        "patient": None,
        "start": "2026-03-02T08:00:00Z",
        "end": "2026-03-02T09:00:00Z",
        "events": [],
        "reasons": ["no appointment, admission or care-team link between u-17 and this patient"],
    }
    doc.update(fields)
    with transaction(services.session_factory) as session:
        return alerts.store_document(session, doc, clock=services.records.clock).document()


def _issue(response: httpx.Response) -> str:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return str(body["issue"][0]["diagnostics"])


def _created_entries(
    client: TestClient, services: Services, service_token: str
) -> tuple[list[dict[str, Any]], str, str]:
    """Three records created a minute apart (patient A, patient B, an observation of A): their
    `create` ledger entries in time order, and the two patient ids."""
    first = new_patient(client, service_token, "Lefèvre")
    clock_of(services).advance(dt.timedelta(minutes=1))
    second = new_patient(client, service_token, "Nguyễn")
    clock_of(services).advance(dt.timedelta(minutes=1))
    create(client, service_token, observation(first))
    created = [e for e in ledger(services) if e["action"] == "create"]
    assert [e["patient"] for e in created] == [first, second, first]
    return created, first, second


# --- the detail and its evidence -----------------------------------------------------------------


def test_the_detail_gives_the_evidence_in_time_order_and_the_read_is_ledgered(
    services: Services, client: TestClient, service_token: str
) -> None:
    created, first, second = _created_entries(client, services, service_token)
    # Named newest first, one twice, plus an id of another system's trail.
    named = [created[2]["id"], created[0]["id"], created[1]["id"], created[0]["id"], "ext-9"]
    stored = _store(services, patient=first, events=named)
    before = len(ledger(services))

    response = client.get(f"{PATH}/{stored['id']}", headers=_officer(services))

    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert {k: v for k, v in body.items() if k != "evidence"} == stored
    shown = body["evidence"]
    assert shown["entries"] == [{f: e[f] for f in EVENT_FIELDS} for e in created]
    assert (shown["total"], shown["shown"]) == (3, 3)
    assert (shown["missing"], shown["missing_total"]) == (["ext-9"], 1)
    assert "request_id" not in shown["entries"][0]  # an internal handle, not evidence
    # One read of the audit data per patient shown, with how many of their entries.
    reads = ledger(services)[before:]
    assert [(r["action"], r["patient"], r["count"]) for r in reads] == sorted(
        [("read", first, 2), ("read", second, 1)], key=lambda r: r[1]
    )
    assert {r["resource_type"] for r in reads} == {"AuditEvent"}
    assert {r["role"] for r in reads} == {"security_officer"}
    assert all(f"evidence of alert {stored['id']} (snooping)" in r["reasons"] for r in reads)


def test_a_break_the_glass_alert_shows_the_grant_entry(
    services: Services, client: TestClient, service_token: str
) -> None:
    patient = new_patient(client, service_token)
    physician = Principal(id="acct-urgence", role="physician", name="Dr Urgence")
    clock = services.records.clock
    words = "Unconscious patient brought in by ambulance, no records reachable"
    with transaction(services.session_factory) as session:
        _granted, alert = alerts.open_break_glass_with_alert(
            session,
            physician,
            patient_id=patient,
            reason_code="ETREAT",
            reason_text=words,
            clock=clock,
            settings=services.settings,
            mfa_at=clock.now(),
        )
    body = client.get(f"{PATH}/{alert.id}", headers=_officer(services)).json()
    [entry] = body["evidence"]["entries"]
    [grant] = [e for e in ledger(services) if e["action"] == "break_glass"]
    assert entry == {f: grant[f] for f in EVENT_FIELDS}
    assert (entry["user"], entry["patient"], entry["outcome"]) == (physician.id, patient, "success")
    # The clinician's own words are in the evidence the officer reads, not in the alert.
    assert words in " ".join([entry["purpose"] or "", *entry["reasons"]])
    assert words not in " ".join(body["reasons"])
    assert body["evidence"]["missing"] == []


def test_an_alert_from_another_system_lists_its_ids_as_missing(
    services: Services, client: TestClient
) -> None:
    ids = [f"ext-{n}" for n in range(MAX_MISSING + 5)]
    stored = _store(services, patient="p-elsewhere", events=ids)
    before = len(ledger(services))
    response = client.get(f"{PATH}/{stored['id']}", headers=_officer(services))
    assert response.status_code == 200
    shown = response.json()["evidence"]
    assert (shown["entries"], shown["total"], shown["shown"]) == ([], 0, 0)
    assert shown["missing"] == ids[:MAX_MISSING]
    assert shown["missing_total"] == len(ids)
    # Still a read about the patient the alert names (it says something about them).
    [read] = ledger(services)[before:]
    assert (read["action"], read["patient"], read["count"]) == ("read", "p-elsewhere", 0)


def test_evidence_is_capped_and_counted_over_many_ids(
    services: Services, client: TestClient, service_token: str
) -> None:
    created, _first, _second = _created_entries(client, services, service_token)
    # Real ids scattered among more unknown ids than one IN (...) query takes.
    ids = [f"ext-{n}" for n in range(1200)]
    ids[7], ids[600], ids[1199] = created[2]["id"], created[1]["id"], created[0]["id"]
    with transaction(services.session_factory) as session:
        found = evidence.evidence_of(session, event_ids=ids, limit=2)
    assert [e["id"] for e in found.entries] == [created[0]["id"], created[1]["id"]]
    assert (found.total, found.missing_total) == (3, 1197)
    assert len(found.missing) == MAX_MISSING
    assert created[2]["id"] not in found.missing


def test_unknown_and_malformed_alert_ids_are_404(services: Services, client: TestClient) -> None:
    officer = _officer(services)
    for alert_id in ("no-such-alert", "x" * 65, "bad%20id"):
        response = client.get(f"{PATH}/{alert_id}", headers=officer)
        assert response.status_code == 404, alert_id
        assert _issue(response) == "no such alert"


# --- who may -------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["nurse", "physician", "dpo", "admin", "service"])
def test_another_role_is_refused_and_the_refusal_ledgered(
    services: Services, client: TestClient, role: str
) -> None:
    stored = _store(services, patient="p-1", events=["ext-1"])
    headers = {"Authorization": f"Bearer {issue_token(services, role)}"}
    attempts = [
        ("search", client.get(PATH, headers=headers)),
        ("read", client.get(f"{PATH}/{stored['id']}", headers=headers)),
        # Refused before the body is read: not even malformed JSON gets a 400.
        (
            "alert_update",
            client.patch(
                f"{PATH}/{stored['id']}",
                content=b"{not json",
                headers={**headers, "Content-Type": "application/json"},
            ),
        ),
    ]
    refusals = [e for e in ledger(services) if e["outcome"] == "denied"]
    assert [r["action"] for r in refusals] == [action for action, _ in attempts]
    for (_action, response), refusal in zip(attempts, refusals, strict=True):
        assert response.status_code == 403
        assert _issue(response) == f"role {role} may not read or triage alerts"
        assert refusal["role"] == role
        assert refusal["count"] == 0
        assert refusal["patient"] is None  # nothing about the alert's patient leaks
    assert [r["resource_id"] for r in refusals] == [None, stored["id"], stored["id"]]
    with transaction(services.session_factory) as session:
        assert alerts.get_alert(session, alert_id=stored["id"]).status == "open"


def test_without_a_token_it_is_401(services: Services, client: TestClient) -> None:
    assert client.get(PATH).status_code == 401
    assert ledger(services)[-1]["action"] == "login_failed"


# --- the list -------------------------------------------------------------------------------------


def _five(services: Services) -> None:
    for n, (kind, severity, score) in enumerate(
        [
            ("snooping", "medium", 0.5),
            ("vip", "high", 0.9),
            ("break_glass", "high", 0.7),
            ("exfiltration", "critical", 0.95),
            ("snooping", "low", 0.2),
        ]
    ):
        _store(
            services,
            id=f"a-{n}",
            kind=kind,
            severity=severity,
            score=score,
            user=f"u-{n % 2}",
            patient=f"p-{n % 3}",
        )


def _ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [a["id"] for a in response.json()["alerts"]]


def test_filters_and_their_audit(services: Services, client: TestClient) -> None:
    _five(services)
    officer = _officer(services)
    assert _ids(client.get(PATH, headers=officer)) == ["a-3", "a-1", "a-2", "a-0", "a-4"]
    assert _ids(client.get(PATH, params={"severity": "high"}, headers=officer)) == ["a-1", "a-2"]
    assert _ids(client.get(PATH, params={"kind": "snooping"}, headers=officer)) == ["a-0", "a-4"]
    assert _ids(client.get(PATH, params={"user": "u-1"}, headers=officer)) == ["a-3", "a-1"]
    assert _ids(client.get(PATH, params={"patient": "p-0"}, headers=officer)) == ["a-3", "a-0"]
    patched = client.patch(f"{PATH}/a-1", json={"status": "confirmed"}, headers=officer)
    assert patched.json()["status"] == "confirmed"
    assert _ids(client.get(PATH, params={"status": "confirmed"}, headers=officer)) == ["a-1"]
    assert _ids(
        client.get(PATH, params={"status": "open", "severity": "high"}, headers=officer)
    ) == ["a-2"]
    searches = [e for e in ledger(services) if e["action"] == "search"]
    assert len(searches) == 7
    by_patient = [s for s in searches if s["patient"] is not None]
    assert [(s["patient"], s["count"]) for s in by_patient] == [("p-0", 2)]
    assert "alert list (severity=high)" in searches[1]["reasons"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"status": "closed"}, "alert: status must be"),
        ({"severity": "urgent"}, "alert: severity must be"),
        ({"sort": "score"}, "unknown parameter 'sort'"),
        ({"limit": "0"}, "limit must be from 1 to 200"),
        ({"limit": "201"}, "limit must be from 1 to 200"),
        ({"limit": "ten"}, "limit must be a whole number"),
        ({"offset": "-1"}, "offset must be a whole number"),
        ({"offset": "999", "limit": "2"}, "offset + limit at most 1000"),
    ],
)
def test_bad_list_parameters_are_400(
    services: Services, client: TestClient, params: dict[str, str], message: str
) -> None:
    response = client.get(PATH, params=params, headers=_officer(services))
    assert response.status_code == 400
    assert message in _issue(response)


def test_a_repeated_parameter_is_400(services: Services, client: TestClient) -> None:
    response = client.get(f"{PATH}?status=open&status=confirmed", headers=_officer(services))
    assert response.status_code == 400
    assert _issue(response) == "status may be given only once"


def test_paging_and_its_bounds(services: Services, client: TestClient) -> None:
    _five(services)
    officer = _officer(services)
    first = client.get(PATH, params={"limit": "2", "kind": "snooping"}, headers=officer)
    assert _ids(first) == ["a-0", "a-4"]
    assert "link" not in first.headers  # exactly one page
    first = client.get(PATH, params={"limit": "2"}, headers=officer)
    assert _ids(first) == ["a-3", "a-1"]
    assert first.headers["link"] == '</api/alerts?limit=2&offset=2>; rel="next"'
    second = client.get(first.headers["link"].split(">")[0][1:], headers=officer)
    assert _ids(second) == ["a-2", "a-0"]
    third = client.get(second.headers["link"].split(">")[0][1:], headers=officer)
    assert _ids(third) == ["a-4"]
    assert "link" not in third.headers
    assert _ids(client.get(PATH, params={"offset": "5"}, headers=officer)) == []
    last = client.get(PATH, params={"offset": "800", "limit": "200"}, headers=officer)
    assert _ids(last) == []


# --- triage -------------------------------------------------------------------------------------


def test_triage_input_errors(services: Services, client: TestClient) -> None:
    stored = _store(services)
    officer = _officer(services)
    bad = client.patch(f"{PATH}/{stored['id']}", json={"status": "closed"}, headers=officer)
    assert bad.status_code == 400
    assert "status must be open, acknowledged, false_positive or confirmed" in _issue(bad)
    missing = client.patch(f"{PATH}/{stored['id']}", json={}, headers=officer)
    assert missing.status_code == 400
    form = client.patch(
        f"{PATH}/{stored['id']}",
        content=b"status=confirmed",
        headers={**officer, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 415
    unknown = client.patch(f"{PATH}/nope", json={"status": "confirmed"}, headers=officer)
    assert unknown.status_code == 404
    assert [e for e in ledger(services) if e["action"] == "alert_update"] == []
    done = client.patch(
        f"{PATH}/{stored['id']}", json={"status": "false_positive"}, headers=officer
    )
    assert done.status_code == 200
    assert done.json()["status"] == "false_positive"
    [update] = [e for e in ledger(services) if e["action"] == "alert_update"]
    assert update["reasons"] == [f"alert {stored['id']} (snooping): open -> false_positive"]


def test_a_refused_read_of_a_malformed_id_ledgers_no_id(
    services: Services, client: TestClient
) -> None:
    headers = {"Authorization": f"Bearer {issue_token(services, 'nurse')}"}
    assert client.get(f"{PATH}/<b>%20x", headers=headers).status_code == 403
    refusal = ledger(services)[-1]
    assert (refusal["action"], refusal["outcome"], refusal["resource_id"]) == (
        "read",
        "denied",
        None,
    )

"""Break-the-glass end to end (issue 5, item 5), on SQLite and PostgreSQL.

A real physician account signs in through the pages (password, TOTP), so its session's second
factor is real; the clock is a FixedClock, so the step-up window and the 4-hour grant expire
without sleeping. Reads under the grant go through the repository as that account (what the
FHIR API does for an OAuth token of the account), so the policy, the SQL filter and the ledger
are the real ones.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from egide.api.access import SESSION_COOKIE as API_SESSION_COOKIE
from egide.cli.runtime import OPERATOR, Services
from egide.core.errors import NotFound
from egide.core.principal import Principal
from egide.db.engine import transaction
from egide.fhir.search import parse_search_query
from egide.identity import accounts
from egide.incidents.models import AlertRow
from egide.ledger.auditevent import audit_event
from egide.ledger.report import build_report
from egide.ledger.report_render import render_html
from egide.records.grants import GRANT_SOURCE
from egide.records.models import AccessLink
from egide.records.repository import repository_for, system_repository
from egide.records.unit_of_work import run_in_transaction
from egide.web.security import SESSION_COOKIE
from tests.helpers import issue_token
from tests.integration.identity_support import actions, ledger, past_step_up
from tests.integration.test_web_pages import (
    Person,
    _client,
    accept,
    code_now,
    csrf_of,
    enrol,
)

REASON = "Unconscious patient brought in by ambulance, no records reachable"
ALERT_PATH = "/api/alerts"


# --- set-up ------------------------------------------------------------------------------------


def _create(services: Services, resource: dict[str, Any]) -> str:
    with transaction(services.session_factory) as session:
        repo = system_repository(session, services.records, job="test-setup")
        return repo.create(resource).id


def _patient(services: Services, family: str = "Durand") -> str:
    return _create(services, {"resourceType": "Patient", "name": [{"family": family}]})


def _observation(services: Services, patient_id: str) -> str:
    return _create(
        services,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "heart rate"},
            "subject": {"reference": f"Patient/{patient_id}"},
            "valueQuantity": {"value": 72, "unit": "/min"},
        },
    )


@pytest.fixture
def practitioner(services: Services) -> str:
    return _create(services, {"resourceType": "Practitioner", "name": [{"family": "Urgence"}]})


def _staff(services: Services, web: TestClient, email: str, role: str, practitioner: str | None):
    with transaction(services.session_factory) as session:
        view, token = accounts.create_account(
            session,
            email=email,
            name=f"Dr {role.title()}",
            role=role,
            clock=services.records.clock,
            settings=services.settings,
            envelope=services.records.envelope,
            actor=OPERATOR,
            practitioner_id=practitioner,
        )
    person = Person(email, "vélo rouge sous la pluie d'été")
    assert accept(web, token, person.password).status_code == 303
    enrol(services, web, person)  # signs in with a fresh second factor
    return view.id, person


@pytest.fixture
def web(services: Services) -> Iterator[TestClient]:
    with _client(services) as client:
        yield client


@pytest.fixture
def physician(services: Services, web: TestClient, practitioner: str) -> tuple[str, Person]:
    return _staff(services, web, "urgence@clinique.example", "physician", practitioner)


def _csrf(web: TestClient) -> str:
    return csrf_of(web.get("/account"))


def _break(web: TestClient, patient: str, /, **changes: Any) -> httpx.Response:
    body: dict[str, Any] = {"patient": patient, "reason_code": "ETREAT", "reason_text": REASON}
    body.update(changes)
    return web.post("/api/break-glass", json=body, headers={"X-CSRF-Token": _csrf(web)})


def _grants(services: Services) -> list[AccessLink]:
    with transaction(services.session_factory) as session:
        return list(
            session.scalars(select(AccessLink).where(AccessLink.source_type == GRANT_SOURCE))
        )


def _as(account_id: str, practitioner: str | None, role: str = "physician") -> Principal:
    return Principal(
        id=account_id,
        role=role,
        fhir_user=f"Practitioner/{practitioner}" if practitioner else None,
    )


def _read(services: Services, principal: Principal, rtype: str, rid: str) -> dict[str, Any]:
    # The unit of work of the API: a refused read's ledger entry is written after the rollback.
    return run_in_transaction(
        services.session_factory,
        lambda s: repository_for(s, principal, services.records).read(rtype, rid).resource,
    )


def _hidden(services: Services, principal: Principal, rtype: str, rid: str) -> bool:
    try:
        _read(services, principal, rtype, rid)
    except NotFound:
        return True
    return False


def _issue(response: httpx.Response) -> str:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return str(body["issue"][0]["diagnostics"])


def _step_up(services: Services, web: TestClient, person: Person) -> None:
    assert person.secret is not None
    services.records.clock.advance(dt.timedelta(seconds=30))  # type: ignore[attr-defined]
    page = web.get("/account/step-up?next=/account")
    done = web.post(
        "/account/step-up",
        data={"csrf": csrf_of(page), "code": code_now(services, person.secret), "next": "/account"},
    )
    assert done.status_code == 303, done.text


# --- the grant ---------------------------------------------------------------------------------


def test_a_stale_second_factor_is_refused_then_a_step_up_opens_the_record(
    services: Services, web: TestClient, physician: tuple[str, Person], practitioner: str
) -> None:
    account_id, person = physician
    patient = _patient(services)
    obs = _observation(services, patient)
    me = _as(account_id, practitioner)
    assert _hidden(services, me, "Observation", obs)  # no care link: 404

    past_step_up(services)
    refused = _break(web, patient)
    assert refused.status_code == 403
    assert "step-up" in _issue(refused)
    assert _grants(services) == []
    denied = actions(services, "break_glass")[-1]
    assert (denied["outcome"], denied["user"]) == ("denied", account_id)
    assert denied["purpose"] is None  # nothing of the refused reason is kept
    assert _hidden(services, me, "Observation", obs)

    _step_up(services, web, person)
    opened = _break(web, patient)
    assert opened.status_code == 201, opened.text
    grant = opened.json()["grant"]
    assert (grant["kind"], grant["patient"], grant["actor"]) == (
        "break_glass",
        patient,
        f"user:{account_id}",
    )
    start = dt.datetime.fromisoformat(grant["valid_from"].replace("Z", "+00:00"))
    until = dt.datetime.fromisoformat(grant["valid_to"].replace("Z", "+00:00"))
    assert until - start == dt.timedelta(hours=4)  # break_glass_hours
    [row] = _grants(services)
    assert row.reason == "ETREAT"  # only the code in the table; the words are in the ledger
    entry = actions(services, "break_glass")[-1]
    assert (entry["outcome"], entry["patient"], entry["purpose"]) == ("success", patient, REASON)
    event = audit_event(entry)
    assert event["type"]["code"] == "110113"  # DICOM Security Alert
    assert event["subtype"][0]["code"] == "110127"  # Emergency Override Started
    assert event["agent"][0]["purposeOfUse"] == [{"text": REASON}]

    # The record opens, and every act under the grant says so in the ledger.
    assert _read(services, me, "Observation", obs)["valueQuantity"]["value"] == 72
    read = actions(services, "read")[-1]
    assert read["patient"] == patient
    assert "break-the-glass grant" in read["purpose"]
    assert "ETREAT" in read["purpose"]


def test_the_grant_covers_that_patient_only_and_four_hours_only(
    services: Services, web: TestClient, physician: tuple[str, Person], practitioner: str
) -> None:
    account_id, _person = physician
    patient, other = _patient(services), _patient(services, "Autre")
    obs, other_obs = _observation(services, patient), _observation(services, other)
    me = _as(account_id, practitioner)
    assert _break(web, patient).status_code == 201
    assert not _hidden(services, me, "Observation", obs)
    assert _hidden(services, me, "Observation", other_obs)
    with transaction(services.session_factory) as session:
        found, total = repository_for(session, me, services.records).search(
            parse_search_query("Observation", [])
        )
    assert total == 1
    assert [s.id for s in found] == [obs]
    # Writing a clinical note is allowed under the grant too (the obligation marks it).
    with transaction(services.session_factory) as session:
        note = repository_for(session, me, services.records).create(
            {
                "resourceType": "Observation",
                "status": "preliminary",
                "code": {"text": "Glasgow coma scale"},
                "subject": {"reference": f"Patient/{patient}"},
            }
        )
    created = actions(services, "create")[-1]
    assert created["resource_id"] == note.id
    assert "break-the-glass grant" in created["purpose"]

    services.records.clock.advance(dt.timedelta(hours=4, seconds=1))  # type: ignore[attr-defined]
    assert _hidden(services, me, "Observation", obs)
    with transaction(services.session_factory) as session:
        _found, total = repository_for(session, me, services.records).search(
            parse_search_query("Observation", [])
        )
    assert total == 0


def test_an_api_token_cannot_break_the_glass(
    services: Services, client: TestClient, practitioner: str
) -> None:
    patient = _patient(services)
    token = issue_token(services, "physician", practitioner_id=practitioner)
    answer = client.post(
        "/api/break-glass",
        json={"patient": patient, "reason_code": "ETREAT", "reason_text": REASON},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 403
    assert "cannot step up" in _issue(answer)
    assert _grants(services) == []
    assert actions(services, "break_glass")[-1]["outcome"] == "denied"
    # A bad token is a failed sign-in (401), as everywhere in the API.
    bad = client.post(
        "/api/break-glass", json={"patient": patient}, headers={"Authorization": "Bearer nope"}
    )
    assert bad.status_code == 401
    # No session at all: 401.
    assert client.post("/api/break-glass", json={"patient": patient}).status_code == 401


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"reason_text": None}, "reason_text is required"),
        ({"reason_text": "urgent"}, "10 to 500"),
        ({"reason_text": "x" * 501}, "10 to 500"),
        ({"reason_text": "Unconscious patient\nignore previous"}, "control"),
        ({"reason_text": "Unconscious patient \u202egnirut"}, "control"),
        ({"reason_code": "CURIOSITY"}, "reason_code must be one of"),
        ({"reason_code": None}, "reason_code must be one of"),
        ({"patient": "../Patient"}, "patient must be a FHIR id"),
    ],
)
def test_a_missing_or_malformed_reason_is_refused(
    services: Services,
    web: TestClient,
    physician: tuple[str, Person],
    changes: dict[str, Any],
    needle: str,
) -> None:
    patient = _patient(services)
    answer = _break(web, patient, **changes)
    assert answer.status_code == 400
    assert needle in _issue(answer)
    assert _grants(services) == []
    refused = actions(services, "break_glass")[-1]
    assert refused["outcome"] == "denied"
    assert needle in refused["reasons"][0]
    with transaction(services.session_factory) as session:
        assert session.scalars(select(AlertRow)).all() == []


def test_unknown_patient_is_404_and_a_treating_clinician_gets_409(
    services: Services, web: TestClient, physician: tuple[str, Person], practitioner: str
) -> None:
    answer = _break(web, "no-such-patient")
    assert answer.status_code == 404
    assert _issue(answer) == "Patient/no-such-patient is not known"
    patient = _patient(services)
    _create(
        services,
        {
            "resourceType": "Encounter",
            "status": "in-progress",
            "class": {"code": "EMER"},
            "subject": {"reference": f"Patient/{patient}"},
            "participant": [{"individual": {"reference": f"Practitioner/{practitioner}"}}],
        },
    )
    treating = _break(web, patient)
    assert treating.status_code == 409
    assert "already have a care relationship" in _issue(treating)
    other = _patient(services, "Autre")
    assert _break(web, other).status_code == 201
    again = _break(web, other)
    assert again.status_code == 409
    assert "already hold an emergency grant" in _issue(again)
    assert len(_grants(services)) == 1
    outcomes = [e["outcome"] for e in actions(services, "break_glass")]
    assert outcomes == ["denied", "denied", "success", "denied"]


def test_the_patients_consent_refusing_the_clinician_is_not_overridden(
    services: Services, web: TestClient, physician: tuple[str, Person], practitioner: str
) -> None:
    account_id, _person = physician
    patient = _patient(services)
    obs = _observation(services, patient)
    _create(
        services,
        {
            "resourceType": "Consent",
            "status": "active",
            "scope": {"coding": [{"code": "patient-privacy"}]},
            "category": [{"coding": [{"code": "59284-0", "system": "http://loinc.org"}]}],
            "patient": {"reference": f"Patient/{patient}"},
            "provision": {
                "type": "deny",
                "actor": [
                    {
                        "role": {"coding": [{"code": "PRCP"}]},
                        "reference": {"reference": f"Practitioner/{practitioner}"},
                    }
                ],
            },
        },
    )
    assert _break(web, patient).status_code == 201  # granted, ledgered, alerted...
    me = _as(account_id, practitioner)
    assert _hidden(services, me, "Observation", obs)  # ...but the patient's refusal holds
    assert _hidden(services, me, "Patient", patient)
    read = actions(services, "read")[-1]
    assert read["outcome"] == "denied"
    assert any("Consent/" in r for r in read["reasons"])


def test_a_secretary_cannot_break_the_glass(services: Services) -> None:
    with _client(services) as web:
        _staff(services, web, "accueil@clinique.example", "secretary", None)
        patient = _patient(services)
        answer = _break(web, patient)
        assert answer.status_code == 403
        assert "may not break the glass" in _issue(answer)
        assert web.get("/break-glass").status_code == 403
        assert _grants(services) == []
        assert actions(services, "break_glass")[-1]["outcome"] == "denied"


def test_the_api_needs_the_sessions_csrf_token(
    services: Services, web: TestClient, physician: tuple[str, Person]
) -> None:
    patient = _patient(services)
    body = {"patient": patient, "reason_code": "ETREAT", "reason_text": REASON}
    assert web.post("/api/break-glass", json=body).status_code == 403
    forged = web.post("/api/break-glass", json=body, headers={"X-CSRF-Token": "A" * 86})
    assert forged.status_code == 403
    assert _grants(services) == []
    assert API_SESSION_COOKIE == SESSION_COOKIE


# --- the officer's alert -----------------------------------------------------------------------


def test_the_officer_is_alerted_at_once_and_triages_the_alert(
    services: Services, web: TestClient, client: TestClient, physician: tuple[str, Person]
) -> None:
    account_id, _person = physician
    patient = _patient(services)
    opened = _break(web, patient)
    assert opened.status_code == 201
    grant_entry = actions(services, "break_glass")[-1]
    officer = {"Authorization": f"Bearer {issue_token(services, 'security_officer')}"}
    listed = client.get(ALERT_PATH, headers=officer)
    assert listed.status_code == 200
    [alert] = listed.json()["alerts"]
    assert alert["id"] == opened.json()["alert"]
    assert (alert["kind"], alert["severity"], alert["status"]) == ("break_glass", "high", "open")
    assert (alert["user"], alert["patient"]) == (account_id, patient)
    assert alert["events"] == [grant_entry["id"]]
    assert "ETREAT" in alert["reasons"][0]
    assert "no appointment, admission" in alert["reasons"][1]
    assert REASON not in " ".join(alert["reasons"])  # the words stay in the ledger
    assert set(alert) >= {"id", "kind", "severity", "score", "start", "end", "events", "reasons"}
    detail = client.get(f"{ALERT_PATH}/{alert['id']}", headers=officer).json()
    assert {k: v for k, v in detail.items() if k != "evidence"} == alert
    assert [e["id"] for e in detail["evidence"]["entries"]] == alert["events"]

    ack = client.patch(
        f"{ALERT_PATH}/{alert['id']}", json={"status": "acknowledged"}, headers=officer
    )
    assert ack.status_code == 200
    assert ack.json()["status"] == "acknowledged"
    assert client.get(ALERT_PATH, params={"status": "open"}, headers=officer).json() == {
        "alerts": []
    }
    fp = client.patch(
        f"{ALERT_PATH}/{alert['id']}", json={"status": "false_positive"}, headers=officer
    )
    assert fp.json()["status"] == "false_positive"
    updates = actions(services, "alert_update")
    assert [u["reasons"][0].split(": ")[1] for u in updates] == [
        "open -> acknowledged",
        "acknowledged -> false_positive",
    ]
    bad = client.patch(f"{ALERT_PATH}/{alert['id']}", json={"status": "closed"}, headers=officer)
    assert bad.status_code == 400
    assert client.get(f"{ALERT_PATH}/nope", headers=officer).status_code == 404


@pytest.mark.parametrize("role", ["physician", "nurse", "dpo", "admin", "service"])
def test_only_the_security_officer_sees_alerts(
    services: Services, web: TestClient, client: TestClient, physician: object, role: str
) -> None:
    assert _break(web, _patient(services)).status_code == 201
    with transaction(services.session_factory) as session:
        alert_id = session.scalars(select(AlertRow.id)).one()
    headers = {"Authorization": f"Bearer {issue_token(services, role)}"}
    assert client.get(ALERT_PATH, headers=headers).status_code == 403
    assert client.get(f"{ALERT_PATH}/{alert_id}", headers=headers).status_code == 403
    patched = client.patch(
        f"{ALERT_PATH}/{alert_id}", json={"status": "false_positive"}, headers=headers
    )
    assert patched.status_code == 403
    with transaction(services.session_factory) as session:
        assert session.get(AlertRow, alert_id).status == "open"  # type: ignore[union-attr]
    assert ledger(services)[-1]["outcome"] == "denied"


# --- the patient's access report -----------------------------------------------------------------


def test_the_access_report_marks_emergency_access(
    services: Services, web: TestClient, physician: tuple[str, Person], practitioner: str
) -> None:
    account_id, _person = physician
    patient = _patient(services)
    obs = _observation(services, patient)
    assert _break(web, patient).status_code == 201
    _read(services, _as(account_id, practitioner), "Observation", obs)
    with transaction(services.session_factory) as session:
        report = build_report(session, patient_id=patient, now=services.records.clock.now())
    marked = [line for line in report.lines if line.emergency]
    assert [line.action for line in marked] == ["opened in an emergency (break-the-glass)", "read"]
    assert REASON in marked[0].why
    assert "ETREAT" in marked[1].why
    assert not any(line.emergency for line in report.lines if line.action == "added")
    page = render_html(report)
    assert page.count("Emergency access (break-the-glass)") == 2
    assert html.escape(REASON, quote=False) in page


# --- the page ------------------------------------------------------------------------------------


def test_the_page_sends_to_step_up_and_back_then_opens_the_record(
    services: Services, web: TestClient, physician: tuple[str, Person]
) -> None:
    _account_id, person = physician
    patient = _patient(services)
    past_step_up(services)
    asked = web.get(f"/break-glass?patient={patient}")
    assert asked.status_code == 303
    assert asked.headers["location"] == (
        f"/account/step-up?next=%2Fbreak-glass%3Fpatient%3D{patient}"
    )
    form = web.get(asked.headers["location"])
    assert form.status_code == 200
    assert person.secret is not None
    done = web.post(
        "/account/step-up",
        data={
            "csrf": csrf_of(form),
            "code": code_now(services, person.secret),
            "next": f"/break-glass?patient={patient}",
        },
    )
    assert done.status_code == 303
    assert done.headers["location"] == f"/break-glass?patient={patient}"
    page = web.get(done.headers["location"])
    assert page.status_code == 200
    assert f'value="{patient}"' in page.text
    assert 'name="reason_text"' in page.text

    short = web.post(
        "/break-glass",
        data={
            "csrf": csrf_of(page),
            "patient": patient,
            "reason_code": "ETREAT",
            "reason_text": "now",
        },
    )
    assert short.status_code == 400
    assert "10 to 500" in html.unescape(short.text)
    no_csrf = web.post(
        "/break-glass", data={"patient": patient, "reason_code": "ETREAT", "reason_text": REASON}
    )
    assert no_csrf.status_code == 403
    assert _grants(services) == []

    opened = web.post(
        "/break-glass",
        data={
            "csrf": csrf_of(page),
            "patient": patient,
            "reason_code": "PATSFTY",
            "reason_text": REASON,
        },
    )
    assert opened.status_code == 200, opened.text
    assert re.search(r"open to\s+you until 2026-03-02 1\d:\d\d UTC", opened.text)
    [row] = _grants(services)
    assert (row.patient_id, row.reason) == (patient, "PATSFTY")


def test_a_department_link_breaks_the_glass_only_for_records_kept_to_the_treating_team(
    services: Services, web: TestClient, physician: tuple[str, Person], practitioner: str
) -> None:
    """A department link opens the record, except what the patient's consent keeps to the
    treating team (here, HIV-labelled results): for those an emergency needs the glass broken,
    and without such a restriction there is nothing to break (409)."""
    account_id, _person = physician
    ward = _create(services, {"resourceType": "Organization", "name": "Urgences"})
    _create(
        services,
        {
            "resourceType": "PractitionerRole",
            "active": True,
            "practitioner": {"reference": f"Practitioner/{practitioner}"},
            "organization": {"reference": f"Organization/{ward}"},
        },
    )
    hiv = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HIV"}
    patients = []
    for family in ("Sans", "Avec"):
        patient = _patient(services, family)
        _create(
            services,
            {
                "resourceType": "Encounter",
                "status": "in-progress",
                "class": {"code": "EMER"},
                "subject": {"reference": f"Patient/{patient}"},
                "serviceProvider": {"reference": f"Organization/{ward}"},
            },
        )
        patients.append(patient)
    plain, restricted = patients
    assert _break(web, plain).status_code == 409  # the department already reaches it all
    labelled = _create(
        services,
        {
            "resourceType": "Observation",
            "meta": {"security": [hiv]},
            "status": "final",
            "code": {"text": "HIV viral load"},
            "subject": {"reference": f"Patient/{restricted}"},
        },
    )
    _create(
        services,
        {
            "resourceType": "Consent",
            "status": "active",
            "scope": {"coding": [{"code": "patient-privacy"}]},
            "category": [{"coding": [{"code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{restricted}"},
            "policyRule": {"coding": [{"code": "OPTIN"}]},
            "provision": {
                "type": "permit",
                "provision": [{"type": "deny", "securityLabel": [hiv]}],
            },
        },
    )
    me = _as(account_id, practitioner)
    assert _hidden(services, me, "Observation", labelled)
    assert _break(web, restricted).status_code == 201
    assert _read(services, me, "Observation", labelled)["id"] == labelled
    read = actions(services, "read")[-1]
    assert read["patient"] == restricted
    assert "break-the-glass" in (read["purpose"] or "")

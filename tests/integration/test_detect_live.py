"""Live behavioural detection (issue 6, item 6) on SQLite and PostgreSQL: real acts append to
the real ledger, `LiveDetection.step` feeds them to the detector, alerts reach the officer's
API, the officer's false positives quiet look-alikes, and a critical alert contains the
account when the administrator chose so."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from egide.app import api_for, live_detection
from egide.cli.runtime import Services, open_services
from egide.core.clock import FixedClock
from egide.core.principal import Principal
from egide.db.engine import transaction
from egide.incidents.live import access_event
from egide.ledger.service import Act, Action, append, flush_pending
from tests.helpers import Database, issue_token
from tests.integration.access_support import (
    create,
    encounter,
    headers,
    labelled,
    ledger,
    organization,
    practitioner_role,
)
from tests.integration.detect_live_support import (
    ATTACKER,
    bearer,
    live_sessions,
    reopened,
    sign_in_from,
    stored_alerts,
)
from tests.integration.identity_support import (
    Person,
    clock_of,
    enrol,
    password_step,
)
from tests.integration.identity_support import staff as staff_account

WRITER = Principal(id="u-writer", role="nurse", name="A nurse")


@pytest.fixture
def responding(services: Services, clock: FixedClock) -> Iterator[Services]:
    """The same instance, configured to revoke the sessions of an account whose alert turns
    critical."""
    yield from reopened(services.settings, clock, detect_response=["revoke_sessions"])


def _brute_force(services: Services, person: Person, tries: int = 10) -> None:
    """Wrong passwords from one address, waiting out each backoff (RFC-free: the attacker
    is patient, the window is 30 minutes)."""
    for _ in range(tries):
        password_step(services, person.email, "wrong password entirely", ip=ATTACKER)
        clock_of(services).advance(dt.timedelta(seconds=70))


def test_a_brute_force_reaches_the_officer_and_grows_with_the_case(services: Services) -> None:
    live = live_detection(services)
    live.step()  # starts on an empty window
    alice = staff_account(services)
    enrol(services, alice)
    _brute_force(services, alice)
    report = live.step()
    found = stored_alerts(services, kind="credential_stuffing")
    assert [a.user for a in found] == [alice.id]
    assert found[0].severity == "high"
    assert found[0].id in report.alerts
    assert any("failed sign-ins on this account" in r for r in found[0].reasons)
    # Every failure is evidence, as ledgered.
    failed = {e["id"] for e in ledger(services) if e["action"] == "login_failed"}
    assert failed <= set(found[0].events)
    # The same case, grown: one alert, not two, and nothing new without new entries.
    _brute_force(services, alice, tries=2)
    live.step()
    again = stored_alerts(services, kind="credential_stuffing")
    assert [a.id for a in again] == [found[0].id]
    assert len(again[0].events) == len(found[0].events) + 2
    assert live.step().alerts == []


def test_a_critical_alert_revokes_the_sessions_when_configured(responding: Services) -> None:
    services = responding
    live = live_detection(services)
    live.step()
    alice = staff_account(services)
    enrol(services, alice)
    _brute_force(services, alice)
    live.step()
    clock_of(services).advance(dt.timedelta(minutes=16))  # the backoff, waited out
    sign_in_from(services, alice, ip=ATTACKER)  # the guess worked
    assert live_sessions(services, alice.id) == 1
    report = live.step()
    [alert] = stored_alerts(services, kind="credential_stuffing")
    assert alert.severity == "critical"
    assert report.responses
    assert live_sessions(services, alice.id) == 0
    assert any(r.startswith("automatic response: 1 session(s)") for r in alert.reasons)
    revoked = [e for e in ledger(services) if e["action"] == "session_revoke"]
    assert revoked[-1]["user"] == "system:detect"
    assert alert.id in " ".join(revoked[-1]["reasons"])


def test_without_a_configured_response_a_critical_alert_only_alerts(
    services: Services,
) -> None:
    live = live_detection(services)
    live.step()
    alice = staff_account(services)
    enrol(services, alice)
    _brute_force(services, alice)
    clock_of(services).advance(dt.timedelta(minutes=16))
    sign_in_from(services, alice, ip=ATTACKER)
    live.step()
    [alert] = stored_alerts(services, kind="credential_stuffing")
    assert alert.severity == "critical"
    assert live_sessions(services, alice.id) == 1


def test_the_officer_triage_survives_new_evidence_and_a_restart(
    services: Services, client: TestClient
) -> None:
    live = live_detection(services)
    live.step()
    alice = staff_account(services)
    _brute_force(services, alice)
    live.step()
    [alert] = stored_alerts(services)
    officer = issue_token(services, "security_officer")
    answer = client.patch(
        f"/api/alerts/{alert.id}", json={"status": "acknowledged"}, headers=bearer(officer)
    )
    assert answer.status_code == 200, answer.text
    _brute_force(services, alice, tries=2)
    live.step()
    restarted = live_detection(services)
    restarted.step()  # learns the window again from the ledger
    [after] = stored_alerts(services)
    assert after.id == alert.id
    assert after.status == "acknowledged"
    assert len(after.events) == len(alert.events) + 2


def _department_with_staff(client: TestClient, auth: dict[str, str]) -> tuple[str, str]:
    department = create(client, auth["token"], organization("Cardiologie"))["id"]
    body = {
        "resourceType": "Practitioner",
        "name": [{"family": "Moreau", "given": ["Claire"]}],
        "address": [{"line": ["3 rue des Lilas"], "city": "Lyon", "postalCode": "69003"}],
    }
    practitioner = create(client, auth["token"], body)["id"]
    create(client, auth["token"], practitioner_role(practitioner, department))
    return department, practitioner


def _nurse_and_her_own_record(
    services: Services, client: TestClient, auth: dict[str, str]
) -> tuple[str, str, str]:
    """(department, the nurse's token, her own patient record, labelled EMP)."""
    department, practitioner = _department_with_staff(client, auth)
    nurse = issue_token(services, "nurse", practitioner_id=practitioner)
    own = labelled(
        {
            "resourceType": "Patient",
            "name": [{"family": "Moreau", "given": ["Claire"]}],
            "address": [{"line": ["3 rue des Lilas"], "city": "Lyon", "postalCode": "69003"}],
        },
        "EMP",
    )
    return department, nurse, create(client, auth["token"], own)["id"]


@pytest.fixture
def auth_token(service_token: str) -> dict[str, str]:
    return {"token": service_token}


def test_a_coworker_reading_her_own_record_is_self_access(
    services: Services, client: TestClient, auth_token: dict[str, str]
) -> None:
    live = live_detection(services)
    live.step()
    department, nurse, patient = _nurse_and_her_own_record(services, client, auth_token)
    stranger = create(client, auth_token["token"], {"resourceType": "Patient"})["id"]
    # Both admitted to her department: the policy lets her read both.
    for who in (patient, stranger):
        create(client, auth_token["token"], encounter(who, department=department))
    for who in (patient, stranger):
        assert client.get(f"/fhir/Patient/{who}", headers=headers(nurse)).status_code == 200
    live.step()
    found = stored_alerts(services)
    assert [(a.kind, a.patient) for a in found] == [("self_access", patient)]
    assert any("their own patient record" in r for r in found[0].reasons), found[0].reasons
    # The detector's read of names and addresses is itself in the ledger.
    context_reads = [
        e for e in ledger(services) if e["user"] == "system:detect" and e["action"] == "read"
    ]
    assert context_reads
    assert {e["resource_type"] for e in context_reads} == {"Patient", "Practitioner"}


def test_a_false_positive_quiets_the_next_look_alike(
    services: Services, client: TestClient, auth_token: dict[str, str]
) -> None:
    live = live_detection(services)
    live.step()
    department, nurse, patient = _nurse_and_her_own_record(services, client, auth_token)
    create(client, auth_token["token"], encounter(patient, department=department))
    client.get(f"/fhir/Patient/{patient}", headers=headers(nurse))
    live.step()
    [first] = stored_alerts(services)
    officer = issue_token(services, "security_officer")
    answer = client.patch(
        f"/api/alerts/{first.id}", json={"status": "false_positive"}, headers=bearer(officer)
    )
    assert answer.status_code == 200
    # Ten days later (a new case, past the case gap), the same look at the same record: the
    # triage is in the ledger, so the step that sees the look already knows the feedback.
    clock_of(services).advance(dt.timedelta(days=10))
    create(client, auth_token["token"], encounter(patient, department=department))
    assert client.get(f"/fhir/Patient/{patient}", headers=headers(nurse)).status_code == 200
    live.step()
    assert [a.id for a in stored_alerts(services)] == [first.id]
    # Reopened by the officer, the dismissal no longer holds: the look it hid comes back,
    # and the next one alerts too.
    answer = client.patch(
        f"/api/alerts/{first.id}", json={"status": "open"}, headers=bearer(officer)
    )
    assert answer.status_code == 200
    clock_of(services).advance(dt.timedelta(days=10))
    create(client, auth_token["token"], encounter(patient, department=department))
    assert client.get(f"/fhir/Patient/{patient}", headers=headers(nurse)).status_code == 200
    live.step()
    assert len(stored_alerts(services, kind="self_access")) == 3


def test_legitimate_work_raises_nothing(
    services: Services, client: TestClient, auth_token: dict[str, str]
) -> None:
    live = live_detection(services)
    live.step()
    _department, practitioner = _department_with_staff(client, auth_token)
    doctor = issue_token(services, "physician", practitioner_id=practitioner)
    patients = [
        create(client, auth_token["token"], {"resourceType": "Patient"})["id"] for _ in range(5)
    ]
    for who in patients:
        create(client, auth_token["token"], encounter(who, practitioners=(practitioner,)))
        assert client.get(f"/fhir/Patient/{who}", headers=headers(doctor)).status_code == 200
    report = live.step()
    assert report.events >= 5
    assert stored_alerts(services) == []


def test_the_server_runs_detection_in_the_background(services: Services, clock: FixedClock) -> None:
    """Through the real lifespan: no one calls `step`; the alert still reaches the API."""
    opened = open_services(
        services.settings.model_copy(update={"detect_live": True, "detect_interval_seconds": 0.05}),
        clock=clock,
    )
    try:
        alice = staff_account(opened, email="alice.bg@clinic.example")
        officer = issue_token(opened, "security_officer")
        with TestClient(api_for(opened), base_url="http://testserver") as client:
            _brute_force(opened, alice)
            deadline = time.monotonic() + 30
            found: list[dict[str, Any]] = []
            while time.monotonic() < deadline and not found:
                time.sleep(0.1)
                found = client.get("/api/alerts", headers=headers(officer)).json()["alerts"]
        assert [a["kind"] for a in found] == ["credential_stuffing"]
        assert found[0]["user"] == alice.id
    finally:
        opened.close()


def test_ledger_entries_become_access_events() -> None:
    base = {
        "id": "e1",
        "time": "2026-03-02T08:15:00.123456Z",
        "user": "u1",
        "role": "nurse",
        "action": "read",
        "outcome": "success",
        "patient": "p1",
        "resource_type": "Observation",
        "count": 1,
        "ip": "192.0.2.1",
        "device": "d",
        "purpose": None,
        "reasons": ["an encounter links them"],
        "request_id": "r",
        "resource_id": "o1",
    }
    event = access_event(base)
    assert event is not None
    assert set(event) == {
        "id",
        "time",
        "user",
        "action",
        "outcome",
        "patient",
        "resource_type",
        "count",
        "ip",
        "device",
        "purpose",
    }
    # Égide's own jobs and administrative acts are not behaviour to judge; a service account
    # (an integration, an API client) is.
    assert access_event({**base, "role": "service"}) is not None
    assert access_event({**base, "user": "system:seed", "role": "service"}) is None
    assert access_event({**base, "action": "alert_update"}) is None
    assert access_event({**base, "user": None}) is None
    # Failed sign-ins for unknown accounts: one user, wherever they come from.
    unknown = access_event(
        {**base, "user": "anonymous", "role": "anonymous", "action": "login_failed"}
    )
    assert unknown is not None
    assert unknown["user"] == "unknown"
    assert access_event({**base, "user": "anonymous", "role": "anonymous"}) is None
    # The officer's reading of an alert's evidence is the review itself; other reads count.
    officer = {**base, "role": "security_officer", "resource_type": "AuditEvent"}
    assert access_event({**officer, "reasons": ["evidence of alert al-1 (vip)"]}) is None
    assert access_event(officer) is not None


def test_a_step_reads_late_commits_it_skipped(services: Services, database: Database) -> None:
    """PostgreSQL numbers entries before they commit: a transaction that commits after a
    later one leaves a hole that the next step fills."""
    if database.backend == "sqlite":
        pytest.skip("SQLite writers are serialised: entries commit in seq order")
    live = live_detection(services)
    live.step()
    clock = services.records.clock
    slow = services.session_factory()
    try:
        append(slow, principal=WRITER, clock=clock, act=Act(Action.READ, patient="p-slow"))
        flush_pending(slow)  # numbered now, committed later
        with transaction(services.session_factory) as fast:
            append(fast, principal=WRITER, clock=clock, act=Act(Action.READ, patient="p-fast"))
        first = live.step()
        assert first.entries == 1
        assert live._missing
        slow.commit()
    finally:
        slow.close()
    second = live.step()
    assert second.entries == 1
    assert second.events == 1
    assert live._missing == {}


def test_the_context_follows_the_ledger_reading_only_what_changed(
    services: Services, client: TestClient, auth_token: dict[str, str]
) -> None:
    """After the start, a new patient is opened alone (one audited read of one record), not
    the whole population again at every step."""
    for _ in range(3):
        create(client, auth_token["token"], {"resourceType": "Patient"})
    live = live_detection(services)
    live.step()
    reads = [e for e in ledger(services) if e["user"] == "system:detect"]
    assert [(e["resource_type"], e["count"]) for e in reads] == [("Patient", 3)]
    create(client, auth_token["token"], {"resourceType": "Patient", "name": [{"family": "Neuf"}]})
    report = live.step()
    assert report.context_rebuilt
    reads = [e for e in ledger(services) if e["user"] == "system:detect"]
    assert [(e["resource_type"], e["count"]) for e in reads] == [("Patient", 3), ("Patient", 1)]
    assert all(e["purpose"].startswith("behavioural detection") for e in reads)
    assert live.step().context_rebuilt is False  # nothing changed: nothing read

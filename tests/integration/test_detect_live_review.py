"""Attacker's review of live behavioural detection (issue 6, item 6), on SQLite and PostgreSQL.

Each test drives the real path: real sign-ins and API calls (or, where the HTTP route does not
exist yet, the ledger's own `append`, which is what every route calls) reach the real ledger,
`LiveDetection.step` feeds them to the detector, alerts are stored and the configured response
is applied. Each test was first written as a strict xfail proving a hole; the holes are fixed
and the tests now hold the properties an attacker would like to break.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

import egide.incidents.live as live_module
from egide.app import live_detection
from egide.cli.runtime import Services
from egide.core.clock import FixedClock
from egide.core.principal import Principal
from egide.db.engine import transaction
from egide.identity.tokens import create_token
from egide.incidents import alerts
from egide.ledger.service import Act, Action, append, flush_pending
from tests.helpers import Database, issue_token
from tests.integration.detect_live_support import (
    ATTACKER,
    account_status,
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
    ledger,
    password_step,
)
from tests.integration.identity_support import staff as staff_account

HOME = "192.0.2.10"  # the victim's own workstation network


# --- helpers -----------------------------------------------------------------------------------


@pytest.fixture
def disabling(services: Services, clock: FixedClock) -> Iterator[Services]:
    """The same instance, configured to disable an account whose alert turns critical."""
    yield from reopened(services.settings, clock, detect_response=["disable_account"])


@pytest.fixture
def revoking(services: Services, clock: FixedClock) -> Iterator[Services]:
    """The same instance, configured to revoke the sessions of an account whose alert turns
    critical."""
    yield from reopened(services.settings, clock, detect_response=["revoke_sessions"])


def _guesses(services: Services, email: str, n: int, *, ip: str = ATTACKER) -> None:
    """`n` wrong passwords, one a second: no waiting out the backoff (an attempt refused
    for backoff checks nothing, yet is ledgered as a failed sign-in of the account)."""
    for _ in range(n):
        password_step(services, email, "not the password at all", ip=ip)
        clock_of(services).advance(dt.timedelta(seconds=1))


def _token_principal(services: Services, role: str) -> Principal:
    with transaction(services.session_factory) as session:
        issued = create_token(
            session, role=role, name=f"review {role}", clock=services.records.clock
        )
    return Principal(id=issued.id, role=role, ip="192.0.2.77", device="integration-engine")


def _acts(services: Services, who: Principal, *acts: Act) -> None:
    """What a route appends for `who` (the route for bulk export is not built yet)."""
    with transaction(services.session_factory) as session:
        for act in acts:
            append(session, principal=who, clock=services.records.clock, act=act)


def _ordinary_days_then_export(services: Services, who: Principal, *, days: int = 5) -> None:
    """A few reads a day for `days` days, then 400 records exported at once."""
    clock = clock_of(services)
    for day in range(days):
        reads = [
            Act(Action.READ, patient=f"p-{day}-{i}", resource_type="Observation") for i in range(4)
        ]
        _acts(services, who, *reads)
        clock.advance(dt.timedelta(days=1))
    _acts(services, who, Act(Action.EXPORT, resource_type="Patient", count=400))


# --- automatic containment turned against the victim ------------------------------------------


@pytest.mark.parametrize("role", ["physician", "security_officer"])
def test_failed_logins_by_a_stranger_never_disable_the_victim(
    disabling: Services, role: str
) -> None:
    services = disabling
    live = live_detection(services)
    live.step()
    victim = staff_account(services, email=f"{role}@clinic.example", role=role)
    enrol(services, victim)
    sign_in_from(services, victim, ip=HOME)  # her usual place of work
    clock_of(services).advance(dt.timedelta(days=1))
    live.step()
    _guesses(services, victim.email, 8)  # the stranger: eight seconds of work
    clock_of(services).advance(dt.timedelta(minutes=10))
    sign_in_from(services, victim, ip=HOME)  # the victim starts her day as usual
    live.step()
    assert account_status(services, victim.id) == "active"
    assert live_sessions(services, victim.id) == 2  # yesterday's (idle) and today's
    [alert] = stored_alerts(services, kind="credential_stuffing")
    assert alert.severity == "high"
    assert any("usually works from" in r for r in alert.reasons)


def test_the_stranger_alone_is_an_alert_not_a_containment(disabling: Services) -> None:
    """Failures with no sign-in after them: a high alert, no response."""
    services = disabling
    live = live_detection(services)
    live.step()
    victim = staff_account(services, email="bob@clinic.example")
    enrol(services, victim)
    _guesses(services, victim.email, 8)
    report = live.step()
    [alert] = stored_alerts(services, kind="credential_stuffing")
    assert alert.severity == "high"
    assert report.responses == []
    assert account_status(services, victim.id) == "active"


def test_a_restart_does_not_contain_again(revoking: Services) -> None:
    """The response ran once; learning the window again after a restart finds the same
    critical alert and leaves the account's new session alone."""
    services = revoking
    live = live_detection(services)
    live.step()
    alice = staff_account(services, email="carol@clinic.example")
    enrol(services, alice)
    _guesses(services, alice.email, 8)
    clock_of(services).advance(dt.timedelta(minutes=5))
    sign_in_from(services, alice, ip=ATTACKER)  # the guess worked
    assert live.step().responses
    assert live_sessions(services, alice.id) == 0
    clock_of(services).advance(dt.timedelta(minutes=5))
    sign_in_from(services, alice, ip=HOME)  # the owner, after a reset, signs in again
    restarted = live_detection(services)
    report = restarted.step()
    assert report.responses == []
    assert live_sessions(services, alice.id) == 1
    [alert] = stored_alerts(services, kind="credential_stuffing")
    assert alert.severity == "critical"


def test_the_automatic_response_stays_written_on_the_alert(revoking: Services) -> None:
    services = revoking
    live = live_detection(services)
    live.step()
    alice = staff_account(services, email="dave@clinic.example")
    enrol(services, alice)
    _guesses(services, alice.email, 8)
    clock_of(services).advance(dt.timedelta(minutes=5))
    sign_in_from(services, alice, ip=ATTACKER)
    live.step()
    [alert] = stored_alerts(services, kind="credential_stuffing")
    assert any(r.startswith("automatic response:") for r in alert.reasons)
    live_detection(services).step()  # a restart learns the window again
    [after] = stored_alerts(services, kind="credential_stuffing")
    assert any(r.startswith("automatic response:") for r in after.reasons), after.reasons


# --- the officer's queue ----------------------------------------------------------------------


def test_many_addresses_guessing_unknown_names_make_one_case(services: Services) -> None:
    live = live_detection(services)
    live.step()
    for host in range(20):
        for guess in range(8):
            password_step(
                services,
                f"nobody{guess}@clinic.example",
                "password123",
                ip=f"198.51.100.{host + 1}",
            )
            clock_of(services).advance(dt.timedelta(seconds=1))
    live.step()
    found = stored_alerts(services)
    assert len(found) <= 1, [(a.kind, a.user, a.severity) for a in found]


def test_an_alert_with_an_odd_address_is_not_lost(services: Services) -> None:
    live = live_detection(services)
    live.step()
    for guess in range(10):
        password_step(services, f"x{guess}@clinic.example", "pw", ip="fe80::1%eth0")
        clock_of(services).advance(dt.timedelta(seconds=1))
    live.step()
    live.step()
    assert stored_alerts(services, kind="credential_stuffing")


# --- feedback ---------------------------------------------------------------------------------


INSIDER = "192.0.2.99"  # a colleague's workstation: the victim's own network, same browser


def _victim_with_history(services: Services, email: str) -> Person:
    """A clinician who signed in from her ward yesterday (so her network and browser are
    known: the stolen-credentials detector sees nothing new in a colleague's guess)."""
    victim = staff_account(services, email=email)
    enrol(services, victim)
    sign_in_from(services, victim, ip=HOME)
    clock_of(services).advance(dt.timedelta(days=1))
    return victim


def test_a_second_round_of_guessing_that_succeeds_is_critical(services: Services) -> None:
    live = live_detection(services)
    live.step()
    victim = _victim_with_history(services, "hana@clinic.example")
    _guesses(services, victim.email, 8, ip=INSIDER)
    live.step()
    clock_of(services).advance(dt.timedelta(days=1))
    _guesses(services, victim.email, 8, ip=INSIDER)
    clock_of(services).advance(dt.timedelta(minutes=1))
    sign_in_from(services, victim, ip=INSIDER)  # the guess worked
    live.step()
    found = [(a.kind, a.severity, len(a.events)) for a in stored_alerts(services)]
    assert any(severity == "critical" for _, severity, _ in found), found


def _case(severity: str, score: float, events: list[str], end: str) -> dict[str, Any]:
    """A snooping case as the detector writes it: its id is derived from its first evidence,
    so it keeps it while more patients are added over the following days."""
    return {
        "id": "al-snoop-case-1",
        "kind": "snooping",
        "severity": severity,
        "score": score,
        "user": "u-nurse-7",
        "patient": None,
        "start": "2026-03-02T09:00:00Z",
        "end": end,
        "events": events,
        "reasons": [f"{len(events)} patients in this case"],
    }


def test_a_dismissed_case_that_turns_critical_comes_back(
    services: Services, client: TestClient
) -> None:
    clock = services.records.clock
    with transaction(services.session_factory) as session:
        first = alerts.record_detected(
            session, _case("medium", 0.55, ["e-1"], "2026-03-02T09:05:00Z"), clock=clock
        )
    officer = issue_token(services, "security_officer")
    answer = client.patch(
        f"/api/alerts/{first.alert.id}",
        json={"status": "false_positive"},
        headers=bearer(officer),
    )
    assert answer.status_code == 200
    # The next days: thirty more patients, the case critical.
    grown = _case("critical", 0.97, [f"e-{n}" for n in range(1, 32)], "2026-03-05T17:00:00Z")
    with transaction(services.session_factory) as session:
        recorded = alerts.record_detected(session, grown, clock=clock)
    assert recorded.became_critical  # containment would run: the detector knows
    shown = client.get("/api/alerts?status=open", headers=bearer(officer)).json()["alerts"]
    assert [a["id"] for a in shown] == [first.alert.id]  # the officer does not


@pytest.mark.parametrize("role", ["admin", "dpo", "service", "nurse", "physician"])
def test_only_the_officer_dismisses(services: Services, client: TestClient, role: str) -> None:
    live = live_detection(services)
    live.step()
    alice = staff_account(services, email="fay@clinic.example")
    _guesses(services, alice.email, 8)
    live.step()
    [alert] = stored_alerts(services)
    token = issue_token(services, role)
    answer = client.patch(
        f"/api/alerts/{alert.id}", json={"status": "false_positive"}, headers=bearer(token)
    )
    assert answer.status_code == 403
    assert stored_alerts(services)[0].status == "open"
    assert ledger(services)[-1]["action"] == "alert_update"
    assert ledger(services)[-1]["outcome"] == "denied"


def test_the_officer_cannot_dismiss_an_alert_about_themselves(
    services: Services, client: TestClient
) -> None:
    with transaction(services.session_factory) as session:
        issued = create_token(
            session, role="security_officer", name="officer", clock=services.records.clock
        )
        alert = alerts.store_document(
            session,
            {
                "id": "al-self-1",
                "kind": "exfiltration",
                "severity": "high",
                "score": 0.9,
                "user": issued.id,
                "patient": None,
                "start": "2026-03-02T08:00:00Z",
                "end": "2026-03-02T08:10:00Z",
                "events": [],
                "reasons": ["400 records exported between 08:00 and 08:10"],
            },
            clock=services.records.clock,
        )
    answer = client.patch(
        f"/api/alerts/{alert.id}",
        json={"status": "false_positive"},
        headers=bearer(issued.token),
    )
    assert answer.status_code in {403, 409}
    assert stored_alerts(services)[0].status == "open"


# --- evasion: acting where the feed does not look ---------------------------------------------


def test_a_nurse_exporting_far_beyond_her_habit_is_exfiltration(services: Services) -> None:
    """The control for the next test: the same acts under a clinical role alert."""
    live = live_detection(services)
    live.step()
    _ordinary_days_then_export(services, _token_principal(services, "nurse"))
    live.step()
    assert stored_alerts(services, kind="exfiltration")


def test_a_service_token_exporting_far_beyond_its_habit_is_exfiltration(
    services: Services,
) -> None:
    live = live_detection(services)
    live.step()
    _ordinary_days_then_export(services, _token_principal(services, "service"))
    live.step()
    assert stored_alerts(services, kind="exfiltration")


def test_an_export_on_an_accounts_first_day_is_exfiltration(services: Services) -> None:
    live = live_detection(services)
    live.step()
    nurse = _token_principal(services, "nurse")
    _acts(services, nurse, Act(Action.EXPORT, resource_type="Patient", count=5000))
    live.step()
    assert stored_alerts(services, kind="exfiltration")


def test_the_officer_browsing_audit_trails_is_watched(
    services: Services, client: TestClient
) -> None:
    live = live_detection(services)
    live.step()
    officer = issue_token(services, "security_officer")
    for n in range(30):
        answer = client.get(f"/fhir/AuditEvent?patient=p-vip-{n}", headers=bearer(officer))
        assert answer.status_code == 200, answer.text
    report = live.step()
    assert report.events >= 30


# --- leaks ------------------------------------------------------------------------------------


def test_decrypted_names_reach_neither_logs_nor_alerts(
    services: Services,
    client: TestClient,
    service_token: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The context opens names and addresses; none of them is written anywhere but memory."""
    body = {
        "resourceType": "Patient",
        "name": [{"family": "Quixwort", "given": ["Zélie"]}],
        "address": [{"line": ["17 impasse Vermeil"], "postalCode": "69009"}],
    }
    answer = client.post("/fhir/Patient", json=body, headers=bearer(service_token))
    assert answer.status_code == 201, answer.text
    with caplog.at_level(logging.DEBUG):
        live = live_detection(services)
        live.step()
        alice = staff_account(services, email="gus@clinic.example")
        _guesses(services, alice.email, 8)
        live.step()
    texts = [caplog.text, repr(stored_alerts(services))]
    texts += [repr(e) for e in ledger(services) if e["user"] == "system:detect"]
    for secret in ("Quixwort", "Zélie", "Vermeil"):
        assert all(secret not in t for t in texts), secret


# --- ordering on PostgreSQL (entries numbered before they commit) ------------------------------


def _pg_only(database: Database) -> None:
    if database.backend == "sqlite":
        pytest.skip("SQLite writers are serialised: entries commit in seq order")


def test_a_slow_batch_is_read_when_it_commits(
    services: Services, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pg_only(database)
    live = live_detection(services)
    live.step()
    nurse = _token_principal(services, "nurse")
    clock = services.records.clock
    seen = 0
    slow = services.session_factory()
    try:
        for n in range(60):
            act = Act(Action.DELETE, patient=f"p-{n}", resource_type="Observation")
            append(slow, principal=nurse, clock=clock, act=act)
        flush_pending(slow)  # numbered now, committed at the end of the batch
        _acts(services, nurse, Act(Action.READ, patient="p-fast", resource_type="Patient"))
        seen += live.step().events
        # The batch takes longer than the hole is waited for (10 s in production).
        monkeypatch.setattr(live_module, "GAP_SECONDS", 0.0)
        seen += live.step().events
        slow.commit()
    finally:
        slow.close()
    seen += live.step().events
    assert seen == 61


def test_an_entry_in_flight_at_start_is_read(services: Services, database: Database) -> None:
    _pg_only(database)
    nurse = _token_principal(services, "nurse")
    clock = services.records.clock
    slow = services.session_factory()
    try:
        append(slow, principal=nurse, clock=clock, act=Act(Action.EXPORT, count=300))
        flush_pending(slow)
        _acts(services, nurse, Act(Action.READ, patient="p-fast", resource_type="Patient"))
        live = live_detection(services)
        live.step()  # starts: learns the window, which has the fast entry only
        slow.commit()
    finally:
        slow.close()
    assert live.step().events == 1

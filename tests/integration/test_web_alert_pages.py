"""The security officer's alert pages over HTTP (TestClient), on SQLite and PostgreSQL.

Real accounts sign in through the pages (password, TOTP enrolment); alerts are stored in the
DESIGN.md format, naming real ledger entries. What is checked: the officer lists, filters,
opens an alert (reasons, evidence) and triages it by a CSRF-protected POST answered by a
redirect; another role gets a 403 page and its attempt is ledgered; nothing of an alert is
rendered as markup.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from egide.cli.runtime import Services
from egide.db.engine import transaction
from egide.incidents import alerts
from tests.integration.identity_support import ledger
from tests.integration.test_web_pages import Person, _client, accept, csrf_of, enrol, invite

PASSWORD = "vélo rouge sous la pluie d'été"


def _signed_in(services: Services, web: TestClient, role: str, email: str) -> Person:
    person = Person(email, PASSWORD)
    assert accept(web, invite(services, email=email, role=role), PASSWORD).status_code == 303
    enrol(services, web, person)  # the first sign-in: the session cookie is now set
    return person


@pytest.fixture
def officer(services: Services) -> Iterator[TestClient]:
    with _client(services) as web:
        _signed_in(services, web, "security_officer", "vigie@clinique.example")
        yield web


@pytest.fixture
def nurse(services: Services) -> Iterator[TestClient]:
    with _client(services) as web:
        _signed_in(services, web, "nurse", "infirmiere@clinique.example")
        yield web


def _store(services: Services, **fields: Any) -> str:
    doc: dict[str, Any] = {
        "id": "al-web-1",
        "kind": "family",
        "severity": "high",
        "score": 0.8,
        "user": "u-17",
        "patient": "p-42",
        "start": "2026-03-02T08:00:00Z",
        "end": "2026-03-02T08:30:00Z",
        "events": [],
        "reasons": ["same family name and address as the user"],
    }
    doc.update(fields)
    with transaction(services.session_factory) as session:
        return alerts.store_document(session, doc, clock=services.records.clock).id


def _status(services: Services, alert_id: str) -> str:
    with transaction(services.session_factory) as session:
        return alerts.get_alert(session, alert_id=alert_id).status


def test_the_officer_lists_opens_and_triages(services: Services, officer: TestClient) -> None:
    logins = [e["id"] for e in ledger(services) if e["action"] == "login"]
    assert logins  # the officer's own sign-in: a real entry to name as evidence
    alert_id = _store(services, events=[logins[0], "ext-1"])
    _store(services, id="al-web-2", kind="vip", severity="low", score=0.3)

    account = officer.get("/account")
    assert 'href="/alerts"' in account.text

    listed = officer.get("/alerts")
    assert listed.status_code == 200
    assert listed.headers["cache-control"] == "no-store"
    text = html.unescape(listed.text)
    assert text.index("/alerts/al-web-1") < text.index("/alerts/al-web-2")  # score order
    assert "2026-03-02 08:00 UTC – 2026-03-02 08:30 UTC" in text
    only_vip = officer.get("/alerts?kind=vip&status=open")
    assert "/alerts/al-web-2" in only_vip.text
    assert "/alerts/al-web-1" not in only_vip.text
    assert 'value="vip" selected' in only_vip.text
    assert "No alert matches." in officer.get("/alerts?severity=critical").text
    for bad in ("status=closed", "kind=<b>", "severity=urgent", "offset=x", "offset=999"):
        refused = officer.get(f"/alerts?{bad}")
        assert refused.status_code == 400, bad
        assert "That filter is not known." in refused.text

    page = officer.get(f"/alerts/{alert_id}")
    assert page.status_code == 200
    text = html.unescape(page.text)
    assert "same family name and address as the user" in text
    assert "The 1 ledger entry" in " ".join(text.split())
    assert "ext-1" in text  # listed as missing
    assert ">Open<" in page.text  # the status
    assert [e["action"] for e in ledger(services)[-1:]] == ["read"]

    no_csrf = officer.post(f"/alerts/{alert_id}/status", data={"status": "false_positive"})
    assert no_csrf.status_code == 403
    assert _status(services, alert_id) == "open"
    done = officer.post(
        f"/alerts/{alert_id}/status", data={"csrf": csrf_of(page), "status": "false_positive"}
    )
    assert done.status_code == 303
    assert done.headers["location"] == f"/alerts/{alert_id}?notice=status"
    assert _status(services, alert_id) == "false_positive"
    after = officer.get(done.headers["location"])
    assert "The alert&#39;s status is changed" in after.text
    assert ">False positive<" in after.text
    assert "Reopen" in after.text
    assert "Mark false positive" not in after.text
    bad = officer.post(f"/alerts/{alert_id}/status", data={"csrf": csrf_of(after), "status": "x"})
    assert bad.status_code == 400
    reopened = officer.post(
        f"/alerts/{alert_id}/status", data={"csrf": csrf_of(after), "status": "open"}
    )
    assert reopened.status_code == 303
    updates = [e["reasons"][0] for e in ledger(services) if e["action"] == "alert_update"]
    assert updates == [
        f"alert {alert_id} (family): open -> false_positive",
        f"alert {alert_id} (family): false_positive -> open",
    ]
    assert officer.get("/alerts/no-such-alert").status_code == 404


def test_a_nurse_gets_a_403_page_and_the_attempts_are_ledgered(
    services: Services, nurse: TestClient
) -> None:
    alert_id = _store(services)
    assert 'href="/alerts"' not in nurse.get("/account").text
    listed = nurse.get("/alerts")
    assert listed.status_code == 403
    assert "Only the security officer may see and triage alerts." in listed.text
    assert "same family name" not in listed.text
    opened = nurse.get(f"/alerts/{alert_id}")
    assert opened.status_code == 403
    assert "same family name" not in opened.text
    csrf = csrf_of(nurse.get("/account"))
    posted = nurse.post(
        f"/alerts/{alert_id}/status", data={"csrf": csrf, "status": "false_positive"}
    )
    assert posted.status_code == 403
    assert _status(services, alert_id) == "open"
    refusals = [e for e in ledger(services) if e["outcome"] == "denied"]
    assert [(r["action"], r["role"], r["resource_id"]) for r in refusals] == [
        ("search", "nurse", None),
        ("read", "nurse", alert_id),
        ("alert_update", "nurse", alert_id),
    ]


def test_signed_out_goes_to_the_sign_in_page(services: Services) -> None:
    alert_id = _store(services)
    with _client(services) as web:
        for path in ("/alerts", f"/alerts/{alert_id}"):
            response = web.get(path)
            assert response.status_code == 303
            assert response.headers["location"] == "/login"
        assert web.post(f"/alerts/{alert_id}/status", data={"status": "open"}).status_code in {
            303,
            403,
        }
    assert _status(services, alert_id) == "open"


def test_nothing_of_an_alert_is_rendered_as_markup(services: Services, officer: TestClient) -> None:
    markup = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    # A real ledger entry carrying markup: a failed API call whose user agent is markup.
    refused = officer.get(
        "/api/alerts", headers={"User-Agent": markup, "Authorization": "Bearer x"}
    )
    assert refused.status_code == 401
    [failed] = [e for e in ledger(services) if e["device"] == markup]
    alert_id = _store(services, reasons=[markup], events=[failed["id"]])
    for path in ("/alerts", f"/alerts/{alert_id}"):
        page = officer.get(path)
        assert page.status_code == 200
        assert "<script>alert" not in page.text
        assert "<img src=x" not in page.text
    detail = officer.get(f"/alerts/{alert_id}").text
    assert detail.count(str(escape(markup))) == 2  # the reason, and the evidence's device

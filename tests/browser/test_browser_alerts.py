"""The security officer's alert pages in a real browser: Debian's Chromium, headless, driven by
Playwright (issue 6, "Live": alerts served to the security officer).

A fresh installation (temporary data directory, SQLite, the real clock) is served by uvicorn on
a loopback port. A physician breaks the glass on a patient's record (through the back end, as
the break-the-glass page does), which raises an alert. The security officer signs in with
password and TOTP, follows the account page's link to the alerts, opens the alert, reads its
reasons and the evidence (the grant's ledger entry), marks it a false positive and sees the
status change; the change is in the ledger. A nurse signing in gets the 403 page. No page
breaks the Content Security Policy.

Needs /usr/bin/chromium (see `browser_support`): skipped locally without it, failed under CI.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from egide.app import api_for
from egide.cli.runtime import OPERATOR, Services, initialise, open_services
from egide.core.principal import Principal
from egide.db.engine import transaction
from egide.identity import accounts, totp
from egide.incidents import alerts
from egide.records.repository import system_repository
from tests.browser.browser_support import TIMEOUT_MS, launch_chromium
from tests.helpers import make_settings
from tests.integration.identity_support import ledger
from tests.serving import serve_app

pytestmark = [pytest.mark.browser, pytest.mark.served]

PASSWORD = "sept goélands au-dessus du port de Lorient"
OFFICER_EMAIL = "vigie@clinique.example"
NURSE_EMAIL = "infirmiere@clinique.example"
REASON = "Unconscious patient brought in by ambulance, no records reachable"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_chromium() as launched:
        yield launched


@pytest.fixture
def installation(tmp_path: Path) -> Iterator[Services]:
    settings = make_settings(tmp_path / "data")
    initialise(settings)
    services = open_services(settings)  # the real clock: the browser's codes are real TOTP
    yield services
    services.close()


@pytest.fixture
def base_url(installation: Services) -> Iterator[str]:
    with serve_app(api_for(installation)) as url:
        yield url


def _enrolled(services: Services, *, email: str, name: str, role: str) -> bytes:
    """An active staff account with a password and TOTP; returns the TOTP seed."""
    clock, settings, envelope = services.records.clock, services.settings, services.records.envelope
    with transaction(services.session_factory) as session:
        view, token = accounts.create_account(
            session,
            email=email,
            name=name,
            role=role,
            clock=clock,
            settings=settings,
            envelope=envelope,
            actor=OPERATOR,
        )
        accounts.accept_invitation(
            session,
            token=token,
            password=PASSWORD,
            clock=clock,
            settings=settings,
            ip=None,
            device=None,
        )
        enrolment = accounts.begin_totp_enrolment(
            session, account_id=view.id, clock=clock, envelope=envelope, settings=settings
        )
    seed = totp.decode_secret(enrolment.secret_base32)
    with transaction(services.session_factory) as session:
        accounts.confirm_totp_enrolment(
            session,
            account_id=view.id,
            code=totp.totp_at_time(seed, time.time()),
            clock=clock,
            envelope=envelope,
        )
    return seed


def _break_the_glass(services: Services) -> tuple[str, str]:
    """A physician opens a patient's record in an emergency; (patient id, alert id)."""
    clock = services.records.clock
    with transaction(services.session_factory) as session:
        patient = (
            system_repository(session, services.records, job="test-admission")
            .create({"resourceType": "Patient", "name": [{"family": "Kerjean"}]})
            .id
        )
    physician = Principal(id="acct-urgences", role="physician", name="Dr Urgences")
    with transaction(services.session_factory) as session:
        _granted, alert = alerts.open_break_glass_with_alert(
            session,
            physician,
            patient_id=patient,
            reason_code="ETREAT",
            reason_text=REASON,
            clock=clock,
            settings=services.settings,
            mfa_at=clock.now(),
        )
    return patient, alert.id


def _sign_in(context: BrowserContext, base_url: str, email: str, seed: bytes) -> Page:
    page = context.new_page()
    page.goto(f"{base_url}/login")
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base_url}/login/mfa")
    # The next step's code: the enrolment spent the current one, and the server accepts one
    # step ahead.
    code = totp.totp_at_time(seed, time.time() + totp.DEFAULT_STEP)
    page.get_by_label("Code from your authenticator app").fill(code)
    page.get_by_role("button", name="Continue").click()
    expect(page).to_have_url(f"{base_url}/account")
    return page


def _csp_problems(page: Page) -> list[str]:
    problems: list[str] = []
    page.on(
        "console",
        lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None,
    )
    return problems


def test_browser_the_officer_triages_an_alert_and_a_nurse_is_refused(
    browser: Browser, installation: Services, base_url: str
) -> None:
    officer_seed = _enrolled(
        installation, email=OFFICER_EMAIL, name="Solène Vigier", role="security_officer"
    )
    nurse_seed = _enrolled(installation, email=NURSE_EMAIL, name="Inès Martin", role="nurse")
    patient, alert_id = _break_the_glass(installation)

    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = _sign_in(context, base_url, OFFICER_EMAIL, officer_seed)
        problems = _csp_problems(page)
        page.get_by_role("link", name="Alerts to review").click()
        expect(page).to_have_url(f"{base_url}/alerts")
        expect(page.get_by_role("heading", name="Alerts")).to_be_visible()
        row = page.locator("table.alerts tbody tr")
        expect(row).to_have_count(1)
        expect(row).to_contain_text("break glass")
        expect(row).to_contain_text(patient)
        expect(row).to_contain_text("Open")

        # Filters: a kind with no alert, then back to every alert.
        page.get_by_label("Kind").select_option("snooping")
        page.get_by_role("button", name="Show").click()
        expect(page).to_have_url(re.compile(r"/alerts\?status=&kind=snooping&severity=$"))
        expect(page.get_by_text("No alert matches.")).to_be_visible()
        page.get_by_label("Kind").select_option("")
        page.get_by_label("Status").select_option("open")
        page.get_by_role("button", name="Show").click()
        expect(row).to_have_count(1)

        row.get_by_role("link", name=re.compile("^Open the break glass alert")).click()
        expect(page).to_have_url(f"{base_url}/alerts/{alert_id}")
        expect(page.get_by_role("heading", name="Alert: break glass")).to_be_visible()
        expect(page.locator("#alert-status")).to_have_text("Open")
        expect(page.locator("ul.reasons")).to_contain_text("broke the glass")
        evidence = page.locator("table.evidence tbody tr")
        expect(evidence).to_have_count(1)
        expect(evidence).to_contain_text("break glass")
        expect(evidence).to_contain_text("acct-urgences")
        expect(evidence).to_contain_text(REASON)  # the clinician's own words, from the ledger

        page.get_by_role("button", name="Mark false positive").click()
        expect(page).to_have_url(f"{base_url}/alerts/{alert_id}?notice=status")
        expect(page.get_by_role("status")).to_contain_text("The alert's status is changed")
        expect(page.locator("#alert-status")).to_have_text("False positive")
        expect(page.get_by_role("button", name="Mark false positive")).to_have_count(0)
        expect(page.get_by_role("button", name="Reopen")).to_be_visible()

        page.get_by_role("link", name="All alerts").click()
        expect(row).to_contain_text("False positive")
        assert not problems, problems
    finally:
        context.close()

    updates = [e for e in ledger(installation) if e["action"] == "alert_update"]
    assert [u["reasons"] for u in updates] == [
        [f"alert {alert_id} (break_glass): open -> false_positive"]
    ]
    assert updates[0]["role"] == "security_officer"
    assert updates[0]["device"]  # the browser's user agent: the triage is traceable

    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = _sign_in(context, base_url, NURSE_EMAIL, nurse_seed)
        expect(page.get_by_role("link", name="Alerts to review")).to_have_count(0)
        response = page.goto(f"{base_url}/alerts/{alert_id}")
        assert response is not None
        assert response.status == 403
        expect(
            page.get_by_text("Only the security officer may see and triage alerts.")
        ).to_be_visible()
        expect(page.get_by_text("broke the glass")).to_have_count(0)
    finally:
        context.close()
    [refusal] = [e for e in ledger(installation) if e["outcome"] == "denied"]
    assert (refusal["action"], refusal["role"], refusal["resource_id"]) == (
        "read",
        "nurse",
        alert_id,
    )

"""The sign-in pages in a real browser: Debian's Chromium, headless, driven by Playwright.

A fresh installation (temporary data directory, SQLite, the real clock) is served by uvicorn
on a loopback port; the browser accepts an invitation, sets a password, enrols TOTP (reading
the set-up key from the page, as a person types it into an app), keeps its recovery codes,
signs out, signs in again with password and TOTP, sees its session and signs out.

Chromium treats http://127.0.0.1 as a secure context, so it stores the `__Host-` cookies
(Secure) over plain HTTP on loopback; the test checks the cookies it holds.

Needs /usr/bin/chromium (`apt-get install chromium`; `scripts/ensure-system-deps.sh` installs
it). Never `playwright install`: the browser comes from Debian. Without Chromium the test is
skipped locally and fails under CI (CI=true).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from egide.app import api_for
from egide.cli.runtime import Services, initialise, open_services
from egide.identity import totp
from tests.browser.browser_support import TIMEOUT_MS, invite_physician, launch_chromium
from tests.helpers import make_settings
from tests.serving import serve_app

pytestmark = [pytest.mark.browser, pytest.mark.served]

NAME = "Émilie Lefèvre-Nguyễn"
EMAIL = "emilie.lefevre@clinique.example"
PASSWORD = "quatre chats gris sur un toit de Nantes"


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
    """uvicorn in a thread on a socket bound before it starts (no free-port race)."""
    with serve_app(api_for(installation)) as url:
        yield url


def _invitation(services: Services) -> str:
    return invite_physician(services, email=EMAIL, name=NAME)


def _next_code(secret: bytes) -> str:
    """The code of the next 30-second step: the current one may be spent already (a code is
    accepted once), and the server accepts one step ahead."""
    return totp.totp_at_time(secret, time.time() + totp.DEFAULT_STEP)


def _sign_in(page: Page, base_url: str, secret: bytes) -> None:
    page.goto(f"{base_url}/login")
    page.get_by_label("E-mail address").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base_url}/login/mfa")
    page.get_by_label("Code from your authenticator app").fill(_next_code(secret))
    page.get_by_role("button", name="Continue").click()
    expect(page).to_have_url(f"{base_url}/account")


def test_browser_invitation_enrolment_sign_in_and_out(
    browser: Browser, installation: Services, base_url: str
) -> None:
    token = _invitation(installation)
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    try:
        # Invitation: choose the password.
        page.goto(f"{base_url}/invite/{token}")
        expect(page.get_by_text(f"Welcome, {NAME}.")).to_be_visible()
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_label("Password again").fill(PASSWORD)
        page.get_by_role("button", name="Set my password").click()
        expect(page).to_have_url(re.compile(r"/login\?notice=password-set$"))

        # First sign-in of staff: enrol TOTP, reading the set-up key off the page.
        page.get_by_label("E-mail address").fill(EMAIL)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(f"{base_url}/login/enrol")
        qr = page.get_by_role("img", name="QR code to scan with your authenticator app")
        expect(qr).to_be_visible()
        assert qr.evaluate("img => img.naturalWidth") > 0  # the data: SVG passed the CSP
        secret = totp.decode_secret(page.locator("code.secret").inner_text())
        page.get_by_label("The six-digit code your app shows").fill(
            totp.totp_at_time(secret, time.time())
        )
        page.get_by_role("button", name="Confirm").click()
        expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()
        expect(page.locator("ol.codes li")).to_have_count(10)
        page.get_by_role("link", name="I have saved them").click()
        expect(page).to_have_url(f"{base_url}/account")
        expect(page.get_by_text(NAME)).to_be_visible()

        cookies = {c["name"]: c for c in context.cookies()}
        session = cookies["__Host-egide_session"]
        assert session["secure"]
        assert session["httpOnly"]
        assert session["sameSite"] == "Strict"
        assert session["path"] == "/"
        assert session["expires"] == -1  # a session cookie

        # Sign out, then sign in again with password and TOTP.
        page.get_by_role("button", name="Sign out", exact=True).click()
        expect(page).to_have_url(re.compile(r"/login\?notice=signed-out$"))
        expect(page.get_by_text("You are signed out.")).to_be_visible()
        page.goto(f"{base_url}/account")
        expect(page).to_have_url(f"{base_url}/login")

        _sign_in(page, base_url, secret)
        expect(page.get_by_role("heading", name="Your account")).to_be_visible()
        expect(page.get_by_text("(this session)")).to_be_visible()
        expect(page.get_by_role("button", name="Sign out this session")).to_have_count(1)

        page.get_by_role("button", name="Sign out", exact=True).click()
        expect(page).to_have_url(re.compile(r"/login\?notice=signed-out$"))
        assert "__Host-egide_session" not in {c["name"] for c in context.cookies()}
        assert not [p for p in problems if "Content Security Policy" in p], problems
    finally:
        context.close()

"""Passkeys in a real browser: Debian's Chromium with its virtual WebAuthn authenticator.

Chromium's DevTools protocol (`WebAuthn.addVirtualAuthenticator`) gives the page a CTAP2
platform authenticator ("internal" transport) that holds discoverable credentials and verifies
the user, answering navigator.credentials.create() and .get() without any person touching it.
So this runs the whole stack: the pages, `static/passkeys.js` under the pages' CSP, the JSON
endpoints, py_webauthn's checks and the ledger.

A staff member's first sign-in registers a passkey (the enrolment page offers one beside the
authenticator app), keeps the recovery codes the page shows once, signs out, signs in again
with password + passkey, then once more with the passkey alone (passwordless).

WebAuthn needs a secure context and a valid RP ID, and an IP address is no RP ID (W3C WebAuthn
Level 3 section 4, "RP ID": a valid domain): the server listens on 127.0.0.1 but the browser opens
http://localhost:PORT (a secure context for Chromium), with the RP ID "localhost".
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, CDPSession, Page, expect
from sqlalchemy import select

from egide.app import api_for
from egide.cli.runtime import Services, initialise, open_services
from egide.db.engine import transaction
from egide.identity import accounts
from egide.identity.models import Passkey
from egide.ledger.models import LedgerEntry
from egide.ledger.service import flush_pending
from tests.browser.browser_support import TIMEOUT_MS, invite_physician, launch_chromium
from tests.helpers import make_settings
from tests.serving import bound_socket, serve_app

pytestmark = [pytest.mark.browser, pytest.mark.served]

NAME = "Yannick Le Goff"
EMAIL = "yannick.legoff@clinique.example"
PASSWORD = "trois mouettes sur le quai de Brest"


@dataclass
class Served:
    services: Services
    base_url: str


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # The server listens on IPv4 loopback only: resolve localhost there, never to ::1.
    with launch_chromium(["--host-resolver-rules=MAP localhost 127.0.0.1"]) as launched:
        yield launched


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """A fresh installation served by uvicorn on 127.0.0.1, known as http://localhost:PORT.

    The socket is bound first, so the settings can name the port: public_base_url gives the
    origin and RP ID ("localhost") the passkeys are bound to.
    """
    sock = bound_socket()
    base_url = f"http://localhost:{sock.getsockname()[1]}"
    settings = make_settings(tmp_path / "data", public_base_url=base_url)
    assert settings.effective_webauthn_rp_id == "localhost"
    initialise(settings)
    services = open_services(settings)
    try:
        with serve_app(api_for(services), sock):
            yield Served(services, base_url)
    finally:
        services.close()


def _staff_with_password(services: Services) -> None:
    token = invite_physician(services, email=EMAIL, name=NAME)
    with transaction(services.session_factory) as session:
        accounts.accept_invitation(
            session,
            token=token,
            password=PASSWORD,
            clock=services.records.clock,
            settings=services.settings,
            ip=None,
            device=None,
        )


def _virtual_authenticator(page: Page) -> tuple[CDPSession, str]:
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    added = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return cdp, str(added["authenticatorId"])


def _logins(services: Services) -> list[list[str]]:
    with transaction(services.session_factory) as session:
        flush_pending(session)
        rows = session.scalars(select(LedgerEntry.canonical).order_by(LedgerEntry.seq)).all()
    entries = [json.loads(r) for r in rows]
    return [e["reasons"] for e in entries if e["action"] == "login"]


def _password(page: Page, base_url: str) -> None:
    page.goto(f"{base_url}/login")
    page.get_by_label("E-mail address").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()


def test_browser_passkey_registration_and_sign_in(browser: Browser, served: Served) -> None:
    services, base_url = served.services, served.base_url
    _staff_with_password(services)
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    # Any refused call (the browser's own favicon request aside) is a failure of the test.
    page.on(
        "response",
        lambda r: (
            problems.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico")
            else None
        ),
    )
    page.on(
        "console",
        lambda m: (
            problems.append(m.text)
            if m.type == "error" and "Failed to load resource" not in m.text
            else None
        ),
    )
    try:
        cdp, authenticator_id = _virtual_authenticator(page)

        # First sign-in of staff: the enrolment page offers a passkey; register one.
        _password(page, base_url)
        expect(page).to_have_url(f"{base_url}/login/enrol")
        page.get_by_label("Name of this passkey (optional)").fill("Poste des urgences")
        page.get_by_role("button", name="Register a passkey").click()
        expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()
        expect(page.locator("#passkey-codes ol.codes li")).to_have_count(10)
        expect(page.get_by_label("The six-digit code your app shows")).to_be_hidden()
        page.get_by_role("link", name="I have saved them").click()
        expect(page).to_have_url(f"{base_url}/account")
        expect(page.get_by_role("cell", name="Poste des urgences", exact=True)).to_be_visible()

        held = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator_id})
        [credential] = held["credentials"]
        assert credential["isResidentCredential"]  # residentKey "preferred" was honoured
        assert credential["rpId"] == "localhost"
        assert credential["signCount"] >= 1
        with transaction(services.session_factory) as session:
            [row] = session.scalars(select(Passkey)).all()
            assert row.name == "Poste des urgences"
        assert _logins(services)[-1][:2] == ["password", "passkey"]
        session_cookie = {c["name"]: c for c in context.cookies()}["__Host-egide_session"]
        assert session_cookie["secure"]
        assert session_cookie["httpOnly"]

        # Sign out, then password + passkey.
        page.get_by_role("button", name="Sign out", exact=True).click()
        expect(page).to_have_url(re.compile(r"/login\?notice=signed-out$"))
        _password(page, base_url)
        expect(page).to_have_url(f"{base_url}/login/mfa")
        page.get_by_role("button", name="Use a passkey").click()
        expect(page).to_have_url(f"{base_url}/account")
        expect(page.get_by_text("(this session)")).to_be_visible()
        assert _logins(services)[-1][:2] == ["password", "passkey"]

        # Sign out, then the discoverable passkey alone (passwordless).
        page.get_by_role("button", name="Sign out", exact=True).click()
        expect(page).to_have_url(re.compile(r"/login\?notice=signed-out$"))
        page.get_by_role("button", name="Use a passkey instead").click()
        expect(page).to_have_url(f"{base_url}/account")
        assert _logins(services)[-1][:1] == ["passkey"]
        with transaction(services.session_factory) as session:
            [row] = session.scalars(select(Passkey)).all()
            assert row.sign_count >= 3  # the virtual authenticator counts every assertion
        assert not problems, problems
    finally:
        context.close()

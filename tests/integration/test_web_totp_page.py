"""The authenticator-app page of a signed-in session (`GET/POST /account/totp`), over HTTP,
on SQLite and PostgreSQL.

OWASP ASVS 5.0 V7.5.1: replacing the TOTP authenticator needs a recent re-authentication
(step-up), checked by the page and by the back end; V7.4.3: the change signs the account's
other sessions out; V6.5.1: ten new recovery codes, shown once; V3.5.1: the form carries the
session's CSRF token.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from egide.cli.runtime import Services
from egide.identity import totp
from tests.integration.identity_support import actions, clock_of, past_step_up
from tests.integration.test_web_pages import (
    EMAIL,
    PASSWORD,
    STEP,
    Person,
    _client,
    accept,
    code_now,
    csrf_of,
    enrol,
    error_of,
    invite,
    password_step,
    sign_in,
)

_SECRET_RE = re.compile(r'<code class="secret"[^>]*>([^<]+)</code>')
_CODES_RE = re.compile(r"<li><code>([^<]+)</code></li>")
STEP_UP = "/account/step-up?next=/account/totp"


@pytest.fixture
def person(services: Services) -> Person:
    who = Person(EMAIL, PASSWORD)
    with _client(services) as browser:
        assert accept(browser, invite(services)).status_code == 303
        enrol(services, browser, who)
    return who


@pytest.fixture
def web(services: Services) -> Iterator[TestClient]:
    with _client(services) as client:
        yield client


def test_v7_5_1_replacing_the_authenticator_app_from_the_account_page(
    services: Services, web: TestClient, person: Person
) -> None:
    assert person.secret is not None
    old_secret, old_codes = person.secret, person.recovery
    sign_in(services, web, person)
    with _client(services) as laptop:
        sign_in(services, laptop, person)
        account = web.get("/account")
        assert 'href="/account/totp"' in account.text
        # Past the step-up window: the page sends the person to confirm it is them first.
        past_step_up(services)
        asked = web.get("/account/totp")
        assert asked.status_code == 303
        assert asked.headers["location"] == STEP_UP
        posted = web.post("/account/totp", data={"csrf": csrf_of(account), "code": "123456"})
        assert posted.headers["location"] == STEP_UP

        form = web.get(STEP_UP)
        stepped = web.post(
            "/account/step-up",
            data={
                "csrf": csrf_of(form),
                "code": code_now(services, old_secret),
                "next": "/account/totp",
            },
        )
        assert stepped.status_code == 303
        assert stepped.headers["location"] == "/account/totp"

        page = web.get("/account/totp")
        assert page.status_code == 200
        assert page.headers["cache-control"] == "no-store"
        assert 'src="data:image/svg+xml;base64,' in page.text
        found = _SECRET_RE.search(page.text)
        assert found is not None
        new_secret = totp.decode_secret(html.unescape(found.group(1)).replace(" ", ""))
        assert new_secret != old_secret

        # Without the CSRF token nothing happens; a wrong code is refused, the old app stays.
        right = code_now(services, new_secret)
        assert web.post("/account/totp", data={"code": right}).status_code == 403
        wrong = "000000" if right != "000000" else "111111"
        refused = web.post("/account/totp", data={"csrf": csrf_of(page), "code": wrong})
        assert refused.status_code == 400
        assert "incorrect" in error_of(refused)
        assert laptop.get("/account").status_code == 200

        done = web.post("/account/totp", data={"csrf": csrf_of(page), "code": right})
        assert done.status_code == 200, done.text
        assert done.headers["cache-control"] == "no-store"
        codes = [html.unescape(c) for c in _CODES_RE.findall(done.text)]
        assert len(set(codes)) == 10
        assert not set(codes) & set(old_codes or [])
        assert web.get("/account").status_code == 200  # this session stays
        assert laptop.get("/account").status_code == 303  # the other is signed out (V7.4.3)
    assert actions(services, "mfa_enrol")[-1]["reasons"][0] == "totp authenticator enrolled"
    assert actions(services, "session_revoke")[-1]["reasons"][0] == "authenticator changed"

    # The old app's codes no longer sign in; the new app's do.
    with _client(services) as later:
        clock_of(services).advance(STEP)
        assert password_step(later, EMAIL, PASSWORD).headers["location"] == "/login/mfa"
        mfa = later.get("/login/mfa")
        old = later.post(
            "/login/mfa", data={"csrf": csrf_of(mfa), "code": code_now(services, old_secret)}
        )
        assert old.status_code == 401
    person.secret = new_secret
    with _client(services) as again:
        sign_in(services, again, person)


def test_totp_page_needs_a_session_and_a_recent_step_up(
    services: Services, web: TestClient, person: Person
) -> None:
    anonymous = web.get("/account/totp")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/login"
    sign_in(services, web, person)  # a fresh sign-in with TOTP counts as a step-up
    page = web.get("/account/totp")
    assert page.status_code == 200
    assert "Set-up key" in page.text
    empty = web.post("/account/totp", data={"csrf": csrf_of(page), "code": " "})
    assert empty.status_code == 400
    assert error_of(empty) == "Enter the code your app shows."

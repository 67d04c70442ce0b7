"""The step-up page over HTTP (TestClient), on SQLite and PostgreSQL.

OWASP ASVS 5.0 V7.5.2: ending another session needs a recent re-authentication; V3.5.1: the
form carries the session's CSRF token; V3.7.2: `next` only leads to this site; V6.3.1: a wrong
code at step-up is recorded and counts towards the lockout, like a wrong code at sign-in.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from egide.cli.runtime import Services
from egide.db.engine import transaction
from egide.identity import sessions
from egide.identity.models import Account
from egide.web.security import safe_next
from tests.integration.identity_support import actions, clock_of, past_step_up
from tests.integration.test_web_pages import (
    EMAIL,
    PASSWORD,
    SESSION,
    STEP,
    Person,
    _client,
    accept,
    code_now,
    csrf_of,
    enrol,
    error_of,
    invite,
    sign_in,
)

_NEXT_RE = re.compile(r'name="next" value="([^"]*)"')


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


def _revoke_ids(page: str) -> tuple[str, list[str]]:
    ids = re.findall(r'action="/account/sessions/([^/"]+)/revoke"', page)
    current = re.search(
        r'<tr class="current">.*?action="/account/sessions/([^/"]+)/revoke"', page, re.S
    )
    assert current is not None
    return current.group(1), [i for i in ids if i != current.group(1)]


def _failed_count(services: Services) -> int:
    with transaction(services.session_factory) as session:
        row = session.query(Account).filter_by(email=EMAIL).one()
        return row.failed_count


def test_v7_5_2_ending_another_session_needs_a_recent_step_up(
    services: Services, web: TestClient, person: Person
) -> None:
    assert person.secret is not None
    sign_in(services, web, person)
    with _client(services) as laptop:
        sign_in(services, laptop, person)
        past_step_up(services)
        page = web.get("/account")
        _, others = _revoke_ids(page.text)
        assert len(others) == 2  # the laptop, and the browser the fixture enrolled in
        asked = web.post(f"/account/sessions/{others[0]}/revoke", data={"csrf": csrf_of(page)})
        assert asked.status_code == 303
        assert asked.headers["location"] == "/account/step-up?next=/account"
        assert laptop.get("/account").status_code == 200  # nothing was revoked

        form = web.get(asked.headers["location"])
        assert form.status_code == 200
        assert form.headers["cache-control"] == "no-store"
        assert 'autocomplete="one-time-code"' in form.text
        assert html.unescape(_NEXT_RE.search(form.text).group(1)) == "/account"  # type: ignore[union-attr]

        # A wrong code: refused, and the refusal is committed (ledger and lockout counter).
        right = code_now(services, person.secret)
        wrong = "000000" if right != "000000" else "111111"
        before = len(actions(services, "mfa_failed"))
        refused = web.post(
            "/account/step-up", data={"csrf": csrf_of(form), "code": wrong, "next": "/account"}
        )
        assert refused.status_code == 401
        assert error_of(refused) == sessions.STEP_UP_WRONG
        assert len(actions(services, "mfa_failed")) == before + 1
        assert actions(services, "mfa_failed")[-1]["reasons"] == ["step-up", "wrong TOTP code"]
        assert _failed_count(services) == 1

        done = web.post(
            "/account/step-up", data={"csrf": csrf_of(refused), "code": right, "next": "/account"}
        )
        assert done.status_code == 303
        assert done.headers["location"] == "/account?notice=step-up"
        assert _failed_count(services) == 0
        # The same code again is a replay: refused.
        replay = web.post(
            "/account/step-up", data={"csrf": csrf_of(refused), "code": right, "next": "/account"}
        )
        assert replay.status_code == 401
        assert actions(services, "mfa_failed")[-1]["reasons"] == ["step-up", "TOTP code replayed"]

        page = web.get("/account")
        for other in others:
            gone = web.post(f"/account/sessions/{other}/revoke", data={"csrf": csrf_of(page)})
            assert gone.status_code == 303
            assert gone.headers["location"] == "/account?notice=session-revoked"
        assert laptop.get("/account").status_code == 303  # the laptop is signed out


def test_signing_this_session_out_needs_no_step_up(
    services: Services, web: TestClient, person: Person
) -> None:
    sign_in(services, web, person)
    past_step_up(services)
    page = web.get("/account")
    current, _ = _revoke_ids(page.text)
    out = web.post(f"/account/sessions/{current}/revoke", data={"csrf": csrf_of(page)})
    assert out.status_code == 303
    assert out.headers["location"] == "/login?notice=signed-out"


@pytest.mark.parametrize(
    ("given", "lands"),
    [
        ("/account/password", "/account/password"),
        ("//evil.example/account", "/account?notice=step-up"),
        ("https://evil.example/", "/account?notice=step-up"),
        ("/\\evil.example", "/account?notice=step-up"),
        ("javascript:alert(1)", "/account?notice=step-up"),
    ],
)
def test_step_up_goes_back_only_within_this_site(
    services: Services, web: TestClient, person: Person, given: str, lands: str
) -> None:
    assert person.secret is not None
    sign_in(services, web, person)
    clock_of(services).advance(STEP)
    form = web.get("/account/step-up", params={"next": given})
    assert form.status_code == 200
    shown = _NEXT_RE.search(form.text)
    assert shown is not None
    assert html.unescape(shown.group(1)) == (given if given.startswith("/a") else "/account")
    done = web.post(
        "/account/step-up",
        data={"csrf": csrf_of(form), "code": code_now(services, person.secret), "next": given},
    )
    assert done.status_code == 303
    assert done.headers["location"] == lands


def test_step_up_form_needs_the_session_and_its_csrf_token(
    services: Services, web: TestClient, person: Person
) -> None:
    assert person.secret is not None
    anonymous = web.get("/account/step-up")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/login"
    sign_in(services, web, person)
    clock_of(services).advance(STEP)
    code = code_now(services, person.secret)
    assert web.post("/account/step-up", data={"code": code}).status_code == 403
    assert web.post("/account/step-up", data={"code": code, "csrf": "x" * 40}).status_code == 403
    assert SESSION in web.cookies


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "/account"),
        ("", "/account"),
        ("/account", "/account"),
        ("/account/password?x=1", "/account/password?x=1"),
        ("account", "/account"),
        ("//evil.example", "/account"),
        ("/\\evil.example", "/account"),
        ("/\tevil", "/account"),
        ("/a b", "/account"),
        ('/"><script>', "/account"),
        ("https://evil.example/", "/account"),
        ("/" + "a" * 600, "/account"),
    ],
)
def test_safe_next_keeps_only_same_origin_paths(value: str | None, expected: str) -> None:
    assert safe_next(value) == expected

"""Page-level ASVS 5.0 requirements checked on the rendered HTML, on SQLite and PostgreSQL.

V6.2.6: every password input is masked (type=password). V6.2.7: nothing stops pasting or
password managers (no inline script, no `autocomplete="off"`, no paste handler in the pages or
their own scripts; password fields name their purpose with `current-password` /
`new-password`).
V7.4.4: every page that needs a session shows the sign-out button.
"""

from __future__ import annotations

import re
from importlib import resources

from fastapi.testclient import TestClient

from egide.cli.runtime import Services
from tests.integration.test_web_pages import (
    EMAIL,
    PASSWORD,
    Person,
    _client,
    accept,
    enrol,
    invite,
    sign_in,
)

_INPUT_RE = re.compile(r"<input\b[^>]*>", re.S)
_SIGNED_IN_PAGES = ["/account", "/account/password", "/account/step-up"]


def _password_inputs(page: str) -> list[str]:
    return [i for i in _INPUT_RE.findall(page) if re.search(r'name="[a-z_]*password"', i)]


def _signed_in(services: Services, web: TestClient) -> None:
    person = Person(EMAIL, PASSWORD)
    with _client(services) as browser:
        token = invite(services)
        invitation = browser.get(f"/invite/{token}").text
        _check_password_inputs(invitation, expected=2)
        assert accept(browser, token).status_code == 303
        enrol(services, browser, person)
    sign_in(services, web, person)


def _check_password_inputs(page: str, *, expected: int) -> None:
    inputs = _password_inputs(page)
    assert len(inputs) == expected, inputs
    for tag in inputs:
        assert 'type="password"' in tag
        assert re.search(r'autocomplete="(current|new)-password"', tag), tag
    lowered = page.lower()
    # Scripts only from our own files (the CSP forbids inline ones), none handling paste.
    for script in re.findall(r"<script\b[^>]*>", lowered):
        found = re.search(r'src="/static/([a-z0-9_.-]+\.js)"', script)
        assert found is not None, script
        code = resources.files("egide.web").joinpath("static", found.group(1)).read_text()
        assert "paste" not in code.lower()
    assert 'autocomplete="off"' not in lowered
    assert "onpaste" not in lowered


def test_v6_2_6_password_fields_are_masked_and_v6_2_7_paste_is_allowed(
    services: Services,
) -> None:
    with _client(services) as web:
        _check_password_inputs(web.get("/login").text, expected=1)
        _signed_in(services, web)
        _check_password_inputs(web.get("/account/password").text, expected=3)


def test_v7_4_4_every_signed_in_page_shows_sign_out(services: Services) -> None:
    with _client(services) as web:
        _signed_in(services, web)
        for path in _SIGNED_IN_PAGES:
            page = web.get(path)
            assert page.status_code == 200, path
            assert re.search(
                r'<form method="post" action="/logout"[^>]*>.*?<button type="submit"[^>]*>'
                r"Sign out</button>",
                page.text,
                re.S,
            ), path

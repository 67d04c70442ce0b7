"""Schemathesis against the OpenAPI of the sign-in and account pages (the identity issue's
"Must show"), on SQLite and PostgreSQL; `make check-api` runs this file alone.

The schema is the application's own (`/api/openapi.json`, tag "authentication", written in
`egide.web.openapi`), loaded from the ASGI app. Every operation gets a bounded number of
generated requests, valid ones (positive) and invalid ones (negative), in three situations:

* `anonymous`: no cookie at all;
* `cookie`: a valid session cookie of an enrolled staff member (the CSRF tokens the generator
  invents are wrong, so the forms stop at the CSRF check);
* `csrf`: the session cookie, the pre-session CSRF cookie, and the right CSRF token put into
  every generated form, so the generated fields reach the sign-in, password, step-up and
  session code behind the checks.

The checks: no server error (5xx), every status and content type documented, and every body
matching its documented schema. `EGIDE_SCHEMATHESIS_EXAMPLES` sets the number of examples per
operation and mode (default 20).
"""

from __future__ import annotations

import html
import os
import re
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from egide.app import api_for
from egide.cli.runtime import OPERATOR, Services
from egide.core.errors import BadRequest, NotFound
from egide.db.engine import transaction
from egide.identity import accounts, login, sessions
from egide.identity.session_tokens import csrf_token_for
from egide.web.openapi import OPERATIONS
from egide.web.security import CSRF_COOKIE, SESSION_COOKIE
from tests.integration.identity_support import enrol, sign_in, staff

EXAMPLES = int(os.environ.get("EGIDE_SCHEMATHESIS_EXAMPLES", "20"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
SITUATIONS = ["anonymous", "cookie", "csrf"]
_CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')
_PRE_SESSION = {"/login", "/login/mfa", "/login/enrol", "/invite/{token}"}
# The FHIR routers' duplicate operation ids (their own matter) are not what this file checks.
pytestmark = pytest.mark.filterwarnings("ignore:Duplicate Operation ID:UserWarning")


def _signed_in(services: Services) -> tuple[str, str]:
    """(session token, its CSRF token) of an enrolled physician."""
    person = staff(services, "schema@clinic.example", name="Schema Thesis")
    enrol(services, person)
    token = sign_in(services, person).session_token
    assert token is not None
    with transaction(services.session_factory) as session:
        info = sessions.validate_session(
            session, token=token, clock=services.records.clock, settings=services.settings
        )
    assert info is not None
    return token, csrf_token_for(info.csrf_secret)


def _pre_session(app: FastAPI) -> tuple[str, str]:
    """(CSRF nonce cookie, form token) as the sign-in page hands them to a browser."""
    with TestClient(app, base_url="https://testserver") as browser:
        page = browser.get("/login")
        nonce = browser.cookies.get(CSRF_COOKIE)
    found = _CSRF_RE.search(page.text)
    assert found is not None
    assert nonce is not None
    return nonce, html.unescape(found.group(1))


def test_every_page_operation_is_described() -> None:
    """The schema lists the authentication pages (and `egide.web.openapi` names them)."""
    paths = {path for path, _ in OPERATIONS}
    assert {"/login", "/login/mfa", "/logout", "/account/password", "/invite/{token}"} <= paths
    assert "/account/sessions/{session_id}/revoke" in paths
    assert "/account/step-up" in paths


@pytest.mark.parametrize("situation", SITUATIONS)
@pytest.mark.parametrize(("path", "method"), sorted(OPERATIONS), ids=str)
def test_auth_operation_conforms_to_its_schema(
    services: Services, path: str, method: str, situation: str
) -> None:
    app = api_for(services)
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", app)
    operation = schema[path][method]
    headers: dict[str, str] = {}
    csrf: str | None = None
    if situation != "anonymous":
        token, session_csrf = _signed_in(services)
        cookies = {SESSION_COOKIE: token}
        if situation == "csrf":
            csrf = session_csrf
            if path in _PRE_SESSION:
                nonce, csrf = _pre_session(app)
                cookies[CSRF_COOKIE] = nonce
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())

    def run(case: Any) -> None:
        if csrf is not None and isinstance(case.body, dict):
            case.body["csrf"] = csrf
        case.call_and_validate(headers=headers, checks=CHECKS)

    spec = OPERATIONS[(path, method)]
    # Negative cases need something to get wrong: a body or a parameter.
    mutable = "requestBody" in spec or "parameters" in spec or "{" in path
    modes = (
        [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if mutable else [GenerationMode.POSITIVE]
    )
    for mode in modes:
        strategy = operation.as_strategy(generation_mode=mode)
        bounded = settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        bounded(given(case=strategy)(run))()


# --- what schemathesis found, kept as plain regression tests -------------------------------------


def test_nul_in_a_form_field_is_a_bad_request_not_a_server_error(services: Services) -> None:
    """On PostgreSQL a NUL character in the e-mail reached the account query, which text
    columns refuse (psycopg DataError): a 500. Forms holding NUL are now unreadable (400)."""
    app = api_for(services)
    nonce, token = _pre_session(app)
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as web:
        web.cookies.set(CSRF_COOKIE, nonce, domain="testserver.local")
        for field in ("email", "password", "csrf"):
            data = {"csrf": token, "email": "someone@clinic.example", "password": "x" * 20}
            data[field] += "\x00"
            answer = web.post("/login", data=data)
            assert answer.status_code == 400, (field, answer.text)


def test_nul_in_an_email_reaches_no_query(services: Services) -> None:
    """The back end on its own (CLI, other callers): an address with NUL is no account."""
    person = staff(services, "nul@clinic.example", name="Nul Check")
    with transaction(services.session_factory) as session:
        result = login.password_step(
            session,
            email=person.email + "\x00",
            password=person.password,
            clock=services.records.clock,
            settings=services.settings,
            envelope=services.records.envelope,
            ip=None,
            device=None,
        )
    assert result.message == login.WRONG_CREDENTIALS
    with transaction(services.session_factory) as session:
        assert accounts.find_account(session, email="nul\x00@clinic.example") is None
    with pytest.raises(NotFound), transaction(services.session_factory) as session:
        accounts.disable_account(
            session, email="nul\x00@clinic.example", clock=services.records.clock, actor=OPERATOR
        )
    with pytest.raises(BadRequest), transaction(services.session_factory) as session:
        accounts.create_account(
            session,
            email="new\x00@clinic.example",
            name="New Person",
            role="nurse",
            clock=services.records.clock,
            settings=services.settings,
            envelope=services.records.envelope,
            actor=OPERATOR,
        )

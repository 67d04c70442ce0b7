"""SMART App Launch 2 and SMART Backend Services against a served instance (SQLite, PostgreSQL).

uvicorn serves `egide.app.api_for(services)` on a loopback port. The app side is Authlib's
`OAuth2Session` (requests), a real OAuth 2.0 client library: it builds the authorization URL
with PKCE S256, exchanges the code and calls the FHIR API with the token. The browser side is
an httpx client that signs in through the real pages (password, then TOTP), follows
`/login?next=...` back to the consent page and clicks Allow; it keeps the `__Host-` cookies
over http on loopback the way Chromium does (loopback is a secure context).

Then the attacks: wrong verifier, plain PKCE, a reused code (and its tokens revoked), redirect
URI mismatch, unknown client, an expired code, a token asked for another audience, scope
escalation, another patient's record, revoked and expired tokens; and for backend services
(ES384 client assertions signed with Authlib): replayed jti, wrong aud, expired assertion,
unknown key, bad signature. OWASP ASVS 5.0 V10 ids name what each test shows.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookiejar import Cookie, CookieJar
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session, OAuthError
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import select
from typer.testing import CliRunner

from egide.app import api_for
from egide.cli.main import app as cli_app
from egide.cli.runtime import OPERATOR, Services
from egide.db.engine import transaction
from egide.identity import oauth
from egide.identity.models import OAuthToken
from egide.web.next_url import safe_next
from tests.helpers import issue_token
from tests.integration.identity_support import (
    Person,
    clock_of,
    code_now,
    enrol,
    patient,
    staff,
)
from tests.serving import serve_app

pytestmark = pytest.mark.served

REDIRECT = "https://app.example/callback"
PATIENT_ID = "pat-123"  # identity_support.patient links its account to this Patient
OTHER_PATIENT = "pat-999"
_CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')
_HIDDEN_RE = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


# --- the served instance, the browser and the app ------------------------------------------


@pytest.fixture
def base(services: Services, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """uvicorn in a thread on a socket bound before it starts; yields http://127.0.0.1:PORT."""
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")  # http on loopback (RFC 8252 8.3)
    with serve_app(api_for(services)) as url:
        yield url


class LoopbackJar(CookieJar):
    """Keeps `Secure` cookies received over http on loopback and sends them back, as Chromium
    does (loopback is a secure context); the server under test runs on 127.0.0.1 only."""

    def set_cookie(self, cookie: Cookie) -> None:
        cookie.secure = False
        super().set_cookie(cookie)


def browser(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, cookies=LoopbackJar(), follow_redirects=False)


@dataclass
class Endpoints:
    base: str

    @property
    def fhir(self) -> str:
        return self.base + "/fhir"

    @property
    def authorize(self) -> str:
        return self.base + "/oauth/authorize"

    @property
    def token(self) -> str:
        return self.base + "/oauth/token"


def app_session(client_id: str, scope: str) -> OAuth2Session:
    """The app: Authlib's OAuth2Session, a public client using PKCE S256."""
    return OAuth2Session(
        client_id,
        scope=scope,
        redirect_uri=REDIRECT,
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
    )


def csrf_of(response: httpx.Response) -> str:
    found = _CSRF_RE.search(response.text)
    assert found is not None, response.text
    return html.unescape(found.group(1))


def sign_in(services: Services, web: httpx.Client, person: Person, start: str) -> str:
    """From a `/login?next=...` redirect: password, TOTP when enrolled; returns where the
    browser is sent once signed in."""
    page = web.get(start)
    assert page.status_code == 200, page.text
    first = web.post(
        "/login",
        data={"csrf": csrf_of(page), "email": person.email, "password": person.password},
    )
    assert first.status_code == 303, first.text
    if first.headers["location"] != "/login/mfa":
        return first.headers["location"]
    page = web.get("/login/mfa")
    second = web.post(
        "/login/mfa", data={"csrf": csrf_of(page), "code": code_now(services, person)}
    )
    assert second.status_code == 303, second.text
    clock_of(services).advance(dt.timedelta(seconds=30))  # a TOTP code works once
    return second.headers["location"]


def consent(web: httpx.Client, url: str, decision: str = "allow") -> str:
    """Open the consent page at `url` and press Allow (or Deny); the redirect it answers."""
    page = web.get(url)
    assert page.status_code == 200, page.text
    fields = {html.unescape(k): html.unescape(v) for k, v in _HIDDEN_RE.findall(page.text)}
    fields["decision"] = decision
    answer = web.post("/oauth/authorize", data=fields)
    assert answer.status_code == 303, answer.text
    return answer.headers["location"]


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def register_app(services: Services, scopes: str | None = None) -> str:
    with transaction(services.session_factory) as session:
        view = oauth.register_client(
            session,
            name="Carnet Santé (test app)",
            kind=oauth.PUBLIC,
            clock=services.records.clock,
            actor=OPERATOR,
            redirect_uris=[REDIRECT],
            scopes=scopes,
        )
    return view.client_id


def seed_patients(base: str, services: Services) -> None:
    """Two patients, each with an Observation, written with a service token."""
    token = issue_token(services, "service")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    with httpx.Client(base_url=base, headers=headers) as api:
        for pid, family in ((PATIENT_ID, "Durand"), (OTHER_PATIENT, "Le Goff")):
            body = {"resourceType": "Patient", "id": pid, "name": [{"family": family}]}
            assert api.put(f"/fhir/Patient/{pid}", json=body).status_code in (200, 201)
            observation = {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "heart rate"},
                "subject": {"reference": f"Patient/{pid}"},
                "valueQuantity": {"value": 72, "unit": "/min"},
            }
            assert api.post("/fhir/Observation", json=observation).status_code == 201


@dataclass
class Launch:
    """An authorization in progress: the app session, its verifier and the consent URL."""

    app: OAuth2Session
    verifier: str
    url: str
    state: str


def start(ep: Endpoints, client_id: str, scope: str, **extra: str) -> Launch:
    app = app_session(client_id, scope)
    verifier = generate_token(64)
    url, state = app.create_authorization_url(
        ep.authorize, code_verifier=verifier, aud=ep.fhir, **extra
    )
    return Launch(app, verifier, url, state)


def signed_in_browser(services: Services, ep: Endpoints, person: Person) -> httpx.Client:
    web = browser(ep.base)
    where = sign_in(services, web, person, "/login")
    assert where == "/account"
    return web


def code_for(web: httpx.Client, launch: Launch) -> str:
    """Consent with a signed-in browser; the app's redirect (with code and state)."""
    location = consent(web, launch.url)
    assert location.startswith(REDIRECT + "?"), location
    return location


def token_post(ep: Endpoints, **form: str) -> httpx.Response:
    return httpx.post(ep.token, data=form)


@pytest.fixture
def ep(base: str, services: Services) -> Endpoints:
    seed_patients(base, services)
    return Endpoints(base)


@pytest.fixture
def paul(services: Services) -> Person:
    """A patient (Patient/pat-123) with TOTP enrolled."""
    person = patient(services)
    enrol(services, person)
    return person


@pytest.fixture
def alice(services: Services) -> Person:
    """A physician with TOTP enrolled."""
    person = staff(services)
    enrol(services, person)
    return person


# --- discovery -----------------------------------------------------------------------------


def test_smart_configuration_and_capability_statement(ep: Endpoints) -> None:
    config = httpx.get(ep.fhir + "/.well-known/smart-configuration")
    assert config.status_code == 200
    body = config.json()
    assert body["authorization_endpoint"] == ep.authorize
    assert body["token_endpoint"] == ep.token
    assert body["code_challenge_methods_supported"] == ["S256"]  # ASVS V10.4.6: no plain
    assert body["grant_types_supported"] == ["authorization_code", "client_credentials"]
    assert body["token_endpoint_auth_methods_supported"] == ["private_key_jwt", "none"]
    assert "permission-v2" in body["capabilities"]
    assert "launch-standalone" in body["capabilities"]
    metadata = httpx.get(ep.fhir + "/metadata").json()
    security = metadata["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = {e["url"]: e["valueUri"] for e in security["extension"][0]["extension"]}
    assert uris == {"authorize": ep.authorize, "token": ep.token}


# --- the whole flow with a real client library ---------------------------------------------


def test_patient_app_flow_with_authlib(services: Services, ep: Endpoints, paul: Person) -> None:
    """Authorization code + PKCE S256 end to end: the app is sent to the authorization
    endpoint, the person signs in (password + TOTP) via /login?next=..., consents, the app
    exchanges the code and reads the patient's own record (ASVS V10.4.6, V10.7.1, V10.7.2)."""
    client_id = register_app(services)
    launch = start(ep, client_id, "launch/patient patient/*.rs openid fhirUser")
    web = browser(ep.base)
    first = web.get(launch.url)
    assert first.status_code == 303
    login = first.headers["location"]
    assert login.startswith("/login?next=%2Foauth%2Fauthorize%3F")
    back = sign_in(services, web, paul, login)
    assert back.startswith("/oauth/authorize?")  # next followed, same site only
    page = web.get(back)
    assert page.status_code == 200
    assert "Carnet Santé (test app)" in page.text
    assert "Read and search all kinds of records in your own health record" in page.text
    assert "form-action &#39;self&#39;" not in page.text
    assert "https://app.example" in page.headers["content-security-policy"]
    location = consent(web, back)
    params = query_of(location)
    assert params["state"] == launch.state
    assert params["iss"] == ep.base  # RFC 9207
    token = launch.app.fetch_token(
        ep.token, authorization_response=location, code_verifier=launch.verifier
    )
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 3600
    assert token["patient"] == PATIENT_ID  # launch/patient: the patient in context
    assert token["scope"] == "patient/*.rs launch/patient"  # openid, fhirUser not granted
    assert token["access_token"].startswith("egide_at_")
    app = launch.app
    own = app.get(f"{ep.fhir}/Patient/{PATIENT_ID}")
    assert own.status_code == 200, own.text
    assert own.json()["name"][0]["family"] == "Durand"
    found = app.get(f"{ep.fhir}/Observation").json()
    assert found["total"] == 1  # only their own compartment
    assert found["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{PATIENT_ID}"
    # Another patient's record: 404, as if it did not exist (DESIGN.md contract 1).
    assert app.get(f"{ep.fhir}/Patient/{OTHER_PATIENT}").status_code == 404
    # patient/*.rs cannot write (and the patient role could not either): 403.
    write = app.post(
        f"{ep.fhir}/Observation",
        json={"resourceType": "Observation", "status": "final", "code": {"text": "x"}},
        headers={"Content-Type": "application/fhir+json"},
    )
    assert write.status_code == 403
    # Scoped tokens are for the FHIR API only (ASVS V10.3.2).
    assert app.get(f"{ep.base}/api/patient/access-report").status_code == 403
    # The stored token is a hash: the clear token is nowhere in the database.
    with transaction(services.session_factory) as session:
        hashes = session.scalars(select(OAuthToken.token_hash)).all()
    assert all(len(h) == 32 for h in hashes)


def test_staff_app_flow_user_scopes(services: Services, ep: Endpoints, alice: Person) -> None:
    """A physician grants user/ scopes; the token is bounded by them and by the role."""
    client_id = register_app(services, "user/Patient.rs user/Observation.cruds")
    web = signed_in_browser(services, ep, alice)
    launch = start(ep, client_id, "user/Patient.rs")
    location = code_for(web, launch)
    launch.app.fetch_token(ep.token, authorization_response=location, code_verifier=launch.verifier)
    app = launch.app
    assert app.get(f"{ep.fhir}/Patient/{OTHER_PATIENT}").status_code == 200
    # Outside the granted scopes, though within the role: 403 (ASVS V10.3.2).
    assert app.get(f"{ep.fhir}/Observation").status_code == 403
    assert app.get(f"{ep.fhir}/_history").status_code == 403
    update = app.put(
        f"{ep.fhir}/Patient/{OTHER_PATIENT}",
        json={"resourceType": "Patient", "id": OTHER_PATIENT},
        headers={"Content-Type": "application/fhir+json"},
    )
    assert update.status_code == 403
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": "Observation"}}],
    }
    refused = app.post(ep.fhir, json=bundle, headers={"Content-Type": "application/fhir+json"})
    assert refused.status_code == 403
    # Staff cannot take patient/ scopes (no patient picker): sent back with invalid_scope.
    patient_launch = start(ep, client_id, "user/Patient.rs launch/patient")
    page = web.get(patient_launch.url)
    assert page.status_code == 303
    assert query_of(page.headers["location"])["error"] == "invalid_scope"


# --- authorization code attacks --------------------------------------------------------------


def _fetch_error(launch: Launch, ep: Endpoints, location: str, verifier: str) -> str:
    with pytest.raises(OAuthError) as caught:
        launch.app.fetch_token(ep.token, authorization_response=location, code_verifier=verifier)
    return caught.value.error


def test_wrong_code_verifier_is_refused(services: Services, ep: Endpoints, paul: Person) -> None:
    """ASVS V10.4.6: the token request must prove the PKCE verifier."""
    client_id = register_app(services)
    web = signed_in_browser(services, ep, paul)
    launch = start(ep, client_id, "patient/*.rs")
    location = code_for(web, launch)
    assert _fetch_error(launch, ep, location, generate_token(64)) == "invalid_grant"
    # The code was spent by that attempt: the right verifier is now too late.
    assert _fetch_error(launch, ep, location, launch.verifier) == "invalid_grant"
    missing = token_post(
        ep,
        grant_type="authorization_code",
        code=query_of(location)["code"],
        redirect_uri=REDIRECT,
        client_id=client_id,
    )
    assert missing.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("method", ["plain", None])
def test_plain_or_missing_pkce_is_refused(
    services: Services, ep: Endpoints, paul: Person, method: str | None
) -> None:
    """ASVS V10.4.6: code_challenge_method must be S256; plain is refused."""
    client_id = register_app(services)
    web = signed_in_browser(services, ep, paul)
    verifier = generate_token(64)
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": "patient/*.rs",
        "state": "s1",
        "aud": ep.fhir,
    }
    if method is not None:
        params |= {"code_challenge": verifier[:43], "code_challenge_method": method}
    answer = web.get("/oauth/authorize", params=params)
    assert answer.status_code == 303
    error = query_of(answer.headers["location"])
    assert error["error"] == "invalid_request"
    assert error["state"] == "s1"
    assert "S256" in error["error_description"]


def test_reused_code_is_refused_and_revokes_its_tokens(
    services: Services, ep: Endpoints, paul: Person
) -> None:
    """ASVS V10.4.2; RFC 6749 section 10.5: a code works once; a second use revokes."""
    client_id = register_app(services)
    web = signed_in_browser(services, ep, paul)
    launch = start(ep, client_id, "patient/*.rs")
    location = code_for(web, launch)
    token = launch.app.fetch_token(
        ep.token, authorization_response=location, code_verifier=launch.verifier
    )
    assert launch.app.get(f"{ep.fhir}/Patient/{PATIENT_ID}").status_code == 200
    again = token_post(
        ep,
        grant_type="authorization_code",
        code=query_of(location)["code"],
        redirect_uri=REDIRECT,
        client_id=client_id,
        code_verifier=launch.verifier,
    )
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    assert again.headers["cache-control"] == "no-store"
    revoked = httpx.get(
        f"{ep.fhir}/Patient/{PATIENT_ID}",
        headers={"Authorization": f"Bearer {token['access_token']}"},
    )
    assert revoked.status_code == 401


def test_redirect_uri_mismatch(services: Services, ep: Endpoints, paul: Person) -> None:
    """ASVS V10.4.1: exact match with a registered URI; an unregistered one is never
    redirected to; the token request must repeat the same URI."""
    client_id = register_app(services)
    web = signed_in_browser(services, ep, paul)
    for evil in ("https://evil.example/callback", REDIRECT + "/../x", REDIRECT + "?x=1"):
        launch = start(ep, client_id, "patient/*.rs", redirect_uri=evil)
        page = web.get(launch.url)
        assert page.status_code == 400
        assert "location" not in page.headers
    launch = start(ep, client_id, "patient/*.rs")
    location = code_for(web, launch)
    answer = token_post(
        ep,
        grant_type="authorization_code",
        code=query_of(location)["code"],
        redirect_uri="https://app.example/other",
        client_id=client_id,
        code_verifier=launch.verifier,
    )
    assert answer.json()["error"] == "invalid_grant"


def test_unknown_client(services: Services, ep: Endpoints, paul: Person) -> None:
    web = signed_in_browser(services, ep, paul)
    launch = start(ep, "no-such-client", "patient/*.rs")
    page = web.get(launch.url)
    assert page.status_code == 400
    assert "location" not in page.headers
    answer = token_post(
        ep,
        grant_type="authorization_code",
        code="x" * 43,
        redirect_uri=REDIRECT,
        client_id="no-such-client",
        code_verifier=launch.verifier,
    )
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_client"


def test_expired_code(services: Services, ep: Endpoints, paul: Person) -> None:
    """ASVS V10.4.3: a code lives 60 seconds."""
    client_id = register_app(services)
    web = signed_in_browser(services, ep, paul)
    launch = start(ep, client_id, "patient/*.rs")
    location = code_for(web, launch)
    clock_of(services).advance(dt.timedelta(seconds=61))
    assert _fetch_error(launch, ep, location, launch.verifier) == "invalid_grant"


def test_token_for_another_audience_is_not_issued(
    services: Services, ep: Endpoints, paul: Person
) -> None:
    """ASVS V10.3.1: `aud` must be this server's FHIR base URL (SMART App Launch 2)."""
    client_id = register_app(services)
    web = signed_in_browser(services, ep, paul)
    app = app_session(client_id, "patient/*.rs")
    url, _ = app.create_authorization_url(
        ep.authorize, code_verifier=generate_token(64), aud="https://other.example/fhir"
    )
    answer = web.get(url)
    assert answer.status_code == 303
    assert query_of(answer.headers["location"])["error"] == "invalid_request"


def test_scope_escalation_is_refused(services: Services, ep: Endpoints, paul: Person) -> None:
    """ASVS V10.4.11: a client gets no more than its registration; malformed scopes and
    system/ scopes are refused to apps."""
    client_id = register_app(services)  # default: read-only
    web = signed_in_browser(services, ep, paul)
    for scope in ("patient/*.cruds", "system/*.rs", "patient/*.read", "patient/*.rs launch"):
        launch = start(ep, client_id, scope)
        answer = web.get(launch.url)
        assert answer.status_code == 303
        assert query_of(answer.headers["location"])["error"] == "invalid_scope", scope


def test_only_code_and_the_query_response_mode(
    services: Services, ep: Endpoints, paul: Person
) -> None:
    """ASVS V10.4.4, V10.4.12: `response_type=code` in the query response mode only."""
    client_id = register_app(services)
    web = signed_in_browser(services, ep, paul)
    cases = (
        ({"response_mode": "fragment"}, "invalid_request"),
        ({"response_mode": "form_post"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"request_uri": "urn:x"}, "request_uri_not_supported"),
    )
    for extra, error in cases:
        launch = start(ep, client_id, "patient/*.rs", **extra)
        answer = web.get(launch.url)
        assert answer.status_code == 303, extra
        assert query_of(answer.headers["location"])["error"] == error, extra


def test_cross_site_arrival_without_a_session_gets_a_continue_page(
    services: Services, ep: Endpoints
) -> None:
    """SameSite=Strict cookies are withheld on a cross-site navigation: one same-site click."""
    client_id = register_app(services)
    launch = start(ep, client_id, "patient/*.rs")
    page = browser(ep.base).get(launch.url, headers={"Sec-Fetch-Site": "cross-site"})
    assert page.status_code == 200
    assert 'href="/oauth/authorize?' in page.text


def test_consent_denied(services: Services, ep: Endpoints, paul: Person) -> None:
    client_id = register_app(services)
    web = signed_in_browser(services, ep, paul)
    launch = start(ep, client_id, "patient/*.rs")
    location = consent(web, launch.url, decision="deny")
    params = query_of(location)
    assert params["error"] == "access_denied"
    assert params["state"] == launch.state
    assert "code" not in params


def test_consent_form_needs_its_csrf_token(services: Services, ep: Endpoints, paul: Person) -> None:
    client_id = register_app(services)
    web = signed_in_browser(services, ep, paul)
    launch = start(ep, client_id, "patient/*.rs")
    page = web.get(launch.url)
    fields = {html.unescape(k): html.unescape(v) for k, v in _HIDDEN_RE.findall(page.text)}
    fields |= {"decision": "allow", "csrf": "forged"}
    assert web.post("/oauth/authorize", data=fields).status_code == 403


def test_expired_and_revoked_tokens_answer_401(
    services: Services, ep: Endpoints, paul: Person
) -> None:
    client_id = register_app(services)
    web = signed_in_browser(services, ep, paul)
    launch = start(ep, client_id, "patient/*.rs")
    location = code_for(web, launch)
    launch.app.fetch_token(ep.token, authorization_response=location, code_verifier=launch.verifier)
    url = f"{ep.fhir}/Patient/{PATIENT_ID}"
    assert launch.app.get(url).status_code == 200
    clock_of(services).advance(dt.timedelta(seconds=oauth.TOKEN_SECONDS))
    assert launch.app.get(url).status_code == 401
    # A fresh token, then the operator disables the client: it stops at once.
    web = signed_in_browser(services, ep, paul)
    launch = start(ep, client_id, "patient/*.rs")
    location = code_for(web, launch)
    launch.app.fetch_token(ep.token, authorization_response=location, code_verifier=launch.verifier)
    assert launch.app.get(url).status_code == 200
    with transaction(services.session_factory) as session:
        assert (
            oauth.disable_client(
                session, client_id=client_id, clock=services.records.clock, actor=OPERATOR
            )
            == 1
        )
    assert launch.app.get(url).status_code == 401


def test_login_next_is_never_an_open_redirect(
    services: Services, ep: Endpoints, paul: Person
) -> None:
    """ASVS V3.7.2: `next` is a same-site path or it is ignored."""
    for evil in ("//evil.example/x", "/\\evil.example", "https://evil.example/", "javascript:x"):
        assert safe_next(evil) is None
        web = browser(ep.base)
        assert sign_in(services, web, paul, "/login?next=" + evil) == "/account"
    assert safe_next("/oauth/authorize?client_id=a&state=b") is not None


# --- SMART Backend Services -------------------------------------------------------------------


@dataclass
class Backend:
    client_id: str
    key: ECKey
    kid: str


def register_backend(services: Services, *, scopes: str = "system/*.rs") -> Backend:
    key = ECKey.generate_key("P-384")
    kid = "backend-key-1"
    public = key.as_dict(private=False) | {"kid": kid, "alg": "ES384", "use": "sig"}
    with transaction(services.session_factory) as session:
        view = oauth.register_client(
            session,
            name="Lab interface",
            kind=oauth.BACKEND,
            clock=services.records.clock,
            actor=OPERATOR,
            jwks={"keys": [public]},
            scopes=scopes,
        )
    return Backend(view.client_id, key, kid)


def backend_session(services: Services, backend: Backend, **claims: Any) -> OAuth2Session:
    """Authlib's client with private_key_jwt (ES384), its times taken from the test clock."""
    now = int(services.records.clock.now().timestamp())
    signer = PrivateKeyJWT(
        alg="ES384",
        headers={"kid": backend.kid},
        claims={"iat": now, "exp": now + 240} | claims,
    )
    return OAuth2Session(
        backend.client_id,
        backend.key,
        token_endpoint_auth_method=signer,
        scope="system/*.rs",
    )


def assertion(services: Services, backend: Backend, ep: Endpoints, **claims: Any) -> str:
    now = int(services.records.clock.now().timestamp())
    payload = {
        "iss": backend.client_id,
        "sub": backend.client_id,
        "aud": ep.token,
        "exp": now + 240,
        "jti": generate_token(32),
    } | claims
    header = {"alg": "ES384", "kid": backend.kid, "typ": "JWT"}
    return jwt.encode(header, payload, backend.key, algorithms=["ES384"])


def credentials(ep: Endpoints, signed: str, scope: str = "system/*.rs") -> httpx.Response:
    return token_post(
        ep,
        grant_type="client_credentials",
        scope=scope,
        client_assertion_type=oauth.ASSERTION_TYPE,
        client_assertion=signed,
    )


def test_backend_service_gets_a_token_with_authlib(services: Services, ep: Endpoints) -> None:
    """SMART Backend Services: client credentials with an ES384 client assertion (ASVS
    V10.4.10, V10.4.16); the token reads within system/*.rs and cannot write."""
    backend = register_backend(services)
    session = backend_session(services, backend)
    token = session.fetch_token(ep.token, grant_type="client_credentials")
    assert token["scope"] == "system/*.rs"
    assert "patient" not in token
    found = session.get(f"{ep.fhir}/Patient")
    assert found.status_code == 200
    assert found.json()["total"] == 2
    write = session.post(
        f"{ep.fhir}/Patient",
        json={"resourceType": "Patient"},
        headers={"Content-Type": "application/fhir+json"},
    )
    assert write.status_code == 403
    # More than the registration allows: invalid_scope.
    escalate = credentials(ep, assertion(services, backend, ep), scope="system/*.cruds")
    assert escalate.json()["error"] == "invalid_scope"


def test_backend_assertion_attacks(services: Services, ep: Endpoints) -> None:
    """RFC 7523 section 3 and SMART Backend Services: every bad assertion is invalid_client."""
    backend = register_backend(services)
    now = int(services.records.clock.now().timestamp())
    signed = assertion(services, backend, ep)
    assert credentials(ep, signed).status_code == 200
    cases: dict[str, str] = {
        "replayed jti": signed,
        "wrong aud": assertion(services, backend, ep, aud=ep.base + "/fhir"),
        "expired": assertion(services, backend, ep, exp=now - 1),
        "exp too far": assertion(services, backend, ep, exp=now + 3600),
        "no jti": assertion(services, backend, ep, jti=None),
        "sub differs": assertion(services, backend, ep, sub="someone-else"),
    }
    other = ECKey.generate_key("P-384")
    cases["bad signature"] = jwt.encode(
        {"alg": "ES384", "kid": backend.kid},
        {
            "iss": backend.client_id,
            "sub": backend.client_id,
            "aud": ep.token,
            "exp": now + 60,
            "jti": "j-bad-sig",
        },
        other,
        algorithms=["ES384"],
    )
    cases["unknown key"] = jwt.encode(
        {"alg": "ES384", "kid": "not-registered"},
        {
            "iss": backend.client_id,
            "sub": backend.client_id,
            "aud": ep.token,
            "exp": now + 60,
            "jti": "j-unknown-kid",
        },
        backend.key,
        algorithms=["ES384"],
    )
    cases["embedded jwk"] = jwt.encode(
        {"alg": "ES384", "kid": backend.kid, "jwk": other.as_dict(private=False)},
        {
            "iss": backend.client_id,
            "sub": backend.client_id,
            "aud": ep.token,
            "exp": now + 60,
            "jti": "j-jwk",
        },
        backend.key,
        algorithms=["ES384"],
    )
    rsa = RSAKey.generate_key(2048)
    cases["wrong algorithm"] = jwt.encode(
        {"alg": "RS256", "kid": backend.kid},
        {
            "iss": backend.client_id,
            "sub": backend.client_id,
            "aud": ep.token,
            "exp": now + 60,
            "jti": "j-rs256",
        },
        rsa,
        algorithms=["RS256"],
    )
    cases["garbage"] = "not.a.jwt"
    for name, value in cases.items():
        answer = credentials(ep, value)
        assert answer.status_code == 401, name
        assert answer.json()["error"] == "invalid_client", name
    # A public client cannot use client credentials; a backend cannot use a code.
    public = register_app(services)
    answer = token_post(ep, grant_type="client_credentials", client_id=public, scope="system/*.rs")
    assert answer.json()["error"] == "unauthorized_client"


def test_backend_replay_with_authlib_reusing_its_claims(services: Services, ep: Endpoints) -> None:
    """The same assertion id twice (here: one client object reused with a fixed jti) is
    refused the second time (RFC 7523 section 3, item 7)."""
    backend = register_backend(services)
    session = backend_session(services, backend, jti="fixed-jti-1")
    session.fetch_token(ep.token, grant_type="client_credentials")
    with pytest.raises(OAuthError) as caught:
        backend_session(services, backend, jti="fixed-jti-1").fetch_token(
            ep.token, grant_type="client_credentials"
        )
    assert caught.value.error == "invalid_client"


@pytest.mark.filterwarnings("ignore:Key size should be")  # the 1024-bit key is the point
def test_registration_refuses_bad_keys_and_uris(services: Services) -> None:
    from egide.core.errors import BadRequest  # noqa: PLC0415

    private = ECKey.generate_key("P-384").as_dict(private=True) | {"kid": "k"}
    p256 = ECKey.generate_key("P-256").as_dict(private=False) | {"kid": "k"}
    small = RSAKey.generate_key(1024).as_dict(private=False) | {"kid": "k"}
    with transaction(services.session_factory) as session:
        for jwks in ({"keys": [private]}, {"keys": [p256]}, {"keys": [small]}, {"keys": []}):
            with pytest.raises(BadRequest):
                oauth.register_client(
                    session,
                    name="bad",
                    kind=oauth.BACKEND,
                    clock=services.records.clock,
                    actor=OPERATOR,
                    jwks=jwks,
                )
        for uri in ("http://app.example/cb", "https://app.example/cb#frag", "javascript:x"):
            with pytest.raises(BadRequest):
                oauth.register_client(
                    session,
                    name="bad",
                    kind=oauth.PUBLIC,
                    clock=services.records.clock,
                    actor=OPERATOR,
                    redirect_uris=[uri],
                )


def test_cli_registers_clients(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`egide client create` and `create-backend` print the client_id alone on stdout."""
    settings = services.settings
    monkeypatch.setenv("EGIDE_DATA_DIR", str(settings.data_dir))
    if settings.database_url:
        monkeypatch.setenv("EGIDE_DATABASE_URL", settings.database_url)
    assert settings.master_secret is not None
    monkeypatch.setenv("EGIDE_MASTER_SECRET", settings.master_secret.get_secret_value())
    monkeypatch.setenv("EGIDE_KDF_MEMORY_KIB", str(settings.kdf_memory_kib))
    monkeypatch.setenv("EGIDE_KDF_ITERATIONS", str(settings.kdf_iterations))
    runner = CliRunner()
    public = runner.invoke(
        cli_app, ["client", "create", "--name", "App", "--redirect-uri", REDIRECT, "--public"]
    )
    assert public.exit_code == 0, public.output
    key = ECKey.generate_key("P-384").as_dict(private=False) | {"kid": "k1"}
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [key]}), encoding="utf-8")
    backend = runner.invoke(
        cli_app,
        [
            "client",
            "create-backend",
            "--name",
            "Svc",
            "--jwks",
            str(path),
            "--scope",
            "system/Observation.rs",
        ],
    )
    assert backend.exit_code == 0, backend.output
    with transaction(services.session_factory) as session:
        clients = {c.name: c for c in oauth.list_clients(session)}
    assert clients["App"].client_id in public.stdout
    assert clients["App"].kind == oauth.PUBLIC
    assert clients["Svc"].client_id in backend.stdout
    assert clients["Svc"].scopes == "system/Observation.rs"

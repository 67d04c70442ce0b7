"""Revoking app access: RFC 7009 `POST /oauth/revoke`, the `/account/apps` page, and tokens
revoked with the sessions when an account's security changes; the cap on concurrent web
sessions; `mfa_enrolled` counting passkeys (SQLite and PostgreSQL).

The API and the pages are driven in process (TestClient on https://testserver); tokens are
obtained through `identity.oauth` (consent, then the code exchanged with its PKCE verifier).
OWASP ASVS 5.0 ids name what each test shows.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from authlib.common.security import generate_token
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import select

from egide.app import api_for
from egide.cli.runtime import OPERATOR, Services
from egide.core.settings import Settings
from egide.db.engine import transaction
from egide.identity import accounts, oauth, sessions
from egide.identity.models import OAuthToken, Passkey, WebSession
from tests.integration.identity_support import (
    Person,
    actions,
    clock_of,
    enrol,
    patient,
    sign_in,
    staff,
)

BASE = "https://testserver"
TOKEN_URL = BASE + "/oauth/token"
REVOKE_URL = BASE + "/oauth/revoke"
REDIRECT = "https://app.example/callback"
VERIFIER = "v" * 64
SESSION = "__Host-egide_session"
_CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def api(services: Services) -> Iterator[TestClient]:
    with TestClient(api_for(services), base_url=BASE, follow_redirects=False) as client:
        yield client


def register_app(services: Services, name: str = "Carnet Santé") -> str:
    with transaction(services.session_factory) as session:
        view = oauth.register_client(
            session,
            name=name,
            kind=oauth.PUBLIC,
            clock=services.records.clock,
            actor=OPERATOR,
            redirect_uris=[REDIRECT],
        )
    return view.client_id


def grant(services: Services, person: Person, client_id: str, scopes: str = "user/*.rs") -> str:
    """The person allows the app; the app exchanges the code: its access token."""
    clock = services.records.clock
    with transaction(services.session_factory) as session:
        request = oauth.AuthorizationRequest(
            client_id=client_id,
            client_name="-",
            redirect_uri=REDIRECT,
            state="state-1",
            code_challenge=oauth.s256(VERIFIER),
            scopes=tuple(scopes.split(" ")),
            ignored=(),
        )
        code = oauth.issue_code(session, request=request, account_id=person.id, clock=clock)
    pairs = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ]
    with transaction(services.session_factory) as session:
        result = oauth.token_request(session, pairs=pairs, token_endpoint=TOKEN_URL, clock=clock)
    assert isinstance(result, oauth.TokenResult), result
    return result.access_token


def alive(services: Services, token: str) -> bool:
    with transaction(services.session_factory) as session:
        found = oauth.authenticate_access_token(session, token=token, clock=services.records.clock)
        return found is not None


def revoke(api: TestClient, **form: str) -> httpx.Response:
    return api.post("/oauth/revoke", data=form)


@pytest.fixture
def alice(services: Services) -> Person:
    person = staff(services)
    enrol(services, person)
    return person


# --- RFC 7009 -------------------------------------------------------------------------------


def test_v10_4_9_public_client_revokes_its_token_rfc7009(
    services: Services, api: TestClient, alice: Person
) -> None:
    client_id = register_app(services)
    token = grant(services, alice, client_id)
    other = grant(services, alice, client_id)
    assert alive(services, token)
    answer = revoke(api, token=token, token_type_hint="access_token", client_id=client_id)
    assert answer.status_code == 200
    assert answer.content == b""
    assert answer.headers["cache-control"] == "no-store"
    assert not alive(services, token)
    assert alive(services, other)  # only the token presented
    entry = actions(services, "oauth_revoke")[-1]
    assert entry["outcome"] == "success"
    assert entry["user"] == client_id
    # RFC 7009 section 2.2: already revoked, unknown or malformed tokens answer 200 as well;
    # the hint is only a hint (section 2.1).
    assert revoke(api, token=token, client_id=client_id).status_code == 200
    unknown = oauth.TOKEN_PREFIX + "A" * 43
    assert revoke(api, token=unknown, client_id=client_id).status_code == 200
    hint = {"token_type_hint": "refresh_token"}
    assert revoke(api, token="nonsense", client_id=client_id, **hint).status_code == 200
    assert len(actions(services, "oauth_revoke")) == 1


def test_v10_4_9_a_client_cannot_revoke_another_clients_token(
    services: Services, api: TestClient, alice: Person
) -> None:
    mine = register_app(services, "Mine")
    theirs = register_app(services, "Theirs")
    token = grant(services, alice, theirs)
    # Same answer as for an unknown token (RFC 7009 section 2.2): nothing to learn.
    assert revoke(api, token=token, client_id=mine).status_code == 200
    assert alive(services, token)
    entry = actions(services, "oauth_revoke")[-1]
    assert entry["outcome"] == "denied"
    assert f"token of client {theirs}" in entry["reasons"]


def test_rfc7009_revocation_refusals(services: Services, api: TestClient, alice: Person) -> None:
    client_id = register_app(services)
    token = grant(services, alice, client_id)
    missing = revoke(api, client_id=client_id)
    assert missing.status_code == 400
    assert missing.json()["error"] == "invalid_request"
    unknown = revoke(api, token=token, client_id="no-such-client")
    assert unknown.status_code == 401
    assert unknown.json()["error"] == "invalid_client"
    assert revoke(api, token=token).status_code == 401  # no client at all
    basic = api.post(
        "/oauth/revoke", data={"token": token}, headers={"Authorization": "Basic eDp5"}
    )
    assert basic.status_code == 401
    as_json = api.post("/oauth/revoke", json={"token": token, "client_id": client_id})
    assert as_json.status_code == 400
    repeated = api.post(
        "/oauth/revoke",
        content=f"token={token}&token=x&client_id={client_id}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert repeated.status_code == 400
    assert alive(services, token)  # none of these revoked anything
    assert actions(services, "login_failed")[-1]["reasons"][0].startswith(
        "OAuth revocation request refused"
    )


def _backend(services: Services) -> tuple[str, ECKey, str]:
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
        )
    return view.client_id, key, kid


def _assertion(services: Services, client_id: str, key: ECKey, kid: str, **claims: Any) -> str:
    now = int(services.records.clock.now().timestamp())
    payload = {
        "iss": client_id,
        "sub": client_id,
        "aud": TOKEN_URL,
        "exp": now + 240,
        "jti": generate_token(32),
    } | claims
    return jwt.encode({"alg": "ES384", "kid": kid}, payload, key, algorithms=["ES384"])


def test_v10_4_9_backend_revokes_with_private_key_jwt(services: Services, api: TestClient) -> None:
    client_id, key, kid = _backend(services)
    issued = api.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "scope": "system/*.rs",
            "client_assertion_type": oauth.ASSERTION_TYPE,
            "client_assertion": _assertion(services, client_id, key, kid),
        },
    )
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]
    assert alive(services, token)
    auth = {"client_assertion_type": oauth.ASSERTION_TYPE}
    # A backend client must authenticate: its id alone is refused.
    assert revoke(api, token=token, client_id=client_id).status_code == 401
    # An assertion for another audience is refused.
    elsewhere = _assertion(services, client_id, key, kid, aud="https://elsewhere.example/")
    assert revoke(api, token=token, client_assertion=elsewhere, **auth).status_code == 401
    assert alive(services, token)
    # The revocation endpoint (or the token endpoint) as audience is accepted.
    signed = _assertion(services, client_id, key, kid, aud=REVOKE_URL)
    assert revoke(api, token=token, client_assertion=signed, **auth).status_code == 200
    assert not alive(services, token)
    # The same assertion again: its jti is spent (RFC 7523 section 3).
    assert revoke(api, token=token, client_assertion=signed, **auth).status_code == 401


def test_smart_discovery_names_the_revocation_endpoint(api: TestClient) -> None:
    body = api.get("/fhir/.well-known/smart-configuration").json()
    assert body["revocation_endpoint"] == REVOKE_URL
    assert body["revocation_endpoint_auth_methods_supported"] == ["private_key_jwt", "none"]


# --- the apps page (ASVS V10.7.3) -----------------------------------------------------------


def _browser(services: Services, api: TestClient, person: Person) -> None:
    token = sign_in(services, person).session_token
    assert token is not None
    api.cookies.set(SESSION, token)


def _csrf(page: httpx.Response) -> str:
    found = _CSRF_RE.search(page.text)
    assert found is not None, page.text
    return html.unescape(found.group(1))


def test_v10_7_3_apps_page_lists_and_revokes_grants(
    services: Services, api: TestClient, alice: Person
) -> None:
    carnet = register_app(services, "Carnet Santé")
    agenda = register_app(services, "Agenda <b>")
    first = grant(services, alice, carnet)
    clock_of(services).advance(dt.timedelta(minutes=5))
    second = grant(services, alice, carnet, "user/Observation.rs")
    kept = grant(services, alice, agenda)
    bob = staff(services, "bob@clinic.example", name="Bob Roy")
    bobs = grant(services, bob, carnet)

    _browser(services, api, alice)
    account = api.get("/account")
    assert 'href="/account/apps"' in account.text
    page = api.get("/account/apps")
    assert page.status_code == 200
    assert "Carnet Santé" in page.text
    assert "Agenda &lt;b&gt;" in page.text  # autoescaped
    assert "Observation" in page.text  # the scopes of both grants, in plain words
    assert "all kinds of records" in page.text
    assert page.text.count("Revoke access") == 2

    # Without the session's CSRF token: refused, nothing revoked (ASVS V3.5.1).
    refused = api.post(f"/account/apps/{carnet}/revoke", data={"csrf": "forged"})
    assert refused.status_code == 403
    assert alive(services, first)
    done = api.post(f"/account/apps/{carnet}/revoke", data={"csrf": _csrf(page)})
    assert done.status_code == 303
    assert done.headers["location"] == "/account/apps?notice=app-revoked"
    assert not alive(services, first)
    assert not alive(services, second)
    assert alive(services, kept)  # another app
    assert alive(services, bobs)  # another person's grant of the same app
    entry = actions(services, "oauth_revoke")[-1]
    assert entry["user"] == alice.id
    assert entry["reasons"][:3] == [
        "access revoked by the account holder",
        f"client {carnet}",
        "2 tokens revoked",
    ]
    after = api.get("/account/apps?notice=app-revoked")
    assert "no longer has access" in after.text
    assert "Carnet Santé" not in after.text
    # Again, or an app that holds nothing of hers: 404.
    again = api.post(f"/account/apps/{carnet}/revoke", data={"csrf": _csrf(after)})
    assert again.status_code == 404


def test_apps_page_needs_a_session(api: TestClient) -> None:
    assert api.get("/account/apps").headers["location"] == "/login"


# --- tokens revoked with the sessions (ASVS V10.4.9, V7.4.2, V7.4.3) -------------------------


def test_v10_4_9_security_changes_revoke_app_tokens(services: Services, alice: Person) -> None:
    client_id = register_app(services)
    clock = services.records.clock
    patient_person = patient(services)

    # Password change by the holder.
    token = grant(services, patient_person, client_id)
    with transaction(services.session_factory) as session:
        accounts.change_password(
            session,
            account_id=patient_person.id,
            current_password=patient_person.password,
            new_password="a brand new passphrase for paul",
            clock=clock,
            settings=services.settings,
            keep_session_id=None,
        )
    assert not alive(services, token)
    assert "1 app tokens revoked" in actions(services, "password_change")[-1]["reasons"]

    # MFA reset by an administrator.
    token = grant(services, alice, client_id)
    with transaction(services.session_factory) as session:
        accounts.reset_mfa(session, email=alice.email, clock=clock, actor=OPERATOR)
    assert not alive(services, token)
    assert actions(services, "oauth_revoke")[-1]["reasons"][0] == "MFA reset"

    # Role change by an administrator who just signed in with TOTP (a fresh step-up).
    admin = staff(services, "ada@clinic.example", role="admin", name="Ada King")
    enrol(services, admin)
    admin_token = sign_in(services, admin).session_token
    assert admin_token is not None
    nurse = staff(services, "ned@clinic.example", role="nurse", name="Ned Park")
    token = grant(services, nurse, client_id)
    with transaction(services.session_factory) as session:
        info = sessions.validate_session(
            session, token=admin_token, clock=clock, settings=services.settings
        )
        assert info is not None
        accounts.change_role(
            session,
            email=nurse.email,
            role="physician",
            clock=clock,
            settings=services.settings,
            actor=info.principal,
            actor_session=info,
        )
    assert not alive(services, token)
    assert actions(services, "oauth_revoke")[-1]["user"] == admin.id

    # Disabled account; an authorization code not yet exchanged is dropped too.
    token = grant(services, nurse, client_id)
    with transaction(services.session_factory) as session:
        request = oauth.AuthorizationRequest(
            client_id=client_id,
            client_name="-",
            redirect_uri=REDIRECT,
            state="s",
            code_challenge=oauth.s256(VERIFIER),
            scopes=("user/*.rs",),
            ignored=(),
        )
        code = oauth.issue_code(session, request=request, account_id=nurse.id, clock=clock)
    with transaction(services.session_factory) as session:
        accounts.disable_account(session, email=nurse.email, clock=clock, actor=OPERATOR)
    with transaction(services.session_factory) as session:
        rows = session.scalars(select(OAuthToken).where(OAuthToken.account_id == nurse.id))
        assert all(r.revoked_at is not None for r in rows)
    assert actions(services, "oauth_revoke")[-1]["reasons"][-1] == "1 unused codes dropped"
    pairs = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ]
    with transaction(services.session_factory) as session:
        result = oauth.token_request(session, pairs=pairs, token_endpoint=TOKEN_URL, clock=clock)
    assert isinstance(result, oauth.OAuthFailure)
    assert result.error == "invalid_grant"


# --- mfa_enrolled counts passkeys -------------------------------------------------------------


def test_mfa_enrolled_counts_passkeys(services: Services) -> None:
    person = staff(services, "pia@clinic.example", name="Pia Lund")
    with transaction(services.session_factory) as session:
        found = accounts.find_account(session, email=person.email)
        assert found is not None
        assert not found.mfa_enrolled
        session.add(
            Passkey(
                id="pk-1",
                account_id=person.id,
                credential_id=b"\x01" * 32,
                public_key=b"\x02" * 77,
                sign_count=0,
                transports=None,
                aaguid="00000000-0000-0000-0000-000000000000",
                name="work laptop",
                created_at=services.records.clock.now(),
            )
        )
    with transaction(services.session_factory) as session:
        listed = {v.email: v for v in accounts.list_accounts(session)}
    assert listed[person.email].mfa_enrolled


# --- concurrent sessions (ASVS V7.1.2) --------------------------------------------------------


def test_v7_1_2_session_limit_revokes_the_least_recently_used(services: Services) -> None:
    assert Settings.model_fields["max_sessions_per_account"].default == 10
    settings = services.settings.model_copy(update={"max_sessions_per_account": 3})
    person = patient(services)
    clock = clock_of(services)

    def new_session() -> tuple[str, str]:
        with transaction(services.session_factory) as session:
            token, info = sessions.create_session(
                session,
                account_id=person.id,
                clock=clock,
                settings=settings,
                ip=None,
                device=None,
                mfa=False,
            )
        clock.advance(dt.timedelta(minutes=2))
        return token, info.id

    first, second, third = new_session(), new_session(), new_session()
    # The first is used again: now the second is the least recently used.
    with transaction(services.session_factory) as session:
        assert sessions.validate_session(session, token=first[0], clock=clock, settings=settings)
    fourth = new_session()
    with transaction(services.session_factory) as session:
        live = session.scalars(
            select(WebSession.id).where(
                WebSession.account_id == person.id, WebSession.revoked_at.is_(None)
            )
        ).all()
        assert set(live) == {first[1], third[1], fourth[1]}
        dropped = session.get(WebSession, second[1])
        assert dropped is not None
        assert dropped.revoked_reason == "session limit"
    entry = actions(services, "session_revoke")[-1]
    assert entry["reasons"] == [
        "session limit",
        "at most 3 sessions",
        "1 least recently used sessions revoked",
    ]


def test_v7_1_2_sign_in_keeps_at_most_ten_sessions(services: Services) -> None:
    person = patient(services)
    for _ in range(services.settings.max_sessions_per_account + 2):
        sign_in(services, person)
    with transaction(services.session_factory) as session:
        rows = session.scalars(select(WebSession).where(WebSession.account_id == person.id)).all()
    assert sum(1 for r in rows if r.revoked_at is None) == 10
    assert sum(1 for r in rows if r.revoked_reason == "session limit") == 2

"""Passkeys (WebAuthn) end to end over HTTP, with a software authenticator, on both databases.

The TestClient's base URL is the configured public origin (https://egide.test, RP ID
"egide.test"), so the origin the software authenticator writes into clientDataJSON is the one
a browser on that site would write. Accounts are made with the back-end functions; everything
after that goes through the pages and their JSON endpoints only, as passkeys.js does.

Adversarial cases (W3C WebAuthn Level 3 sections 7.1 and 7.2; OWASP ASVS 5.0 V6.3.3, V6.7.2):
another origin, another RP ID, no user verification, a flipped signature bit, a counter that
does not increase, another account's credential, a replayed or expired challenge. Each is
refused, signs nobody in, and leaves an MFA_FAILED entry with a fixed reason in the ledger.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from egide.app import api_for
from egide.cli.runtime import Services
from egide.core.settings import Settings
from egide.db.engine import transaction
from egide.identity import totp
from egide.identity.models import Passkey, WebAuthnChallenge, WebSession
from tests.helpers import Database, make_settings
from tests.integration.identity_support import (
    Person,
    actions,
    clock_of,
    code_now,
    enrol,
    staff,
)
from tests.integration.webauthn_authenticator import UP, UV, SoftAuthenticator, b64url

ORIGIN = "https://egide.test"
RP_ID = "egide.test"
SESSION = "__Host-egide_session"
_CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')
_DATA_CSRF_RE = re.compile(r'data-csrf="([^"]+)"')


@pytest.fixture
def settings(tmp_path: Path, database: Database) -> Settings:
    return make_settings(tmp_path / "data", database.url, public_base_url=ORIGIN)


def _client(services: Services) -> TestClient:
    return TestClient(
        api_for(services),
        base_url=ORIGIN,
        follow_redirects=False,
        headers={"Origin": ORIGIN},  # what a browser sends with every fetch POST
    )


@pytest.fixture
def web(services: Services) -> Iterator[TestClient]:
    with _client(services) as client:
        yield client


def authenticator() -> SoftAuthenticator:
    return SoftAuthenticator(origin=ORIGIN, rp_id=RP_ID)


def csrf_of(page: httpx.Response) -> str:
    found = _DATA_CSRF_RE.search(page.text) or _CSRF_RE.search(page.text)
    assert found is not None, page.text
    return html.unescape(found.group(1))


def post_json(web: TestClient, path: str, csrf: str, body: dict[str, Any]) -> httpx.Response:
    return web.post(path, json=body, headers={"X-CSRF-Token": csrf})


def password_step(web: TestClient, person: Person) -> httpx.Response:
    page = web.get("/login")
    assert page.status_code == 200
    return web.post(
        "/login",
        data={"csrf": csrf_of(page), "email": person.email, "password": person.password},
    )


def session_cookie(response: httpx.Response) -> str | None:
    for line in response.headers.get_list("set-cookie"):
        name, _, rest = line.partition("=")
        value = rest.split(";", 1)[0]
        if name == SESSION and value and value != '""':
            return value
    return None


def live_sessions(services: Services) -> int:
    with transaction(services.session_factory) as session:
        found = session.scalar(
            select(func.count()).select_from(WebSession).where(WebSession.revoked_at.is_(None))
        )
        return int(found or 0)


def stored_passkeys(services: Services, account_id: str) -> list[Passkey]:
    with transaction(services.session_factory) as session:
        rows = list(session.scalars(select(Passkey).where(Passkey.account_id == account_id)))
        for row in rows:
            session.expunge(row)
        return rows


def enrol_with_passkey(
    services: Services, web: TestClient, person: Person, key: SoftAuthenticator, name: str = ""
) -> httpx.Response:
    """First sign-in of staff, choosing a passkey on the enrolment page."""
    first = password_step(web, person)
    assert first.status_code == 303
    assert first.headers["location"] == "/login/enrol"
    page = web.get("/login/enrol")
    assert page.status_code == 200
    csrf = csrf_of(page)
    options = post_json(web, "/login/passkey/register/options", csrf, {})
    assert options.status_code == 200, options.text
    return post_json(
        web,
        "/login/passkey/register",
        csrf,
        {"credential": key.create(options.json()), "name": name},
    )


@pytest.fixture
def alice(services: Services) -> tuple[Person, SoftAuthenticator]:
    """A physician who registered a passkey at her first sign-in (in a browser of her own)."""
    person = staff(services, "alice@clinic.example")
    key = authenticator()
    with _client(services) as browser:
        done = enrol_with_passkey(services, browser, person, key, "Alice's laptop")
        assert done.status_code == 200, done.text
    return person, key


def begin_sign_in(web: TestClient, person: Person) -> tuple[str, dict[str, Any]]:
    """Password, then the MFA page's passkey options: (CSRF token, request options)."""
    first = password_step(web, person)
    assert first.status_code == 303
    assert first.headers["location"] == "/login/mfa"
    page = web.get("/login/mfa")
    assert page.status_code == 200
    csrf = csrf_of(page)
    options = post_json(web, "/login/passkey/options", csrf, {})
    assert options.status_code == 200, options.text
    return csrf, options.json()


def finish_sign_in(web: TestClient, csrf: str, credential: dict[str, Any]) -> httpx.Response:
    return post_json(web, "/login/passkey/verify", csrf, {"credential": credential})


def sign_in_with_passkey(web: TestClient, person: Person, key: SoftAuthenticator) -> None:
    csrf, options = begin_sign_in(web, person)
    done = finish_sign_in(web, csrf, key.get(options))
    assert done.status_code == 200, done.text
    assert done.json() == {"redirect": "/account"}


# --- The whole flow ------------------------------------------------------------------------


def test_v6_3_3_staff_registers_a_passkey_at_first_sign_in_then_signs_in_with_it(
    services: Services, web: TestClient
) -> None:
    person = staff(services, "alice@clinic.example")
    key = authenticator()
    first = password_step(web, person)
    assert first.headers["location"] == "/login/enrol"
    page = web.get("/login/enrol")
    # The enrolment page offers both: a passkey and an authenticator app.
    assert "Register a passkey" in page.text
    assert 'class="secret"' in page.text
    assert '<script src="/static/passkeys.js" defer></script>' in page.text
    csrf = csrf_of(page)
    options = post_json(web, "/login/passkey/register/options", csrf, {}).json()
    # L3 section 5.4: the relying party, user verification required, a discoverable
    # credential preferred, no attestation asked, 256-bit challenge (ASVS V6.7.2).
    assert options["rp"] == {"id": RP_ID, "name": services.settings.clinic_name}
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert options["authenticatorSelection"]["residentKey"] == "preferred"
    assert options["attestation"] == "none"
    assert options["excludeCredentials"] == []
    assert options["user"]["name"] == person.email
    assert options["user"]["id"] == b64url(person.id.encode())
    assert len(options["challenge"]) == 43  # 32 bytes in base64url
    assert {"type": "public-key", "alg": -7} in options["pubKeyCredParams"]

    done = post_json(
        web, "/login/passkey/register", csrf, {"credential": key.create(options), "name": "Mac"}
    )
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["redirect"] == "/account"
    assert len(body["recovery_codes"]) == 10
    assert session_cookie(done) is not None
    assert done.headers["cache-control"] == "no-store"
    account = web.get("/account")
    assert account.status_code == 200
    assert "<td>Mac</td>" in account.text

    [row] = stored_passkeys(services, person.id)
    assert row.credential_id == key.credential_id
    assert row.sign_count == 0
    assert row.transports == "internal"
    assert row.aaguid == "00000000-0000-0000-0000-000000000000"
    enrolled = actions(services, "mfa_enrol")[-1]
    assert enrolled["reasons"][:2] == ["passkey added", f"passkey {row.id}"]
    assert actions(services, "login")[-1]["reasons"][:2] == ["password", "passkey"]

    # A second browser signs in with password + passkey.
    with _client(services) as other:
        csrf, request = begin_sign_in(other, person)
        assert "Use a passkey" in other.get("/login/mfa").text
        assert request["rpId"] == RP_ID
        assert request["userVerification"] == "required"
        assert [c["id"] for c in request["allowCredentials"]] == [b64url(key.credential_id)]
        done = finish_sign_in(other, csrf, key.get(request))
        assert done.status_code == 200, done.text
        assert session_cookie(done) is not None
        assert other.get("/account").status_code == 200
    login = actions(services, "login")[-1]
    assert login["reasons"][:3] == ["password", "passkey", f"passkey {row.id}"]
    [row] = stored_passkeys(services, person.id)
    assert row.sign_count == 1
    assert row.last_used_at == clock_of(services).now()


def test_passkey_only_staff_can_still_use_a_recovery_code(
    services: Services, web: TestClient
) -> None:
    person = staff(services, "alice@clinic.example")
    done = enrol_with_passkey(services, web, person, authenticator())
    code = done.json()["recovery_codes"][0]
    with _client(services) as other:
        assert password_step(other, person).headers["location"] == "/login/mfa"
        page = other.get("/login/mfa")
        signed = other.post("/login/mfa", data={"csrf": csrf_of(page), "code": code})
        assert signed.status_code == 303
        assert signed.headers["location"] == "/account"
    assert actions(services, "login")[-1]["reasons"][:2] == ["password", "recovery code"]


# --- Adversarial sign-ins ------------------------------------------------------------------

Bend = Callable[[SoftAuthenticator, dict[str, Any]], dict[str, Any]]

CASES: list[tuple[str, Bend, str]] = [
    (
        "another origin (a phishing site relaying the challenge)",
        lambda key, options: key.get(options, origin="https://egide.test.evil.example"),
        "passkey response from another origin",
    ),
    (
        "another RP ID",
        lambda key, options: key.get(options, rp_id="evil.example"),
        "passkey response for another relying party (RP ID)",
    ),
    (
        "user verification flag missing",
        lambda key, options: key.get(options, flags=UP),
        "passkey user verification (UV) missing",
    ),
    (
        "user presence flag missing",
        lambda key, options: key.get(options, flags=UV),
        "passkey user presence (UP) missing",
    ),
    (
        "one bit of the signature flipped",
        lambda key, options: key.get(options, flip_signature_bit=True),
        "passkey signature invalid",
    ),
    (
        "client data of a registration ceremony",
        lambda key, options: key.get(options, kind="webauthn.create"),
        "passkey response of the wrong ceremony",
    ),
]


@pytest.mark.parametrize(("case", "bend", "reason"), CASES, ids=[c[0] for c in CASES])
def test_bent_assertions_are_refused(
    services: Services,
    web: TestClient,
    alice: tuple[Person, SoftAuthenticator],
    case: str,
    bend: Bend,
    reason: str,
) -> None:
    person, key = alice
    before = live_sessions(services)
    csrf, options = begin_sign_in(web, person)
    refused = finish_sign_in(web, csrf, bend(key, options))
    assert refused.status_code == 401, (case, refused.text)
    assert refused.json() == {"error": "The passkey could not be verified."}
    assert session_cookie(refused) is None
    assert live_sessions(services) == before
    failed = actions(services, "mfa_failed")[-1]
    assert failed["reasons"] == [reason]
    assert failed["outcome"] == "denied"
    assert failed["user"] == person.id
    # The challenge is spent: the right answer to it now is refused too (single use).
    again = finish_sign_in(web, csrf, key.get(options))
    assert again.status_code == 401
    assert actions(services, "mfa_failed")[-1]["reasons"] == ["passkey challenge replayed"]
    # A fresh challenge, answered properly, signs in.
    fresh = post_json(web, "/login/passkey/options", csrf, {}).json()
    assert finish_sign_in(web, csrf, key.get(fresh)).status_code == 200


def test_replayed_assertion_is_refused(
    services: Services, web: TestClient, alice: tuple[Person, SoftAuthenticator]
) -> None:
    """A recorded, valid assertion is useless later: its challenge was spent and belonged to
    another sign-in (L3 section 13.4.3)."""
    person, key = alice
    csrf, options = begin_sign_in(web, person)
    recorded = key.get(options)
    assert finish_sign_in(web, csrf, recorded).status_code == 200
    with _client(services) as attacker:
        before = live_sessions(services)
        csrf2, _ = begin_sign_in(attacker, person)
        replayed = finish_sign_in(attacker, csrf2, recorded)
        assert replayed.status_code == 401
        assert session_cookie(replayed) is None
        assert live_sessions(services) == before
    reason = actions(services, "mfa_failed")[-1]["reasons"]
    assert reason == ["passkey challenge issued for another ceremony"]


def test_l3_6_1_1_a_counter_that_does_not_increase_is_refused(
    services: Services, web: TestClient, alice: tuple[Person, SoftAuthenticator]
) -> None:
    """A signature counter at or below the stored one signals a cloned authenticator."""
    person, key = alice
    csrf, options = begin_sign_in(web, person)
    assert finish_sign_in(web, csrf, key.get(options, counter=5)).status_code == 200
    for counter in (3, 5, 0):
        with _client(services) as clone:
            before = live_sessions(services)
            csrf, options = begin_sign_in(clone, person)
            refused = finish_sign_in(clone, csrf, key.get(options, counter=counter))
            assert refused.status_code == 401
            assert session_cookie(refused) is None
            assert live_sessions(services) == before
        [reason] = actions(services, "mfa_failed")[-1]["reasons"]
        assert f"did not increase ({counter} after 5)" in reason
        assert "cloned authenticator" in reason
    [row] = stored_passkeys(services, person.id)
    assert row.sign_count == 5
    with _client(services) as fine:
        csrf, options = begin_sign_in(fine, person)
        assert finish_sign_in(fine, csrf, key.get(options, counter=6)).status_code == 200


def test_another_accounts_passkey_is_refused(
    services: Services, web: TestClient, alice: tuple[Person, SoftAuthenticator]
) -> None:
    person, _ = alice
    bob = staff(services, "bob@clinic.example", name="Bob Bernard")
    bobs_key = authenticator()
    with _client(services) as his:
        assert enrol_with_passkey(services, his, bob, bobs_key).status_code == 200
    before = live_sessions(services)
    csrf, options = begin_sign_in(web, person)
    # Bob's authenticator answers Alice's challenge, with his user handle and with hers.
    for handle in (None, person.id.encode()):
        refused = finish_sign_in(web, csrf, bobs_key.get(options, user_handle=handle))
        assert refused.status_code == 401
        assert session_cookie(refused) is None
        options = post_json(web, "/login/passkey/options", csrf, {}).json()
    assert live_sessions(services) == before
    reasons = [e["reasons"] for e in actions(services, "mfa_failed")[-2:]]
    assert reasons == [["passkey not registered to this account"]] * 2
    assert all(e["user"] == person.id for e in actions(services, "mfa_failed")[-2:])


def test_expired_challenges_are_refused(
    services: Services, web: TestClient, alice: tuple[Person, SoftAuthenticator]
) -> None:
    person, key = alice
    # At sign-in: the challenge lives no longer than the pending sign-in (5 minutes).
    csrf, options = begin_sign_in(web, person)
    clock_of(services).advance(dt.timedelta(minutes=5, seconds=1))
    before = live_sessions(services)
    late = finish_sign_in(web, csrf, key.get(options))
    assert late.status_code == 401
    assert late.json()["redirect"] == "/login?notice=expired"
    assert session_cookie(late) is None
    assert live_sessions(services) == before
    # On the account page: a registration challenge dies after 5 minutes too.
    sign_in_with_passkey(web, person, key)
    page = web.get("/account")
    token = csrf_of(page)
    new_key = authenticator()
    options = post_json(web, "/account/passkeys/options", token, {}).json()
    clock_of(services).advance(dt.timedelta(minutes=5, seconds=1))
    refused = post_json(web, "/account/passkeys", token, {"credential": new_key.create(options)})
    assert refused.status_code == 400
    assert "passkey challenge expired" in refused.json()["error"]
    assert len(stored_passkeys(services, person.id)) == 1


def test_a_wrong_pending_sign_in_cannot_enrol_a_second_factor(
    services: Services, web: TestClient, alice: tuple[Person, SoftAuthenticator]
) -> None:
    """With a passkey registered, the password alone enrols nothing (no TOTP, no passkey)."""
    person, _ = alice
    assert password_step(web, person).headers["location"] == "/login/mfa"
    page = web.get("/login/mfa")
    csrf = csrf_of(page)
    refused = post_json(web, "/login/passkey/register/options", csrf, {})
    assert refused.status_code == 401
    assert refused.json()["redirect"] == "/login?notice=expired"
    assert web.get("/login/enrol").headers["location"] == "/login?notice=expired"
    assert len(stored_passkeys(services, person.id)) == 1


# --- The JSON endpoints' own protections ---------------------------------------------------


def test_passkey_endpoints_need_the_csrf_header_the_origin_and_json(
    services: Services, web: TestClient, alice: tuple[Person, SoftAuthenticator]
) -> None:
    """ASVS V3.5.1: the token in the X-CSRF-Token header, our own Origin, a JSON body."""
    person, _ = alice
    assert password_step(web, person).status_code == 303
    csrf = csrf_of(web.get("/login/mfa"))
    path = "/login/passkey/options"
    assert web.post(path, json={}).status_code == 403
    assert web.post(path, json={}, headers={"X-CSRF-Token": "A" * 86}).status_code == 403
    evil = {"X-CSRF-Token": csrf, "Origin": "https://evil.example"}
    assert web.post(path, json={}, headers=evil).status_code == 403
    form = web.post(path, data={"a": "b"}, headers={"X-CSRF-Token": csrf})
    assert form.status_code == 400
    big = web.post(
        path,
        content=b'{"x": "' + b"a" * 70_000 + b'"}',
        headers={"X-CSRF-Token": csrf, "Content-Type": "application/json"},
    )
    assert big.status_code == 400
    with transaction(services.session_factory) as session:
        issued = session.scalar(select(func.count()).select_from(WebAuthnChallenge))
    assert post_json(web, path, csrf, {}).status_code == 200
    with transaction(services.session_factory) as session:
        assert session.scalar(select(func.count()).select_from(WebAuthnChallenge)) == (
            (issued or 0) + 1
        )
    # Signed in, the session's own token is needed (the pre-session one is refused).
    sign_in_with_passkey(web, person, alice[1])
    assert post_json(web, "/account/passkeys/options", csrf, {}).status_code == 403
    good = csrf_of(web.get("/account"))
    assert post_json(web, "/account/passkeys/options", good, {}).status_code == 200


def test_passkeys_js_is_served_from_the_static_whitelist(web: TestClient) -> None:
    script = web.get("/static/passkeys.js")
    assert script.status_code == 200
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "navigator.credentials.create" in script.text
    assert "X-CSRF-Token" in script.text


# --- Managing passkeys from the account page ------------------------------------------------


def sign_in_with_totp(services: Services, web: TestClient, person: Person) -> None:
    assert password_step(web, person).headers["location"] == "/login/mfa"
    page = web.get("/login/mfa")
    done = web.post("/login/mfa", data={"csrf": csrf_of(page), "code": code_now(services, person)})
    assert done.status_code == 303, done.text
    clock_of(services).advance(dt.timedelta(seconds=totp.DEFAULT_STEP))


def test_v6_5_6_add_and_remove_passkeys_from_the_account_page(
    services: Services, web: TestClient
) -> None:
    person = staff(services, "carole@clinic.example", name="Carole Petit")
    enrol(services, person)  # TOTP first
    sign_in_with_totp(services, web, person)
    with _client(services) as elsewhere:  # another session, revoked by each change (V7.4.3)
        sign_in_with_totp(services, elsewhere, person)
        token = csrf_of(web.get("/account"))
        keys = [authenticator(), authenticator()]
        for number, key in enumerate(keys):
            options = post_json(web, "/account/passkeys/options", token, {}).json()
            excluded = [c["id"] for c in options["excludeCredentials"]]
            assert excluded == [b64url(k.credential_id) for k in keys[:number]]
            added = post_json(
                web,
                "/account/passkeys",
                token,
                {"credential": key.create(options), "name": f"K{number}"},
            )
            assert added.status_code == 201, added.text
            assert added.json()["redirect"] == "/account?notice=passkey-added"
        assert elsewhere.get("/account").status_code == 303  # signed out by the change
    page = web.get("/account")
    assert "<td>K0</td>" in page.text
    assert "<td>K1</td>" in page.text
    # The same authenticator cannot be registered twice (L3 section 7.1).
    options = post_json(web, "/account/passkeys/options", token, {}).json()
    twice = post_json(web, "/account/passkeys", token, {"credential": keys[0].create(options)})
    assert twice.status_code == 409
    assert [e["reasons"][0] for e in actions(services, "mfa_enrol")][-2:] == ["passkey added"] * 2

    rows = stored_passkeys(services, person.id)
    first = next(r for r in rows if r.name == "K0")
    removed = web.post(f"/account/passkeys/{first.id}/remove", data={"csrf": csrf_of(page)})
    assert removed.status_code == 303
    assert removed.headers["location"] == "/account?notice=passkey-removed"
    assert [r.name for r in stored_passkeys(services, person.id)] == ["K1"]
    entry = actions(services, "passkey_remove")[-1]
    assert entry["reasons"][:2] == ["passkey removed", f"passkey {first.id}"]
    # Removing it again, or without the CSRF token, finds nothing to do.
    assert (
        web.post(f"/account/passkeys/{first.id}/remove", data={"csrf": csrf_of(page)}).status_code
        == 404
    )
    assert web.post(f"/account/passkeys/{rows[1].id}/remove", data={}).status_code == 403
    # The removed passkey no longer signs in; the other one does.
    with _client(services) as later:
        csrf, request = begin_sign_in(later, person)
        assert [c["id"] for c in request["allowCredentials"]] == [b64url(keys[1].credential_id)]
        assert finish_sign_in(later, csrf, keys[0].get(request)).status_code == 401
        request = post_json(later, "/login/passkey/options", csrf, {}).json()
        assert finish_sign_in(later, csrf, keys[1].get(request)).status_code == 200


def test_another_accounts_passkey_cannot_be_removed_nor_the_last_factor(
    services: Services, web: TestClient, alice: tuple[Person, SoftAuthenticator]
) -> None:
    person, key = alice
    [alices] = stored_passkeys(services, person.id)
    bob = staff(services, "bob@clinic.example", name="Bob Bernard")
    with _client(services) as his:
        assert enrol_with_passkey(services, his, bob, authenticator()).status_code == 200
        page = his.get("/account")
        stolen = his.post(f"/account/passkeys/{alices.id}/remove", data={"csrf": csrf_of(page)})
        assert stolen.status_code == 404
    # Alice's only second factor stays (she would enrol a new one on her password alone).
    sign_in_with_passkey(web, person, key)
    page = web.get("/account")
    last = web.post(f"/account/passkeys/{alices.id}/remove", data={"csrf": csrf_of(page)})
    assert last.status_code == 409
    assert len(stored_passkeys(services, person.id)) == 1


def test_changing_passkeys_needs_a_recent_second_factor(
    services: Services, web: TestClient, alice: tuple[Person, SoftAuthenticator]
) -> None:
    """ASVS V7.5.1: a session whose second factor is older than step_up_minutes cannot add
    or remove passkeys (a stolen, idle-refreshed cookie cannot plant the thief's passkey)."""
    person, key = alice
    sign_in_with_passkey(web, person, key)
    token = csrf_of(web.get("/account"))
    for _ in range(3):  # stay within the idle timeout, pass the step-up window
        clock_of(services).advance(dt.timedelta(minutes=4))
        assert web.get("/account").status_code == 200
    refused = post_json(web, "/account/passkeys/options", token, {})
    assert refused.status_code == 403
    assert "recent second-factor check" in refused.json()["error"]


# --- Passwordless sign-in with a discoverable passkey ---------------------------------------


def test_passwordless_sign_in_with_a_discoverable_passkey(
    services: Services, web: TestClient, alice: tuple[Person, SoftAuthenticator]
) -> None:
    person, key = alice
    page = web.get("/login")
    csrf = csrf_of(page)
    options = post_json(web, "/login/passkey/discover/options", csrf, {})
    assert options.status_code == 200
    request = options.json()
    assert request["allowCredentials"] == []
    assert request["userVerification"] == "required"
    done = post_json(web, "/login/passkey/discover", csrf, {"credential": key.get(request)})
    assert done.status_code == 200, done.text
    assert session_cookie(done) is not None
    assert actions(services, "login")[-1]["reasons"][:1] == ["passkey"]
    assert actions(services, "login")[-1]["user"] == person.id
    # Without the user handle (or with another account's), nobody is signed in.
    with _client(services) as other:
        csrf = csrf_of(other.get("/login"))
        for handle in (b"", b"someone-else"):
            request = post_json(other, "/login/passkey/discover/options", csrf, {}).json()
            credential = key.get(request, user_handle=handle)
            if not handle:
                credential["response"]["userHandle"] = None
            refused = post_json(other, "/login/passkey/discover", csrf, {"credential": credential})
            assert refused.status_code == 401
            assert session_cookie(refused) is None
        reasons = [e["reasons"] for e in actions(services, "mfa_failed")[-2:]]
        assert reasons == [["passkey user handle of another account"]] * 2


def test_passwordless_failures_are_throttled_per_address(
    services: Services, web: TestClient, alice: tuple[Person, SoftAuthenticator]
) -> None:
    """Unknown passkeys count against the source address like wrong passwords (ASVS V6.3.1):
    after 20 failures in 10 minutes the address is refused, even with a good passkey."""
    _, key = alice
    csrf = csrf_of(web.get("/login"))
    stranger = authenticator()
    stranger.user_handle = b"nobody"
    for _ in range(20):
        request = post_json(web, "/login/passkey/discover/options", csrf, {}).json()
        answer = post_json(
            web, "/login/passkey/discover", csrf, {"credential": stranger.get(request)}
        )
        assert answer.status_code == 401
    request = post_json(web, "/login/passkey/discover/options", csrf, {}).json()
    blocked = post_json(web, "/login/passkey/discover", csrf, {"credential": key.get(request)})
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) > 0
    assert session_cookie(blocked) is None
    assert actions(services, "mfa_failed")[-1]["reasons"] == [
        "too many failed attempts from this address"
    ]

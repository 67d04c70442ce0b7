"""Step-up with a passkey over HTTP, with the software authenticator, on both databases.

OWASP ASVS 5.0 V7.5.1 and V7.5.3: a signed-in session re-authenticates before a sensitive
change; an account whose only authenticators are passkeys does it with a passkey (its password
alone is refused). V7.2.4: a successful step-up gives the session a new token and the old one
stops working. W3C WebAuthn Level 3 section 7.2 (user verification required, the challenge of
this ceremony only, section 13.4.3): a bent signature, a replayed challenge, another session's
or a sign-in's challenge, no UV are refused; each refusal is in the ledger (MFA_FAILED) and
counts towards the lockout (ASVS V6.3.1), and the backoff applies to step-up too.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from egide.cli.runtime import Services
from egide.core.settings import Settings
from egide.db.engine import transaction
from egide.identity import sessions, totp
from egide.identity.models import Account
from tests.helpers import Database, make_settings
from tests.integration.identity_support import Person, actions, clock_of, staff
from tests.integration.test_identity_passkeys import (
    ORIGIN,
    SESSION,
    _client,
    authenticator,
    begin_sign_in,
    csrf_of,
    enrol_with_passkey,
    post_json,
    session_cookie,
    sign_in_with_passkey,
    stored_passkeys,
)
from tests.integration.webauthn_authenticator import UP, SoftAuthenticator, b64url

OPTIONS = "/account/step-up/passkey/options"
FINISH = "/account/step-up/passkey"
_SECRET_RE = re.compile(r'<code class="secret"[^>]*>([^<]+)</code>')
_CODES_RE = re.compile(r"<li><code>([^<]+)</code></li>")


@pytest.fixture
def settings(tmp_path: Path, database: Database) -> Settings:
    return make_settings(tmp_path / "data", database.url, public_base_url=ORIGIN)


@pytest.fixture
def web(services: Services) -> Iterator[TestClient]:
    with _client(services) as client:
        yield client


@pytest.fixture
def laptop(services: Services) -> Iterator[TestClient]:
    with _client(services) as client:
        yield client


@pytest.fixture
def alice(services: Services) -> tuple[Person, SoftAuthenticator]:
    """A physician whose only authenticator is the passkey she registered at first sign-in."""
    person = staff(services, "alice@clinic.example")
    key = authenticator()
    with _client(services) as browser:
        assert enrol_with_passkey(services, browser, person, key).status_code == 200
    return person, key


def _stale(services: Services, web: TestClient) -> None:
    """Past the step-up window, the session kept alive within the idle timeout."""
    for _ in range(3):
        clock_of(services).advance(dt.timedelta(minutes=4))
        assert web.get("/account").status_code == 200


def _failed_count(services: Services, account_id: str) -> int:
    with transaction(services.session_factory) as session:
        row = session.get(Account, account_id)
        assert row is not None
        return row.failed_count


def _step_up_csrf(web: TestClient, next_url: str = "/account") -> str:
    page = web.get("/account/step-up", params={"next": next_url})
    assert page.status_code == 200
    return csrf_of(page)


def _can_change_passkeys(web: TestClient, csrf: str) -> bool:
    return post_json(web, "/account/passkeys/options", csrf, {}).status_code == 200


def test_v7_5_1_passkey_only_account_steps_up_with_a_passkey(
    services: Services, web: TestClient, alice: tuple[Person, SoftAuthenticator]
) -> None:
    person, key = alice
    sign_in_with_passkey(web, person, key)
    old_token = web.cookies[SESSION]
    _stale(services, web)
    assert web.get("/account/totp").headers["location"] == "/account/step-up?next=/account/totp"

    page = web.get("/account/step-up", params={"next": "/account/totp"})
    assert page.status_code == 200
    # The passkey button (passkeys.js, no inline script); no password field for this account.
    assert "Use a passkey" in page.text
    assert f'data-options="{OPTIONS}"' in page.text
    assert 'data-next="/account/totp"' in page.text
    assert '<script src="/static/passkeys.js" defer></script>' in page.text
    assert 'name="code"' not in page.text
    csrf = csrf_of(page)
    assert not _can_change_passkeys(web, csrf)

    options = post_json(web, OPTIONS, csrf, {})
    assert options.status_code == 200, options.text
    request = options.json()
    # L3 section 5.5: UV required, only this account's credentials allowed.
    assert request["userVerification"] == "required"
    assert request["rpId"] == "egide.test"
    assert [c["id"] for c in request["allowCredentials"]] == [b64url(key.credential_id)]
    done = post_json(web, FINISH, csrf, {"credential": key.get(request), "next": "/account/totp"})
    assert done.status_code == 200, done.text
    assert done.json() == {"redirect": "/account/totp"}
    # ASVS V7.2.4: a new token; the old one no longer works.
    new_token = session_cookie(done)
    assert new_token is not None
    assert new_token != old_token
    with TestClient(web.app, base_url=ORIGIN, follow_redirects=False) as thief:
        thief.cookies.set(SESSION, old_token)
        assert thief.get("/account").status_code == 303
    [row] = stored_passkeys(services, person.id)
    assert actions(services, "login")[-1]["reasons"] == ["step-up", "passkey", f"passkey {row.id}"]
    assert row.sign_count == key.sign_count
    assert row.last_used_at is not None

    # The sensitive actions are open now: changing passkeys, adding an authenticator app.
    assert _can_change_passkeys(web, csrf)
    form = web.get("/account/totp")
    assert form.status_code == 200, form.text
    found = _SECRET_RE.search(form.text)
    assert found is not None
    seed = totp.decode_secret(html.unescape(found.group(1)))
    code = totp.totp_at_time(seed, services.records.clock.now().timestamp())
    added = web.post("/account/totp", data={"csrf": csrf_of(form), "code": code})
    assert added.status_code == 200, added.text
    assert len(_CODES_RE.findall(added.text)) == 10
    assert actions(services, "mfa_enrol")[-1]["reasons"][0] == "totp authenticator enrolled"


def test_refused_passkey_step_ups_are_ledgered_and_counted(
    services: Services,
    web: TestClient,
    laptop: TestClient,
    alice: tuple[Person, SoftAuthenticator],
) -> None:
    person, key = alice
    sign_in_with_passkey(laptop, person, key)  # another session of Alice's, signed in first
    sign_in_with_passkey(web, person, key)
    _stale(services, web)
    csrf = _step_up_csrf(web)
    laptop_csrf = _step_up_csrf(laptop)
    theirs = post_json(laptop, OPTIONS, laptop_csrf, {}).json()
    with _client(services) as third:
        _, signing_in = begin_sign_in(third, person)  # a pending sign-in's challenge

    def refused(credential: dict[str, object], why: str, count: int) -> None:
        answer = post_json(web, FINISH, csrf, {"credential": credential})
        assert answer.status_code == 401, answer.text
        assert answer.json() == {"error": "The passkey could not be verified."}
        assert session_cookie(answer) is None
        # Committed although refused: the ledger and the account's failure counter.
        assert actions(services, "mfa_failed")[-1]["reasons"] == ["step-up", why]
        assert actions(services, "mfa_failed")[-1]["user"] == person.id
        assert _failed_count(services, person.id) == count

    # A flipped bit in the signature.
    first = post_json(web, OPTIONS, csrf, {}).json()
    refused(key.get(first, flip_signature_bit=True), "passkey signature invalid", 1)
    # A genuine assertion over that challenge, now spent (L3 section 13.4.3).
    refused(key.get(first), "passkey challenge replayed", 2)
    # Another session's challenge: bound to the session that asked for it.
    refused(key.get(theirs), "passkey challenge unknown or issued to another session", 3)
    # A sign-in's challenge is no step-up's either.
    refused(key.get(signing_in), "passkey challenge unknown or issued to another session", 4)
    # No user verification (L3 section 7.2: UV required).
    refused(
        key.get(post_json(web, OPTIONS, csrf, {}).json(), flags=UP),
        "passkey user verification (UV) missing",
        5,
    )
    assert not _can_change_passkeys(web, csrf)  # no refusal refreshed the step-up

    # Five failures: backoff. Even a genuine assertion waits (429), uncounted.
    request = post_json(web, OPTIONS, csrf, {}).json()
    waiting = post_json(web, FINISH, csrf, {"credential": key.get(request)})
    assert waiting.status_code == 429
    assert int(waiting.headers["retry-after"]) >= 1
    assert actions(services, "mfa_failed")[-1]["reasons"] == ["step-up", "too many failed attempts"]
    assert _failed_count(services, person.id) == 5

    clock_of(services).advance(dt.timedelta(seconds=2))
    # The laptop's challenge was not spent by its misuse elsewhere: it still works there.
    done = post_json(laptop, FINISH, laptop_csrf, {"credential": key.get(theirs)})
    assert done.status_code == 200, done.text
    assert done.json() == {"redirect": "/account?notice=step-up"}
    assert _failed_count(services, person.id) == 0
    assert not _can_change_passkeys(web, csrf)  # the laptop stepped up, this session did not


def test_passkey_step_up_needs_the_csrf_header_the_origin_json_and_a_session(
    services: Services, web: TestClient, alice: tuple[Person, SoftAuthenticator]
) -> None:
    person, key = alice
    anonymous = post_json(web, OPTIONS, "x" * 40, {})
    assert anonymous.status_code == 401
    assert anonymous.json()["redirect"] == "/login"
    sign_in_with_passkey(web, person, key)
    csrf = _step_up_csrf(web)
    assert web.post(OPTIONS, json={}).status_code == 403  # no X-CSRF-Token header
    assert post_json(web, OPTIONS, "x" * 40, {}).status_code == 403
    other_origin = web.post(
        OPTIONS, json={}, headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"}
    )
    assert other_origin.status_code == 403
    as_form = web.post(FINISH, data={"credential": "{}"}, headers={"X-CSRF-Token": csrf})
    assert as_form.status_code == 400
    assert actions(services, "mfa_failed") == []  # none of these reached the ceremony
    # The password alone does not step a passkey-only account up (ASVS V7.5.1), and is not
    # checked, so it counts as no guess.
    page = web.get("/account/step-up")
    typed = web.post(
        "/account/step-up", data={"csrf": csrf_of(page), "code": person.password, "next": "/"}
    )
    assert typed.status_code == 401
    assert sessions.STEP_UP_USE_PASSKEY in typed.text
    assert actions(services, "mfa_failed")[-1]["reasons"] == [
        "step-up",
        "password offered by a passkey-only account",
    ]
    assert _failed_count(services, person.id) == 0

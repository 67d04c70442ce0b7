"""The sign-in and account pages over HTTP (TestClient), on SQLite and PostgreSQL.

The client's base URL is https://testserver, so it keeps the `__Host-` cookies (Secure) the
way a browser does. Accounts are made with the back-end functions directly; everything after
that goes through the pages only. OWASP ASVS 5.0 ids name what each test shows.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from egide.app import api_for
from egide.cli.runtime import OPERATOR, Services
from egide.core.clock import FixedClock
from egide.db.engine import transaction
from egide.identity import accounts, login, totp
from egide.identity.models import Account, WebSession
from egide.identity.session_tokens import new_session_token
from egide.web.security import PAGE_CSP
from tests.helpers import issue_token

BASE = "https://testserver"
SESSION = "__Host-egide_session"
PENDING = "__Host-egide_pending"
CSRF = "__Host-egide_csrf"
NAME = "Hélène Dupré-Kerguélen"
EMAIL = "helene.dupre@clinique.example"
PASSWORD = "vélo rouge sous la pluie d'été"
STEP = dt.timedelta(seconds=30)

_CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')
_SECRET_RE = re.compile(r'<code class="secret"[^>]*>([^<]+)</code>')
_CODES_RE = re.compile(r"<li><code>([^<]+)</code></li>")
_ERROR_RE = re.compile(r'<p class="error"[^>]*>([^<]*)</p>')


@dataclass
class Person:
    email: str
    password: str
    secret: bytes | None = None
    recovery: list[str] | None = None


def _client(services: Services) -> TestClient:
    return TestClient(api_for(services), base_url=BASE, follow_redirects=False)


@pytest.fixture
def web(services: Services) -> Iterator[TestClient]:
    with _client(services) as client:
        yield client


def csrf_of(response: httpx.Response) -> str:
    found = _CSRF_RE.search(response.text)
    assert found is not None, response.text
    return html.unescape(found.group(1))


def error_of(response: httpx.Response) -> str:
    found = _ERROR_RE.search(response.text)
    assert found is not None, response.text
    return html.unescape(found.group(1))


def set_cookies(response: httpx.Response) -> dict[str, str]:
    """Cookie name -> its whole Set-Cookie line."""
    lines = response.headers.get_list("set-cookie")
    return {line.split("=", 1)[0]: line for line in lines}


def invite(services: Services, *, email: str = EMAIL, role: str = "physician") -> str:
    with transaction(services.session_factory) as session:
        _, token = accounts.create_account(
            session,
            email=email,
            name=NAME,
            role=role,
            clock=services.records.clock,
            settings=services.settings,
            envelope=services.records.envelope,
            actor=OPERATOR,
        )
    return token


def code_now(services: Services, secret: bytes) -> str:
    return totp.totp_at_time(secret, services.records.clock.now().timestamp())


def accept(web: TestClient, token: str, password: str = PASSWORD) -> httpx.Response:
    form = web.get(f"/invite/{token}")
    assert form.status_code == 200
    return web.post(
        f"/invite/{token}",
        data={"csrf": csrf_of(form), "password": password, "confirm_password": password},
    )


def password_step(web: TestClient, email: str, password: str) -> httpx.Response:
    page = web.get("/login")
    assert page.status_code == 200
    return web.post("/login", data={"csrf": csrf_of(page), "email": email, "password": password})


def enrol(services: Services, web: TestClient, person: Person) -> httpx.Response:
    """First sign-in of a staff member: password, enrolment, recovery codes."""
    first = password_step(web, person.email, person.password)
    assert first.status_code == 303
    assert first.headers["location"] == "/login/enrol"
    page = web.get("/login/enrol")
    assert page.status_code == 200
    found = _SECRET_RE.search(page.text)
    assert found is not None
    person.secret = totp.decode_secret(html.unescape(found.group(1)))
    assert 'src="data:image/svg+xml;base64,' in page.text
    done = web.post(
        "/login/enrol", data={"csrf": csrf_of(page), "code": code_now(services, person.secret)}
    )
    assert done.status_code == 200, done.text
    person.recovery = [html.unescape(c) for c in _CODES_RE.findall(done.text)]
    return done


def sign_in(services: Services, web: TestClient, person: Person, code: str | None = None) -> None:
    """Password then TOTP (or the code given); asserts it ends on /account."""
    assert person.secret is not None
    clock = services.records.clock
    assert isinstance(clock, FixedClock)
    clock.advance(STEP)  # a TOTP code works once: the next sign-in needs the next step
    first = password_step(web, person.email, person.password)
    assert first.status_code == 303
    assert first.headers["location"] == "/login/mfa"
    page = web.get("/login/mfa")
    assert page.status_code == 200
    second = web.post(
        "/login/mfa",
        data={"csrf": csrf_of(page), "code": code or code_now(services, person.secret)},
    )
    assert second.status_code == 303, second.text
    assert second.headers["location"] == "/account"


@pytest.fixture
def person(services: Services) -> Person:
    """A physician who accepted the invitation and enrolled TOTP in a browser of their own."""
    who = Person(EMAIL, PASSWORD)
    with _client(services) as browser:
        assert accept(browser, invite(services)).status_code == 303
        enrol(services, browser, who)
    return who


def session_rows(services: Services) -> int:
    with transaction(services.session_factory) as session:
        return session.scalar(select(func.count()).select_from(WebSession)) or 0


# --- the whole flow ------------------------------------------------------------------------


def test_invitation_enrolment_sign_in_and_sign_out(services: Services, web: TestClient) -> None:
    """Invitation -> password -> TOTP enrolment -> recovery codes -> sign in again with TOTP
    -> sessions listed -> sign out -> the old cookie is dead (ASVS V6.2.2, V6.5.1, V7.4.1,
    V7.5.2)."""
    token = invite(services)
    form = web.get(f"/invite/{token}")
    assert form.status_code == 200
    assert form.headers["content-type"] == "text/html; charset=utf-8"
    assert NAME in form.text  # UTF-8, accents intact
    assert "At least 8 characters" in form.text  # staff: MFA follows, so 8 (ASVS V6.2.1)
    assert 'autocomplete="new-password"' in form.text
    done = accept(web, token)
    assert done.status_code == 303
    assert done.headers["location"] == "/login?notice=password-set"
    assert "Sign in with it" in web.get("/login?notice=password-set").text
    # The link is single use.
    assert web.get(f"/invite/{token}").status_code == 404

    me = Person(EMAIL, PASSWORD)
    codes_page = enrol(services, web, me)
    assert me.recovery is not None
    assert len(me.recovery) == 10
    assert len(set(me.recovery)) == 10
    assert codes_page.headers["cache-control"] == "no-store"
    assert 'href="/account">I have saved them' in codes_page.text
    first_cookie = web.cookies.get(SESSION)
    assert first_cookie

    account = web.get("/account")
    assert account.status_code == 200
    assert NAME in account.text
    assert "physician" in account.text
    assert account.text.count('/revoke"') == 1

    # Sign in again from a second browser with the next TOTP code.
    with _client(services) as other:
        sign_in(services, other, me)
        listed = other.get("/account")
        assert listed.status_code == 200
        assert listed.text.count('/revoke"') == 2
        assert listed.text.count("(this session)") == 1
        second_cookie = other.cookies.get(SESSION)
        assert second_cookie
        assert second_cookie != first_cookie

        out = other.post("/logout", data={"csrf": csrf_of(listed)})
        assert out.status_code == 303
        assert out.headers["location"] == "/login?notice=signed-out"
        cleared = set_cookies(out)
        assert SESSION in cleared
        assert "max-age=0" in cleared[SESSION].lower()
        assert other.get("/account").status_code == 303

    # The cookie stolen before the logout no longer opens anything (ASVS V7.4.1).
    with _client(services) as thief:
        thief.cookies.set(SESSION, second_cookie, domain="testserver.local")
        stolen = thief.get("/account")
        assert stolen.status_code == 303
        assert stolen.headers["location"] == "/login"
    # The first browser is still signed in and now sees one session.
    assert web.get("/account").text.count('/revoke"') == 1


def test_revoking_another_session_from_the_account_page(
    services: Services, web: TestClient, person: Person
) -> None:
    sign_in(services, web, person)
    with _client(services) as laptop:
        sign_in(services, laptop, person)
        page = web.get("/account")
        ids = re.findall(r'action="/account/sessions/([^/"]+)/revoke"', page.text)
        assert len(ids) >= 2
        current = re.search(
            r'<tr class="current">.*?action="/account/sessions/([^/"]+)/revoke"', page.text, re.S
        )
        assert current is not None
        others = [i for i in ids if i != current.group(1)]
        for session_id in others:
            gone = web.post(f"/account/sessions/{session_id}/revoke", data={"csrf": csrf_of(page)})
            assert gone.status_code == 303
            assert gone.headers["location"] == "/account?notice=session-revoked"
        assert laptop.get("/account").status_code == 303  # the laptop is signed out
        assert web.get("/account").status_code == 200
        # Revoking the current one signs this browser out.
        last = web.post(
            f"/account/sessions/{current.group(1)}/revoke", data={"csrf": csrf_of(page)}
        )
        assert last.status_code == 303
        assert last.headers["location"] == "/login?notice=signed-out"
        assert web.get("/account").status_code == 303


def test_recovery_code_signs_in_once(services: Services, web: TestClient, person: Person) -> None:
    """ASVS V6.5.1: a recovery code is usable once."""
    assert person.recovery is not None
    code = person.recovery[0]
    sign_in(services, web, person, code=code)
    with _client(services) as again:
        first = password_step(again, person.email, person.password)
        assert first.headers["location"] == "/login/mfa"
        page = again.get("/login/mfa")
        refused = again.post("/login/mfa", data={"csrf": csrf_of(page), "code": code})
        assert refused.status_code == 401
        assert error_of(refused) == login.WRONG_CODE
        assert SESSION not in set_cookies(refused)


def test_totp_code_is_not_accepted_twice(
    services: Services, web: TestClient, person: Person
) -> None:
    """ASVS V6.5.1: the code used at enrolment is refused at the next sign-in (same step)."""
    assert person.secret is not None
    used = code_now(services, person.secret)
    first = password_step(web, person.email, person.password)
    assert first.headers["location"] == "/login/mfa"
    page = web.get("/login/mfa")
    refused = web.post("/login/mfa", data={"csrf": csrf_of(page), "code": used})
    assert refused.status_code == 401
    assert SESSION not in web.cookies


def test_change_password(services: Services, web: TestClient, person: Person) -> None:
    """ASVS V6.2.2, V6.2.3: current and new password; other sessions are signed out (V7.4.3)."""
    sign_in(services, web, person)
    with _client(services) as phone:
        sign_in(services, phone, person)
        form = web.get("/account/password")
        assert form.status_code == 200
        assert form.headers["cache-control"] == "no-store"
        assert 'autocomplete="current-password"' in form.text
        new = "un ciel bleu au-dessus du port de Brest"
        wrong = web.post(
            "/account/password",
            data={
                "csrf": csrf_of(form),
                "current_password": "not my password at all",
                "new_password": new,
                "confirm_password": new,
            },
        )
        assert wrong.status_code == 401
        weak = web.post(
            "/account/password",
            data={
                "csrf": csrf_of(form),
                "current_password": person.password,
                "new_password": "password",
                "confirm_password": "password",
            },
        )
        assert weak.status_code == 400
        assert "common" in error_of(weak)
        done = web.post(
            "/account/password",
            data={
                "csrf": csrf_of(form),
                "current_password": person.password,
                "new_password": new,
                "confirm_password": new,
            },
        )
        assert done.status_code == 303
        assert done.headers["location"] == "/account?notice=password-changed"
        assert web.get("/account").status_code == 200
        assert phone.get("/account").status_code == 303
    person.password = new
    with _client(services) as fresh:
        sign_in(services, fresh, person)


# --- session fixation ------------------------------------------------------------------------


def test_login_issues_a_new_session_token(
    services: Services, web: TestClient, person: Person
) -> None:
    """ASVS V7.2.4: a cookie planted before sign-in is replaced by a new token; each sign-in
    issues a different one."""
    planted = new_session_token()
    web.cookies.set(SESSION, planted, domain="testserver.local")
    sign_in(services, web, person)
    first = web.cookies.get(SESSION)
    assert first is not None
    assert first != planted
    with _client(services) as attacker:
        attacker.cookies.set(SESSION, planted, domain="testserver.local")
        assert attacker.get("/account").status_code == 303
    sign_in(services, web, person)
    second = web.cookies.get(SESSION)
    assert second is not None
    assert second not in {planted, first}


# --- CSRF and origin ---------------------------------------------------------------------------


def test_login_without_or_with_a_wrong_csrf_token_is_refused(
    services: Services, web: TestClient, person: Person
) -> None:
    """ASVS V3.5.1 (login CSRF): no token, a forged one, or a token without its cookie."""
    before = session_rows(services)
    page = web.get("/login")
    token = csrf_of(page)
    assert CSRF in set_cookies(page)
    attempts = [
        {"email": person.email, "password": person.password},
        {"email": person.email, "password": person.password, "csrf": "x" * 86},
        {"email": person.email, "password": person.password, "csrf": token[:-2] + "AA"},
    ]
    for data in attempts:
        refused = web.post("/login", data=data)
        assert refused.status_code == 403
        assert "nothing was done" in refused.text
        assert PENDING not in set_cookies(refused)
    # The right token but no cookie (a cross-site form cannot send ours).
    with _client(services) as other:
        refused = other.post(
            "/login", data={"email": person.email, "password": person.password, "csrf": token}
        )
        assert refused.status_code == 403
    # The token of another browser's cookie does not fit this one.
    with _client(services) as other:
        other.get("/login")
        refused = other.post(
            "/login", data={"email": person.email, "password": person.password, "csrf": token}
        )
        assert refused.status_code == 403
    assert session_rows(services) == before


def test_signed_in_forms_need_the_session_csrf_token(
    services: Services, web: TestClient, person: Person
) -> None:
    """ASVS V3.5.1: password change, session revocation and logout refuse a missing token,
    a wrong one, and another session's token; nothing changes."""
    sign_in(services, web, person)
    with _client(services) as other:
        sign_in(services, other, person)
        foreign = csrf_of(other.get("/account"))
    page = web.get("/account")
    listed_before = page.text.count('/revoke"')
    session_id = re.findall(r'action="/account/sessions/([^/"]+)/revoke"', page.text)[0]
    with transaction(services.session_factory) as session:
        hash_before = session.scalar(select(Account.password_hash))
    new = "un ciel bleu au-dessus du port de Brest"
    for bad in (None, "", "A" * 86, foreign):
        extra = {} if bad is None else {"csrf": bad}
        changed = web.post(
            "/account/password",
            data={
                **extra,
                "current_password": person.password,
                "new_password": new,
                "confirm_password": new,
            },
        )
        assert changed.status_code == 403
        assert web.post(f"/account/sessions/{session_id}/revoke", data=extra).status_code == 403
        assert web.post("/logout", data=extra).status_code == 403
    with transaction(services.session_factory) as session:
        assert session.scalar(select(Account.password_hash)) == hash_before
    listed = web.get("/account")
    assert listed.status_code == 200
    assert listed.text.count('/revoke"') == listed_before


def test_cross_origin_post_is_refused_even_with_a_valid_token(
    services: Services, web: TestClient, person: Person
) -> None:
    """ASVS V3.5.1 (defence in depth): the Origin header must be our own."""
    sign_in(services, web, person)
    page = web.get("/account")
    evil = web.post(
        "/logout", data={"csrf": csrf_of(page)}, headers={"Origin": "https://evil.example"}
    )
    assert evil.status_code == 403
    site = web.post(
        "/logout", data={"csrf": csrf_of(page)}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert site.status_code == 403
    assert web.get("/account").status_code == 200
    ours = web.post("/logout", data={"csrf": csrf_of(page)}, headers={"Origin": BASE})
    assert ours.status_code == 303
    assert web.get("/account").status_code == 303


# --- failures ------------------------------------------------------------------------------


def test_wrong_password_and_unknown_email_answer_alike(
    services: Services, web: TestClient, person: Person
) -> None:
    """ASVS V6.3.8: same status and message whether the account exists or not."""
    wrong = password_step(web, person.email, "not the password, sorry")
    unknown = password_step(web, "nobody@clinique.example", "not the password, sorry")
    assert wrong.status_code == unknown.status_code == 401
    assert error_of(wrong) == error_of(unknown) == login.WRONG_CREDENTIALS
    assert PENDING not in set_cookies(wrong)
    assert 'value="nobody@clinique.example"' in unknown.text  # the e-mail is kept
    assert "not the password" not in unknown.text  # the password never is


def test_repeated_failures_are_throttled_with_retry_after(
    services: Services, web: TestClient, person: Person
) -> None:
    """ASVS V6.3.1 / V2.4.1: after a few failures the account answers 429 with Retry-After."""
    statuses = []
    for _ in range(8):
        answer = password_step(web, person.email, "guess number one two three")
        statuses.append(answer.status_code)
        if answer.status_code == 429:
            assert int(answer.headers["retry-after"]) >= 1
            break
    assert statuses[0] == 401
    assert statuses[-1] == 429


def test_pages_without_a_session_go_to_sign_in(web: TestClient, services: Services) -> None:
    """The cookie is the only credential of the pages: a bearer token does not sign in, and
    the FHIR API does not accept the cookie."""
    bearer = {"Authorization": f"Bearer {issue_token(services, 'service')}"}
    for path in ("/account", "/account/password"):
        answer = web.get(path, headers=bearer)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/login"
    assert web.get("/login/mfa").headers["location"] == "/login?notice=expired"
    assert web.get("/invite/" + new_session_token()).status_code == 404


def test_fhir_api_ignores_the_session_cookie(
    services: Services, web: TestClient, person: Person
) -> None:
    sign_in(services, web, person)
    assert web.get("/fhir/Patient").status_code == 401


# --- headers and cookies -------------------------------------------------------------------


def test_security_headers_on_pages(services: Services, web: TestClient, person: Person) -> None:
    """ASVS V3.4.3, V3.4.4, V3.4.5, V3.4.6, V3.4.8, V14.3.2."""
    sign_in(services, web, person)
    for path in ("/login", "/account", "/account/password"):
        answer = web.get(path, follow_redirects=True)
        assert answer.status_code == 200
        headers = answer.headers
        assert headers["content-security-policy"] == PAGE_CSP
        assert "frame-ancestors 'none'" in PAGE_CSP
        assert headers["cache-control"] == "no-store"
        assert headers["x-content-type-options"] == "nosniff"
        # same-origin, not no-referrer: under no-referrer browsers send `Origin: null`.
        assert headers["referrer-policy"] == "same-origin"
        assert headers["cross-origin-opener-policy"] == "same-origin"
        assert headers.get_list("content-security-policy") == [PAGE_CSP]  # not duplicated
        # No inline script: the only script is the passkeys' static file, from our origin.
        scripts = re.findall(r"<script[^>]*>[^<]*</script>", answer.text)
        assert answer.text.count("<script") == len(scripts)
        assert set(scripts) <= {'<script src="/static/passkeys.js" defer></script>'}
        assert "style=" not in answer.text
    css = web.get("/static/egide.css")
    assert css.status_code == 200
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    assert web.get("/static/nope.js").status_code == 404


def _attributes(line: str) -> dict[str, str]:
    parts = [p.strip() for p in line.split(";")[1:]]
    return {p.split("=", 1)[0].lower(): (p.split("=", 1)[1] if "=" in p else "") for p in parts}


def test_cookie_attributes(services: Services, web: TestClient) -> None:
    """ASVS V3.3.1-V3.3.4: `__Host-` prefix, Secure, HttpOnly, SameSite=Strict, Path=/, no
    Domain; the session cookie has no Max-Age, the pending one 300 s."""
    token = invite(services, email="nurse@clinique.example", role="nurse")
    csrf_line = set_cookies(web.get(f"/invite/{token}"))[CSRF]
    accept(web, token)
    page = web.get("/login")
    assert CSRF not in set_cookies(page)  # the browser keeps its nonce
    first = web.post(
        "/login",
        data={"csrf": csrf_of(page), "email": "nurse@clinique.example", "password": PASSWORD},
    )
    assert first.status_code == 303
    pending_line = set_cookies(first)[PENDING]
    enrol_page = web.get("/login/enrol")
    found = _SECRET_RE.search(enrol_page.text)
    assert found is not None
    secret = totp.decode_secret(html.unescape(found.group(1)))
    done = web.post(
        "/login/enrol", data={"csrf": csrf_of(enrol_page), "code": code_now(services, secret)}
    )
    assert done.status_code == 200
    session_line = set_cookies(done)[SESSION]
    for line in (csrf_line, pending_line, session_line):
        assert line.startswith("__Host-")
        attrs = _attributes(line)
        assert "secure" in attrs
        assert "httponly" in attrs
        assert attrs["samesite"].lower() == "strict"
        assert attrs["path"] == "/"
        assert "domain" not in attrs
    assert "max-age" not in _attributes(session_line)
    assert "expires" not in _attributes(session_line)
    assert _attributes(pending_line)["max-age"] == "300"
    value = session_line.split(";", 1)[0].split("=", 1)[1]
    assert len(value) == 43  # 256 bits, base64url (ASVS V7.2.3)

"""The authorization endpoint of SMART App Launch 2: sign-in, consent, redirect with a code.

| route | what |
|---|---|
| `GET /oauth/authorize` | check the request, then the consent page (or `/login?next=...`) |
| `POST /oauth/authorize` | the person's decision (Allow or Deny), CSRF-protected like every form |

The request is checked first (RFC 6749 section 4.1.1; RFC 7636 section 4.3; SMART App Launch
2 "Obtain authorization code"), before any sign-in, so a bad client or redirect URI is shown to the
person and never redirected to (RFC 6749 section 4.1.2.1); other errors go back to the app
with `error` and `state`. The consent page lists the scopes in plain words, the app's name,
where it will be sent and for how long (ASVS 5.0 V10.7.1, V10.7.2). The decision form posts
the request's parameters back and they are checked again, with the session and its CSRF
token (ASVS V3.5.1). Allow redirects with `code`, `state` and `iss` (RFC 9207, against mix-up
attacks); Deny with `error=access_denied`. The logic is in `egide.identity.oauth`.

| `GET /account/apps` | the apps the person allowed: name, scopes in plain words, when, until when |
| `POST /account/apps/{client_id}/revoke` | revoke every token of that app for this person |

The apps page lets a person review and withdraw their consents (ASVS 5.0 V10.7.3; V10.4.9:
tokens revocable by the user); the revoke form is CSRF-protected like every form (V3.5.1).
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from egide.access.scopes import describe
from egide.core.errors import EgideError
from egide.identity import oauth
from egide.web.security import PAGE_CSP
from egide.web.views import (
    _ID_RE,
    _client,
    _csrf_for,
    _ctx,
    _fmt,
    _notice,
    _page,
    _redirect,
    _refused,
    _session_post,
    _signed_in,
    _to_login,
    _tx,
)

router = APIRouter(include_in_schema=False)
_REQUEST_FIELDS = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "aud",
        "code_challenge",
        "code_challenge_method",
        "response_mode",
        "launch",
        "request",
        "request_uri",
    }
)


def install(app: FastAPI) -> None:
    """Mount the authorization endpoint (after `egide.web.views.install`)."""
    app.include_router(router)


def _bases(request: Request) -> tuple[str, str]:
    base = oauth.public_base(_ctx(request).settings.public_base_url, str(request.base_url))
    return base, oauth.fhir_base_of(base)


def _answer_error(error: oauth.AuthorizationError) -> Response:
    location = error.location()
    if location is None:
        # Unknown client or redirect URI: tell the person, send nothing anywhere.
        return _refused(
            f"This app's sign-in request is invalid ({error.failure.description}).", 400
        )
    return _redirect(location)


def _form_action_origin(redirect_uri: str) -> str:
    """The CSP source of the app's redirect URI: browsers apply `form-action` to the
    redirect that follows the consent form too."""
    parts = urlsplit(redirect_uri)
    if parts.scheme in {"http", "https"}:
        return f"{parts.scheme}://{parts.netloc}"
    return f"{parts.scheme}:"


@router.get("/oauth/authorize")
async def authorize(request: Request) -> Response:
    ctx = _ctx(request)
    _, fhir = _bases(request)
    pairs = list(request.query_params.multi_items())
    checked = await _tx(ctx, lambda s: oauth.check_authorization_request(s, pairs, fhir_base=fhir))
    if isinstance(checked, oauth.AuthorizationError):
        return _answer_error(checked)
    info = await _signed_in(request)
    if info is None:
        here = "/oauth/authorize?" + request.url.query
        target = "/login?next=" + quote(here, safe="")
        if request.headers.get("sec-fetch-site") == "cross-site":
            # The session cookie is SameSite=Strict: a browser withholds it on a navigation
            # from another site. One click here makes the next request same-site, so a
            # person already signed in is not asked to sign in again.
            return _page("oauth_continue.html", title="Continue to Égide", target=here)
        return _redirect(target)
    refusal = oauth.check_account_scopes(
        checked, role=info.principal.role, patient_id=info.principal.patient_id
    )
    if refusal is not None:
        return _answer_error(refusal)
    origin = _form_action_origin(checked.redirect_uri)
    return _page(
        "oauth_consent.html",
        title="Allow this app?",
        signed_in=True,
        csrf=_csrf_for(info),
        name=info.principal.name,
        client_name=checked.client_name,
        scopes=[describe(s) for s in checked.scopes],
        ignored=", ".join(checked.ignored),
        redirect_uri=checked.redirect_uri,
        fields=checked.form_fields(fhir),
        headers={
            "Content-Security-Policy": PAGE_CSP.replace(
                "form-action 'self'", f"form-action 'self' {origin}"
            )
        },
    )


@router.post("/oauth/authorize")
async def decide(request: Request) -> Response:
    ctx = _ctx(request)
    checked_post = await _session_post(request)
    if not isinstance(checked_post, tuple):
        return checked_post
    info, form = checked_post
    base, fhir = _bases(request)
    pairs = [(k, v) for k, v in form.items() if k in _REQUEST_FIELDS]
    checked = await _tx(ctx, lambda s: oauth.check_authorization_request(s, pairs, fhir_base=fhir))
    if isinstance(checked, oauth.AuthorizationError):
        return _answer_error(checked)
    refusal = oauth.check_account_scopes(
        checked, role=info.principal.role, patient_id=info.principal.patient_id
    )
    if refusal is not None:
        return _answer_error(refusal)
    ip, device = _client(request)
    decision = form.get("decision")
    if decision == "allow":
        code = await _tx(
            ctx,
            lambda s: oauth.issue_code(
                s,
                request=checked,
                account_id=info.account_id,
                clock=ctx.clock,
                ip=ip,
                device=device,
            ),
        )
        params = {"code": code, "state": checked.state, "iss": base}
        return _redirect(oauth.redirect_with(checked.redirect_uri, params))
    if decision == "deny":
        await _tx(
            ctx,
            lambda s: oauth.record_denial(
                s,
                request=checked,
                account_id=info.account_id,
                clock=ctx.clock,
                ip=ip,
                device=device,
            ),
        )
        params = {
            "error": "access_denied",
            "error_description": "the user denied the request",
            "state": checked.state,
        }
        return _redirect(oauth.redirect_with(checked.redirect_uri, params))
    return _refused("Choose Allow or Deny.", 400)


# --- the apps a person allowed (ASVS V10.7.3) ----------------------------------------------


@router.get("/account/apps")
async def apps(request: Request) -> Response:
    ctx = _ctx(request)
    info = await _signed_in(request)
    if info is None:
        return _to_login()
    grants = await _tx(
        ctx, lambda s: oauth.list_grants(s, account_id=info.account_id, clock=ctx.clock)
    )
    return _page(
        "account_apps.html",
        title="Apps with access to your account",
        signed_in=True,
        csrf=_csrf_for(info),
        apps=[
            {
                "id": grant.client_id,
                "name": grant.client_name,
                "scopes": [describe(s) for s in grant.scopes],
                "granted": _fmt(grant.granted_at),
                "expires": _fmt(grant.expires_at),
            }
            for grant in grants
        ],
        notice=_notice(request),
    )


@router.post("/account/apps/{client_id}/revoke")
async def revoke_app(request: Request, client_id: str) -> Response:
    ctx = _ctx(request)
    checked = await _session_post(request)
    if not isinstance(checked, tuple):
        return checked
    info, _ = checked
    if _ID_RE.fullmatch(client_id) is None:
        return _refused("No such app.", 404)
    try:
        await _tx(
            ctx,
            lambda s: oauth.revoke_grant(
                s, account_id=info.account_id, client_id=client_id, clock=ctx.clock
            ),
        )
    except EgideError as exc:
        return _refused(exc.message, exc.status)
    return _redirect("/account/apps?notice=app-revoked")

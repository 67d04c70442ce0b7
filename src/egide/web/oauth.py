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
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from egide.access.scopes import describe
from egide.identity import oauth
from egide.web.security import PAGE_CSP
from egide.web.views import (
    _client,
    _csrf_for,
    _ctx,
    _page,
    _redirect,
    _refused,
    _session_post,
    _signed_in,
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

"""OAuth 2.0 endpoints of the API: SMART discovery and the token endpoint.

* `GET /fhir/.well-known/smart-configuration`: SMART App Launch 2 section "Conformance"
  (discovery of the authorization and token endpoints, the grants, PKCE methods, client
  authentication methods, scopes and capabilities). Public, like `/fhir/metadata`.
* `POST /oauth/token`: RFC 6749 section 3.2 (the token endpoint), with the authorization code
  grant and PKCE (RFC 6749 section 4.1.3; RFC 7636 section 4.5) and the client credentials
  grant with a JWT client assertion (RFC 6749 section 4.4; RFC 7523 section 2.2; SMART Backend
  Services). Answers are JSON with `Cache-Control: no-store` (RFC 6749 section 5.1); errors are
  `{"error", "error_description"}` (section 5.2).

* `POST /oauth/revoke`: RFC 7009 token revocation. The client authenticates as at the token
  endpoint (public: `client_id`; confidential and backend: `private_key_jwt`); the answer is
  200 with an empty body whether or not the token was known (RFC 7009 section 2.2), and a
  client revokes only its own tokens (section 2.1). ASVS 5.0 V10.4.9.

The authorization endpoint is a page (`egide.web.oauth`): it needs the signed-in browser.
The logic lives in `egide.identity.oauth`; this module parses and answers.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session

from egide.api.context import ApiContext
from egide.identity import oauth
from egide.records.unit_of_work import run_in_transaction

MAX_TOKEN_REQUEST_BYTES = 16 * 1024  # a client assertion is at most 8 KiB
_FORM = "application/x-www-form-urlencoded"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
CAPABILITIES = [
    "launch-standalone",
    "client-public",
    "client-confidential-asymmetric",
    "context-standalone-patient",
    "permission-patient",
    "permission-user",
    "permission-v2",
]
SCOPES_SUPPORTED = [
    "launch/patient",
    "patient/*.cruds",
    "patient/*.rs",
    "user/*.cruds",
    "user/*.rs",
    "system/*.cruds",
    "system/*.rs",
]

router = APIRouter(include_in_schema=True)


def _ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.egide
    return ctx


def server_base(request: Request) -> str:
    return oauth.public_base(_ctx(request).settings.public_base_url, str(request.base_url))


def smart_configuration(base: str) -> dict[str, Any]:
    """The SMART App Launch 2 discovery document for the server at `base`."""
    return {
        "issuer": base,
        "authorization_endpoint": oauth.authorize_endpoint_of(base),
        "token_endpoint": oauth.token_endpoint_of(base),
        # RFC 7009 token revocation (SMART App Launch 2 lists `revocation_endpoint`).
        "revocation_endpoint": oauth.revocation_endpoint_of(base),
        "revocation_endpoint_auth_methods_supported": ["private_key_jwt", "none"],
        "grant_types_supported": ["authorization_code", "client_credentials"],
        "response_types_supported": ["code"],
        # RFC 9207: the authorization response carries `iss` (against mix-up attacks).
        "authorization_response_iss_parameter_supported": True,
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "none"],
        "token_endpoint_auth_signing_alg_values_supported": list(oauth.ASSERTION_ALGS),
        "scopes_supported": SCOPES_SUPPORTED,
        "capabilities": CAPABILITIES,
    }


@router.get("/fhir/.well-known/smart-configuration", tags=["oauth"])
async def discovery(request: Request) -> JSONResponse:
    """SMART discovery (no token needed)."""
    return JSONResponse(smart_configuration(server_base(request)))


def _error(failure: oauth.OAuthFailure) -> JSONResponse:
    headers = dict(NO_STORE)
    if failure.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="egide"'
    return JSONResponse(failure.body(), status_code=failure.status, headers=headers)


async def _pairs(request: Request) -> list[tuple[str, str]] | None:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != _FORM:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_TOKEN_REQUEST_BYTES:
            return None
        chunks.append(chunk)
    try:
        return parse_qsl(
            b"".join(chunks).decode("utf-8"),
            keep_blank_values=True,
            max_num_fields=20,
            errors="strict",
        )
    except (UnicodeDecodeError, ValueError):
        return None


@router.post("/oauth/token", tags=["oauth"])
async def token(request: Request) -> Response:
    """The token endpoint: form parameters in, a bearer token (or an OAuth error) out."""
    ctx = _ctx(request)
    pairs = await _pairs(request)
    if pairs is None:
        return _error(
            oauth.OAuthFailure(
                "invalid_request", f"send the parameters as {_FORM} (at most 16 KiB)"
            )
        )
    if request.headers.get("authorization"):
        # No client secrets here: HTTP Basic client authentication is not offered.
        return _error(
            oauth.OAuthFailure(
                "invalid_client", "use private_key_jwt or a public client with PKCE", 401
            )
        )
    ip = request.client.host if request.client else None
    device = request.headers.get("user-agent", "")[:128] or None
    endpoint = oauth.token_endpoint_of(server_base(request))

    def work(session: Session) -> oauth.TokenResult | oauth.OAuthFailure:
        return oauth.token_request(
            session,
            pairs=pairs,
            token_endpoint=endpoint,
            clock=ctx.records.clock,
            ip=ip,
            device=device,
        )

    result = await run_in_threadpool(run_in_transaction, ctx.session_factory, work)
    if isinstance(result, oauth.OAuthFailure):
        return _error(result)
    return JSONResponse(result.body(), headers=NO_STORE)


@router.post("/oauth/revoke", tags=["oauth"])
async def revoke(request: Request) -> Response:
    """RFC 7009 revocation: `token` (and an optional `token_type_hint`) with the client's
    authentication; 200 even for an unknown token (RFC 7009 section 2.2)."""
    ctx = _ctx(request)
    pairs = await _pairs(request)
    if pairs is None:
        return _error(
            oauth.OAuthFailure(
                "invalid_request", f"send the parameters as {_FORM} (at most 16 KiB)"
            )
        )
    if request.headers.get("authorization"):
        return _error(
            oauth.OAuthFailure(
                "invalid_client", "use private_key_jwt or a public client's client_id", 401
            )
        )
    ip = request.client.host if request.client else None
    device = request.headers.get("user-agent", "")[:128] or None
    base = server_base(request)

    def work(session: Session) -> oauth.OAuthFailure | None:
        return oauth.revoke_request(
            session,
            pairs=pairs,
            token_endpoint=oauth.token_endpoint_of(base),
            revocation_endpoint=oauth.revocation_endpoint_of(base),
            clock=ctx.records.clock,
            ip=ip,
            device=device,
        )

    failure = await run_in_threadpool(run_in_transaction, ctx.session_factory, work)
    if failure is not None:
        return _error(failure)
    return Response(status_code=200, headers=NO_STORE)


def install(app: FastAPI) -> None:
    """Attach the routes; before the FHIR router, whose `/{type}/{id}` would shadow them."""
    app.include_router(router)

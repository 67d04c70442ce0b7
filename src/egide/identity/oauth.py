"""OAuth 2.0 for apps: SMART App Launch 2 and SMART Backend Services (the authorization server).

Security role: this is how a third-party app gets a bearer token for the FHIR API, so every
rule below is one of the classic OAuth holes closed (OWASP ASVS 5.0 chapter V10; RFC 9700,
OAuth 2.0 Security Best Current Practice).

Clients are registered by the operator (`egide client ...`), never dynamically:

* `public`: a user-facing app that keeps no secret (a browser or mobile app). It uses the
  authorization code grant with PKCE (RFC 6749 section 4.1; RFC 7636) and authenticates with
  nothing at the token endpoint (`token_endpoint_auth_method` "none").
* `confidential`: a user-facing app with a server: the same grant, and it authenticates at the
  token endpoint with a signed client assertion (`private_key_jwt`, RFC 7523 section 2.2).
* `backend`: a service with no user (SMART Backend Services): the client credentials grant
  (RFC 6749 section 4.4) with a signed client assertion, `system/` scopes only.

Authorization code grant (SMART App Launch 2, "Launch App: Standalone Launch" and "Obtain
authorization code"):

* `redirect_uri` is required and compared to the registered ones by exact string (RFC 6749
  section 3.1.2.3; ASVS V10.4.1); with an unknown client or redirect URI nothing is sent
  anywhere (RFC 6749 section 4.1.2.1: the error is shown to the user, not redirected).
* PKCE is mandatory and S256 only: `plain` is refused (RFC 7636 section 4.2; SMART App Launch
  2 "SHALL ... S256"; ASVS V10.4.6). `state` is required (SMART).
* `aud` must be this server's FHIR base URL (SMART App Launch 2), so a token asked for another
  resource server is never issued here (ASVS V10.3.1). Only `response_type=code` and the
  default query response mode are accepted (ASVS V10.4.4, V10.4.12).
* The signed-in user sees a consent page listing the scopes in plain words and chooses Allow
  or Deny (ASVS V10.7.1, V10.7.2).
* The code holds 256 random bits, is stored as SHA-256, lives `CODE_SECONDS` (60 s; ASVS
  V10.4.3 level 3) and is single use: a second presentation revokes every token issued from it
  (RFC 6749 section 10.5; ASVS V10.4.2). It is bound to its client, redirect URI and PKCE
  challenge.

Client credentials (SMART Backend Services, "Obtain access token"): the client assertion is a
JWT signed with RS384 or ES384 by a key of the client's registered JWKS (found by `kid`), with
`iss` = `sub` = the client id, `aud` = the token endpoint URL, `exp` at most five minutes
ahead and a `jti` never seen before (kept in `identity_oauth_jti` until it expires; RFC 7523
section 3; ASVS V10.4.10, V10.4.16). Keys named in the JWT header (`jku`, `jwk`, `x5u`) are
never fetched nor trusted: only the registered JWKS counts.

Access tokens are opaque (`egide_at_` + 256 random bits), stored as SHA-256, valid
`TOKEN_SECONDS`; no refresh tokens are issued (ASVS V10.4.5, V10.4.8 do not arise). A token
stands for its user (their role, their patient compartment) or its backend client (role
`service`) and carries its scopes, which `access.scopes` applies as an upper bound on every
request (ASVS V10.3.2). A token of a disabled account or client stops working at once.

Revocation (RFC 7009; ASVS V10.4.9, V10.7.3): a client revokes its own access tokens at
`POST /oauth/revoke` (`revoke_request`), authenticated as at the token endpoint (its id alone
when public, a `private_key_jwt` assertion otherwise). The answer is 200 whether the token was
live, expired, unknown or another client's (RFC 7009 section 2.2), so the endpoint tells no
client anything about tokens that are not its own; another client's token is left alone (RFC
7009 section 2.1: "verifies whether the token was issued to the client making the revocation
request") and the attempt is in the ledger. A person lists the apps they granted and revokes
one (`list_grants`, `revoke_grant`: the `/account/apps` page), and their tokens are revoked
with their web sessions when the password changes, the MFA is reset, the role changes or the
account is disabled (`revoke_account_tokens`, called by `accounts`).

Every grant, refusal and revocation is appended to the ledger in the caller's transaction
(DESIGN.md contract 2); the public functions return failures rather than raising them, so the
caller commits the audit, the spent code and the spent `jti` together.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry
from sqlalchemy import and_, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from egide.access.permissions import Role
from egide.access.scopes import LAUNCH_PATIENT, parse_scope, parse_scopes, within
from egide.core.clock import Clock
from egide.core.errors import BadRequest, NotFound
from egide.core.ids import RandomSource, SystemRandom, new_id
from egide.core.principal import Principal, fhir_user_for
from egide.identity import session_tokens
from egide.identity.models import Account, OAuthClient, OAuthCode, OAuthJti, OAuthToken
from egide.ledger.service import Act, Action, Outcome, append

PUBLIC, CONFIDENTIAL, BACKEND = "public", "confidential", "backend"
KINDS = (PUBLIC, CONFIDENTIAL, BACKEND)
CODE_SECONDS = 60  # ASVS 5.0 V10.4.3: at most 1 minute at level 3
TOKEN_SECONDS = 3600
ASSERTION_MAX_SECONDS = 300  # SMART Backend Services: exp no more than five minutes ahead
CLOCK_SKEW_SECONDS = 60  # tolerated for `iat` and `nbf` only
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# SMART Backend Services: servers SHALL support RS384 and ES384; Égide accepts only those.
ASSERTION_ALGS = ("ES384", "RS384")
MAX_ASSERTION_BYTES = 8192
MAX_JTI = 256
MIN_RSA_BITS = 2048
TOKEN_PREFIX = "egide_at_"  # noqa: S105 - a public prefix that lets secret scanners spot leaks
_TOKEN_RE = re.compile(r"egide_at_[A-Za-z0-9_-]{43}")
_CHALLENGE_RE = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url(SHA-256), no padding
_VERIFIER_RE = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636 section 4.1
_STATE_MAX = 512
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}
MAX_REDIRECT_URIS = 10
MAX_REDIRECT_URI_LENGTH = 2000
DEFAULT_APP_SCOPES = "launch/patient patient/*.rs user/*.rs"
DEFAULT_BACKEND_SCOPES = "system/*.rs"


# --- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class OAuthFailure:
    """An OAuth error response (RFC 6749 sections 4.1.2.1 and 5.2)."""

    error: str
    description: str
    status: int = 400

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


_T = TypeVar("_T")


class _Refused(Exception):  # internal control flow, caught in this module
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.failure = OAuthFailure(error, description, status)


@dataclass(frozen=True)
class ClientView:
    client_id: str
    name: str
    kind: str
    redirect_uris: tuple[str, ...]
    scopes: str
    created_at: dt.datetime
    disabled: bool


@dataclass(frozen=True)
class TokenResult:
    """A successful token response (RFC 6749 section 5.1; SMART App Launch 2)."""

    access_token: str
    expires_in: int
    scope: str
    patient: str | None

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": self.scope,
        }
        if self.patient is not None:
            out["patient"] = self.patient
        return out


@dataclass(frozen=True)
class GrantView:
    """An app a person granted access to: its live tokens, taken together (ASVS V10.7.3)."""

    client_id: str
    client_name: str
    scopes: tuple[str, ...]
    granted_at: dt.datetime  # the most recent grant
    expires_at: dt.datetime  # when the last of its tokens expires


@dataclass(frozen=True)
class AuthorizationRequest:
    """A checked authorization request, ready for the consent page."""

    client_id: str
    client_name: str
    redirect_uri: str
    state: str
    code_challenge: str
    scopes: tuple[str, ...]  # what the token would carry (ignored scopes dropped)
    ignored: tuple[str, ...]  # asked for, understood, not granted (openid, fhirUser, ...)

    def form_fields(self, fhir_base: str) -> dict[str, str]:
        """The parameters the consent form posts back (checked again on the way in)."""
        return {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": " ".join((*self.scopes, *self.ignored)),
            "state": self.state,
            "aud": fhir_base,
            "code_challenge": self.code_challenge,
            "code_challenge_method": "S256",
        }


@dataclass(frozen=True)
class AuthorizationError:
    """A refused authorization request. `redirect` is where the error may be sent (None: the
    client or its redirect URI is unknown, so it is shown to the user instead)."""

    failure: OAuthFailure
    redirect: str | None = None
    state: str | None = None

    def location(self) -> str | None:
        if self.redirect is None:
            return None
        params = self.failure.body()
        if self.state is not None:
            params["state"] = self.state
        return redirect_with(self.redirect, params)


# --- helpers -------------------------------------------------------------------------------


def _hash(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def public_base(public_base_url: str | None, request_base: str) -> str:
    """This server's base URL as clients see it (configured, else from the request)."""
    return (public_base_url or request_base).rstrip("/")


def fhir_base_of(base: str) -> str:
    return base + "/fhir"


def token_endpoint_of(base: str) -> str:
    return base + "/oauth/token"


def authorize_endpoint_of(base: str) -> str:
    return base + "/oauth/authorize"


def revocation_endpoint_of(base: str) -> str:
    return base + "/oauth/revoke"


def redirect_with(redirect_uri: str, params: Mapping[str, str]) -> str:
    """`redirect_uri` with `params` added to its query (RFC 6749 section 4.1.2)."""
    separator = "&" if urlsplit(redirect_uri).query else "?"
    return redirect_uri + separator + urlencode(params)


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of a verifier (RFC 7636 section 4.2)."""
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def _audit(
    session: Session,
    *,
    clock: Clock,
    principal: Principal | None,
    outcome: Outcome,
    reasons: Sequence[str],
    action: Action = Action.TOKEN_CREATE,
    patient: str | None = None,
    resource_id: str | None = None,
) -> None:
    append(
        session,
        principal=principal,
        clock=clock,
        act=Act(
            action,
            outcome,
            patient=patient,
            resource_type="OAuthToken" if resource_id else None,
            resource_id=resource_id,
            count=1 if outcome is Outcome.SUCCESS else 0,
            reasons=tuple(r[:300] for r in reasons),
        ),
    )


def _anonymous(ip: str | None, device: str | None) -> Principal:
    return Principal(id="anonymous", role="anonymous", ip=ip, device=device)


def _single(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Parameters as a dict; a repeated one is refused (RFC 6749 sections 3.1 and 3.2)."""
    out: dict[str, str] = {}
    for name, value in pairs:
        if name in out:
            raise _Refused("invalid_request", f"the parameter {name[:40]!r} is repeated")
        out[name] = value
    return out


# --- registration --------------------------------------------------------------------------


def _check_redirect_uri(uri: str) -> str:
    """An absolute redirect URI: https, http on a loopback host (RFC 8252 section 7.3), or a
    private-use scheme with a dot (RFC 8252 section 7.1); never a fragment (RFC 6749 3.1.2)."""
    if not uri or len(uri) > MAX_REDIRECT_URI_LENGTH or any(c.isspace() for c in uri):
        msg = f"a redirect URI has 1 to {MAX_REDIRECT_URI_LENGTH} characters and no spaces"
        raise BadRequest(msg)
    parts = urlsplit(uri)
    if parts.fragment or "#" in uri:
        msg = "a redirect URI must not have a fragment (RFC 6749 section 3.1.2)"
        raise BadRequest(msg)
    scheme = parts.scheme.lower()
    if scheme == "https" and parts.hostname:
        return uri
    if scheme == "http" and parts.hostname in _LOOPBACK_HOSTS:
        return uri
    if scheme == "http" and parts.hostname:
        try:
            if ipaddress.ip_address(parts.hostname).is_loopback:
                return uri
        except ValueError:
            pass
    if "." in scheme and scheme not in {"http", "https"} and parts.path:
        return uri
    msg = (
        f"redirect URI {uri[:100]!r} refused: use https, http on a loopback address, or a "
        "private-use scheme such as com.example.app:/callback"
    )
    raise BadRequest(msg)


def check_jwks(jwks: object) -> dict[str, Any]:
    """A client's JWKS: public EC P-384 or RSA (2048 bits or more) signing keys, each with a
    unique `kid`; private key material is refused."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        msg = 'a JWKS is a JSON object {"keys": [...]}'
        raise BadRequest(msg)
    keys: list[dict[str, Any]] = []
    seen: set[str] = set()
    for key in jwks["keys"][:20]:
        if not isinstance(key, dict):
            msg = "every key of the JWKS is a JSON object"
            raise BadRequest(msg)
        kid = key.get("kid")
        if not isinstance(kid, str) or not 1 <= len(kid) <= 200 or kid in seen:
            msg = "every key needs a unique kid (SMART Backend Services)"
            raise BadRequest(msg)
        seen.add(kid)
        if any(name in key for name in ("d", "p", "q", "dp", "dq", "qi", "k")):
            msg = f"key {kid!r} holds private key material: register the public key only"
            raise BadRequest(msg)
        if key.get("use", "sig") != "sig" or key.get("alg", "ES384") not in ASSERTION_ALGS:
            msg = f"key {kid!r}: only signing keys for {' or '.join(ASSERTION_ALGS)}"
            raise BadRequest(msg)
        kty = key.get("kty")
        if kty == "EC" and key.get("crv") != "P-384":
            msg = f"key {kid!r}: EC keys must be on P-384 (ES384)"
            raise BadRequest(msg)
        if kty not in {"EC", "RSA"}:
            msg = f"key {kid!r}: only EC (P-384) and RSA keys"
            raise BadRequest(msg)
        try:
            imported = JWKRegistry.import_key(key)
        except (JoseError, ValueError, TypeError) as exc:
            msg = f"key {kid!r} cannot be read: {exc}"
            raise BadRequest(msg) from None
        if kty == "RSA":
            modulus = base64.urlsafe_b64decode(str(key.get("n", "")) + "==")
            if len(modulus.lstrip(b"\0")) * 8 < MIN_RSA_BITS:
                msg = f"key {kid!r}: RSA keys need {MIN_RSA_BITS} bits or more"
                raise BadRequest(msg)
        public = dict(imported.as_dict(private=False))
        public["kid"] = kid
        for name in ("alg", "use"):
            if name in key:
                public[name] = key[name]
        keys.append(public)
    if not keys:
        msg = "the JWKS holds no key"
        raise BadRequest(msg)
    return {"keys": keys}


def _view(row: OAuthClient) -> ClientView:
    return ClientView(
        client_id=row.client_id,
        name=row.name,
        kind=row.kind,
        redirect_uris=tuple(row.redirect_uris),
        scopes=row.scopes,
        created_at=row.created_at,
        disabled=row.disabled_at is not None,
    )


def register_client(
    session: Session,
    *,
    name: str,
    kind: str,
    clock: Clock,
    actor: Principal | None,
    redirect_uris: Sequence[str] = (),
    jwks: object = None,
    scopes: str | None = None,
    random: RandomSource | None = None,
) -> ClientView:
    """Register an app (by the operator; there is no dynamic registration, ASVS V10.4.7).

    The client may later ask for `scopes` or less (ASVS V10.4.11): by default read-only
    (`launch/patient patient/*.rs user/*.rs` for apps, `system/*.rs` for backends).
    """
    name = unicodedata.normalize("NFKC", name).strip()
    if not name or len(name) > 200:
        msg = "a client needs a name of 1 to 200 characters"
        raise BadRequest(msg)
    if kind not in KINDS:
        msg = f"unknown client kind {kind!r} (one of: {', '.join(KINDS)})"
        raise BadRequest(msg)
    uris = [_check_redirect_uri(u) for u in redirect_uris]
    if kind == BACKEND and uris:
        msg = "a backend client has no redirect URI (it uses client credentials)"
        raise BadRequest(msg)
    if kind != BACKEND and not 1 <= len(uris) <= MAX_REDIRECT_URIS:
        msg = f"an app needs 1 to {MAX_REDIRECT_URIS} redirect URIs"
        raise BadRequest(msg)
    keys = None
    if kind == PUBLIC:
        if jwks is not None:
            msg = "a public client has no keys (it uses PKCE alone)"
            raise BadRequest(msg)
    else:
        keys = check_jwks(jwks)
    text = (
        scopes
        if scopes is not None
        else (DEFAULT_BACKEND_SCOPES if kind == BACKEND else DEFAULT_APP_SCOPES)
    )
    parsed = parse_scopes(text)
    if parsed.invalid or parsed.ignored or not parsed.resources:
        bad = ", ".join((*parsed.invalid, *parsed.ignored)) or "none"
        msg = f"scopes must be SMART v2 resource scopes such as patient/*.rs (refused: {bad})"
        raise BadRequest(msg)
    levels = {BACKEND: {"system"}}.get(kind, {"patient", "user"})
    if not parsed.levels <= levels or (kind == BACKEND and parsed.launch_patient):
        msg = f"a {kind} client may only have {' and '.join(sorted(levels))}/ scopes"
        raise BadRequest(msg)
    row = OAuthClient(
        client_id=new_id(random),
        name=name,
        kind=kind,
        redirect_uris=uris,
        jwks=keys,
        scopes=" ".join(parsed.granted()),
        created_at=clock.now(),
    )
    session.add(row)
    session.flush()
    _audit(
        session,
        clock=clock,
        principal=actor,
        outcome=Outcome.SUCCESS,
        reasons=("OAuth client registered", f"client {row.client_id}", f"kind {kind}", name),
    )
    return _view(row)


def list_clients(session: Session) -> list[ClientView]:
    rows = session.scalars(select(OAuthClient).order_by(OAuthClient.created_at)).all()
    return [_view(r) for r in rows]


def disable_client(
    session: Session, *, client_id: str, clock: Clock, actor: Principal | None
) -> int:
    """Disable a client and revoke its live tokens; returns how many were revoked."""
    row = session.get(OAuthClient, client_id, with_for_update=True)
    if row is None:
        msg = "no such client"
        raise NotFound(msg)
    now = clock.now()
    row.disabled_at = row.disabled_at or now
    count = _revoke_where(session, OAuthToken.client_id == client_id, now)
    _audit(
        session,
        clock=clock,
        principal=actor,
        outcome=Outcome.SUCCESS,
        action=Action.SESSION_REVOKE,
        reasons=("OAuth client disabled", f"client {client_id}", f"{count} tokens revoked"),
    )
    return count


def _revoke_where(session: Session, condition: Any, now: dt.datetime) -> int:
    result = session.execute(
        update(OAuthToken)
        .where(condition, OAuthToken.revoked_at.is_(None), OAuthToken.expires_at > now)
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    session.flush()
    return int(getattr(result, "rowcount", 0) or 0)


# --- authorization endpoint ----------------------------------------------------------------


def check_authorization_request(
    session: Session, pairs: Sequence[tuple[str, str]], *, fhir_base: str
) -> AuthorizationRequest | AuthorizationError:
    """Check an authorization request (RFC 6749 section 4.1.1; RFC 7636 section 4.3; SMART
    App Launch 2). The client and redirect URI are checked first: until both are known good,
    errors are shown, never redirected (RFC 6749 section 4.1.2.1)."""
    try:
        params = _single(pairs)
    except _Refused as refused:
        return AuthorizationError(refused.failure)
    client_id = params.get("client_id", "")
    redirect_uri = params.get("redirect_uri", "")
    client = session.get(OAuthClient, client_id[:64]) if client_id else None
    if client is None or client.disabled_at is not None or client.kind == BACKEND:
        return AuthorizationError(OAuthFailure("invalid_client", "unknown client"))
    # Exact string comparison with the registered URIs (ASVS V10.4.1).
    if not redirect_uri or redirect_uri not in client.redirect_uris:
        return AuthorizationError(
            OAuthFailure("invalid_request", "the redirect URI is not registered for this client")
        )
    state = params.get("state")

    def refuse(error: str, description: str) -> AuthorizationError:
        kept = state if state and len(state) <= _STATE_MAX else None
        return AuthorizationError(OAuthFailure(error, description), redirect_uri, kept)

    if params.get("response_type") != "code":
        return refuse("unsupported_response_type", "only response_type=code is supported")
    if params.get("response_mode", "query") != "query":
        return refuse("invalid_request", "only the query response mode is supported")
    if "request" in params:
        return refuse("request_not_supported", "request objects are not supported")
    if "request_uri" in params:
        return refuse("request_uri_not_supported", "request_uri is not supported")
    if "launch" in params:
        return refuse("invalid_request", "EHR launch is not supported: use a standalone launch")
    if not state or len(state) > _STATE_MAX:
        return refuse("invalid_request", f"state is required (1 to {_STATE_MAX} characters)")
    if params.get("aud", "").rstrip("/") != fhir_base:
        return refuse("invalid_request", f"aud must be this server's FHIR base URL {fhir_base}")
    method = params.get("code_challenge_method")
    if method != "S256":
        why = "plain is refused" if method == "plain" else "it is required"
        return refuse("invalid_request", f"PKCE with code_challenge_method=S256 only ({why})")
    challenge = params.get("code_challenge", "")
    if _CHALLENGE_RE.fullmatch(challenge) is None:
        return refuse("invalid_request", "code_challenge must be a base64url SHA-256 (43 chars)")
    requested = parse_scopes(params.get("scope", ""))
    if requested.invalid:
        return refuse("invalid_scope", "unsupported scopes: " + " ".join(requested.invalid))
    if not requested.resources:
        return refuse("invalid_scope", "ask for at least one resource scope, e.g. patient/*.rs")
    if "system" in requested.levels:
        return refuse("invalid_scope", "system/ scopes are for backend services only")
    outside = within(requested, parse_scopes(client.scopes))
    if outside:
        return refuse("invalid_scope", "not allowed for this client: " + " ".join(outside))
    return AuthorizationRequest(
        client_id=client.client_id,
        client_name=client.name,
        redirect_uri=redirect_uri,
        state=state,
        code_challenge=challenge,
        scopes=requested.granted(),
        ignored=requested.ignored,
    )


def check_account_scopes(
    request: AuthorizationRequest, *, role: str, patient_id: str | None
) -> AuthorizationError | None:
    """Which scopes the signed-in person may grant: a patient grants `patient/` and `user/`
    scopes over their own record; staff grant `user/` scopes only (no patient picker)."""
    parsed = parse_scopes(" ".join(request.scopes))
    if role == Role.PATIENT.value:
        if patient_id is None:
            description = "this account is not linked to a patient record"
        else:
            return None
    elif "patient" in parsed.levels or parsed.launch_patient:
        description = "staff accounts grant user/ scopes only (no patient picker)"
    else:
        return None
    return AuthorizationError(
        OAuthFailure("invalid_scope", description), request.redirect_uri, request.state
    )


def issue_code(
    session: Session,
    *,
    request: AuthorizationRequest,
    account_id: str,
    clock: Clock,
    ip: str | None = None,
    device: str | None = None,
) -> str:
    """The user allowed the request: a single-use code (60 s), returned once."""
    account = session.get(Account, account_id)
    if account is None:
        msg = "no such account"
        raise NotFound(msg)
    now = clock.now()
    code = session_tokens.new_session_token()
    parsed = parse_scopes(" ".join(request.scopes))
    wants_patient = parsed.launch_patient or "patient" in parsed.levels
    patient = account.patient_id if wants_patient else None
    row = OAuthCode(
        id=new_id(),
        code_hash=_hash(code),
        client_id=request.client_id,
        account_id=account.id,
        redirect_uri=request.redirect_uri,
        scopes=" ".join(request.scopes),
        code_challenge=request.code_challenge,
        patient_id=patient,
        created_at=now,
        expires_at=now + dt.timedelta(seconds=CODE_SECONDS),
    )
    session.add(row)
    session.flush()
    _audit(
        session,
        clock=clock,
        principal=_person(account, ip, device),
        outcome=Outcome.SUCCESS,
        action=Action.LOGIN,
        patient=account.patient_id,
        reasons=(
            "OAuth consent given",
            f"client {request.client_id}",
            "scopes " + " ".join(request.scopes),
        ),
    )
    return code


def record_denial(
    session: Session,
    *,
    request: AuthorizationRequest,
    account_id: str,
    clock: Clock,
    ip: str | None = None,
    device: str | None = None,
) -> None:
    """The user refused the request (the app receives `access_denied`)."""
    account = session.get(Account, account_id)
    _audit(
        session,
        clock=clock,
        principal=_person(account, ip, device) if account else _anonymous(ip, device),
        outcome=Outcome.DENIED,
        action=Action.LOGIN,
        patient=account.patient_id if account else None,
        reasons=("OAuth consent refused by the user", f"client {request.client_id}"),
    )


def _person(account: Account, ip: str | None, device: str | None) -> Principal:
    return Principal(
        id=account.id,
        role=account.role,
        name=account.name,
        patient_id=account.patient_id,
        ip=ip,
        device=device,
    )


# --- token endpoint ------------------------------------------------------------------------


def token_request(
    session: Session,
    *,
    pairs: Sequence[tuple[str, str]],
    token_endpoint: str,
    clock: Clock,
    ip: str | None = None,
    device: str | None = None,
    random: RandomSource | None = None,
) -> TokenResult | OAuthFailure:
    """The token endpoint (RFC 6749 section 3.2): an authorization code with its PKCE
    verifier, or client credentials with a client assertion. Never raises for a refusal: the
    failure is audited and returned, and the caller commits."""

    def by_grant(client: OAuthClient, params: Mapping[str, str]) -> TokenResult:
        grant = params.get("grant_type")
        if grant == "authorization_code":
            return _code_grant(
                session, client, params, clock=clock, ip=ip, device=device, random=random
            )
        if grant == "client_credentials":
            return _client_credentials(
                session, client, params, clock=clock, ip=ip, device=device, random=random
            )
        if not grant:
            raise _Refused("invalid_request", "grant_type is required")
        raise _Refused("unsupported_grant_type", "only authorization_code and client_credentials")

    return _client_request(
        session,
        pairs=pairs,
        what="token request",
        handle=by_grant,
        token_endpoint=token_endpoint,
        clock=clock,
        ip=ip,
        device=device,
    )


def _client_request(
    session: Session,
    *,
    pairs: Sequence[tuple[str, str]],
    what: str,
    handle: Callable[[OAuthClient, Mapping[str, str]], _T],
    token_endpoint: str,
    clock: Clock,
    ip: str | None,
    device: str | None,
    also_audience: str | None = None,
) -> _T | OAuthFailure:
    """A client's request to the token or the revocation endpoint: its parameters (each once),
    the client authenticated (`_authenticate_client`), then `handle`. A refusal on the way is
    audited and returned, never raised (the caller commits)."""
    client_id: str | None = None
    try:
        params = _single(pairs)
        client_id = params.get("client_id")
        client = _authenticate_client(
            session,
            params,
            token_endpoint=token_endpoint,
            clock=clock,
            also_audience=also_audience,
        )
        client_id = client.client_id
        return handle(client, params)
    except _Refused as refused:
        failure = refused.failure
        _audit(
            session,
            clock=clock,
            principal=_anonymous(ip, device),
            outcome=Outcome.DENIED,
            action=Action.LOGIN_FAILED,
            reasons=(
                f"OAuth {what} refused: {failure.error}",
                failure.description,
                f"client {(client_id or '-')[:64]}",
            ),
        )
        return failure


def _authenticate_client(
    session: Session,
    params: Mapping[str, str],
    *,
    token_endpoint: str,
    clock: Clock,
    also_audience: str | None = None,
) -> OAuthClient:
    """The client making the request: by its assertion (private_key_jwt), or by its id alone
    when it is public (RFC 6749 section 2.3; RFC 7523 section 2.2)."""
    assertion = params.get("client_assertion")
    assertion_type = params.get("client_assertion_type")
    if assertion is not None or assertion_type is not None:
        if assertion_type != ASSERTION_TYPE or not assertion:
            raise _Refused("invalid_client", f"client_assertion_type must be {ASSERTION_TYPE}", 401)
        client = verify_client_assertion(
            session,
            assertion,
            token_endpoint=token_endpoint,
            clock=clock,
            also_audience=also_audience,
        )
        if params.get("client_id") not in (None, client.client_id):
            raise _Refused("invalid_client", "client_id differs from the assertion's issuer", 401)
        return client
    client_id = params.get("client_id", "")
    public = session.get(OAuthClient, client_id[:64]) if client_id else None
    if public is None or public.disabled_at is not None:
        raise _Refused("invalid_client", "unknown client", 401)
    if public.kind != PUBLIC:
        raise _Refused(
            "invalid_client", "this client must authenticate with a client assertion", 401
        )
    return public


def _claims_of(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The unverified header and payload of a compact JWS (only to find the key)."""
    if len(assertion) > MAX_ASSERTION_BYTES or assertion.count(".") != 2:
        raise _Refused("invalid_client", "the client assertion is not a compact JWT", 401)
    try:
        compact = jws.extract_compact(assertion.encode("ascii"))
        header = dict(compact.headers())
        payload = json.loads(compact.payload)
    except (JoseError, ValueError, UnicodeError, binascii.Error):
        raise _Refused("invalid_client", "the client assertion cannot be read", 401) from None
    if not isinstance(payload, dict):
        raise _Refused("invalid_client", "the client assertion's claims are not an object", 401)
    return header, payload


def verify_client_assertion(
    session: Session,
    assertion: str,
    *,
    token_endpoint: str,
    clock: Clock,
    also_audience: str | None = None,
) -> OAuthClient:
    """Check a client assertion (RFC 7523 section 3; SMART Backend Services "Authenticating
    to the token endpoint"); the client it authenticates, or `_Refused` (invalid_client).
    `also_audience`: another endpoint of this server accepted as `aud` (the revocation
    endpoint, where a client library may name the URL it posts to)."""
    header, unverified = _claims_of(assertion)
    issuer = unverified.get("iss")
    if not isinstance(issuer, str) or not issuer:
        raise _Refused("invalid_client", "the client assertion has no iss", 401)
    client = session.get(OAuthClient, issuer[:64])
    if client is None or client.disabled_at is not None or client.kind == PUBLIC:
        raise _Refused("invalid_client", "unknown client", 401)
    alg = header.get("alg")
    if alg not in ASSERTION_ALGS:
        raise _Refused("invalid_client", f"alg must be {' or '.join(ASSERTION_ALGS)}", 401)
    for name in ("jku", "jwk", "x5u", "x5c", "crit"):
        if name in header:
            # Only the registered JWKS is trusted; keys named by the sender are not fetched.
            raise _Refused("invalid_client", f"the {name} header is not accepted", 401)
    kid = header.get("kid")
    registered = (client.jwks or {}).get("keys")
    keys = registered if isinstance(registered, list) else []
    found = [k for k in keys if isinstance(k, dict) and k.get("kid") == kid]
    if not isinstance(kid, str) or len(found) != 1:
        raise _Refused("invalid_client", "no registered key has this kid", 401)
    if found[0].get("alg", alg) != alg:
        raise _Refused("invalid_client", "the key is registered for another algorithm", 401)
    try:
        key = JWKRegistry.import_key(found[0])
        verified = jws.deserialize_compact(assertion, key, algorithms=[alg])
        claims = json.loads(verified.payload)
    except (JoseError, ValueError, UnicodeError, binascii.Error):
        raise _Refused(
            "invalid_client", "the client assertion's signature is invalid", 401
        ) from None
    if not isinstance(claims, dict):
        raise _Refused("invalid_client", "the client assertion's claims are not an object", 401)
    _check_assertion_claims(
        session,
        client,
        claims,
        token_endpoint=token_endpoint,
        clock=clock,
        also_audience=also_audience,
    )
    return client


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Refused("invalid_client", f"{name} must be a number (seconds)", 401)
    return float(value)


def _check_assertion_claims(
    session: Session,
    client: OAuthClient,
    claims: Mapping[str, Any],
    *,
    token_endpoint: str,
    clock: Clock,
    also_audience: str | None = None,
) -> None:
    if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
        raise _Refused("invalid_client", "iss and sub must both be the client id", 401)
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    accepted = {token_endpoint} | ({also_audience} if also_audience else set())
    if not accepted.intersection(a for a in audiences if isinstance(a, str)):
        raise _Refused("invalid_client", f"aud must be the token endpoint {token_endpoint}", 401)
    now = clock.now()
    stamp = now.timestamp()
    expires = _number(claims, "exp")
    if expires is None:
        raise _Refused("invalid_client", "the client assertion has no exp", 401)
    if expires <= stamp:
        raise _Refused("invalid_client", "the client assertion has expired", 401)
    if expires > stamp + ASSERTION_MAX_SECONDS:
        raise _Refused("invalid_client", "exp is more than five minutes ahead", 401)
    for name in ("nbf", "iat"):
        value = _number(claims, name)
        if value is not None and value > stamp + CLOCK_SKEW_SECONDS:
            raise _Refused("invalid_client", f"{name} is in the future", 401)
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 1 <= len(jti) <= MAX_JTI:
        raise _Refused("invalid_client", f"jti is required (1 to {MAX_JTI} characters)", 401)
    # Forget the ids of assertions that have expired (they would be refused anyway).
    session.execute(delete(OAuthJti).where(OAuthJti.expires_at <= now))
    if session.get(OAuthJti, (client.client_id, jti)) is not None:
        raise _Refused("invalid_client", "this client assertion (jti) was already used", 401)
    try:
        with session.begin_nested():
            session.add(
                OAuthJti(
                    client_id=client.client_id,
                    jti=jti,
                    expires_at=dt.datetime.fromtimestamp(expires, dt.UTC),
                )
            )
    except IntegrityError:  # the same assertion presented twice at once
        raise _Refused(
            "invalid_client", "this client assertion (jti) was already used", 401
        ) from None


def _code_grant(
    session: Session,
    client: OAuthClient,
    params: Mapping[str, str],
    *,
    clock: Clock,
    ip: str | None,
    device: str | None,
    random: RandomSource | None,
) -> TokenResult:
    if client.kind == BACKEND:
        raise _Refused("unauthorized_client", "backend clients use client_credentials")
    code = params.get("code", "")
    if not session_tokens.looks_like_session_token(code):
        raise _Refused("invalid_grant", "unknown authorization code")
    row = session.scalar(
        select(OAuthCode).where(OAuthCode.code_hash == _hash(code)).with_for_update()
    )
    if row is None:
        raise _Refused("invalid_grant", "unknown authorization code")
    now = clock.now()
    if row.used_at is not None:
        # RFC 6749 section 10.5; ASVS V10.4.2: a replayed code revokes what it gave.
        count = _revoke_where(session, OAuthToken.code_id == row.id, now)
        _audit(
            session,
            clock=clock,
            principal=_anonymous(ip, device),
            outcome=Outcome.DENIED,
            action=Action.SESSION_REVOKE,
            reasons=(
                "OAuth authorization code used twice",
                f"client {row.client_id}",
                f"{count} tokens revoked",
            ),
        )
        raise _Refused("invalid_grant", "the authorization code was already used")
    row.used_at = now  # spent by this attempt, whatever its outcome
    session.flush()
    if row.client_id != client.client_id:
        raise _Refused("invalid_grant", "the authorization code belongs to another client")
    if row.expires_at <= now:
        raise _Refused("invalid_grant", "the authorization code has expired")
    if params.get("redirect_uri") != row.redirect_uri:
        raise _Refused("invalid_grant", "redirect_uri differs from the authorization request")
    verifier = params.get("code_verifier", "")
    if _VERIFIER_RE.fullmatch(verifier) is None:
        raise _Refused("invalid_grant", "code_verifier is required (RFC 7636, 43 to 128 chars)")
    if not hmac.compare_digest(s256(verifier), row.code_challenge):
        raise _Refused("invalid_grant", "code_verifier does not match the code_challenge")
    account = session.get(Account, row.account_id)
    if account is None or account.status != "active":
        raise _Refused("invalid_grant", "the account is no longer active")
    launch_patient = LAUNCH_PATIENT in row.scopes.split(" ")
    return _issue(
        session,
        client=client,
        account=account,
        scopes=row.scopes,
        patient_id=row.patient_id,
        code_id=row.id,
        show_patient=launch_patient,
        grant="authorization_code",
        clock=clock,
        ip=ip,
        device=device,
        random=random,
    )


def _client_credentials(
    session: Session,
    client: OAuthClient,
    params: Mapping[str, str],
    *,
    clock: Clock,
    ip: str | None,
    device: str | None,
    random: RandomSource | None,
) -> TokenResult:
    if client.kind != BACKEND:
        raise _Refused("unauthorized_client", "only backend clients use client_credentials")
    requested = parse_scopes(params.get("scope", ""))
    if requested.invalid or requested.ignored or requested.launch_patient:
        bad = " ".join((*requested.invalid, *requested.ignored)) or LAUNCH_PATIENT
        raise _Refused("invalid_scope", f"unsupported scopes: {bad}")
    if not requested.resources or requested.levels != {"system"}:
        raise _Refused("invalid_scope", "ask for system/ scopes, e.g. system/*.rs")
    outside = within(requested, parse_scopes(client.scopes))
    if outside:
        raise _Refused("invalid_scope", "not allowed for this client: " + " ".join(outside))
    return _issue(
        session,
        client=client,
        account=None,
        scopes=" ".join(requested.granted()),
        patient_id=None,
        code_id=None,
        show_patient=False,
        grant="client_credentials",
        clock=clock,
        ip=ip,
        device=device,
        random=random,
    )


def _issue(
    session: Session,
    *,
    client: OAuthClient,
    account: Account | None,
    scopes: str,
    patient_id: str | None,
    code_id: str | None,
    show_patient: bool,
    grant: str,
    clock: Clock,
    ip: str | None,
    device: str | None,
    random: RandomSource | None,
) -> TokenResult:
    now = clock.now()
    token = TOKEN_PREFIX + _b64url((random or SystemRandom()).token_bytes(32))
    row = OAuthToken(
        id=new_id(),
        token_hash=_hash(token),
        client_id=client.client_id,
        account_id=account.id if account else None,
        code_id=code_id,
        scopes=scopes,
        patient_id=patient_id,
        created_at=now,
        expires_at=now + dt.timedelta(seconds=TOKEN_SECONDS),
    )
    session.add(row)
    session.flush()
    principal = (
        _person(account, ip, device)
        if account
        else Principal(id=client.client_id, role=Role.SERVICE.value, name=client.name, ip=ip)
    )
    _audit(
        session,
        clock=clock,
        principal=principal,
        outcome=Outcome.SUCCESS,
        patient=patient_id,
        resource_id=row.id,
        reasons=(f"OAuth {grant}", f"client {client.client_id}", f"scopes {scopes}"),
    )
    return TokenResult(token, TOKEN_SECONDS, scopes, patient_id if show_patient else None)


# --- revocation (RFC 7009) -------------------------------------------------------------------


def revoke_request(
    session: Session,
    *,
    pairs: Sequence[tuple[str, str]],
    token_endpoint: str,
    revocation_endpoint: str,
    clock: Clock,
    ip: str | None = None,
    device: str | None = None,
) -> OAuthFailure | None:
    """The revocation endpoint (RFC 7009 section 2.1): None means answer 200 (RFC 7009
    section 2.2: also for a token that is unknown, expired, already revoked or another
    client's), else the error to send (section 2.2.1: invalid_request, invalid_client).

    `token_type_hint` is only a hint (section 2.1): Égide issues access tokens only, so any
    hint is accepted and the token is looked up as an access token. Never raises for a
    refusal: the failure is audited and returned, and the caller commits."""

    def token_of(client: OAuthClient, params: Mapping[str, str]) -> tuple[OAuthClient, str]:
        token = params.get("token")
        if not token:
            raise _Refused("invalid_request", "token is required (RFC 7009 section 2.1)")
        return client, token

    answer = _client_request(
        session,
        pairs=pairs,
        what="revocation request",
        handle=token_of,
        token_endpoint=token_endpoint,
        clock=clock,
        ip=ip,
        device=device,
        also_audience=revocation_endpoint,
    )
    if isinstance(answer, OAuthFailure):
        return answer
    client, token = answer
    if not looks_like_access_token(token):
        return None  # not a token of ours: nothing to revoke (section 2.2)
    row = session.scalar(
        select(OAuthToken).where(OAuthToken.token_hash == _hash(token)).with_for_update()
    )
    if row is None:
        return None
    caller = Principal(id=client.client_id, role=Role.SERVICE.value, name=client.name, ip=ip)
    if row.client_id != client.client_id:
        # RFC 7009 section 2.1: a client revokes only the tokens issued to it. The answer is
        # the same as for an unknown token, so it learns nothing about another client's.
        _audit(
            session,
            clock=clock,
            principal=caller,
            outcome=Outcome.DENIED,
            action=Action.OAUTH_REVOKE,
            reasons=(
                "OAuth revocation of another client's token refused",
                f"client {client.client_id}",
                f"token of client {row.client_id}",
            ),
        )
        return None
    now = clock.now()
    if row.revoked_at is None and row.expires_at > now:
        row.revoked_at = now
        session.flush()
        _audit(
            session,
            clock=clock,
            principal=caller,
            outcome=Outcome.SUCCESS,
            action=Action.OAUTH_REVOKE,
            patient=row.patient_id,
            resource_id=row.id,
            reasons=("OAuth token revoked by its client (RFC 7009)", f"client {row.client_id}"),
        )
    return None


def _live_tokens(account_id: str, now: dt.datetime) -> Any:
    return (
        OAuthToken.account_id == account_id,
        OAuthToken.revoked_at.is_(None),
        OAuthToken.expires_at > now,
    )


def list_grants(session: Session, *, account_id: str, clock: Clock) -> list[GrantView]:
    """The apps holding a live token of the account, most recently granted first, with the
    scopes of those tokens together (ASVS V10.7.3: the user reviews their consents)."""
    now = clock.now()
    rows = session.execute(
        select(OAuthToken, OAuthClient.name)
        .join(OAuthClient, OAuthClient.client_id == OAuthToken.client_id)
        .where(*_live_tokens(account_id, now), OAuthClient.disabled_at.is_(None))
        .order_by(OAuthToken.created_at)
    ).all()
    grouped: dict[str, list[tuple[OAuthToken, str]]] = {}
    for token, name in rows:
        grouped.setdefault(token.client_id, []).append((token, name))
    grants: list[GrantView] = []
    for client_id, items in grouped.items():
        scopes: list[str] = []
        for token, _ in items:
            scopes.extend(s for s in token.scopes.split(" ") if s and s not in scopes)
        grants.append(
            GrantView(
                client_id=client_id,
                client_name=items[0][1],
                scopes=tuple(scopes),
                granted_at=max(t.created_at for t, _ in items),
                expires_at=max(t.expires_at for t, _ in items),
            )
        )
    grants.sort(key=lambda g: (g.granted_at, g.client_id), reverse=True)
    return grants


def revoke_account_tokens(
    session: Session,
    *,
    account_id: str,
    clock: Clock,
    reason: str,
    client_id: str | None = None,
    actor: Principal | None = None,
) -> int:
    """Revoke the account's live access tokens (of `client_id` only, when given) and forget
    its authorization codes not yet exchanged; returns how many tokens. One OAUTH_REVOKE
    ledger entry, under `actor` or else the account, when anything was revoked."""
    now = clock.now()
    condition: list[Any] = [OAuthToken.account_id == account_id]
    codes: list[Any] = [OAuthCode.account_id == account_id, OAuthCode.used_at.is_(None)]
    if client_id is not None:
        condition.append(OAuthToken.client_id == client_id)
        codes.append(OAuthCode.client_id == client_id)
    count = _revoke_where(session, and_(*condition), now)
    dropped = session.execute(delete(OAuthCode).where(*codes))
    pending = int(getattr(dropped, "rowcount", 0) or 0)
    if count or pending:
        account = session.get(Account, account_id)
        principal = actor or (_person(account, None, None) if account else None)
        _audit(
            session,
            clock=clock,
            principal=principal,
            outcome=Outcome.SUCCESS,
            action=Action.OAUTH_REVOKE,
            patient=account.patient_id if account else None,
            reasons=(
                reason,
                f"client {client_id}" if client_id else "every client",
                f"{count} tokens revoked",
                f"{pending} unused codes dropped",
            ),
        )
    return count


def revoke_grant(session: Session, *, account_id: str, client_id: str, clock: Clock) -> int:
    """The person revokes an app's access (ASVS V10.7.3): every token of that client for
    this account. NotFound when the app holds no live token of theirs."""
    now = clock.now()
    held = session.scalar(
        select(OAuthToken.id)
        .where(*_live_tokens(account_id, now), OAuthToken.client_id == client_id[:64])
        .limit(1)
    )
    if held is None:
        msg = "no such app"
        raise NotFound(msg)
    return revoke_account_tokens(
        session,
        account_id=account_id,
        clock=clock,
        reason="access revoked by the account holder",
        client_id=client_id,
    )


# --- resource server -----------------------------------------------------------------------


def looks_like_access_token(value: str) -> bool:
    return _TOKEN_RE.fullmatch(value) is not None


def authenticate_access_token(session: Session, *, token: str, clock: Clock) -> Principal | None:
    """The principal an OAuth access token stands for, or None (unknown, revoked, expired, or
    its account or client disabled). Its scopes travel with it as an upper bound."""
    if not looks_like_access_token(token):
        return None
    row = session.scalar(select(OAuthToken).where(OAuthToken.token_hash == _hash(token)))
    if row is None or row.revoked_at is not None or row.expires_at <= clock.now():
        return None
    client = session.get(OAuthClient, row.client_id)
    if client is None or client.disabled_at is not None:
        return None
    scopes = frozenset(s for s in row.scopes.split(" ") if parse_scope(s) is not None)
    if row.account_id is None:
        return Principal(
            id=client.client_id, role=Role.SERVICE.value, name=client.name, scopes=scopes
        )
    account = session.get(Account, row.account_id)
    if account is None or account.status != "active":
        return None
    if row.patient_id is not None and row.patient_id != account.patient_id:
        return None
    return Principal(
        id=account.id,
        role=account.role,
        name=f"{account.name} via {client.name}"[:200],
        patient_id=account.patient_id,
        scopes=scopes,
        fhir_user=fhir_user_for(
            patient_id=account.patient_id, practitioner_id=account.practitioner_id
        ),
    )

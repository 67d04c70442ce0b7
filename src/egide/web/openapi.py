"""The OpenAPI description of the sign-in and account pages (form bodies, HTML answers).

The page handlers read their urlencoded forms themselves (`views._form`, with a size limit and
strict UTF-8), so FastAPI cannot infer their bodies; `document` describes each operation by
hand and puts it in the application's schema (`/api/openapi.json`, tag "authentication"):
the form fields, the cookie that authenticates, and every status the page may answer. The
schema is checked against the running pages by schemathesis
(`tests/integration/test_auth_schemathesis.py`, `make check-api`), so a status or a content
type the description does not list fails the suite, and so does any server error.

Pages answer HTML (`text/html`) or a redirect (303 with `Location`, no body); a form that did
not come from our pages (no or wrong CSRF token, a cross-site `Origin`) answers 403, a form
that cannot be read 400, wrong credentials 401, throttling 429 with `Retry-After`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from egide.web.security import MAX_NEXT_LENGTH, SESSION_COOKIE

TAG = "authentication"
_HTML = {"text/html": {"schema": {"type": "string"}}}
_SESSION: list[dict[str, list[str]]] = [{"sessionCookie": []}]
SECURITY_SCHEMES = {
    "sessionCookie": {
        "type": "apiKey",
        "in": "cookie",
        "name": SESSION_COOKIE,
        "description": "The session of the pages (256 random bits; Secure, HttpOnly, "
        "SameSite=Strict). The FHIR API never reads it.",
    }
}

_REASONS = {
    200: "The page.",
    303: "Where the browser goes next (`Location`).",
    400: "The form could not be read, or a field is missing or refused.",
    401: "Wrong credentials or code (one message whatever was wrong).",
    403: "No or wrong CSRF token, or a cross-site request: nothing was done.",
    404: "No such session or invitation.",
    429: "Too many attempts (throttling or lockout).",
}


def _responses(*codes: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for code in codes:
        entry: dict[str, Any] = {"description": _REASONS[code]}
        if code == 303:
            entry["headers"] = {"Location": {"schema": {"type": "string"}}}
        else:
            entry["content"] = _HTML
        if code == 429:
            entry["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
        out[str(code)] = entry
    return out


def _text(max_length: int = 256) -> dict[str, Any]:
    return {"type": "string", "maxLength": max_length}


def _form(**fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "properties": {"csrf": _text(128), **fields},
                    "required": ["csrf", *fields],
                }
            }
        },
    }


_PASSWORD = _text(1024)
_GET_PAGE = _responses(200, 303)
_POST_PRE_SESSION = _responses(303, 400, 401, 403, 429)

OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("/login", "GET"): {"summary": "Sign-in form", "responses": _responses(200)},
    ("/login", "POST"): {
        "summary": "First factor: e-mail and password",
        "requestBody": _form(email=_text(), password=_PASSWORD),
        "responses": _POST_PRE_SESSION,
    },
    ("/login/mfa", "GET"): {"summary": "Second-factor form", "responses": _GET_PAGE},
    ("/login/mfa", "POST"): {
        "summary": "Second factor: TOTP or recovery code",
        "requestBody": _form(code=_text(64)),
        "responses": _POST_PRE_SESSION,
    },
    ("/login/enrol", "GET"): {"summary": "First TOTP enrolment", "responses": _GET_PAGE},
    ("/login/enrol", "POST"): {
        "summary": "Confirm the first TOTP enrolment (shows the recovery codes once)",
        "requestBody": _form(code=_text(64)),
        "responses": _responses(200, 303, 400, 401, 403, 429),
    },
    ("/account", "GET"): {
        "summary": "The account and its sessions",
        "responses": _GET_PAGE,
        "security": _SESSION,
    },
    ("/account/sessions/{session_id}/revoke", "POST"): {
        "summary": "Sign one of one's sessions out (another one: after a step-up)",
        "requestBody": _form(),
        "responses": _responses(303, 400, 403, 404),
        "security": _SESSION,
    },
    ("/account/step-up", "GET"): {
        "summary": "Re-authentication form (step-up)",
        "parameters": [
            {"name": "next", "in": "query", "required": False, "schema": _text(MAX_NEXT_LENGTH)}
        ],
        "responses": _GET_PAGE,
        "security": _SESSION,
    },
    ("/account/step-up", "POST"): {
        "summary": "Re-authenticate with a TOTP code (or the password without an authenticator)",
        "requestBody": _form(code=_PASSWORD, next=_text(MAX_NEXT_LENGTH)),
        "responses": _responses(303, 400, 401, 403, 429),
        "security": _SESSION,
    },
    ("/account/password", "GET"): {
        "summary": "Password change form",
        "responses": _GET_PAGE,
        "security": _SESSION,
    },
    ("/account/password", "POST"): {
        "summary": "Change the password (current and new)",
        "requestBody": _form(
            current_password=_PASSWORD, new_password=_PASSWORD, confirm_password=_PASSWORD
        ),
        "responses": _responses(303, 400, 401, 403),
        "security": _SESSION,
    },
    ("/logout", "POST"): {
        "summary": "Sign out",
        "requestBody": _form(),
        "responses": _responses(303, 400, 403),
        "security": _SESSION,
    },
    ("/invite/{token}", "GET"): {
        "summary": "Invitation: choose the first password",
        "responses": _responses(200, 404),
    },
    ("/invite/{token}", "POST"): {
        "summary": "Accept the invitation with a password",
        "requestBody": _form(password=_PASSWORD, confirm_password=_PASSWORD),
        "responses": _responses(303, 400, 403, 404),
    },
}


def _operation(path: str, method: str, spec: dict[str, Any]) -> dict[str, Any]:
    words = [w.strip("{}") for w in path.split("/") if w]
    operation: dict[str, Any] = {
        "tags": [TAG],
        "operationId": "page_" + "_".join([*words, method.lower()]).replace("-", "_"),
        **spec,
    }
    names = [w[1:-1] for w in path.split("/") if w.startswith("{")]
    if names:
        own = [{"name": n, "in": "path", "required": True, "schema": _text(128)} for n in names]
        operation["parameters"] = [*own, *spec.get("parameters", [])]
    return operation


def document(app: FastAPI) -> None:
    """Add the pages of `OPERATIONS` to `app`'s OpenAPI schema, described by hand (their
    routes stay out of FastAPI's own inference, which cannot see their form bodies)."""
    previous = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = previous()
        paths = schema.setdefault("paths", {})
        for (path, method), spec in OPERATIONS.items():
            paths.setdefault(path, {})[method.lower()] = _operation(path, method, spec)
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

"""FHIR JSON responses and the mapping of every error to an OperationOutcome.

OWASP ASVS 5.0 V16.5.1: a generic message is returned on unexpected errors, never a stack
trace, query or internal path. FHIR R4 http.html: errors carry an OperationOutcome.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from egide.core.errors import EgideError, Issue
from egide.fhir.outcome import operation_outcome

FHIR_JSON = "application/fhir+json; fhirVersion=4.0; charset=utf-8"
logger = logging.getLogger("egide.api")

# Patient data must not linger in shared caches or browser history (ASVS 5.0 V14.3.2).
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def fhir_response(
    body: dict[str, Any] | None, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    content = (
        b""
        if body is None
        else json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    )
    all_headers = dict(NO_STORE)
    all_headers.update(headers or {})
    return Response(content=content, status_code=status, media_type=FHIR_JSON, headers=all_headers)


def outcome_response(
    status: int, issues: list[Issue], headers: dict[str, str] | None = None
) -> Response:
    return fhir_response(operation_outcome(issues), status, headers)


async def egide_error_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EgideError)
    headers = {"WWW-Authenticate": 'Bearer realm="egide"'} if exc.status == 401 else None
    if exc.status >= 500:
        logger.error("request failed: %s", type(exc).__name__, exc_info=exc)
    return outcome_response(exc.status, exc.all_issues(), headers)


async def http_error_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not-found", 405: "not-supported"}.get(exc.status_code, "processing")
    text = {404: "no such endpoint", 405: "method not allowed on this endpoint"}.get(
        exc.status_code, "the request could not be processed"
    )
    return outcome_response(exc.status_code, [Issue(text, code=code)])


async def validation_error_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    issues = [
        Issue(
            f"invalid request {'.'.join(str(p) for p in err.get('loc', ()))}: "
            f"{err.get('msg', 'invalid')}"
        )
        for err in exc.errors()[:20]
    ]
    return outcome_response(400, issues)


async def unexpected_error_handler(_request: Request, exc: Exception) -> Response:
    # Logged server-side with the trace; the caller learns only that it failed.
    logger.error("unexpected error", exc_info=exc)
    return outcome_response(
        500, [Issue("internal error; the request was not carried out", code="exception")]
    )

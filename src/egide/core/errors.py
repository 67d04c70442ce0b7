"""The errors that cross room boundaries, each with the HTTP status it answers with.

The API turns every one into a FHIR OperationOutcome; the CLI turns every one into a one-line
message and a non-zero exit. Messages never contain patient data or secrets: they are shown to
callers who may not be allowed to see either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Issue:
    """One problem found in a request, with the FHIRPath-like location of the element."""

    message: str
    location: str | None = None
    code: str = "invalid"  # FHIR IssueType (http://hl7.org/fhir/R4/valueset-issue-type.html)
    severity: str = "error"


class EgideError(Exception):
    """Base of all expected errors. `status` is the HTTP status the API answers with."""

    status: int = 500
    code: str = "exception"

    def __init__(self, message: str, issues: Sequence[Issue] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.issues = list(issues)

    def all_issues(self) -> list[Issue]:
        return self.issues or [Issue(self.message, code=self.code)]


class BadRequest(EgideError):
    """The request is malformed (bad JSON, wrong parameters, mismatched ids)."""

    status, code = 400, "invalid"


class Unauthorized(EgideError):
    """No valid credentials were presented."""

    status, code = 401, "login"


class Forbidden(EgideError):
    """The caller may not use this interaction at all (e.g. an admin token on clinical data).

    Only for cases where nothing about patient data is revealed; anything about a patient's
    record answers NotFound instead (contract 1).
    """

    status, code = 403, "forbidden"


class NotFound(EgideError):
    """The resource does not exist *or the caller may not know that it exists* (contract 1)."""

    status, code = 404, "not-found"


class MethodNotAllowed(EgideError):
    """The interaction is not supported on this resource type."""

    status, code = 405, "not-supported"


class Conflict(EgideError):
    """The change conflicts with the current state (e.g. an id that already exists)."""

    status, code = 409, "conflict"


class Gone(EgideError):
    """The resource existed and was deleted (FHIR R4 RESTful API, read)."""

    status, code = 410, "deleted"


class PreconditionFailed(EgideError):
    """An `If-Match` version check failed (FHIR R4 RESTful API, managing versions)."""

    status, code = 412, "conflict"


class PayloadTooLarge(EgideError):
    """The request body is larger than the configured limit."""

    status, code = 413, "too-costly"


class UnsupportedMediaType(EgideError):
    """The request body is not FHIR JSON."""

    status, code = 415, "not-supported"


class TooManyRequests(EgideError):
    """The caller has asked too often; try again later (RFC 6585 section 4)."""

    status, code = 429, "throttled"


class Unprocessable(EgideError):
    """The resource is well-formed JSON but not a valid FHIR R4 resource."""

    status, code = 422, "processing"


class StorageFailure(EgideError):
    """The database or the audit ledger could not be written; the act did not happen."""

    status, code = 500, "exception"

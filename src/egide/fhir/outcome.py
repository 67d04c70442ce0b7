"""OperationOutcome bodies (FHIR R4 operationoutcome.html).

Security role: every error the API returns passes through here. The outcome carries only the
messages and element locations of `egide.core.errors.Issue`s, which by contract never contain
patient data or secrets; codes and severities are forced into their FHIR value sets so a bad
caller-supplied code cannot produce an invalid answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from egide.core.errors import EgideError, Issue

__all__ = ["informational", "operation_outcome", "outcome_for"]

# FHIR R4 IssueSeverity (valueset-issue-severity.html), required binding.
_SEVERITIES = frozenset({"fatal", "error", "warning", "information"})
# FHIR R4 IssueType (valueset-issue-type.html), required binding.
_ISSUE_TYPES = frozenset(
    {
        "invalid", "structure", "required", "value", "invariant", "security", "login",
        "unknown", "expired", "forbidden", "suppressed", "processing", "not-supported",
        "duplicate", "multiple-matches", "not-found", "deleted", "too-long", "code-invalid",
        "extension", "too-costly", "business-rule", "conflict", "transient", "lock-error",
        "no-store", "exception", "timeout", "incomplete", "throttled", "informational",
    }
)  # fmt: skip


def _issue(issue: Issue) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "severity": issue.severity if issue.severity in _SEVERITIES else "error",
        "code": issue.code if issue.code in _ISSUE_TYPES else "processing",
    }
    if issue.message:
        entry["diagnostics"] = issue.message
    if issue.location:
        # `expression` is FHIRPath; `location` (XPath) is deprecated in R4.
        entry["expression"] = [issue.location]
    return entry


def operation_outcome(issues: Sequence[Issue]) -> dict[str, Any]:
    """An OperationOutcome with one `issue` per Issue (at least one, as R4 requires 1..*)."""
    items = [_issue(i) for i in issues] or [
        {"severity": "information", "code": "informational", "diagnostics": "no issues"}
    ]
    return {"resourceType": "OperationOutcome", "issue": items}


def outcome_for(error: EgideError) -> dict[str, Any]:
    """The OperationOutcome answering `error`.

    When the error lists element issues, its summary message comes first (so a client sees
    what failed before where), followed by each issue.
    """
    issues = error.all_issues()
    if error.issues and all(i.message != error.message for i in issues):
        issues = [Issue(error.message, code=error.code), *issues]
    return operation_outcome(issues)


def informational(message: str) -> dict[str, Any]:
    """A one-issue informational OperationOutcome (e.g. the answer to a successful delete)."""
    return operation_outcome([Issue(message, code="informational", severity="information")])

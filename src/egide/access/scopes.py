"""SMART App Launch 2 scopes: parsing, and the upper bound they put on what a token may do.

Pure (no I/O): `access` decides, callers gather the facts.

A SMART v2 resource scope (SMART App Launch STU2, "Scopes and Launch Context", section
"SMART's scopes are used to delegate access") reads `<level>/<type>.<interactions>`:

* `level`: `patient` (data of the patient in context), `user` (what the signed-in user may
  reach) or `system` (a backend service, SMART Backend Services);
* `type`: a FHIR resource type or `*` (every type);
* `interactions`: a non-empty subset of `cruds`, written in that order (create, read, update,
  delete, search), each letter at most once.

Égide supports that grammar only: SMART v1 suffixes (`.read`, `.write`, `.*`) and v2
fine-grained constraints (`?category=...`) are refused rather than guessed at, so a scope
never means more than it says. A token's scopes are an upper bound (the access-control issue,
item 7): they never grant anything by themselves; the principal's role, its patient
compartment and the rest of the policy still apply (an intersection).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

LETTERS = "cruds"
LEVELS = ("patient", "user", "system")
_SCOPE_RE = re.compile(
    r"(?P<level>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]{0,63})\.(?P<letters>[a-z]{1,5})"
)
# Scopes the server understands but that grant nothing on FHIR resources.
LAUNCH_PATIENT = "launch/patient"
# Identity and refresh scopes Égide does not issue (no ID token, no refresh token): dropped
# from a request, never granted (the token response's `scope` says what was granted).
IGNORED = frozenset({"openid", "fhirUser", "profile", "offline_access", "online_access"})


class Interaction(StrEnum):
    """The five SMART v2 interaction letters."""

    CREATE = "c"
    READ = "r"
    UPDATE = "u"
    DELETE = "d"
    SEARCH = "s"


@dataclass(frozen=True)
class ResourceScope:
    """One parsed `<level>/<type>.<cruds>` scope."""

    level: str
    resource_type: str  # a FHIR type, or "*"
    interactions: frozenset[str]

    def __str__(self) -> str:
        letters = "".join(c for c in LETTERS if c in self.interactions)
        return f"{self.level}/{self.resource_type}.{letters}"

    def covers(self, other: ResourceScope) -> bool:
        """Whether everything `other` allows is allowed by this scope (same level)."""
        return (
            self.level == other.level
            and self.resource_type in ("*", other.resource_type)
            and other.interactions <= self.interactions
        )


def parse_scope(text: str) -> ResourceScope | None:
    """A resource scope, or None when `text` is not a well-formed SMART v2 resource scope."""
    match = _SCOPE_RE.fullmatch(text)
    if match is None:
        return None
    letters = match["letters"]
    # SMART v2: the letters appear in the order c, r, u, d, s, each at most once.
    if any(c not in LETTERS for c in letters) or letters != "".join(
        c for c in LETTERS if c in letters
    ):
        return None
    return ResourceScope(match["level"], match["type"], frozenset(letters))


@dataclass(frozen=True)
class ScopeRequest:
    """A space-separated scope string sorted into what it asks for."""

    resources: tuple[ResourceScope, ...]
    launch_patient: bool
    ignored: tuple[str, ...]  # understood, never granted (openid, fhirUser, ...)
    invalid: tuple[str, ...]  # malformed or unsupported: the request must be refused

    @property
    def levels(self) -> frozenset[str]:
        return frozenset(s.level for s in self.resources)

    def granted(self) -> tuple[str, ...]:
        """The scopes a token may carry, in a stable order, without duplicates."""
        out: list[str] = [str(s) for s in self.resources]
        if self.launch_patient:
            out.append(LAUNCH_PATIENT)
        return tuple(dict.fromkeys(out))


def parse_scopes(text: str) -> ScopeRequest:
    """Sort a scope parameter (RFC 6749 section 3.3: space-delimited) into its parts."""
    resources: list[ResourceScope] = []
    ignored: list[str] = []
    invalid: list[str] = []
    launch_patient = False
    for item in text.split(" "):
        if not item:
            continue
        if item == LAUNCH_PATIENT:
            launch_patient = True
        elif item in IGNORED:
            ignored.append(item)
        elif (parsed := parse_scope(item)) is not None:
            resources.append(parsed)
        else:
            invalid.append(item[:100])
    return ScopeRequest(tuple(resources), launch_patient, tuple(ignored), tuple(invalid))


def within(requested: ScopeRequest, allowed: ScopeRequest) -> tuple[str, ...]:
    """The requested scopes that no allowed scope covers (empty: the request fits)."""
    outside = [
        str(s) for s in requested.resources if not any(a.covers(s) for a in allowed.resources)
    ]
    if requested.launch_patient and not allowed.launch_patient:
        outside.append(LAUNCH_PATIENT)
    return tuple(outside)


def scope_allows(scopes: Iterable[str], resource_type: str, interaction: str) -> bool:
    """Whether a token's `scopes` allow `interaction` (one of `cruds`) on `resource_type`.

    `resource_type` "*" asks for every type at once (a system-wide history or search), which
    only a wildcard scope allows. Deny unless a scope allows: unknown letters, malformed
    scopes and non-resource scopes allow nothing.
    """
    if len(interaction) != 1 or interaction not in LETTERS:
        return False
    for text in scopes:
        scope = parse_scope(text)
        if scope is None or interaction not in scope.interactions:
            continue
        if scope.resource_type in ("*", resource_type):
            return True
    return False


def scope_allows_any(scopes: Iterable[str], resource_type: str, interactions: str) -> bool:
    """Whether the scopes allow at least one of `interactions` on `resource_type`."""
    kept = tuple(scopes)
    return any(scope_allows(kept, resource_type, letter) for letter in interactions)


_VERBS = {
    "c": "create",
    "r": "read",
    "u": "update",
    "d": "delete",
    "s": "search",
}


def describe(scope: str) -> str:
    """The scope in plain words, for the consent page (ASVS 5.0 V10.7.2)."""
    if scope == LAUNCH_PATIENT:
        return "Know which patient record you are using it with"
    parsed = parse_scope(scope)
    if parsed is None:
        return scope
    verbs = [_VERBS[c] for c in LETTERS if c in parsed.interactions]
    joined = verbs[0] if len(verbs) == 1 else ", ".join(verbs[:-1]) + " and " + verbs[-1]
    what = "all kinds of records" if parsed.resource_type == "*" else f"{parsed.resource_type}"
    whose = {
        "patient": "in your own health record",
        "user": "that your account can reach",
        "system": "of every patient (a back-end service)",
    }[parsed.level]
    return f"{joined.capitalize()} {what} {whose}"

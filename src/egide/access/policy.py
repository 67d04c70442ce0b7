"""The decision function: pure, deny by default, with reasons for the ledger."""

from __future__ import annotations

from dataclasses import dataclass

from egide.access.permissions import ROLE_PERMISSIONS, Permission, Role
from egide.access.relationships import TREATING_TEAM, CareFact, Relationship
from egide.access.rules import (
    CONSENT_EXEMPT,
    RULES,
    Obligation,
    Operation,
    Rule,
    may_ever,
    rules_for,
)
from egide.access.scopes import parse_scope, scope_allows_any
from egide.core.principal import Decision, Principal

__all__ = [
    "AccessContext",
    "Operation",
    "SearchPlan",
    "Target",
    "decide",
    "decide_access_report",
    "has_permission",
    "may_search_type",
    "may_write_type",
    "needs_context",
    "search_plan",
]

# The SMART interaction letters (access.scopes) any of which allows an operation.
_SCOPE_LETTERS = {Operation.READ: "rs", Operation.SEARCH: "s", Operation.WRITE: "cud"}


@dataclass(frozen=True)
class Target:
    """What is being touched: a resource type and the patient whose compartment holds it.

    `patient_data` says whether the type belongs to the FHIR patient compartment (clinical or
    demographic data) or is directory data (a Practitioner, an Organization). A patient-data
    resource with no patient (`patient_id` None) is still patient data: no relationship can
    reach it, so only roles that need none do. `restricted` says the resource carries a
    sensitive security label (mental health, HIV, reproductive health...) that this patient's
    consent restricts to their treating team.
    """

    resource_type: str
    patient_id: str | None
    patient_data: bool = True
    restricted: bool = False


@dataclass(frozen=True)
class AccessContext:
    """The facts the records room gathered for one decision (no I/O here).

    `facts`: the relationships that hold now between the principal and the target's patient
    (access.relationships.care_facts). `consent_denials`: why this patient's active consent
    refuses this principal (a named practitioner or organisation, or this resource's labels).
    """

    facts: tuple[CareFact, ...] = ()
    consent_denials: tuple[str, ...] = ()


NO_CONTEXT = AccessContext()


def _role(principal: Principal) -> Role | None:
    try:
        return Role(principal.role)
    except ValueError:
        return None


def has_permission(principal: Principal, permission: Permission) -> bool:
    """For what is not patient data: the ledger, reports, keys, the directory."""
    role = _role(principal)
    return role is not None and permission in ROLE_PERMISSIONS[role]


def may_write_type(principal: Principal, resource_type: str, *, patient_data: bool) -> bool:
    """Whether `principal` could write `resource_type` under some relationship: a refusal here
    depends only on the role and the type, so it may answer 403 without an existence oracle."""
    role = _role(principal)
    if role is None:
        return False
    if not patient_data:
        return Permission.DIRECTORY_RESOURCE_WRITE in ROLE_PERMISSIONS[role]
    return may_ever(role, resource_type, Operation.WRITE)


def may_search_type(principal: Principal, resource_type: str, *, patient_data: bool) -> Decision:
    """Whether `principal` may search (or read the history of) `resource_type` at all; which
    rows it then sees is the search plan's filter. Depends only on role, scopes and type."""
    role = _role(principal)
    if role is None:
        return Decision.deny(f"unknown role {principal.role!r}")
    if principal.scopes is not None and not scope_allows_any(
        principal.scopes, resource_type, _SCOPE_LETTERS[Operation.SEARCH]
    ):
        return Decision.deny(f"the token's scopes do not allow search {resource_type}")
    if not patient_data:
        if Permission.DIRECTORY_RESOURCE_READ in ROLE_PERMISSIONS[role]:
            return Decision.allow(f"role {role} grants {Permission.DIRECTORY_RESOURCE_READ}")
        return Decision.deny(f"role {role} lacks permission {Permission.DIRECTORY_RESOURCE_READ}")
    if may_ever(role, resource_type, Operation.SEARCH):
        return Decision.allow(f"role {role} may search {resource_type} within its reach")
    return Decision.deny(f"role {role} may not search {resource_type} resources")


def needs_context(principal: Principal, resource_type: str, operation: Operation) -> bool:
    """Whether any fact (a care link, a consent, a label) could change `decide`'s answer:
    not for a role the consent does not bind whose every applicable rule needs no
    relationship (an integration service). The records room then skips gathering facts,
    which on a bulk feed would cost queries and a flush per write."""
    role = _role(principal)
    if role is None or role not in CONSENT_EXEMPT:
        return True
    rules = rules_for(role, resource_type, operation)
    return not rules or not all(Relationship.ANY in r.relationships for r in rules)


def _own(principal: Principal, role: Role, target: Target) -> CareFact | None:
    if role is Role.PATIENT and principal.patient_id and target.patient_id == principal.patient_id:
        return CareFact(Relationship.OWN, "the patient's own record")
    return None


# The order in which a decision names the relationship it relied on: the strongest tie first,
# break-the-glass last (it is used only when nothing else allows).
_PREFERENCE = (
    Relationship.OWN,
    Relationship.PERSONAL,
    Relationship.GUARDIAN,
    Relationship.DEPARTMENT,
    Relationship.ORDER,
    Relationship.INVESTIGATION,
    Relationship.BREAK_GLASS,
)


def _matched(rule: Rule, facts: tuple[CareFact, ...]) -> list[CareFact]:
    found = [f for f in facts if f.relationship in rule.relationships]
    return sorted(found, key=lambda f: _PREFERENCE.index(f.relationship))


def decide(
    principal: Principal,
    operation: Operation,
    target: Target,
    context: AccessContext = NO_CONTEXT,
) -> Decision:
    """May `principal` perform `operation` on `target`, given the facts in `context`?

    Deny unless a rule allows (DESIGN.md, contract 1). The reasons say which rule and which
    relationship allowed, or why nothing did; they go into the act's ledger entry so the
    patient's access report can say why (issue 5, item 1).
    """
    role = _role(principal)
    if role is None:
        return Decision.deny(f"unknown role {principal.role!r}")
    # SMART scopes bound the role, never widen it (issue 5, item 7). The API checks the exact
    # interaction letter first; here, behind it, an operation passes when any of its letters
    # is granted (a search result is read: `r` or `s`).
    if principal.scopes is not None and not scope_allows_any(
        principal.scopes, target.resource_type, _SCOPE_LETTERS[operation]
    ):
        return Decision.deny(f"the token's scopes do not allow {operation} {target.resource_type}")
    if not target.patient_data:
        write = operation is Operation.WRITE
        permission = (
            Permission.DIRECTORY_RESOURCE_WRITE if write else Permission.DIRECTORY_RESOURCE_READ
        )
        if permission not in ROLE_PERMISSIONS[role]:
            return Decision.deny(f"role {role} lacks permission {permission}")
        return Decision.allow(f"role {role} grants {permission}")
    rules = rules_for(role, target.resource_type, operation)
    if not rules:
        return Decision.deny(f"role {role} may not {operation} {target.resource_type} resources")
    own = _own(principal, role, target)
    facts = context.facts + ((own,) if own is not None else ())
    exempt = role in CONSENT_EXEMPT or own is not None
    if context.consent_denials and not exempt:
        return Decision.deny(*context.consent_denials)
    emergency_only: CareFact | None = None
    if target.restricted and not exempt:
        treating = [f for f in facts if f.relationship in TREATING_TEAM]
        emergency = [f for f in facts if f.relationship is Relationship.BREAK_GLASS]
        if not treating and not emergency:
            return Decision.deny(
                "this record carries a sensitive label that the patient's consent restricts "
                "to their treating team"
            )
        if not treating:
            # Only the emergency grant gets past the restriction: whatever rule then allows
            # (a department link, a rule for every patient), the act relies on the grant.
            emergency_only = emergency[0]
    best: Decision | None = None
    for rule in rules:
        granted = f"role {role} may {operation} {target.resource_type}"
        if Relationship.ANY in rule.relationships:
            candidate = Decision(
                allowed=True,
                reasons=(granted + " for every patient",),
                obligations=tuple(rule.obligations),
            )
        else:
            matched = _matched(rule, facts)
            if not matched:
                continue
            obligations = list(rule.obligations)
            purpose = None
            if matched[0].relationship is Relationship.BREAK_GLASS:
                # Nothing but the emergency grant allows: the ledger must say so (issue 5,
                # item 5; DICOM 110113 Security Alert on the entry).
                obligations.append(Obligation.BREAK_GLASS)
                purpose = matched[0].reason
            candidate = Decision(
                allowed=True,
                reasons=(granted, matched[0].reason),
                obligations=tuple(obligations),
                purpose=purpose,
            )
        if best is None or len(candidate.obligations) < len(best.obligations):
            best = candidate
    if (
        best is not None
        and emergency_only is not None
        and Obligation.BREAK_GLASS not in best.obligations
    ):
        best = Decision(
            allowed=True,
            reasons=(*best.reasons, emergency_only.reason),
            obligations=(*best.obligations, Obligation.BREAK_GLASS),
            purpose=emergency_only.reason,
        )
    if best is not None:
        return best
    if role is Role.PATIENT:
        return Decision.deny("outside the patient's own compartment")
    return Decision.deny(
        "no appointment, admission, care-team, order or other care link between this user "
        "and this patient"
    )


@dataclass(frozen=True)
class SearchPlan:
    """What a principal's searches and histories may return, as facts the records room turns
    into a filter inside the query, so totals and paging count only what may be seen."""

    role: Role | None
    directory: bool  # directory data (staff, organisations, terminology)
    rules: tuple[Rule, ...]  # the rules that allow reading patient data
    consent_applies: bool  # the patient's consent binds this role
    own_patient: str | None  # the patient a patient principal is (Relationship.OWN)
    # The resource types the token's SMART scopes allow for this operation; None: no limit.
    scope_types: frozenset[str] | None = None


def search_plan(principal: Principal, operation: Operation = Operation.SEARCH) -> SearchPlan:
    role = _role(principal)
    if role is None:
        return SearchPlan(None, directory=False, rules=(), consent_applies=True, own_patient=None)
    rules = tuple(r for r in RULES[role] if operation in r.operations)
    own = principal.patient_id if role is Role.PATIENT else None
    return SearchPlan(
        role,
        directory=Permission.DIRECTORY_RESOURCE_READ in ROLE_PERMISSIONS[role],
        rules=rules,
        consent_applies=role not in CONSENT_EXEMPT,
        own_patient=own,
        scope_types=_scope_types(principal, operation),
    )


def _scope_types(principal: Principal, operation: Operation) -> frozenset[str] | None:
    """The types `decide` lets through the token's scopes for `operation` (None: any)."""
    if principal.scopes is None:
        return None
    letters = _SCOPE_LETTERS[operation]
    types: set[str] = set()
    for text in principal.scopes:
        parsed = parse_scope(text)
        if parsed is None or not parsed.interactions & set(letters):
            continue
        if parsed.resource_type == "*":
            return None
        types.add(parsed.resource_type)
    return frozenset(types)


def decide_access_report(principal: Principal, patient_id: str) -> Decision:
    """Who may read the access report of `patient_id`: the patient (GDPR art. 15), and the
    data-protection and security officers; nobody else, and a patient no one else's."""
    role = _role(principal)
    if role is Role.PATIENT:
        if principal.patient_id is not None and principal.patient_id == patient_id:
            return Decision.allow("the patient's own access report (GDPR art. 15)")
        return Decision.deny("outside the patient's own compartment")
    if has_permission(principal, Permission.LEDGER_REPORT_READ):
        return Decision.allow(f"role {principal.role} grants {Permission.LEDGER_REPORT_READ}")
    return Decision.deny(f"role {principal.role} may not read access reports")

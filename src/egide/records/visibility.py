"""The facts the access policy needs, gathered from the database; and the same policy as SQL.

Security role: `access.policy.decide` is pure; this module is its I/O. For one decision it
reads who the principal is in the data (their practitioner, department, guardian roles), the
links between them and the patient, and the patient's consent rules. For searches and
histories it writes the same rules as a SQL condition, so results, totals and paging count
only what the caller may see (issue 5, item 6: no side doors). Every returned row is still
decided on one by one behind the filter (fail closed), so a gap between the two refuses the
request instead of leaking.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, delete, exists, false, or_, select, true
from sqlalchemy.orm import Session

from egide.access.permissions import Role
from egide.access.policy import AccessContext, SearchPlan
from egide.access.relationships import (
    CareFact,
    Link,
    LinkKind,
    Relationship,
    Windows,
    care_facts,
    link_kinds_for,
    requirements,
)
from egide.access.rules import RESTRICT_ALL_EXEMPT, TypeSet
from egide.core.principal import Principal
from egide.records.compartment import DIRECTORY_TYPES
from egide.records.links import LINKED_TYPES, extract
from egide.records.models import (
    AccessLink,
    AccessMembership,
    ConsentRule,
    ResourceHead,
    ResourceVersion,
    SearchToken,
)

SECURITY_PARAM = "_security"  # the blind-index parameter holding meta.security codes
ALL_LABELS = b"*"


def label_token_of(index: Any, code: str) -> bytes:
    token: bytes = index.token(SECURITY_PARAM, "c:" + code)
    return token


def _active(model: Any, now: dt.datetime) -> Any:
    return and_(
        or_(model.valid_from.is_(None), model.valid_from <= now),
        or_(model.valid_to.is_(None), model.valid_to >= now),
    )


def actors_of(session: Session, principal: Principal, now: dt.datetime) -> frozenset[str]:
    """Who `principal` is in the data: their FHIR identity, their account (for grants), and
    the groups they belong to now (their department through an active PractitionerRole; the
    RelatedPerson a patient also is)."""
    base = {f"user:{principal.id}"}
    if principal.fhir_user:
        base.add(principal.fhir_user)
    if principal.role == Role.PATIENT.value and principal.patient_id:
        base.add(f"Patient/{principal.patient_id}")
    groups = session.scalars(
        select(AccessMembership.group).where(
            AccessMembership.member.in_(sorted(base)), _active(AccessMembership, now)
        )
    ).all()
    return frozenset(base | set(groups))


@dataclass
class PatientFacts:
    """What holds between the principal and one patient."""

    facts: tuple[CareFact, ...] = ()
    deny_all: list[str] = field(default_factory=list)  # consents naming the principal
    deny_labels: dict[bytes, str] = field(default_factory=dict)  # labels refused to them
    restricted: set[bytes] = field(default_factory=set)  # labels kept to the treating team


def gather(
    session: Session,
    principal: Principal,
    *,
    actors: frozenset[str],
    patients: Iterable[str],
    now: dt.datetime,
    windows: Windows,
) -> dict[str, PatientFacts]:
    """The relationships and consent rules for each of `patients`, in two queries."""
    wanted = sorted(set(patients))
    out = {p: PatientFacts() for p in wanted}
    try:
        role = Role(principal.role)
    except ValueError:
        return out
    if not wanted:
        return out
    links: dict[str, list[Link]] = defaultdict(list)
    rows = session.scalars(
        select(AccessLink).where(
            AccessLink.patient_id.in_(wanted),
            AccessLink.kind.in_(sorted(link_kinds_for(role))),
            AccessLink.actor.in_(sorted(actors | {"*"})),
        )
    ).all()
    for row in rows:
        links[row.patient_id].append(
            Link(
                LinkKind(row.kind),
                row.actor,
                row.valid_from,
                row.valid_to,
                f"{row.source_type}/{row.source_id}",
                row.reason or "",
            )
        )
    for patient, found in links.items():
        out[patient].facts = care_facts(role, found, actors=actors, now=now, windows=windows)
    rules = session.scalars(
        select(ConsentRule).where(
            ConsentRule.patient_id.in_(wanted),
            ConsentRule.kind == "deny",
            _active(ConsentRule, now),
        )
    ).all()
    for rule in rules:
        facts = out[rule.patient_id]
        why = f"the patient's consent (Consent/{rule.consent_id})"
        if rule.actor is None:
            if rule.label is not None:
                facts.restricted.add(rule.label)
        elif rule.actor in actors:
            if rule.label is None:
                facts.deny_all.append(f"{why} refuses access by {rule.actor}")
            else:
                facts.deny_labels[rule.label] = f"{why} refuses {rule.actor} these records"
    return out


def labels_of(
    session: Session, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], set[bytes]]:
    """The security-label tokens of each resource (type, id), from the blind index."""
    wanted = sorted(set(keys))
    out: dict[tuple[str, str], set[bytes]] = {k: set() for k in wanted}
    if not wanted:
        return out
    for rtype, rid, value in session.execute(
        select(SearchToken.resource_type, SearchToken.resource_id, SearchToken.value).where(
            SearchToken.param == SECURITY_PARAM,
            or_(
                *(
                    and_(SearchToken.resource_type == t, SearchToken.resource_id == i)
                    for t, i in wanted
                )
            ),
        )
    ):
        out[(rtype, rid)].add(value)
    return out


def context_for(
    facts: PatientFacts | None, labels: set[bytes], resource_type: str
) -> tuple[AccessContext, bool]:
    """The policy's context and the target's `restricted` flag for one resource."""
    if facts is None:
        return AccessContext(), False
    denials = list(facts.deny_all)
    denials.extend(why for label, why in facts.deny_labels.items() if label in labels)
    restricts_all = ALL_LABELS in facts.restricted and resource_type not in RESTRICT_ALL_EXEMPT
    restricted = restricts_all or bool(facts.restricted & labels)
    return AccessContext(facts.facts, tuple(denials)), restricted


# -- the same policy as SQL ---------------------------------------------------------------


def _link_exists(
    model: Any,
    role: Role,
    relationships: Iterable[Relationship],
    *,
    actors: frozenset[str],
    now: dt.datetime,
    windows: Windows,
) -> Any:
    """Some active link gives the principal one of `relationships` with the row's patient."""
    alternatives: list[Any] = [
        # access.relationships.is_active, with the window of this kind.
        exists().where(
            AccessLink.patient_id == model.patient_id,
            AccessLink.kind == kind.value,
            AccessLink.actor.in_(sorted(requirement.actors)),
            or_(
                AccessLink.valid_from.is_(None),
                AccessLink.valid_from <= now + windows.lead(kind),
            ),
            or_(
                AccessLink.valid_to.is_(None),
                AccessLink.valid_to >= now - windows.grace(kind),
            ),
        )
        for relationship in relationships
        for requirement in requirements(role, relationship, actors)
        if requirement.actors
        for kind in sorted(requirement.kinds)
    ]
    return or_(*alternatives) if alternatives else false()


def _types(model: Any, types: TypeSet) -> Any:
    if types.include is not None:
        return model.resource_type.in_(sorted(types.include))
    if types.exclude:
        return model.resource_type.not_in(sorted(types.exclude))
    return true()


def _label_rule(model: Any, now: dt.datetime, *conditions: Any) -> Any:
    """An active deny rule of the row's patient matching one of the row's labels."""
    # Two levels down from the row's query: SQLAlchemy auto-correlates only to the directly
    # enclosing SELECT, so without `correlate_except` the row's table would be a fresh FROM
    # here and "some resource carries the label" would stand for "this row carries it".
    carries = (
        exists()
        .where(
            SearchToken.resource_type == model.resource_type,
            SearchToken.resource_id == model.id,
            SearchToken.param == SECURITY_PARAM,
            SearchToken.value == ConsentRule.label,
        )
        .correlate_except(SearchToken)
    )
    return exists().where(
        ConsentRule.patient_id == model.patient_id,
        ConsentRule.kind == "deny",
        _active(ConsentRule, now),
        or_(
            and_(
                ConsentRule.label == ALL_LABELS,
                model.resource_type.not_in(sorted(RESTRICT_ALL_EXEMPT)),
            ),
            carries,
        ),
        *conditions,
    )


def visible_patient_rows(
    model: type[ResourceHead] | type[ResourceVersion],
    plan: SearchPlan,
    *,
    actors: frozenset[str],
    now: dt.datetime,
    windows: Windows,
) -> Any:
    """`access.policy.decide` for every row at once: the rows of patient data `plan` allows."""
    role = plan.role
    if role is None or not plan.rules:
        return false()
    own = model.patient_id == plan.own_patient if plan.own_patient else false()
    allowed: list[Any] = []
    for rule in plan.rules:
        if Relationship.ANY in rule.relationships:
            related: Any = true()
        else:
            related = or_(
                own if Relationship.OWN in rule.relationships else false(),
                _link_exists(
                    model, role, rule.relationships, actors=actors, now=now, windows=windows
                ),
            )
        allowed.append(and_(_types(model, rule.types), related))
    # A row with no patient matches no link, so only rules that need none reach it.
    condition = or_(*allowed)
    if not plan.consent_applies:
        return condition
    named = sorted(actors)
    deny_all = exists().where(
        ConsentRule.patient_id == model.patient_id,
        ConsentRule.kind == "deny",
        _active(ConsentRule, now),
        ConsentRule.actor.in_(named),
        ConsentRule.label.is_(None),
    )
    deny_labels = _label_rule(model, now, ConsentRule.actor.in_(named))
    restricted = _label_rule(model, now, ConsentRule.actor.is_(None))
    team = (Relationship.PERSONAL, Relationship.GUARDIAN, Relationship.BREAK_GLASS)
    treating = _link_exists(model, role, team, actors=actors, now=now, windows=windows)
    consent_ok = and_(~deny_all, ~deny_labels, or_(~restricted, treating))
    # The patient's own record is never hidden from them by their own consent.
    return and_(condition, or_(own, consent_ok))


def visible_rows(
    model: type[ResourceHead] | type[ResourceVersion],
    plan: SearchPlan,
    *,
    actors: frozenset[str],
    now: dt.datetime,
    windows: Windows,
    erased: Any,
) -> Any:
    """Directory rows when the plan allows them, and the patient rows it allows; never the
    rows of a crypto-shredded patient (GDPR art. 17)."""
    directory_row = and_(model.patient_id.is_(None), model.resource_type.in_(DIRECTORY_TYPES))
    patient_rows = and_(
        ~directory_row,
        visible_patient_rows(model, plan, actors=actors, now=now, windows=windows),
        or_(model.patient_id.is_(None), model.patient_id.not_in(erased)),
    )
    rows = or_(directory_row if plan.directory else false(), patient_rows)
    if plan.scope_types is not None:
        # The token's SMART scopes, as `decide` applies them (a system history under
        # patient/Observation.rs holds Observations only, instead of failing closed).
        rows = and_(rows, model.resource_type.in_(sorted(plan.scope_types)))
    return rows


# -- rebuilding links on write --------------------------------------------------------------


def relink(
    session: Session,
    *,
    resource_type: str,
    resource_id: str,
    patient_id: str | None,
    resource: dict[str, Any] | None,
    now: dt.datetime,
    index: Any,
    trusted: bool = False,
    majority: dt.datetime | None = None,
) -> None:
    """Replace the links, memberships and consent rules `resource_type/resource_id` states
    (`trusted`, `majority`: see `records.links.extract`)."""
    if resource_type not in LINKED_TYPES:
        return
    for model in (AccessLink, AccessMembership):
        session.execute(
            delete(model).where(model.source_type == resource_type, model.source_id == resource_id)
        )
    if resource_type == "Consent":
        session.execute(delete(ConsentRule).where(ConsentRule.consent_id == resource_id))
    found = extract(
        resource_type,
        resource_id,
        resource,
        now=now,
        label_token=lambda code: label_token_of(index, code),
        trusted=trusted,
        majority=majority,
    )
    rows: list[Any] = []
    if patient_id is not None:
        rows.extend(
            AccessLink(
                source_type=resource_type,
                source_id=resource_id,
                patient_id=patient_id,
                kind=link.kind.value,
                actor=link.actor,
                valid_from=link.valid_from,
                valid_to=link.valid_to,
            )
            for link in found.links
        )
        rows.extend(
            ConsentRule(
                consent_id=resource_id,
                patient_id=patient_id,
                kind=rule.kind,
                actor=rule.actor,
                label=rule.label,
                valid_from=rule.valid_from,
                valid_to=rule.valid_to,
            )
            for rule in found.rules
        )
    rows.extend(
        AccessMembership(
            source_type=resource_type,
            source_id=resource_id,
            member=member.member,
            group=member.group,
            valid_from=member.valid_from,
            valid_to=member.valid_to,
        )
        for member in found.members
    )
    session.add_all(rows)


def research_opted_out(session: Session, patient_ids: Sequence[str], now: dt.datetime) -> set[str]:
    """The patients among `patient_ids` whose active consent refuses research use (issue 5,
    item 4), for the pseudonymised research export."""
    if not patient_ids:
        return set()
    return set(
        session.scalars(
            select(ConsentRule.patient_id).where(
                ConsentRule.patient_id.in_(sorted(set(patient_ids))),
                ConsentRule.kind == "research",
                _active(ConsentRule, now),
            )
        ).all()
    )

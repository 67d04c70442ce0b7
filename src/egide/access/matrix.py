"""The role × relationship × resource type × operation matrix, computed by the policy itself.

Security role: `docs/access.md` shows this matrix to the people who run and audit Égide (issue
5, "Must show"). It is not written by hand: every cell is the answer of `access.policy.decide`
for a principal of that role holding that relationship, built the way the records room builds
it (links -> `access.relationships.care_facts` -> `AccessContext`), so the document says what
the code does. A unit test fails when the document and this module disagree, and a
table-driven test checks every cell against expectations written independently in plain terms.

Pure (no I/O): `python -m egide.access.matrix` prints the markdown; `scripts/gen-access-doc.py`
(`make docs`) splices it into `docs/access.md` between the markers below.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from egide.access.permissions import Role
from egide.access.policy import AccessContext, Target, decide
from egide.access.relationships import Link, LinkKind, Relationship, Windows, care_facts
from egide.access.rules import RULES, Obligation, Operation
from egide.core.principal import Principal

__all__ = [
    "DIRECTORY_TYPE",
    "END",
    "START",
    "Cell",
    "ConsentCell",
    "Tie",
    "consent_rows",
    "matrix_rows",
    "render_markdown",
    "resource_types",
    "splice",
]

START = "<!-- matrix:start -->"
END = "<!-- matrix:end -->"
DIRECTORY_TYPE = "Practitioner"  # directory data (no patient compartment)


class Tie(StrEnum):
    """The columns of the matrix: what ties the principal to the patient, in document order."""

    NONE = "none"
    OWN = "own"
    GUARDIAN = "guardian"
    PERSONAL = "personal"
    DEPARTMENT = "department"
    ORDER = "order"
    INVESTIGATION = "investigation"
    BREAK_GLASS = "break_glass"


# A fixed instant: the matrix does not depend on when it is generated.
_NOW = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)
_PATIENT = "p1"
_ME = "u1"
_PRACTITIONER = "Practitioner/pr1"
_DEPARTMENT = "Organization/dept1"
_GUARDIAN_OF = "RelatedPerson/rp1"
_DAY = dt.timedelta(days=1)

# One link per relationship, as records.links would have stored it from the FHIR data or a
# grant. Each gives the relationship only to the roles `relationship_of` lets hold it.
_LINKS: dict[Tie, tuple[Link, ...]] = {
    Tie.NONE: (),
    Tie.OWN: (),
    Tie.GUARDIAN: (Link(LinkKind.GUARDIAN, _GUARDIAN_OF, None, None, "RelatedPerson/rp1"),),
    Tie.PERSONAL: (Link(LinkKind.ENCOUNTER, _PRACTITIONER, _NOW - _DAY, None, "Encounter/e1"),),
    Tie.DEPARTMENT: (Link(LinkKind.ENCOUNTER, _DEPARTMENT, _NOW - _DAY, None, "Encounter/e2"),),
    Tie.ORDER: tuple(
        Link(kind, "*", None, None, f"ServiceRequest/{kind.value}")
        for kind in (LinkKind.ORDER_IMAGING, LinkKind.ORDER_LAB, LinkKind.ORDER_MEDICATION)
    ),
    Tie.INVESTIGATION: (
        Link(
            LinkKind.INVESTIGATION,
            f"user:{_ME}",
            _NOW - _DAY,
            _NOW + _DAY,
            "grant/g1",
            "incident 1",
        ),
    ),
    Tie.BREAK_GLASS: (
        Link(
            LinkKind.BREAK_GLASS,
            f"user:{_ME}",
            _NOW - dt.timedelta(hours=1),
            _NOW + dt.timedelta(hours=3),
            "grant/g2",
            "unconscious patient",
        ),
    ),
}
# Clinical types no rule names: they stand for "every type" and "every type but ...".
_UNNAMED_CANDIDATES = ("Condition", "Procedure", "DocumentReference", "Immunization")


@dataclass(frozen=True)
class Cell:
    """One cell: may `role`, tied to the patient by `relationship`, do `operation`?

    `holds` says whether a principal of this role can hold this relationship at all (a nurse
    never holds an order relationship): when it cannot, the answer is that of `none`.
    """

    role: Role
    relationship: Tie
    resource_type: str
    operation: Operation
    allowed: bool
    obligations: tuple[str, ...]
    holds: bool


@dataclass(frozen=True)
class ConsentCell:
    """What the patient's consent does to a role reading under a relationship."""

    role: Role
    relationship: Tie
    resource_type: str  # the type the check was made on (one this role may read so)
    named_denial_refuses: bool  # a Consent deny provision naming this person
    restriction_refuses: bool  # a sensitive label the consent keeps to the treating team


def resource_types() -> tuple[str, ...]:
    """Every type named in a rule's type set, one type standing for each "every type (but)"
    set, and a directory type; sorted, the directory type last."""
    named: set[str] = set()
    open_sets = []
    for rules in RULES.values():
        for rule in rules:
            if rule.types.include is not None:
                named |= rule.types.include
            else:
                named |= rule.types.exclude
                open_sets.append(rule.types)
    representatives: set[str] = set()
    for types in open_sets:
        representatives.add(next(t for t in _UNNAMED_CANDIDATES if t in types and t not in named))
    return (*sorted(named | representatives), DIRECTORY_TYPE)


def _principal(role: Role, tie: Tie) -> Principal:
    # A patient account is some patient; "own" makes it the target's. A staff account with a
    # patient id (never issued) shows that being the patient is not a staff relationship.
    patient = _PATIENT if tie is Tie.OWN else ("p-self" if role is Role.PATIENT else None)
    fhir_user = f"Patient/{patient}" if role is Role.PATIENT else _PRACTITIONER
    return Principal(id=_ME, role=role.value, patient_id=patient, fhir_user=fhir_user)


def _actors(principal: Principal) -> frozenset[str]:
    # As records.visibility.actors_of: the account, the FHIR identity, and the groups it is a
    # member of now (the department of a practitioner; the RelatedPerson a patient also is).
    actors = {f"user:{principal.id}"}
    if principal.fhir_user:
        actors.add(principal.fhir_user)
    actors.add(_GUARDIAN_OF if principal.role == Role.PATIENT.value else _DEPARTMENT)
    return frozenset(actors)


def _context(role: Role, tie: Tie) -> tuple[Principal, AccessContext, bool]:
    principal = _principal(role, tie)
    facts = care_facts(role, _LINKS[tie], actors=_actors(principal), now=_NOW, windows=Windows())
    if tie is Tie.NONE:
        holds = True
    elif tie is Tie.OWN:
        # The policy itself recognises the own compartment (policy._own): a patient's only.
        holds = role is Role.PATIENT
    else:
        holds = any(f.relationship is Relationship(tie.value) for f in facts)
    return principal, AccessContext(facts), holds


def _target(resource_type: str, *, restricted: bool = False) -> Target:
    if resource_type == DIRECTORY_TYPE:
        return Target(resource_type, None, patient_data=False)
    return Target(resource_type, _PATIENT, restricted=restricted)


def matrix_rows() -> list[Cell]:
    """Every cell, each the answer of `decide`."""
    cells: list[Cell] = []
    types = resource_types()
    for role in Role:
        for tie in Tie:
            principal, context, holds = _context(role, tie)
            for resource_type in types:
                for operation in Operation:
                    decision = decide(principal, operation, _target(resource_type), context)
                    cells.append(
                        Cell(
                            role,
                            tie,
                            resource_type,
                            operation,
                            decision.allowed,
                            tuple(decision.obligations) if decision.allowed else (),
                            holds,
                        )
                    )
    return cells


def consent_rows(cells: Iterable[Cell] | None = None) -> list[ConsentCell]:
    """For each role and relationship under which the role reads some patient data, what a
    consent denial naming the reader and a restricted sensitive label do (each by `decide`)."""
    rows: list[ConsentCell] = []
    readable: dict[tuple[Role, Tie], str] = {}
    for cell in cells if cells is not None else matrix_rows():
        key = (cell.role, cell.relationship)
        if (
            cell.holds
            and cell.allowed
            and cell.operation is Operation.READ
            and cell.resource_type != DIRECTORY_TYPE
            and key not in readable
        ):
            readable[key] = cell.resource_type
    for (role, tie), resource_type in readable.items():
        principal, context, _ = _context(role, tie)
        denied = AccessContext(context.facts, ("the patient's consent refuses this person",))
        named = decide(principal, Operation.READ, _target(resource_type), denied)
        restricted = decide(
            principal, Operation.READ, _target(resource_type, restricted=True), context
        )
        rows.append(
            ConsentCell(role, tie, resource_type, not named.allowed, not restricted.allowed)
        )
    return rows


_LETTERS = {Operation.READ: "R", Operation.SEARCH: "S", Operation.WRITE: "W"}
_MARKS = {Obligation.MASK_CLINICAL.value: " masked", Obligation.BREAK_GLASS.value: " bg"}


def _text(cells: list[Cell]) -> str:
    """One table cell: the operations allowed (R, S, W) and their obligations."""
    if not cells[0].holds:
        return "n/a"
    letters = "".join(_LETTERS[c.operation] for c in cells if c.allowed)
    if not letters:
        return "–"
    marks = sorted({_MARKS[o] for c in cells if c.allowed for o in c.obligations})
    return letters + "".join(marks)


def render_markdown(cells: list[Cell] | None = None) -> str:
    """The matrix as markdown: one table per role; types with identical rows share a line."""
    cells = cells if cells is not None else matrix_rows()
    by_key: dict[tuple[Role, str, Tie], list[Cell]] = {}
    for cell in cells:
        by_key.setdefault((cell.role, cell.resource_type, cell.relationship), []).append(cell)
    types = resource_types()
    lines = [
        (
            "Generated by `egide.access.matrix` from `access.rules.RULES` through "
            "`access.policy.decide` (`make docs`); do not edit by hand."
        ),
        "",
        "Cells: **R** read, **S** search, **W** write (create, update, delete); **masked**: "
        "clinical elements removed (`access.masking`); **bg**: allowed only by a "
        "break-the-glass grant, the ledger entry is marked; **–**: refused; **n/a**: this "
        "role never holds this relationship (the answer is that of `none`). Types: "
        + ", ".join(f"`{t}`" for t in types[:-1])
        + f"; `{DIRECTORY_TYPE}` stands for directory data (no patient).",
    ]
    header = "| resource types | " + " | ".join(t.value for t in Tie) + " |"
    rule = "|---|" + "---|" * len(Tie)
    for role in Role:
        rows: dict[tuple[str, ...], list[str]] = {}
        for resource_type in types:
            texts = tuple(_text(by_key[(role, resource_type, tie)]) for tie in Tie)
            rows.setdefault(texts, []).append(resource_type)
        lines += ["", f"### {role.value}", "", header, rule]
        for texts, members in rows.items():
            lines.append(f"| {', '.join(members)} | " + " | ".join(texts) + " |")
    lines += [
        "",
        "### Consent",
        "",
        (
            "What the patient's active Consent does to each role and relationship under "
            "which the role reads patient data (checked on the type named): **refused** or "
            "**no effect**."
        ),
        "",
        (
            "| role | relationship | checked on | a deny provision naming the reader "
            "| a sensitive label kept to the treating team |"
        ),
        "|---|---|---|---|---|",
    ]
    for row in consent_rows(cells):
        effect = {True: "refused", False: "no effect"}
        lines.append(
            f"| {row.role.value} | {row.relationship.value} | {row.resource_type} "
            f"| {effect[row.named_denial_refuses]} | {effect[row.restriction_refuses]} |"
        )
    return "\n".join(lines) + "\n"


def splice(document: str, matrix: str) -> str:
    """`document` with the text between the matrix markers replaced by `matrix`."""
    head, start, rest = document.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise ValueError(f"the document lacks the markers {START} and {END}")
    return f"{head}{START}\n{matrix}{END}{tail}"


if __name__ == "__main__":
    sys.stdout.write(render_markdown())

"""SMART App Launch 2 scopes (access.scopes) and their bound on the policy (access.policy).

Parsing is strict (SMART v2 `<level>/<type>.<cruds>` only), a scope allows exactly the letters
it names, and a scoped principal never gets more than its role (an intersection).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from egide.access.policy import AccessContext, Operation, Target, decide
from egide.access.relationships import CareFact, Relationship
from egide.access.scopes import (
    LETTERS,
    ResourceScope,
    describe,
    parse_scope,
    parse_scopes,
    scope_allows,
    scope_allows_any,
    within,
)
from egide.core.principal import Principal


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("patient/*.rs", ResourceScope("patient", "*", frozenset("rs"))),
        ("user/Observation.cruds", ResourceScope("user", "Observation", frozenset("cruds"))),
        ("system/Patient.r", ResourceScope("system", "Patient", frozenset("r"))),
        ("patient/Condition.cd", ResourceScope("patient", "Condition", frozenset("cd"))),
    ],
)
def test_well_formed_v2_scopes_parse(text: str, expected: ResourceScope) -> None:
    parsed = parse_scope(text)
    assert parsed == expected
    assert str(parsed) == text


@pytest.mark.parametrize(
    "text",
    [
        "patient/*.read",  # SMART v1 suffixes are refused, not guessed at
        "user/*.write",
        "user/*.*",
        "patient/*.sr",  # letters out of order
        "patient/*.rr",  # a letter twice
        "patient/*.x",
        "patient/*.",
        "admin/*.rs",  # unknown level
        "patient/observation.rs",  # types start with a capital
        "patient/Observation.rs?category=laboratory",  # fine-grained constraints
        "patient/*.rs ",
        "",
        "launch/patient",
        "openid",
    ],
)
def test_malformed_or_unsupported_scopes_do_not_parse(text: str) -> None:
    assert parse_scope(text) is None


def test_a_scope_string_is_sorted_into_its_parts() -> None:
    request = parse_scopes("launch/patient openid fhirUser patient/*.rs  patient/Foo.xyz")
    assert [str(s) for s in request.resources] == ["patient/*.rs"]
    assert request.launch_patient
    assert request.ignored == ("openid", "fhirUser")
    assert request.invalid == ("patient/Foo.xyz",)
    assert request.granted() == ("patient/*.rs", "launch/patient")
    assert request.levels == {"patient"}


@pytest.mark.parametrize(
    ("scopes", "resource_type", "letter", "allowed"),
    [
        (["patient/*.rs"], "Observation", "r", True),
        (["patient/*.rs"], "Observation", "s", True),
        (["patient/*.rs"], "Observation", "c", False),
        (["patient/*.rs"], "Observation", "u", False),
        (["patient/*.rs"], "Observation", "d", False),
        (["patient/Observation.rs"], "Observation", "r", True),
        (["patient/Observation.rs"], "Condition", "r", False),
        (["patient/Observation.rs"], "*", "s", False),  # a system-wide search needs `*`
        (["patient/*.s"], "*", "s", True),
        (["user/*.cruds"], "Patient", "d", True),
        (["user/Patient.c", "user/Patient.u"], "Patient", "u", True),
        (["system/*.rs"], "Encounter", "c", False),
        (["launch/patient", "openid"], "Patient", "r", False),
        ([], "Patient", "r", False),
        (["patient/*.rs"], "Patient", "rs", False),  # one letter at a time
        (["patient/*.rs"], "Patient", "x", False),
        (["patient/*.read"], "Patient", "r", False),  # malformed scopes allow nothing
    ],
)
def test_scope_allows_table(
    scopes: list[str], resource_type: str, letter: str, allowed: bool
) -> None:
    assert scope_allows(scopes, resource_type, letter) is allowed


def test_scope_allows_any_letter() -> None:
    assert scope_allows_any(["patient/*.s"], "Observation", "rs")
    assert not scope_allows_any(["patient/*.rs"], "Observation", "cud")


def test_within_reports_what_the_registration_does_not_cover() -> None:
    allowed = parse_scopes("patient/*.rs user/Observation.cruds")
    assert within(parse_scopes("patient/Observation.r user/Observation.cd"), allowed) == ()
    assert within(parse_scopes("patient/*.cruds"), allowed) == ("patient/*.cruds",)
    assert within(parse_scopes("user/Patient.r"), allowed) == ("user/Patient.r",)
    assert within(parse_scopes("system/*.rs"), allowed) == ("system/*.rs",)
    assert within(parse_scopes("launch/patient patient/*.r"), allowed) == ("launch/patient",)


def test_describe_in_plain_words() -> None:
    assert (
        describe("patient/*.rs") == "Read and search all kinds of records in your own health record"
    )
    assert describe("user/Observation.cud").startswith("Create, update and delete Observation")
    assert describe("launch/patient").startswith("Know which patient")


# --- Hypothesis: a scope never allows a letter it lacks ---------------------------------------

_TYPES = st.sampled_from(["*", "Patient", "Observation", "Condition", "Encounter"])
_LETTER_SETS = st.sets(st.sampled_from(list(LETTERS)), min_size=1)


@given(
    level=st.sampled_from(["patient", "user", "system"]),
    resource_type=_TYPES,
    letters=_LETTER_SETS,
    asked_type=st.sampled_from(["Patient", "Observation", "Condition", "*"]),
    asked=st.sampled_from(list(LETTERS)),
)
def test_a_parsed_scope_never_allows_a_letter_it_lacks(
    level: str, resource_type: str, letters: set[str], asked_type: str, asked: str
) -> None:
    text = f"{level}/{resource_type}." + "".join(c for c in LETTERS if c in letters)
    parsed = parse_scope(text)
    assert parsed is not None
    assert str(parsed) == text
    allowed = scope_allows([text], asked_type, asked)
    if asked not in letters:
        assert not allowed
    if resource_type not in ("*", asked_type):
        assert not allowed
    if asked in letters and resource_type in ("*", asked_type):
        assert allowed


@given(text=st.text(max_size=40))
def test_arbitrary_text_never_allows_more_than_it_parses_to(text: str) -> None:
    parsed = parse_scope(text)
    for letter in LETTERS:
        if scope_allows([text], "Observation", letter):
            assert parsed is not None
            assert letter in parsed.interactions


# --- the policy: scopes are an upper bound, never a grant -------------------------------------


def _principal(role: str, scopes: frozenset[str] | None, patient: str | None = None) -> Principal:
    return Principal(id="u1", role=role, patient_id=patient, scopes=scopes)


# The physician below treats p1 (an encounter names them): the role allows, the scopes bound.
TREATING = AccessContext(
    (CareFact(Relationship.PERSONAL, "an encounter (Encounter/e1) links them to this patient"),)
)


@pytest.mark.parametrize(
    ("role", "scopes", "operation", "resource_type", "allowed"),
    [
        ("physician", None, Operation.WRITE, "Observation", True),
        ("physician", frozenset({"user/*.rs"}), Operation.READ, "Observation", True),
        ("physician", frozenset({"user/*.rs"}), Operation.SEARCH, "Observation", True),
        ("physician", frozenset({"user/*.rs"}), Operation.WRITE, "Observation", False),
        ("physician", frozenset({"user/Patient.rs"}), Operation.READ, "Observation", False),
        ("physician", frozenset({"user/*.cruds"}), Operation.WRITE, "Observation", True),
        # The scope never widens the role: a secretary reaches no clinical data.
        ("secretary", frozenset({"user/*.cruds"}), Operation.READ, "Observation", False),
        ("patient", frozenset({"patient/*.cruds"}), Operation.WRITE, "Observation", False),
        ("service", frozenset({"system/*.rs"}), Operation.WRITE, "Observation", False),
        ("service", frozenset({"system/*.rs"}), Operation.READ, "Observation", True),
        ("service", frozenset(), Operation.READ, "Observation", False),
        # A full `user/*.cruds` grants nothing the care relationship does not: without it, the
        # physician reaches demographics only, scopes or not.
        ("physician", frozenset({"user/*.cruds"}), Operation.READ, "Observation", None),
        ("physician", frozenset({"user/*.cruds"}), Operation.WRITE, "Patient", None),
        ("physician", frozenset({"user/*.cruds"}), Operation.READ, "Patient", True),
        ("nurse", frozenset({"user/*.cruds"}), Operation.WRITE, "MedicationRequest", False),
    ],
)
def test_scopes_bound_the_policy(
    role: str,
    scopes: frozenset[str] | None,
    operation: Operation,
    resource_type: str,
    allowed: bool | None,
) -> None:
    """`allowed` None: allowed with the treating relationship, refused without it."""
    patient = "p1" if role == "patient" else None
    principal = _principal(role, scopes, patient)
    target = Target(resource_type, "p1")
    with_care = decide(principal, operation, target, TREATING)
    without = decide(principal, operation, target)
    if allowed is None:
        assert with_care.allowed, with_care.reasons
        assert not without.allowed, without.reasons
    else:
        assert with_care.allowed is allowed, with_care.reasons
        if role == "physician" and resource_type != "Patient":
            assert not without.allowed, "no care relationship: no clinical data"


def test_a_patient_token_stays_in_its_compartment() -> None:
    principal = _principal("patient", frozenset({"patient/*.rs"}), "p1")
    assert decide(principal, Operation.READ, Target("Observation", "p1")).allowed
    assert not decide(principal, Operation.READ, Target("Observation", "p2")).allowed


def test_with_request_keeps_the_scopes() -> None:
    principal = _principal("physician", frozenset({"user/*.rs"}))
    again = principal.with_request(ip="192.0.2.1", device="d", request_id="r")
    assert again.scopes == frozenset({"user/*.rs"})

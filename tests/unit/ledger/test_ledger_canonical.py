"""RFC 8785 canonical JSON for ledger entries: known answers and properties."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from egide.ledger.canonical import canonical_json

# Known answers worked out by hand from RFC 8785 sections 3.2.2 and 3.2.3.
CASES = [
    ({"b": 1, "a": [True, None, "x"]}, b'{"a":[true,null,"x"],"b":1}'),
    ({"é": 1, "z": 2, "A": 3}, '{"A":3,"z":2,"é":1}'.encode()),
    # UTF-16 code-unit order: U+1F600 (surrogates D83D..) sorts before U+FB01.
    ({"\ufb01": 1, "\U0001f600": 2}, '{"\U0001f600":2,"\ufb01":1}'.encode()),
    (
        {"s": 'quote" back\\ nl\n tab\t bell\x07'},
        b'{"s":"quote\\" back\\\\ nl\\n tab\\t bell\\u0007"}',
    ),
    ({"n": -0, "big": 10**20}, b'{"big":100000000000000000000,"n":0}'),
    ("Élodie", '"Élodie"'.encode()),
]


@pytest.mark.parametrize(("value", "expected"), CASES)
def test_known_answers(value: object, expected: bytes) -> None:
    assert canonical_json(value) == expected


def test_floats_and_odd_types_are_refused() -> None:
    with pytest.raises(TypeError):
        canonical_json({"x": 1.5})
    with pytest.raises(TypeError):
        canonical_json({1: "non-string key"})
    with pytest.raises(TypeError):
        canonical_json({"x": object()})


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(JSONISH)
def test_round_trips_through_json_and_is_stable(value: object) -> None:
    encoded = canonical_json(value)
    decoded = json.loads(encoded)
    assert decoded == value
    assert canonical_json(decoded) == encoded


@given(JSONISH)
def test_the_fast_path_and_the_careful_encoder_agree(value: object) -> None:
    from egide.ledger.canonical import _encode  # noqa: PLC0415

    out: list[str] = []
    _encode(value, out)
    assert canonical_json(value) == "".join(out).encode("utf-8")

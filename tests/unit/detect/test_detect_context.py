"""The context document (`events.context_from_json`): what a well-formed one gives back
(written and read again, the same Context: Hypothesis), the forgiving cases (a postal code
written as a number, flags absent), and a one-line error naming the entry and the field for
every malformed one, whichever path the entry takes. The same from bytes
(`events.context_from_bytes`, what `load_context` reads with): its msgspec decoder is a speed
path only, so every document gives what `context_from_json` gives, or the same error."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from egide.detect import events
from egide.detect.events import (
    CareLink,
    Context,
    DetectFormatError,
    PatientInfo,
    UserInfo,
    context_from_bytes,
    context_from_json,
    load_context,
)

TEXT = st.one_of(st.none(), st.text(max_size=12))
IDS = st.text(min_size=1, max_size=8)
STAMPS = st.one_of(
    st.none(), st.sampled_from(["2026-03-01T08:00:00Z", "2026-03-02T10:30:00+02:00"])
)


@st.composite
def _contexts(draw: st.DrawFn) -> Context:
    users = tuple(
        UserInfo(draw(IDS), draw(TEXT), draw(TEXT), draw(TEXT), draw(TEXT), draw(TEXT))
        for _ in range(draw(st.integers(0, 4)))
    )
    patients = tuple(
        PatientInfo(
            draw(IDS),
            draw(TEXT),
            draw(TEXT),
            draw(TEXT),
            draw(st.booleans()),
            draw(st.one_of(st.none(), IDS)),
            draw(st.booleans()),
        )
        for _ in range(draw(st.integers(0, 4)))
    )
    care = []
    for _ in range(draw(st.integers(0, 4))):
        user = draw(st.one_of(st.none(), IDS))
        department = draw(TEXT) if user is not None else draw(IDS)
        care.append(CareLink(draw(IDS), user, department, draw(STAMPS), draw(STAMPS)))
    return Context(users=users, patients=patients, care=tuple(care))


@given(_contexts())
def test_written_and_read_again_it_is_the_same(context: Context) -> None:
    assert context_from_json(context.to_json()) == context
    assert context_from_bytes(orjson.dumps(context.to_json())) == context


def test_numbers_for_postal_codes_and_absent_flags() -> None:
    context = context_from_json(
        {
            "users": [{"id": "u1", "postal_code": 75012}],
            "patients": [{"id": "p1", "postal_code": 13001}],
            "care": [{"patient": "p1", "department": "cardiology"}],
        }
    )
    assert context.users[0].postal_code == "75012"
    assert context.patients[0] == PatientInfo("p1", postal_code="13001")
    assert context.care[0] == CareLink("p1", None, "cardiology", None, None)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "must be a JSON object"),
        ({"users": {}}, "'users' must be a list of objects"),
        ({"users": [{"role": "nurse"}]}, "users[0]: field 'id' is required"),
        ({"users": [{"id": ""}]}, "users[0]: field 'id' is required"),
        ({"users": [{"id": "u1"}, {"id": "u2", "role": ["x"]}]}, "users[1]: field 'role'"),
        ({"patients": [{"id": "p1", "address": {"a": 1}}]}, "patients[0]: field 'address'"),
        ({"patients": [{"id": 7.5, "employee": True}]}, "patients[0]: field 'employee'"),
        ({"care": [{"patient": "p1"}]}, "care[0]: a care link needs a user or a department"),
        ({"care": [{"patient": "p1", "user": None, "department": None}]}, "care[0]: a care"),
        ({"care": [{"user": "u1"}]}, "care[0]: field 'patient' is required"),
        (
            {"care": [{"patient": "p1", "user": "u1", "start": "yesterday"}]},
            "care[0]: time 'yesterday' is not an RFC 3339 timestamp",
        ),
        (
            {"care": [{"patient": "p1", "user": "u1", "end": "2026-03-01T08:00:00"}]},
            "care[0]: time '2026-03-01T08:00:00' is not an RFC 3339 timestamp with an offset",
        ),
        (
            {"care": [{"user": "u1", "start": "soon"}]},
            "care[0]: time 'soon'",  # the time is judged before the patient, as always
        ),
    ],
)
def test_a_malformed_entry_is_named(doc: Any, message: str) -> None:
    with pytest.raises(DetectFormatError) as caught:
        context_from_json(doc)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    with pytest.raises(DetectFormatError) as from_bytes:
        context_from_bytes(orjson.dumps(doc))
    assert str(from_bytes.value) == str(caught.value)


_ENTRY = b'{"users":[{"id":"u1","role":"nurse"}],"care":[{"patient":"p1","user":"u1"}]'


_REFUSED = [  # by the decoder; `context_from_json` takes them
    b'{"users":[{"id":"u1","postal_code":75012}]}',
    b'{"patients":[{"id":"p1","vip":1,"deceased":null}]}',
    b'{"patients":[{"id":"p1","vip":"yes"}]}',
    b'{"users":[{"id":"u1","badge":[1,2]}]}',
    b'{"care":[{"patient":"p1","user":"u1","note":"x"}],"hospital":"H"}',
]
_TAKEN = [  # by the decoder
    _ENTRY + b"}",
    _ENTRY + b',"timezone":"Europe/Paris"}',
    b'{"users":[{"id":"u1","role":"x","role":"nurse"}]}',
    b'{"\\u0075sers":[{"id":"u\\u00e9"}],"patients":[{"id":"p1","vip":true}]}',
    b"{}",
]


@pytest.mark.parametrize("data", _REFUSED + _TAKEN)
def test_bytes_give_what_the_parsed_document_gives(data: bytes) -> None:
    assert context_from_bytes(data) == context_from_json(orjson.loads(data))
    if data in _REFUSED:
        with pytest.raises(msgspec.DecodeError):
            events._DECODE_CONTEXT(data)  # the speed path, checked apart
    else:
        events._DECODE_CONTEXT(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"users": [', "ctx: not JSON"),
        # orjson refuses these anywhere; msgspec would skip them inside an unknown field.
        (b'{"users":[{"id":"u1","note":"\xff"}]}', "not JSON"),
        (b'{"users":[{"id":"u1","note":1e999}]}', "not JSON"),
        (b'{"users":[{"id":"u1"}],"x":"\\ud800"}', "not JSON"),
        (b'{"timezone":"Mars/Olympus"}', "Mars/Olympus"),
        (b'{"timezone":7}', "'timezone' must be an IANA time zone name"),
    ],
)
def test_bytes_that_are_no_context(data: bytes, message: str) -> None:
    with pytest.raises(DetectFormatError, match=re.escape(message)):
        context_from_bytes(data, name="ctx")


def test_load_context_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "context.json"
    path.write_bytes(b"{oops")
    with pytest.raises(DetectFormatError, match=re.escape(f"context {path}: not JSON")):
        load_context(path)
    path.write_bytes(_ENTRY + b"}")
    assert load_context(path) == context_from_json(orjson.loads(_ENTRY + b"}"))

"""The witness protocol (C2SP tlog-witness, tlog-cosignature), its storage and its client.

Independent anchors, beside values computed once with the code under test:

* the example request body of https://c2sp.org/tlog-witness, which must parse;
* the example cosignature line of https://c2sp.org/tlog-cosignature, whose key ID and
  timestamp (1679315147, the time in that document's example message) must decode in place;
* transparency-dev/formats' cosignature vectors: the verifier key
  "remora.n621.de+da77ade7+BOvN...", whose key ID only matches under the 0x04 rule, and a
  signature whose timestamp is 1727964367;
* the signed message rebuilt by hand in the test from the specification's words, and checked
  with `cryptography` directly.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from egide.core.clock import FixedClock
from egide.core.errors import BadRequest, StorageFailure
from egide.core.ratelimit import RateLimiter
from egide.core.settings import load_settings
from egide.ledger import merkle
from egide.ledger.checkpoint import Checkpoint, CheckpointSigner, CheckpointVerifier
from egide.ledger.witness import (
    MAX_NOTE_BYTES,
    MAX_PROOF_LINES,
    MAX_REQUEST_BYTES,
    AddCheckpoint,
    Cosignature,
    CosignatureError,
    CosignatureVerifier,
    Decision,
    Refusal,
    RefusalKind,
    WitnessSigner,
    decide_add_checkpoint,
    format_add_checkpoint,
    note_origin,
    parse_add_checkpoint,
    parse_signature_lines,
    trusted_note,
    verify_cosignatures,
)
from egide.ledger.witness_push import WitnessPusher
from egide.ledger.witness_store import Cosigned, Witness, origin_directory

ORIGIN = "log.example/ledger"
LOG = CheckpointSigner(name=ORIGIN, seed=b"\x11" * 32)
LOG_KEY = CheckpointVerifier(LOG.verifier_key())
OTHER_LOG = CheckpointSigner(name=ORIGIN, seed=b"\x22" * 32)
WITNESS = WitnessSigner(name="witness.example/w1", seed=b"\x33" * 32)
WITNESS_KEY = CosignatureVerifier(WITNESS.verifier_key())
LEAVES = [merkle.leaf_hash(f"entry {i}".encode()) for i in range(40)]
T0 = 1_772_439_300  # 2026-03-02T08:15:00Z


def checkpoint(size: int, leaves: list[bytes] = LEAVES) -> Checkpoint:
    return Checkpoint(origin=ORIGIN, size=size, root=merkle.root_of(leaves[:size]))


def note(size: int, signer: CheckpointSigner = LOG, leaves: list[bytes] = LEAVES) -> bytes:
    return signer.sign(checkpoint(size, leaves))


def request(old: int, new: int, *, leaves: list[bytes] = LEAVES) -> AddCheckpoint:
    proof = [] if old in (0, new) else merkle.consistency_proof(leaves[:new], old)
    return AddCheckpoint(old_size=old, proof=tuple(proof), note=note(new, leaves=leaves))


def decide(latest: Checkpoint | None, req: AddCheckpoint) -> Decision | Refusal:
    return decide_add_checkpoint(origin=ORIGIN, trusted=[LOG_KEY], latest=latest, request=req)


def flip(data: bytes, index: int, bit: int = 0) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 1 << bit
    return bytes(changed)


# --------------------------------------------------------------------------- request format

SPEC_BODY = (
    "old 20852014\n"
    "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n"
    "jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n"
    "5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n"
    "/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n"
    "\n"
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcy"
    "v2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
).encode()


def test_the_specification_example_parses_and_formats_back() -> None:
    parsed = parse_add_checkpoint(SPEC_BODY)
    assert parsed.old_size == 20852014
    assert len(parsed.proof) == 4
    assert parsed.proof[0] == base64.b64decode("PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=")
    assert parsed.note.startswith(b"example.com/behind-the-sofa\n20852163\n")
    assert note_origin(parsed.note) == "example.com/behind-the-sofa"
    assert format_add_checkpoint(parsed.old_size, parsed.proof, parsed.note) == SPEC_BODY


def test_a_request_without_proof_round_trips() -> None:
    body = format_add_checkpoint(0, [], note(5))
    assert body == b"old 0\n\n" + note(5)
    assert parse_add_checkpoint(body) == AddCheckpoint(0, (), note(5))


HASH = base64.b64encode(b"\x01" * 32)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", "no 'old <size>' line"),
        (b"old 5", "no 'old <size>' line"),
        (b"old 05\n\nx", "old <size>"),
        (b"old -1\n\nx", "old <size>"),
        (b"old  5\n\nx", "old <size>"),
        (b"Old 5\n\nx", "old <size>"),
        (b"old 5 \n\nx", "old <size>"),
        (b"old 5\r\n\nx", "old <size>"),
        (b"old \xd9\xa5\n\nx", "old <size>"),  # an Arabic-Indic five is not ASCII
        (b"old 18446744073709551616\n\nx", "64 bits"),
        (b"old 5\n" + HASH + b"\n", "no empty line"),
        (b"old 5\n" + HASH, "no empty line"),
        (b"old 5\n" + HASH + b"\n\n", "no checkpoint"),
        (b"old 5\n" + HASH[:-1] + b"\n\nx", "base64"),
        (b"old 5\n" + HASH + b" \n\nx", "base64"),
        (b"old 5\n" + base64.b64encode(b"\x01" * 31) + b"\n\nx", "32-byte hash"),
        (b"old 5\nAQ==\n\nx", "32-byte hash"),
        # Non-canonical: the padding bits of the last character are not zero.
        (b"old 5\n" + HASH[:-2] + b"F=\n\nx", "canonical"),
        (b"old 0\n" + HASH + b"\n\nx", "old size 0"),
        (b"old 5\n" + (HASH + b"\n") * 64 + b"\nx", "more than 63"),
        (b"old 5\n\n" + b"x" * (MAX_NOTE_BYTES + 1), "larger than"),
        (b"old 5\n\n" + b"x" * MAX_REQUEST_BYTES, "larger than"),
    ],
)
def test_malformed_requests_are_refused_with_a_reason(body: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_add_checkpoint(body)


def test_the_limits_themselves_are_accepted() -> None:
    body = b"old 5\n" + (HASH + b"\n") * MAX_PROOF_LINES + b"\n" + b"x" * MAX_NOTE_BYTES
    assert len(body) <= MAX_REQUEST_BYTES
    parsed = parse_add_checkpoint(body)
    assert len(parsed.proof) == MAX_PROOF_LINES


@pytest.mark.parametrize(
    ("old", "proof", "payload"),
    [
        (-1, [], b"x"),
        (1 << 64, [], b"x"),
        (True, [], b"x"),
        (0, [b"\x00" * 32], b"x"),
        (5, [b"\x00" * 31], b"x"),
        (5, [b"\x00" * 32] * 64, b"x"),
        (5, [], b""),
        (5, [], b"x" * (MAX_NOTE_BYTES + 1)),
    ],
)
def test_format_refuses_what_a_witness_would_refuse(
    old: int, proof: list[bytes], payload: bytes
) -> None:
    with pytest.raises(ValueError, match=r"size|proof|hash|note"):
        format_add_checkpoint(old, proof, payload)


@settings(max_examples=300, deadline=None)
@given(
    old=st.integers(min_value=0, max_value=(1 << 64) - 1),
    proof=st.lists(st.binary(min_size=32, max_size=32), max_size=MAX_PROOF_LINES),
    payload=st.binary(min_size=1, max_size=2000),
)
def test_request_format_round_trips(old: int, proof: list[bytes], payload: bytes) -> None:
    if old == 0:
        proof = []
    body = format_add_checkpoint(old, proof, payload)
    assert parse_add_checkpoint(body) == AddCheckpoint(old, tuple(proof), payload)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_parse_or_fail_with_value_error(body: bytes) -> None:
    try:
        parsed = parse_add_checkpoint(body)
    except ValueError:
        return
    assert format_add_checkpoint(parsed.old_size, parsed.proof, parsed.note) == body


# --------------------------------------------------------------------------- the decision


def test_the_first_checkpoint_is_trusted_on_first_use() -> None:
    outcome = decide(None, request(0, 7))
    assert isinstance(outcome, Decision)
    assert outcome.new
    assert outcome.checkpoint == checkpoint(7)
    assert outcome.note == note(7)


def test_a_proven_extension_is_accepted() -> None:
    for old, new in [(1, 2), (3, 7), (7, 8), (8, 40), (5, 33)]:
        outcome = decide(checkpoint(old), request(old, new))
        assert isinstance(outcome, Decision), (old, new, outcome)
        assert outcome.new
        assert outcome.checkpoint.size == new


def test_any_tree_extends_a_held_empty_tree() -> None:
    empty = Checkpoint(origin=ORIGIN, size=0, root=merkle.EMPTY_ROOT)
    outcome = decide(empty, request(0, 5))
    assert isinstance(outcome, Decision)
    assert outcome.new
    again = decide(empty, AddCheckpoint(0, (), LOG.sign(empty)))
    assert isinstance(again, Decision)
    assert not again.new


def test_the_same_checkpoint_again_is_accepted_idempotently() -> None:
    outcome = decide(checkpoint(7), request(7, 7))
    assert isinstance(outcome, Decision)
    assert not outcome.new


def test_an_unknown_origin_is_404() -> None:
    outcome = decide_add_checkpoint(origin=ORIGIN, trusted=(), latest=None, request=request(0, 3))
    assert isinstance(outcome, Refusal)
    assert (outcome.kind, outcome.status) == (RefusalKind.UNKNOWN_ORIGIN, 404)


def test_a_note_not_signed_by_a_trusted_key_is_403() -> None:
    forged = AddCheckpoint(0, (), note(3, signer=OTHER_LOG))
    outcome = decide(None, forged)
    assert isinstance(outcome, Refusal)
    assert (outcome.kind, outcome.status) == (RefusalKind.BAD_SIGNATURE, 403)
    assert "no signature by" in outcome.message


def test_a_note_of_another_origin_is_403_even_with_the_right_key() -> None:
    other = LOG.sign(Checkpoint(origin="elsewhere.example/log", size=3, root=checkpoint(3).root))
    outcome = decide(None, AddCheckpoint(0, (), other))
    assert isinstance(outcome, Refusal)
    assert outcome.status == 403


def test_any_of_several_trusted_keys_will_do() -> None:
    keys = [CheckpointVerifier(OTHER_LOG.verifier_key()), LOG_KEY]
    outcome = decide_add_checkpoint(origin=ORIGIN, trusted=keys, latest=None, request=request(0, 3))
    assert isinstance(outcome, Decision)


def test_an_old_size_beyond_the_checkpoint_is_400() -> None:
    outcome = decide(checkpoint(9), AddCheckpoint(9, (), note(5)))
    assert isinstance(outcome, Refusal)
    assert (outcome.kind, outcome.status) == (RefusalKind.BAD_REQUEST, 400)


@pytest.mark.parametrize(("held", "old"), [(None, 3), (7, 0), (7, 5), (7, 8)])
def test_an_old_size_that_is_not_the_witness_size_is_409_with_that_size(
    held: int | None, old: int
) -> None:
    latest = checkpoint(held) if held else None
    outcome = decide(latest, request(old, 10))
    assert isinstance(outcome, Refusal)
    assert (outcome.kind, outcome.status) == (RefusalKind.SIZE_MISMATCH, 409)
    assert outcome.latest_size == (held or 0)
    assert not outcome.is_evidence


def test_the_same_size_with_another_root_is_a_fork() -> None:
    forked = [*LEAVES[:3], merkle.leaf_hash(b"rewritten"), *LEAVES[4:]]
    outcome = decide(checkpoint(7), request(7, 7, leaves=forked))
    assert isinstance(outcome, Refusal)
    assert (outcome.kind, outcome.status) == (RefusalKind.FORK, 409)
    assert outcome.latest_size == 7
    assert outcome.is_evidence
    assert outcome.checkpoint == checkpoint(7, forked)


def test_a_fork_before_the_old_size_fails_the_proof_422() -> None:
    forked = [*LEAVES[:3], merkle.leaf_hash(b"rewritten"), *LEAVES[4:]]
    outcome = decide(checkpoint(7), request(7, 12, leaves=forked))
    assert isinstance(outcome, Refusal)
    assert (outcome.kind, outcome.status) == (RefusalKind.BAD_PROOF, 422)
    assert outcome.is_evidence


def test_a_proof_between_equal_sizes_must_be_empty() -> None:
    req = AddCheckpoint(7, (b"\x00" * 32,), note(7))
    outcome = decide(checkpoint(7), req)
    assert isinstance(outcome, Refusal)
    assert outcome.status == 422


def test_every_bit_flip_of_the_proof_is_refused() -> None:
    good = request(5, 33)
    assert isinstance(decide(checkpoint(5), good), Decision)
    for i, element in enumerate(good.proof):
        for byte in (0, 17, 31):
            proof = list(good.proof)
            proof[i] = flip(element, byte, 3)
            outcome = decide(checkpoint(5), AddCheckpoint(5, tuple(proof), good.note))
            assert isinstance(outcome, Refusal)
            assert outcome.status == 422
    shorter = AddCheckpoint(5, good.proof[:-1], good.note)
    longer = AddCheckpoint(5, (*good.proof, good.proof[0]), good.note)
    for bad in (shorter, longer):
        refusal = decide(checkpoint(5), bad)
        assert isinstance(refusal, Refusal)
        assert refusal.status == 422


def test_every_bit_flip_of_the_note_is_refused() -> None:
    good = request(5, 9)
    for index in range(len(good.note)):
        changed = flip(good.note, index, index % 8)
        outcome = decide(checkpoint(5), AddCheckpoint(5, good.proof, changed))
        assert isinstance(outcome, Refusal), index
        assert outcome.status in {403, 409, 422}, (index, outcome)


def test_only_trusted_signatures_are_kept() -> None:
    own = note(3)
    extra = OTHER_LOG.sign(checkpoint(3)).split(b"\n\n", 1)[1]
    both = own + extra
    assert LOG_KEY.verify(both) == checkpoint(3)
    assert trusted_note(both, LOG_KEY) == own
    outcome = decide(None, AddCheckpoint(0, (), both))
    assert isinstance(outcome, Decision)
    assert outcome.note == own


# --------------------------------------------------------------------------- cosignatures

SOFA = Checkpoint(
    origin="example.com/behind-the-sofa",
    size=20852163,
    root=base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="),
)
KAT_SEED = bytes(range(32))
KAT_NAME = "witness.example/w1"
KAT_TIME = 1679315147
# Computed once with the code under test and checked below against a message rebuilt by hand;
# it must never change (logs keep cosignatures).
KAT_VKEY = "witness.example/w1+e75f6532+BAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4"
KAT_LINE = (
    "— witness.example/w1 519lMgAAAABkGFDLBuRDazBLVac2NE+Y+IjbjQOcXLfF9CSDZVUIoS83rE1nFZsVE8YiWV6"
    "Ngr7lV8H6bdoBQGP/l73euDMQ9k+bBQ==\n"
)


def test_cosignature_known_answer() -> None:
    signer = WitnessSigner(name=KAT_NAME, seed=KAT_SEED)
    assert signer.verifier_key() == KAT_VKEY
    assert signer.cosign_at_time(SOFA, KAT_TIME) == KAT_LINE


def test_the_known_answer_matches_the_specification_by_hand() -> None:
    signer = WitnessSigner(name=KAT_NAME, seed=KAT_SEED)
    public = signer.public_key()
    dash, name, encoded = KAT_LINE.rstrip("\n").split(" ")
    assert (dash, name) == ("\u2014", KAT_NAME)
    raw = base64.b64decode(encoded)
    assert len(raw) == 4 + 8 + 64
    # Key ID: SHA-256(name || "\n" || 0x04 || public key)[:4].
    assert raw[:4] == hashlib.sha256(KAT_NAME.encode() + b"\n\x04" + public).digest()[:4]
    assert int.from_bytes(raw[4:12], "big") == KAT_TIME
    message = (
        b"cosignature/v1\n"
        b"time 1679315147\n"
        b"example.com/behind-the-sofa\n"
        b"20852163\n"
        b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )
    Ed25519PublicKey.from_public_bytes(public).verify(raw[12:], message)
    vkey = KAT_VKEY.split("+", 2)
    assert base64.b64decode(vkey[2]) == b"\x04" + public
    assert vkey[1] == raw[:4].hex()


def test_the_specification_example_line_decodes_in_place() -> None:
    line = (
        "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrD"
        "JsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
    )
    ((name, raw, _),) = parse_signature_lines(line.encode())
    assert name == "witness.example.com/w1"
    assert len(raw) == 76
    assert int.from_bytes(raw[4:12], "big") == KAT_TIME
    # Not our key: ignored, so no trusted cosignature remains.
    with pytest.raises(CosignatureError, match="no cosignature by a trusted"):
        verify_cosignatures(SOFA, line.encode(), [WITNESS_KEY])


def test_transparency_dev_vectors() -> None:
    remora = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
    assert CosignatureVerifier(remora).name == "remora.n621.de"
    raw = base64.b64decode(
        "ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDc"
        "FiEBYJXORmnFBOBA=="
    )
    assert int.from_bytes(raw[4:12], "big") == 1727964367


@pytest.mark.parametrize(
    "vkey",
    [
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # a 0x01 note key
        "remora.n621.de+00000000+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2",
        "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw",
        "remora.n621.de+da77ade7",
        "bad name+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2",
        "remora.n621.de+DA77ADE7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2",
    ],
)
def test_bad_witness_keys_are_refused(vkey: str) -> None:
    with pytest.raises(ValueError, match=r"verifier key|key name"):
        CosignatureVerifier(vkey)


def test_a_cosignature_verifies_and_reports_its_time() -> None:
    line = WITNESS.cosign(checkpoint(7), clock=FixedClock(dt.datetime.fromtimestamp(T0, dt.UTC)))
    found = verify_cosignatures(checkpoint(7), line.encode(), [WITNESS_KEY])
    assert found == [Cosignature(WITNESS.name, WITNESS_KEY.key_id, T0, line.rstrip("\n"))]
    assert WITNESS_KEY.verify_line(checkpoint(7), line).timestamp == T0


def test_every_bit_flip_of_a_cosignature_is_refused() -> None:
    line = WITNESS.cosign_at_time(checkpoint(7), T0)
    _, name, encoded = line.rstrip("\n").split(" ")
    raw = base64.b64decode(encoded)
    for index in range(len(raw)):
        bad = f"— {name} {base64.b64encode(flip(raw, index, index % 8)).decode()}\n"
        with pytest.raises(CosignatureError):
            verify_cosignatures(checkpoint(7), bad.encode(), [WITNESS_KEY])


def test_a_cosignature_covers_the_checkpoint() -> None:
    line = WITNESS.cosign_at_time(checkpoint(7), T0)
    for other in (
        checkpoint(8),
        Checkpoint(origin="x.example/log", size=7, root=checkpoint(7).root),
    ):
        with pytest.raises(CosignatureError, match="does not verify"):
            WITNESS_KEY.verify_line(other, line)


def test_a_cosignature_from_the_future_can_be_refused() -> None:
    line = WITNESS.cosign_at_time(checkpoint(7), T0 + 7200)
    with pytest.raises(CosignatureError, match="future"):
        verify_cosignatures(checkpoint(7), line.encode(), [WITNESS_KEY], not_after=T0 + 3600)


def test_unknown_cosigners_are_ignored_but_one_trusted_is_needed() -> None:
    stranger = WitnessSigner(name="stranger.example/w", seed=b"\x44" * 32)
    ours = WITNESS.cosign_at_time(checkpoint(7), T0)
    theirs = stranger.cosign_at_time(checkpoint(7), T0)
    found = verify_cosignatures(checkpoint(7), (theirs + ours).encode(), [WITNESS_KEY])
    assert [c.name for c in found] == [WITNESS.name]
    with pytest.raises(CosignatureError, match="no cosignature by a trusted"):
        verify_cosignatures(checkpoint(7), theirs.encode(), [WITNESS_KEY])


@pytest.mark.parametrize(
    "body",
    [b"", b"\n", b"hello\n", "— a b\n".encode(), "— a AAAA".encode(), "— a AAAAAAAA\n\n".encode()],
)
def test_malformed_answers_are_refused(body: bytes) -> None:
    with pytest.raises(CosignatureError):
        verify_cosignatures(checkpoint(7), body, [WITNESS_KEY])


def test_the_same_name_under_another_key_is_not_ours() -> None:
    impostor = WitnessSigner(name=WITNESS.name, seed=b"\x55" * 32)
    line = impostor.cosign_at_time(checkpoint(7), T0)
    with pytest.raises(CosignatureError, match="no cosignature by a trusted"):
        verify_cosignatures(checkpoint(7), line.encode(), [WITNESS_KEY])


def test_a_cosignature_line_is_also_a_valid_note_signature_line() -> None:
    """The log appends it to its note; a signed-note verifier of the log key ignores it."""
    cosigned = note(7) + WITNESS.cosign_at_time(checkpoint(7), T0).encode()
    assert LOG_KEY.verify(cosigned) == checkpoint(7)


# --------------------------------------------------------------------------- storage


@pytest.fixture
def witness(tmp_path: Path) -> Witness:
    clock = FixedClock(dt.datetime.fromtimestamp(T0, dt.UTC))
    return Witness(directory=tmp_path / "w", signer=WITNESS, logs={ORIGIN: [LOG_KEY]}, clock=clock)


def body(old: int, new: int, *, leaves: list[bytes] = LEAVES) -> bytes:
    req = request(old, new, leaves=leaves)
    return format_add_checkpoint(req.old_size, req.proof, req.note)


def test_the_witness_stores_one_cosigned_file_per_checkpoint(witness: Witness) -> None:
    first = witness.add_checkpoint(body(0, 3))
    assert isinstance(first, Cosigned)
    assert first.new
    second = witness.add_checkpoint(body(3, 9))
    assert isinstance(second, Cosigned)
    directory = origin_directory(witness.directory, ORIGIN)
    assert directory.name == "log.example%2Fledger"
    files = sorted(p.name for p in directory.glob("checkpoint-*.txt"))
    assert files == ["checkpoint-000000000003.txt", "checkpoint-000000000009.txt"]
    stored = (directory / "checkpoint-000000000009.txt").read_bytes()
    assert stored == note(9) + second.cosignature.encode()
    assert LOG_KEY.verify(stored) == checkpoint(9)
    assert WITNESS_KEY.verify_line(checkpoint(9), second.cosignature).timestamp == T0
    assert witness.latest(ORIGIN) == checkpoint(9)


def test_the_witness_refuses_without_forgetting(
    witness: Witness, caplog: pytest.LogCaptureFixture
) -> None:
    assert isinstance(witness.add_checkpoint(body(0, 9)), Cosigned)
    stale = witness.add_checkpoint(body(3, 12))
    assert isinstance(stale, Refusal)
    assert stale.latest_size == 9
    same = witness.add_checkpoint(body(9, 9))
    assert isinstance(same, Cosigned)
    assert not same.new
    forked = [*LEAVES[:2], merkle.leaf_hash(b"rewritten"), *LEAVES[3:]]
    with caplog.at_level(logging.CRITICAL, logger="egide.witness"):
        fork = witness.add_checkpoint(body(9, 9, leaves=forked))
        unproven = witness.add_checkpoint(body(9, 20, leaves=forked))
    assert isinstance(fork, Refusal)
    assert fork.kind is RefusalKind.FORK
    assert isinstance(unproven, Refusal)
    assert unproven.kind is RefusalKind.BAD_PROOF
    assert sum("WITNESS ALARM" in r.getMessage() for r in caplog.records) == 2
    directory = origin_directory(witness.directory, ORIGIN)
    assert len(list((directory / "evidence").iterdir())) == 2
    assert witness.latest(ORIGIN) == checkpoint(9)
    assert len(list(directory.glob("checkpoint-*.txt"))) == 1


def test_an_unknown_origin_touches_no_storage(witness: Witness) -> None:
    other = LOG.sign(Checkpoint(origin="other.example/log", size=3, root=checkpoint(3).root))
    outcome = witness.add_checkpoint(b"old 0\n\n" + other)
    assert isinstance(outcome, Refusal)
    assert outcome.status == 404
    assert not witness.directory.exists()


def test_concurrent_requests_never_roll_the_witness_back(witness: Witness) -> None:
    """tlog-witness's race: requests from the same old size for different new sizes. Exactly
    one wins; the others learn the winner's size; the stored size never decreases."""
    assert isinstance(witness.add_checkpoint(body(0, 4)), Cosigned)
    sizes = list(range(5, 37))
    results: dict[int, Cosigned | Refusal] = {}
    barrier = threading.Barrier(len(sizes))

    def push(size: int) -> None:
        barrier.wait()
        results[size] = witness.add_checkpoint(body(4, size))

    threads = [threading.Thread(target=push, args=(size,)) for size in sizes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [size for size, r in results.items() if isinstance(r, Cosigned)]
    assert len(winners) == 1
    for size, result in results.items():
        if size != winners[0]:
            assert isinstance(result, Refusal)
            assert result.latest_size == winners[0]
    assert witness.latest(ORIGIN) == checkpoint(winners[0])


def test_a_changed_stored_checkpoint_stops_the_witness(witness: Witness) -> None:
    assert isinstance(witness.add_checkpoint(body(0, 4)), Cosigned)
    path = origin_directory(witness.directory, ORIGIN) / "checkpoint-000000000004.txt"
    path.write_bytes(note(4).replace(b"\n4\n", b"\n5\n"))
    with pytest.raises(StorageFailure, match="does not verify"):
        witness.add_checkpoint(body(4, 6))


def test_origin_directories_are_distinct_and_tame(tmp_path: Path) -> None:
    names = ["a/b", "a%2Fb", "a_b", "..", ".", "é", "x" * 300, "x" * 301]
    dirs = [origin_directory(tmp_path, name) for name in names]
    assert len(set(dirs)) == len(names)
    for directory in dirs:
        assert directory.parent == tmp_path
        assert directory.name not in {".", ".."}
        assert "/" not in directory.name
        assert len(directory.name) <= 180


# --------------------------------------------------------------------------- the pusher


def pusher_for(tmp_path: Path, handler: httpx.MockTransport) -> WitnessPusher:
    return WitnessPusher(
        urls=["https://witness.example/"],
        verifiers=[WITNESS_KEY],
        state_dir=tmp_path / "state",
        cosignature_dir=tmp_path / "cosignatures",
        clock=FixedClock(dt.datetime.fromtimestamp(T0, dt.UTC)),
        transport=handler,
    )


def proof_from(new: int) -> Callable[[int], list[bytes]]:
    return lambda old: merkle.consistency_proof(LEAVES[:new], old)


def test_the_pusher_drives_a_witness_and_keeps_what_it_returns(
    tmp_path: Path, witness: Witness
) -> None:
    seen: list[bytes] = []

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/witness/add-checkpoint"
        seen.append(request.content)
        outcome = witness.add_checkpoint(request.content)
        if isinstance(outcome, Refusal):
            if outcome.latest_size is not None:
                return httpx.Response(
                    409,
                    content=f"{outcome.latest_size}\n".encode(),
                    headers={"Content-Type": "text/x.tlog.size"},
                )
            return httpx.Response(outcome.status, json={"issue": [{"diagnostics": "no"}]})
        return httpx.Response(200, content=outcome.cosignature.encode())

    assert isinstance(witness.add_checkpoint(body(0, 5)), Cosigned)  # someone pushed before
    pusher = pusher_for(tmp_path, httpx.MockTransport(handle))
    (result,) = pusher.push(note(9), checkpoint(9), proof_from(9))
    assert result.ok, result.message
    assert [b.split(b"\n", 1)[0] for b in seen] == [b"old 0", b"old 5"]  # 409, then retry
    assert result.size == 9
    stored = (
        origin_directory(tmp_path / "cosignatures", WITNESS.name) / "checkpoint-000000000009.txt"
    )
    assert LOG_KEY.verify(stored.read_bytes()) == checkpoint(9)
    state = json.loads(next((tmp_path / "state").glob("*.json")).read_text())
    assert (state["size"], state["failures"]) == (9, 0)
    (again,) = pusher.push(note(9), checkpoint(9), proof_from(9))
    assert again.ok
    assert "already holds" in again.message
    assert len(seen) == 2
    (later,) = pusher.push(note(20), checkpoint(20), proof_from(20))
    assert later.ok
    assert seen[-1].startswith(b"old 9\n")


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (httpx.Response(500, content=b"oops"), "HTTP 500"),
        (httpx.Response(200, content=b"not a cosignature\n"), "not a valid cosignature"),
        (httpx.Response(409, content=b"x\n", headers={"Content-Type": "text/x.tlog.size"}), "409"),
        (httpx.Response(200, content=b"x" * 70_000), "larger than"),
        (
            httpx.Response(403, json={"issue": [{"diagnostics": "not signed by a trusted key"}]}),
            "not signed by a trusted key",
        ),
    ],
)
def test_a_bad_witness_is_a_result_not_an_exception(
    tmp_path: Path, answer: httpx.Response, error: str
) -> None:
    pusher = pusher_for(tmp_path, httpx.MockTransport(lambda _request: answer))
    (result,) = pusher.push(note(9), checkpoint(9), proof_from(9))
    assert not result.ok
    assert error in result.message
    (deferred,) = pusher.push(note(9), checkpoint(9), proof_from(9))
    assert deferred.deferred  # backing off: not contacted again at once
    (forced,) = pusher.push(note(9), checkpoint(9), proof_from(9), force=True)
    assert not forced.deferred


def test_an_unreachable_witness_is_a_result(tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    pusher = pusher_for(tmp_path, httpx.MockTransport(refuse))
    (result,) = pusher.push(note(9), checkpoint(9), proof_from(9))
    assert not result.ok
    assert "cannot reach the witness" in result.message


# --------------------------------------------------------------------------- settings and limits


def test_witness_settings_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./egide.toml
    loaded = load_settings(
        {
            "EGIDE_WITNESS_LOGS": json.dumps({ORIGIN: LOG.verifier_key()}),
            "EGIDE_WITNESS_URLS": "https://w1.example, https://w2.example/egide",
            "EGIDE_WITNESS_KEYS": json.dumps([WITNESS.verifier_key()]),
            "EGIDE_PUBLIC_BASE_URL": "https://b.example.org/egide/",
        }
    )
    assert loaded.witness_logs == {ORIGIN: [LOG.verifier_key()]}
    assert loaded.witness_urls == ["https://w1.example", "https://w2.example/egide"]
    assert loaded.witness_keys == [WITNESS.verifier_key()]
    assert loaded.effective_witness_name == "b.example.org/egide/witness"
    assert load_settings({}).effective_witness_name == "egide.local/witness"
    named = load_settings({"EGIDE_WITNESS_NAME": "w.example/one"})
    assert named.effective_witness_name == "w.example/one"


def test_witness_settings_from_toml(tmp_path: Path) -> None:
    config = tmp_path / "egide.toml"
    config.write_text(
        'witness_urls = ["https://w1.example"]\n'
        "[witness_logs]\n"
        f'"{ORIGIN}" = ["{LOG.verifier_key()}", "{OTHER_LOG.verifier_key()}"]\n',
        encoding="utf-8",
    )
    loaded = load_settings({}, config_file=config)
    assert loaded.witness_logs == {ORIGIN: [LOG.verifier_key(), OTHER_LOG.verifier_key()]}
    assert loaded.witness_urls == ["https://w1.example"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EGIDE_WITNESS_LOGS", "not json"),
        ("EGIDE_WITNESS_LOGS", '{"": "k"}'),
        ("EGIDE_WITNESS_LOGS", '["k"]'),
        ("EGIDE_WITNESS_URLS", "ftp://w.example"),
        ("EGIDE_WITNESS_URLS", "https://w.example/?x=1"),
        ("EGIDE_WITNESS_URLS", "w.example"),
        ("EGIDE_WITNESS_NAME", "has space"),
        ("EGIDE_WITNESS_NAME", "has+plus"),
    ],
)
def test_bad_witness_settings_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadRequest, match="invalid setting witness_"):
        load_settings({name: value})


def test_the_rate_limiter_refills_per_address() -> None:
    now = [0.0]
    limiter = RateLimiter(6, now=lambda: now[0])
    assert all(limiter.allow("10.0.0.1") for _ in range(6))
    assert not limiter.allow("10.0.0.1")
    assert limiter.allow("10.0.0.2")  # another address has its own bucket
    now[0] += 10.0  # 6 a minute: one more token every 10 s
    assert limiter.allow("10.0.0.1")
    assert not limiter.allow("10.0.0.1")

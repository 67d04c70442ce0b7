"""Signed checkpoints (C2SP tlog-checkpoint over C2SP signed-note, Ed25519).

Known answers: the golang.org/x/mod/sumdb/note reference key and note (PeterNeumann, published in
that package's tests and documentation) pin the key ID, the verifier-key encoding and the
signature-line encoding against an independent implementation; `PINNED_NOTE` pins one Égide
checkpoint's exact bytes for a fixed seed (Ed25519 is deterministic), computed once, as a
regression vector.
"""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from egide.ledger.checkpoint import (
    MAX_SIGNATURES,
    Checkpoint,
    CheckpointError,
    CheckpointSigner,
    CheckpointVerifier,
    key_id,
)

NAME = "egide.example/ledger"
SEED = bytes(range(32))
ROOT8 = bytes.fromhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")
SIGNER = CheckpointSigner(name=NAME, seed=SEED)
VERIFIER = CheckpointVerifier(SIGNER.verifier_key())
OTHER = CheckpointSigner(name="witness.example/w1", seed=b"\x07" * 32)
CHECKPOINT = Checkpoint(origin=NAME, size=8, root=ROOT8)

# Computed once with the code under test (seed 00..1f, name and origin egide.example/ledger, the
# RFC 6962 root of 8 test leaves). It must never change: notes already signed and copied to
# witnesses must keep verifying.
PINNED_VKEY = "egide.example/ledger+fb9f51a9+AQOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4"
PINNED_NOTE = (
    "egide.example/ledger\n"
    "8\n"
    "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n"
    "\n"
    "— egide.example/ledger +59RqWpNbpA8l2NXbYGr3Z7Y3PGZlSFVk29o/dRoVIUr8LQFx6lSlmxrRpLjb77UNUMm"
    "NPmLtGWeCO5JYHQ1w34VGQQ=\n"
).encode()

# golang.org/x/mod/sumdb/note reference vector (note_test.go / package documentation).
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    b"If you think cryptography is the answer to your problem,\n"
    b"then you don't know what your problem is.\n"
)
GO_SIG = (
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
)
GO_NOTE = GO_TEXT + f"\n— PeterNeumann {GO_SIG}\n".encode()


def _signature_line(signer: CheckpointSigner, checkpoint: Checkpoint) -> bytes:
    note = signer.sign(checkpoint)
    return note[len(checkpoint.body()) + 1 :]


# --------------------------------------------------------------------------- known answers


def test_pinned_note() -> None:
    assert SIGNER.verifier_key() == PINNED_VKEY
    assert SIGNER.sign(CHECKPOINT) == PINNED_NOTE
    assert CheckpointVerifier(PINNED_VKEY).verify(PINNED_NOTE) == CHECKPOINT


def test_body_format() -> None:
    assert CHECKPOINT.body() == (
        b"egide.example/ledger\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n"
    )
    empty = Checkpoint(origin="o", size=0, root=hashlib.sha256(b"").digest())
    assert empty.body().split(b"\n")[1] == b"0"


def test_go_reference_key_gives_the_same_verifier_key_and_signature() -> None:
    assert GO_SKEY.startswith("PRIVATE+KEY+PeterNeumann+c74f20a3+")
    seed = base64.b64decode(GO_SKEY.split("+", 4)[4])[1:]  # 0x01 || 32-byte seed
    signer = CheckpointSigner(name="PeterNeumann", seed=seed)
    assert signer.verifier_key() == GO_VKEY
    assert key_id("PeterNeumann", signer.public_key()).hex() == "c74f20a3"
    # The Go note signs free text, not a checkpoint, so compare the signature-line encoding
    # directly: key ID then the Ed25519 signature of the text.
    raw = key_id("PeterNeumann", signer.public_key()) + signer._key.sign(GO_TEXT)
    assert base64.b64encode(raw).decode() == GO_SIG


def test_go_reference_note_passes_the_signature_check_then_is_not_a_checkpoint() -> None:
    verifier = CheckpointVerifier(GO_VKEY)
    assert verifier.name == "PeterNeumann"
    assert verifier.key_id.hex() == "c74f20a3"
    # Its signature verifies (the error is about the text, read only after the signature) ...
    with pytest.raises(CheckpointError, match="fewer than three lines"):
        verifier.verify(GO_NOTE)
    # ... and a changed text does not.
    with pytest.raises(CheckpointError, match="does not verify"):
        verifier.verify(GO_NOTE.replace(b"problem,", b"problem;"))


# --------------------------------------------------------------------------- round trips

origins = st.text(
    alphabet=st.characters(min_codepoint=0x20, exclude_categories=["Cs"]),
    min_size=1,
    max_size=60,
)
sizes = st.integers(min_value=0, max_value=(1 << 64) - 1)
roots = st.binary(min_size=32, max_size=32)
names = st.text(
    alphabet=st.characters(min_codepoint=0x21, exclude_categories=["Cs", "Zs", "Zl", "Zp"]),
    min_size=1,
    max_size=30,
).filter(lambda n: "+" not in n and not any(ch.isspace() for ch in n))


@given(origins, sizes, roots)
def test_round_trip(origin: str, size: int, root: bytes) -> None:
    checkpoint = Checkpoint(origin=origin, size=size, root=root)
    note = SIGNER.sign(checkpoint)
    assert VERIFIER.verify(note) == checkpoint
    assert VERIFIER.verify(note, expected_origin=origin) == checkpoint


@settings(max_examples=50)
@given(names, st.binary(min_size=32, max_size=32))
def test_verifier_key_round_trip(name: str, seed: bytes) -> None:
    signer = CheckpointSigner(name=name, seed=seed)
    verifier = CheckpointVerifier(signer.verifier_key())
    assert verifier.name == name
    assert verifier.public_key() == signer.public_key()
    assert verifier.key_id == key_id(name, signer.public_key())
    assert verifier.verify(signer.sign(CHECKPOINT)) == CHECKPOINT


def test_key_id_definition() -> None:
    public = SIGNER.public_key()
    digest = hashlib.sha256(NAME.encode() + b"\n\x01" + public).digest()
    assert key_id(NAME, public) == digest[:4]
    assert PINNED_VKEY.split("+")[1] == digest[:4].hex()


# --------------------------------------------------------------------------- tampering


@pytest.mark.parametrize("position", range(len(PINNED_NOTE)))
def test_changing_any_byte_fails(position: int) -> None:
    for delta in (1, 0x80):
        tampered = bytearray(PINNED_NOTE)
        tampered[position] ^= delta
        with pytest.raises(CheckpointError):
            VERIFIER.verify(bytes(tampered))


@given(st.integers(min_value=0), st.integers(min_value=1, max_value=255))
def test_changing_any_byte_of_any_note_fails(where: int, delta: int) -> None:
    note = bytearray(SIGNER.sign(Checkpoint(origin="o.example/x", size=12345, root=b"\x5a" * 32)))
    note[where % len(note)] ^= delta
    with pytest.raises(CheckpointError):
        VERIFIER.verify(bytes(note))


def test_truncated_or_extended_notes_fail() -> None:
    for cut in range(len(PINNED_NOTE)):
        with pytest.raises(CheckpointError):
            VERIFIER.verify(PINNED_NOTE[:cut])
    with pytest.raises(CheckpointError):
        VERIFIER.verify(PINNED_NOTE + b"x")
    with pytest.raises(CheckpointError):
        VERIFIER.verify(PINNED_NOTE + b"\n")


def test_a_note_signed_by_another_key_fails() -> None:
    with pytest.raises(CheckpointError, match=re.escape("no signature by egide.example/ledger")):
        VERIFIER.verify(OTHER.sign(CHECKPOINT))
    # Same name, another key: the key ID differs, so it is an unknown key, not ours.
    impostor = CheckpointSigner(name=NAME, seed=b"\x01" * 32)
    with pytest.raises(CheckpointError, match="no signature by"):
        VERIFIER.verify(impostor.sign(CHECKPOINT))


def test_our_key_id_under_another_name_is_not_ours() -> None:
    line = _signature_line(SIGNER, CHECKPOINT).replace(NAME.encode(), b"other.example/x")
    with pytest.raises(CheckpointError, match="no signature by"):
        VERIFIER.verify(CHECKPOINT.body() + b"\n" + line)


def test_other_signatures_are_ignored() -> None:
    ours = _signature_line(SIGNER, CHECKPOINT)
    theirs = _signature_line(OTHER, CHECKPOINT)
    body = CHECKPOINT.body() + b"\n"
    assert VERIFIER.verify(body + theirs + ours) == CHECKPOINT
    assert VERIFIER.verify(body + ours + theirs) == CHECKPOINT
    # An unknown key's bad signature is not ours to check.
    junk = "— unknown.example/k " + base64.b64encode(b"\x00" * 68).decode() + "\n"
    assert VERIFIER.verify(body + junk.encode() + ours) == CHECKPOINT


def test_duplicate_signature_lines_fail() -> None:
    ours = _signature_line(SIGNER, CHECKPOINT)
    with pytest.raises(CheckpointError, match="2 signatures by"):
        VERIFIER.verify(CHECKPOINT.body() + b"\n" + ours + ours)


def test_a_valid_signature_on_another_checkpoint_fails() -> None:
    ours = _signature_line(SIGNER, Checkpoint(origin=NAME, size=7, root=ROOT8))
    with pytest.raises(CheckpointError, match="does not verify"):
        VERIFIER.verify(CHECKPOINT.body() + b"\n" + ours)


def test_too_many_signatures_fail() -> None:
    theirs = _signature_line(OTHER, CHECKPOINT)
    note = CHECKPOINT.body() + b"\n" + theirs * MAX_SIGNATURES + _signature_line(SIGNER, CHECKPOINT)
    with pytest.raises(CheckpointError, match="more than 100 signatures"):
        VERIFIER.verify(note)
    # The signed-note minimum: at least 16 signatures are accepted.
    note = CHECKPOINT.body() + b"\n" + theirs * 15 + _signature_line(SIGNER, CHECKPOINT)
    assert VERIFIER.verify(note) == CHECKPOINT


def test_expected_origin() -> None:
    assert VERIFIER.verify(PINNED_NOTE, expected_origin=NAME) == CHECKPOINT
    with pytest.raises(CheckpointError, match="origin"):
        VERIFIER.verify(PINNED_NOTE, expected_origin="egide.example/other")


# --------------------------------------------------------------------------- malformed notes


def _signed_text(text: bytes) -> bytes:
    """A note over arbitrary text with a valid signature by SIGNER (to reach the body parser)."""
    raw = key_id(NAME, SIGNER.public_key()) + SIGNER._key.sign(text)
    return text + f"\n— {NAME} {base64.b64encode(raw).decode()}\n".encode()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"o\n8\n", "fewer than three lines"),
        (b"o\n8\n" + base64.b64encode(ROOT8) + b"\next\n", "extension lines"),
        (b"\n8\n" + base64.b64encode(ROOT8) + b"\n", "origin is empty"),
        (b"o\n08\n" + base64.b64encode(ROOT8) + b"\n", "leading zeros"),
        (b"o\n+8\n" + base64.b64encode(ROOT8) + b"\n", "leading zeros"),
        (b"o\n 8\n" + base64.b64encode(ROOT8) + b"\n", "leading zeros"),
        (b"o\n1_0\n" + base64.b64encode(ROOT8) + b"\n", "leading zeros"),
        ("o\n٣\n".encode() + base64.b64encode(ROOT8) + b"\n", "leading zeros"),
        (b"o\n18446744073709551616\n" + base64.b64encode(ROOT8) + b"\n", "64 bits"),
        (b"o\n8\n" + base64.b64encode(ROOT8[:31]) + b"\n", "31 bytes"),
        (b"o\n8\n" + base64.b64encode(ROOT8 + b"\x00") + b"\n", "33 bytes"),
        (b"o\n8\n" + base64.urlsafe_b64encode(b"\xff" * 32) + b"\n", "base64"),
        (b"o\n8\n" + base64.b64encode(ROOT8).rstrip(b"=") + b"\n", "base64"),
        # Non-zero padding bits: decodes to the same root, but is a second spelling of it.
        (b"o\n8\n" + base64.b64encode(ROOT8)[:-2] + b"h=\n", "canonical"),
    ],
)
def test_malformed_bodies_fail_even_when_signed(text: bytes, reason: str) -> None:
    with pytest.raises(CheckpointError, match=reason):
        VERIFIER.verify(_signed_text(text))


def test_largest_size_is_accepted() -> None:
    text = b"o\n18446744073709551615\n" + base64.b64encode(ROOT8) + b"\n"
    assert VERIFIER.verify(_signed_text(text)).size == (1 << 64) - 1


@pytest.mark.parametrize(
    ("note", "reason"),
    [
        (b"\xff" + PINNED_NOTE, "UTF-8"),
        (PINNED_NOTE.replace(b"ledger\n8", b"ledger\t\n8"), "control character"),
        (PINNED_NOTE.replace(b"\n", b"\r\n"), "control character"),
        (PINNED_NOTE[:-1], "end with a newline"),
        (PINNED_NOTE.replace(b"=\n\n", b"=\n"), "no blank line"),
        (PINNED_NOTE + b"\n", "no signature lines"),
        (CHECKPOINT.body() + b"\n", "no signature lines"),
        (PINNED_NOTE.replace("—".encode(), b"-"), "signature line 1 is not"),
        (PINNED_NOTE.replace(b"ledger +", b"ledger  +"), "signature line 1 is not"),
        (PINNED_NOTE.replace(b"ledger +59", b"ledger +5"), "signature line 1: not"),
        (PINNED_NOTE.replace("— egide".encode(), "— eg+ide".encode()), "'\\+'"),
        (CHECKPOINT.body() + "\n— k AAAA\n".encode(), "too short"),
        (b"x" * (64 * 1024 + 1), "larger than"),
    ],
)
def test_malformed_notes_fail(note: bytes, reason: str) -> None:
    with pytest.raises(CheckpointError, match=reason):
        VERIFIER.verify(note)


def test_our_signature_of_the_wrong_length_fails() -> None:
    raw = key_id(NAME, SIGNER.public_key()) + b"\x00" * 63
    note = CHECKPOINT.body() + f"\n— {NAME} {base64.b64encode(raw).decode()}\n".encode()
    with pytest.raises(CheckpointError, match="not 64 bytes"):
        VERIFIER.verify(note)


def test_checkpoint_error_is_a_value_error() -> None:
    assert issubclass(CheckpointError, ValueError)


# --------------------------------------------------------------------------- construction


@pytest.mark.parametrize(
    "vkey",
    [
        "",
        "egide.example/ledger",
        "egide.example/ledger+fb9f51a9",
        PINNED_VKEY.replace("fb9f51a9", "FB9F51A9"),  # the ID is written in lowercase hex
        PINNED_VKEY.replace("fb9f51a9", "fb9f51a8"),  # ID does not match the key
        PINNED_VKEY.replace("fb9f51a9", "fb9f51a"),
        PINNED_VKEY.replace("+AQ", "+Ag"),  # signature type 0x02, not Ed25519
        PINNED_VKEY[:-4],  # key too short
        PINNED_VKEY + "AAAA",  # key too long
        PINNED_VKEY[:-1] + "5",  # non-canonical base64 (padding bits)
        "+fb9f51a9+" + PINNED_VKEY.split("+", 2)[2],  # empty name
        "egide example+fb9f51a9+" + PINNED_VKEY.split("+", 2)[2],  # space in name
    ],
)
def test_malformed_verifier_keys_fail(vkey: str) -> None:
    with pytest.raises(ValueError, match=r"verifier key|key name"):
        CheckpointVerifier(vkey)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"name": "", "seed": SEED}, "non-empty"),
        ({"name": "a b", "seed": SEED}, "space"),
        ({"name": "a+b", "seed": SEED}, "'\\+'"),
        ({"name": "a\nb", "seed": SEED}, "control"),
        ({"name": "a", "seed": SEED[:31]}, "32 bytes"),
    ],
)
def test_signer_refuses_bad_names_and_seeds(kwargs: dict[str, object], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        CheckpointSigner(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("origin", "size", "root", "reason"),
    [
        ("", 1, ROOT8, "non-empty"),
        ("a\nb", 1, ROOT8, "newlines"),
        ("a\tb", 1, ROOT8, "control"),
        ("\ud800", 1, ROOT8, "UTF-8"),
        ("o", -1, ROOT8, "outside"),
        ("o", 1 << 64, ROOT8, "outside"),
        ("o", True, ROOT8, "integer"),
        ("o", 1, ROOT8[:31], "32 bytes"),
    ],
)
def test_checkpoint_refuses_what_a_note_cannot_carry(
    origin: str, size: int, root: bytes, reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        Checkpoint(origin=origin, size=size, root=root)


# --------------------------------------------------------------------------- purity


def test_merkle_and_checkpoint_import_nothing_but_stdlib_and_cryptography() -> None:
    # A verifier runs apart from the writer: no database layer, no other room, no web stack.
    code = (
        "import sys\n"
        "import egide.ledger.merkle, egide.ledger.checkpoint\n"
        "allowed = {'egide', 'egide.ledger', 'egide.ledger.merkle', 'egide.ledger.checkpoint'}\n"
        "top = {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(m for m in sys.modules if m.startswith('egide') and m not in allowed))\n"
        "print(sorted(top & {'sqlalchemy', 'pydantic', 'fastapi', 'alembic', 'psycopg'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out == "[]\n[]\n"

"""Envelope encryption over a real SQLite database: sealing, tampering, shredding, rotation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from crypto_support import MASTER, new_database, new_keyring
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from egide.crypto.aead import UnsafeNullCipher
from egide.crypto.envelope import Envelope
from egide.crypto.errors import DecryptionError, KeyringError, KeyShredded
from egide.crypto.keyring import FileKeyProvider
from egide.crypto.models import DataKey
from egide.db.engine import transaction


class World:
    """A keyring, a database and an envelope, shared by the Hypothesis examples of a module."""

    def __init__(self, directory: Path) -> None:
        self.provider = new_keyring(directory / "keyring.json")
        self.factory = new_database(directory / "egide.db")
        self.envelope = Envelope(self.provider)
        self.db_path = directory / "egide.db"

    def seal(self, owner: str, plaintext: bytes, aad: bytes) -> bytes:
        with transaction(self.factory) as s:
            return self.envelope.seal(s, owner=owner, plaintext=plaintext, aad=aad)

    def open(self, owner: str, sealed: bytes, aad: bytes) -> bytes:
        with transaction(self.factory) as s:
            return self.envelope.open(s, owner=owner, sealed=sealed, aad=aad)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    made = World(tmp_path_factory.mktemp("envelope"))
    yield made
    made.factory.kw["bind"].dispose()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[World]:
    made = World(tmp_path)
    yield made
    made.factory.kw["bind"].dispose()


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@settings(max_examples=60, deadline=None)
@given(plaintext=st.binary(max_size=2000), aad=st.binary(max_size=100))
def test_round_trip(world: World, plaintext: bytes, aad: bytes) -> None:
    sealed = world.seal("patient-rt", plaintext, aad)
    assert world.open("patient-rt", sealed, aad) == plaintext
    if len(plaintext) >= 8:
        assert plaintext not in sealed


def test_sealed_format_v1(world: World) -> None:
    sealed = world.seal("patient-fmt", b"hello", b"Patient/1/_history/1")
    with transaction(world.factory) as s:
        row = s.get(DataKey, "patient-fmt")
        assert row is not None
        key_id = row.key_id
    raw_id = key_id.encode()
    assert sealed[0] == 0x01
    assert sealed[1] == len(raw_id)
    assert sealed[2 : 2 + len(raw_id)] == raw_id
    assert len(sealed) == 2 + len(raw_id) + 12 + len(b"hello") + 16
    # Two seals of the same value differ (fresh nonce).
    assert world.seal("patient-fmt", b"hello", b"") != world.seal("patient-fmt", b"hello", b"")


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_bit_flip_in_sealed_or_aad_fails(world: World, data: st.DataObject) -> None:
    plaintext = data.draw(st.binary(max_size=64))
    aad = data.draw(st.binary(min_size=1, max_size=32))
    sealed = world.seal("patient-flip", plaintext, aad)
    bit = data.draw(st.integers(0, (len(sealed) + len(aad)) * 8 - 1))
    if bit < len(sealed) * 8:
        sealed, where = _flip(sealed, bit), "sealed"
    else:
        aad, where = _flip(aad, bit - len(sealed) * 8), "aad"
    with pytest.raises(DecryptionError):
        world.open("patient-flip", sealed, aad)
    assert where


def test_flip_in_each_header_field_fails(world: World) -> None:
    sealed = world.seal("patient-hdr", b"body", b"aad")
    id_len = sealed[1]
    positions = {
        "version": 0,
        "key id length": 1,
        "key id": 2,
        "key id end": 1 + id_len,
        "nonce": 2 + id_len,
        "nonce end": 2 + id_len + 11,
        "tag end": len(sealed) - 1,
    }
    for field, pos in positions.items():
        for bit in range(8):
            with pytest.raises(DecryptionError):
                world.open("patient-hdr", _flip(sealed, pos * 8 + bit), b"aad")
            assert field


def test_truncations_and_extensions_fail(world: World) -> None:
    sealed = world.seal("patient-trunc", b"some body", b"")
    for n in range(len(sealed)):
        with pytest.raises(DecryptionError):
            world.open("patient-trunc", sealed[:n], b"")
    with pytest.raises(DecryptionError):
        world.open("patient-trunc", sealed + b"\x00", b"")


def test_ciphertext_moved_to_another_owner_fails(world: World) -> None:
    sealed = world.seal("patient-a", b"a's record", b"row-1")
    world.seal("patient-b", b"b's record", b"row-1")
    with pytest.raises(DecryptionError):
        world.open("patient-b", sealed, b"row-1")


def test_owner_without_key_is_a_decryption_error(world: World) -> None:
    sealed = world.seal("patient-x", b"x", b"")
    with pytest.raises(DecryptionError):
        world.open("never-seen", sealed, b"")


def _set_column(world: World, owner: str, column: str, value: object) -> None:
    with transaction(world.factory) as s:
        s.execute(
            text(f"UPDATE crypto_data_key SET {column} = :v WHERE owner = :o"),
            {"v": value, "o": owner},
        )


def _column(world: World, owner: str, column: str) -> object:
    with transaction(world.factory) as s:
        return s.execute(
            text(f"SELECT {column} FROM crypto_data_key WHERE owner = :o"), {"o": owner}
        ).scalar_one()


def test_bit_flip_in_wrapped_key_in_database_fails(fresh: World) -> None:
    sealed = fresh.seal("p1", b"record", b"")
    wrapped = _column(fresh, "p1", "wrapped")
    assert isinstance(wrapped, bytes)
    for bit in (0, 95, 96, 200, len(wrapped) * 8 - 1):  # nonce, ciphertext, tag
        _set_column(fresh, "p1", "wrapped", _flip(wrapped, bit))
        with pytest.raises(DecryptionError):
            fresh.open("p1", sealed, b"")
    _set_column(fresh, "p1", "wrapped", wrapped)
    assert fresh.open("p1", sealed, b"") == b"record"


def test_wrapped_key_copied_to_another_owner_fails(fresh: World) -> None:
    fresh.seal("alice", b"alice", b"")
    sealed_bob = fresh.seal("bob", b"bob", b"")
    _set_column(fresh, "bob", "wrapped", _column(fresh, "alice", "wrapped"))
    with pytest.raises(DecryptionError):
        fresh.open("bob", sealed_bob, b"")


def test_key_rows_swapped_between_owners_fail(fresh: World) -> None:
    # An attacker with database access relabels rows: alice's key row now says "bob" and
    # alice's sealed resources are filed under bob. The owner is bound into the wrapping AAD.
    sealed_alice = fresh.seal("alice", b"alice's record", b"")
    fresh.seal("bob", b"bob", b"")
    _set_column(fresh, "bob", "owner", "tmp")
    _set_column(fresh, "alice", "owner", "bob")
    _set_column(fresh, "tmp", "owner", "alice")
    with pytest.raises(DecryptionError):
        fresh.open("bob", sealed_alice, b"")


def test_key_id_rewritten_in_database_fails(fresh: World) -> None:
    sealed = fresh.seal("carol", b"carol", b"")
    _set_column(fresh, "carol", "key_id", "dek-" + "0" * 32)
    with pytest.raises(DecryptionError):
        fresh.open("carol", sealed, b"")


def test_database_never_holds_clear_keys_or_data(fresh: World) -> None:
    marker = b"MARKER-diagnosis-4f1c2a"
    sealed = fresh.seal("dave", marker, b"")
    with transaction(fresh.factory) as s:
        row = s.get(DataKey, "dave")
        assert row is not None
        assert row.wrapped is not None
        assert row.kek_id is not None
        dek = fresh.provider.unwrap(row.kek_id, row.wrapped, _dek_aad(row.owner, row.key_id))
        s.execute(text("CREATE TABLE blob_store (b BLOB)"))
        s.execute(text("INSERT INTO blob_store VALUES (:b)"), {"b": sealed})
    fresh.factory.kw["bind"].dispose()
    files = [p for p in fresh.db_path.parent.iterdir() if p.name.startswith("egide.db")]
    content = b"".join(p.read_bytes() for p in files)
    assert sealed in content  # the scan does see what was written
    assert marker not in content
    assert dek not in content


def _dek_aad(owner: str, key_id: str) -> bytes:
    # Independent re-statement of the documented wrapping AAD, to check the format.
    fields = (owner.encode(), key_id.encode())
    return b"egide-dek/1" + b"".join(len(f).to_bytes(2, "big") + f for f in fields)


def test_shredding(fresh: World) -> None:
    sealed = {o: fresh.seal(o, o.encode(), b"") for o in ("erin", "frank", "grace")}
    with transaction(fresh.factory) as s:
        assert fresh.envelope.shred(s, owner="frank") is True
    with pytest.raises(KeyShredded):
        fresh.open("frank", sealed["frank"], b"")
    with pytest.raises(KeyShredded):
        fresh.seal("frank", b"new data", b"")  # does not come back silently
    for owner in ("erin", "grace"):
        assert fresh.open(owner, sealed[owner], b"") == owner.encode()
    with transaction(fresh.factory) as s:
        assert fresh.envelope.shred(s, owner="frank") is False
        row = s.get(DataKey, "frank")
        assert row is not None
        assert row.wrapped is None
        assert row.kek_id is None
        assert row.shredded_at is not None
        # Shredding an owner that never had a key leaves a tombstone.
        assert fresh.envelope.shred(s, owner="henry") is False
    with pytest.raises(KeyShredded):
        fresh.seal("henry", b"x", b"")


def test_shred_rolled_back_is_not_a_shred(fresh: World) -> None:
    sealed = fresh.seal("ivan", b"ivan", b"")
    with fresh.factory() as s:
        s.begin()
        assert fresh.envelope.shred(s, owner="ivan") is True
        s.rollback()
    assert fresh.open("ivan", sealed, b"") == b"ivan"


def test_shred_elsewhere_takes_effect_at_next_transaction(fresh: World) -> None:
    sealed = fresh.seal("judy", b"judy", b"")
    with fresh.factory() as reader:
        with reader.begin():
            assert fresh.envelope.open(reader, owner="judy", sealed=sealed, aad=b"") == b"judy"
            # Something in this session keeps the row alive in its identity map (sessions do
            # not expire on commit), which must not hide a shred made elsewhere.
            held = reader.get(DataKey, "judy")
        # Another process (its own envelope, its own session) shreds and commits.
        other = Envelope(FileKeyProvider.open(fresh.provider.path, MASTER))
        with transaction(fresh.factory) as s:
            assert other.shred(s, owner="judy") is True
        # Same long-lived session, next transaction: no stale cached key survives.
        with reader.begin(), pytest.raises(KeyShredded):
            fresh.envelope.open(reader, owner="judy", sealed=sealed, aad=b"")
        assert held is not None


def test_cache_is_dropped_when_the_transaction_ends(fresh: World) -> None:
    fresh.seal("kim", b"kim", b"")
    with fresh.factory() as s:
        with s.begin():
            fresh.envelope.seal(s, owner="kim", plaintext=b"k", aad=b"")
            assert s.info["egide.crypto.dek_cache"]
        assert not s.info["egide.crypto.dek_cache"]


def test_rotation_rewrap_retire(fresh: World) -> None:
    owners = [f"patient-{i}" for i in range(7)]
    sealed = {o: fresh.seal(o, o.encode(), o.encode()) for o in owners}
    with transaction(fresh.factory) as s:
        fresh.envelope.shred(s, owner="patient-3")
    live = len(owners) - 1
    old = fresh.provider.current_kek_id()
    new = fresh.provider.rotate()
    with transaction(fresh.factory) as s:
        assert fresh.envelope.kek_usage(s) == {old: live, new: 0}
        progress: list[tuple[int, int]] = []
        count = fresh.envelope.rewrap_all(s, on_progress=lambda d, t: progress.append((d, t)))
        assert count == live
        assert progress[-1] == (live, live)
        assert [d for d, _ in progress] == list(range(1, live + 1))
        assert fresh.envelope.kek_usage(s) == {old: 0, new: live}
    fresh.provider.retire(old)
    with transaction(fresh.factory) as s:
        usage = fresh.envelope.kek_usage(s)
        assert usage.get(old, 0) == 0
        assert usage == {new: live}
        assert fresh.envelope.rewrap_all(s) == 0  # nothing left to do
        row = s.get(DataKey, "patient-0")
        assert row is not None
        assert row.rewrapped_at is not None
        assert row.wrapped is not None
        with pytest.raises(KeyringError):
            fresh.provider.unwrap(old, row.wrapped, _dek_aad(row.owner, row.key_id))
    # All data still opens, from a fresh process that never saw the old KEK.
    reopened = Envelope(FileKeyProvider.open(fresh.provider.path, MASTER))
    with transaction(fresh.factory) as s:
        for owner in owners:
            if owner == "patient-3":
                with pytest.raises(KeyShredded):
                    reopened.open(s, owner=owner, sealed=sealed[owner], aad=owner.encode())
            else:
                assert reopened.open(s, owner=owner, sealed=sealed[owner], aad=owner.encode()) == (
                    owner.encode()
                )


def test_retiring_without_rewrap_loses_access(fresh: World) -> None:
    sealed = fresh.seal("lost", b"lost", b"")
    old = fresh.provider.current_kek_id()
    fresh.provider.rotate()
    fresh.provider.retire(old)
    with pytest.raises(KeyringError):
        fresh.open("lost", sealed, b"")
    with transaction(fresh.factory) as s, pytest.raises(KeyringError):
        fresh.envelope.rewrap_all(s)


def test_owner_length_is_checked(world: World) -> None:
    with transaction(world.factory) as s:
        for owner in ("", "x" * 65):
            with pytest.raises(ValueError, match="owner"):
                world.envelope.seal(s, owner=owner, plaintext=b"", aad=b"")


def test_null_cipher_envelope_does_not_mix_with_real_one(fresh: World) -> None:
    null = Envelope(fresh.provider, aead=UnsafeNullCipher())
    with transaction(fresh.factory) as s:
        sealed = null.seal(s, owner="bench", plaintext=b"benchmark body", aad=b"")
        assert b"benchmark body" in sealed  # it really protects nothing
        with pytest.raises(DecryptionError):
            fresh.envelope.open(s, owner="bench", sealed=sealed, aad=b"")


def test_org_owner(factory: sessionmaker[Session], provider: FileKeyProvider) -> None:
    env = Envelope(provider)
    with transaction(factory) as s:
        sealed = env.seal(s, owner="_org", plaintext=b"org", aad=b"Organization/1")
        assert env.open(s, owner="_org", sealed=sealed, aad=b"Organization/1") == b"org"

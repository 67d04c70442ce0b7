"""The file keyring: sealing, tamper detection, rotation, retirement and named secrets."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest
from crypto_support import CHEAP, MASTER, new_keyring
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from egide.crypto.errors import DecryptionError, KeyringError
from egide.crypto.keyring import FORMAT, SECRET_NAMES, FileKeyProvider


def test_create_then_open_gives_the_same_keys(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    made = new_keyring(path)
    wrapped = made.wrap(made.current_kek_id(), b"k" * 32, b"aad")
    opened = FileKeyProvider.open(path, MASTER)
    assert opened.current_kek_id() == made.current_kek_id()
    assert opened.active_kek_ids() == [made.current_kek_id()]
    assert re.fullmatch(r"kek-[0-9a-f]{8}", opened.current_kek_id())
    assert opened.unwrap(opened.current_kek_id(), wrapped, b"aad") == b"k" * 32
    for name in SECRET_NAMES:
        assert opened.secret(name) == made.secret(name)
        assert len(opened.secret(name)) == 32
    assert opened.secret("blind-index") != opened.secret("ledger-signing-seed")
    doc = json.loads(path.read_text())
    assert doc["format"] == FORMAT == "egide-keyring/1"
    assert doc["kdf"]["name"] == "argon2id"


def test_file_holds_no_key_material_in_clear(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    made = new_keyring(path)
    raw = path.read_bytes()
    for name in SECRET_NAMES:
        secret = made.secret(name)
        assert secret not in raw
        assert secret.hex().encode() not in raw
    assert b"blind-index" not in raw  # even the names are inside the sealed payload


def test_unknown_secret_name(provider: FileKeyProvider) -> None:
    with pytest.raises(KeyringError):
        provider.secret("no-such-secret")


def test_wrong_master_secret(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    new_keyring(path)
    with pytest.raises(KeyringError) as exc:
        FileKeyProvider.open(path, b"not the master secret")
    assert "not the master secret" not in str(exc.value)
    assert exc.value.__cause__ is None  # no lower-library traceback chained


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("pristine") / "k.json"
    new_keyring(path)
    return path.read_bytes()


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_bit_flip_in_the_file_is_refused(
    pristine: bytes, tmp_path: Path, data: st.DataObject
) -> None:
    bit = data.draw(st.integers(0, len(pristine) * 8 - 1))
    tampered = bytearray(pristine)
    tampered[bit // 8] ^= 1 << (bit % 8)
    path = tmp_path / "flipped.json"
    path.write_bytes(bytes(tampered))
    with pytest.raises(KeyringError):
        FileKeyProvider.open(path, MASTER)


def _rewrite(path: Path, **kdf: object) -> None:
    doc = json.loads(path.read_text())
    doc["kdf"].update(kdf)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "change",
    [{"iterations": 2}, {"memory_kib": 16}, {"parallelism": 2}],
)
def test_kdf_parameters_cannot_be_changed(tmp_path: Path, change: dict[str, object]) -> None:
    path = tmp_path / "k.json"
    new_keyring(path)
    _rewrite(path, **change)
    with pytest.raises(KeyringError):
        FileKeyProvider.open(path, MASTER)


def test_header_swap_between_keyrings_is_refused(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    new_keyring(a)
    new_keyring(b)
    doc_a, doc_b = json.loads(a.read_text()), json.loads(b.read_text())
    doc_a["kdf"] = doc_b["kdf"]  # b's salt with a's sealed payload
    a.write_text(json.dumps(doc_a))
    with pytest.raises(KeyringError):
        FileKeyProvider.open(a, MASTER)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"[]",
        b"{}",
        b'{"format": "egide-keyring/1"}',
        "\u00e9".encode("latin-1"),
    ],
)
def test_garbage_files_are_keyring_errors(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "k.json"
    path.write_bytes(content)
    with pytest.raises(KeyringError):
        FileKeyProvider.open(path, MASTER)


def test_absurd_kdf_costs_are_refused_before_running(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    new_keyring(path)
    _rewrite(path, memory_kib=2**40)  # would allocate a petabyte if obeyed
    with pytest.raises(KeyringError):
        FileKeyProvider.open(path, MASTER)
    _rewrite(path, memory_kib=8, iterations=True)  # JSON booleans are not numbers here
    with pytest.raises(KeyringError):
        FileKeyProvider.open(path, MASTER)


def test_extra_clear_field_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    new_keyring(path)
    doc = json.loads(path.read_text())
    doc["comment"] = "unauthenticated"
    path.write_text(json.dumps(doc))
    with pytest.raises(KeyringError):
        FileKeyProvider.open(path, MASTER)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyringError):
        FileKeyProvider.open(tmp_path / "absent.json", MASTER)


def test_mode_is_0600_after_create_and_rotate(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    made = new_keyring(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    made.rotate()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # No temporary files are left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.json", "k.json.lock"]


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    new_keyring(path)
    before = path.read_bytes()
    with pytest.raises(KeyringError):
        new_keyring(path)
    with pytest.raises(KeyringError):
        FileKeyProvider.create(path, b"other", **CHEAP)
    assert path.read_bytes() == before
    assert FileKeyProvider.open(path, MASTER).current_kek_id()


def test_empty_master_secret_and_bad_costs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyringError):
        FileKeyProvider.create(tmp_path / "a.json", b"", **CHEAP)
    with pytest.raises(KeyringError):
        FileKeyProvider.create(tmp_path / "b.json", MASTER, kdf_memory_kib=4, kdf_iterations=1)
    assert list(tmp_path.iterdir()) == []


def test_wrap_is_randomised_and_authenticated(provider: FileKeyProvider) -> None:
    kek = provider.current_kek_id()
    dek = bytes(range(32))
    first, second = provider.wrap(kek, dek, b"a"), provider.wrap(kek, dek, b"a")
    assert first != second  # fresh nonce each time
    assert len(first) == 12 + 32 + 16
    with pytest.raises(DecryptionError):
        provider.unwrap(kek, first, b"b")
    for i in range(len(first) * 8):
        tampered = bytearray(first)
        tampered[i // 8] ^= 1 << (i % 8)
        with pytest.raises(DecryptionError):
            provider.unwrap(kek, bytes(tampered), b"a")
    for n in range(28):
        with pytest.raises(DecryptionError):
            provider.unwrap(kek, first[:n], b"a")


def test_unknown_kek(provider: FileKeyProvider) -> None:
    with pytest.raises(KeyringError):
        provider.wrap("kek-00000000", bytes(32), b"")
    with pytest.raises(KeyringError):
        provider.unwrap("kek-00000000", bytes(60), b"")
    with pytest.raises(KeyringError):
        provider.retire("kek-00000000")


def test_rotate_and_retire(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    ring = new_keyring(path)
    old = ring.current_kek_id()
    wrapped_old = ring.wrap(old, b"d" * 32, b"x")
    new = ring.rotate()
    assert new != old
    assert ring.current_kek_id() == new
    assert ring.active_kek_ids() == [old, new]
    assert ring.unwrap(old, wrapped_old, b"x") == b"d" * 32  # old still usable until retired
    with pytest.raises(KeyringError):
        ring.retire(new)  # never the current one
    ring.retire(old)
    ring.retire(old)  # idempotent
    assert ring.active_kek_ids() == [new]
    with pytest.raises(KeyringError):
        ring.unwrap(old, wrapped_old, b"x")
    with pytest.raises(KeyringError):
        ring.wrap(old, b"d" * 32, b"x")
    # Persisted: a fresh open agrees, and the retired material is gone for good.
    reopened = FileKeyProvider.open(path, MASTER)
    assert reopened.current_kek_id() == new
    assert reopened.active_kek_ids() == [new]
    with pytest.raises(KeyringError):
        reopened.unwrap(old, wrapped_old, b"x")
    infos = {info.id: info for info in reopened.list_keks()}
    assert infos[old].retired is not None
    assert infos[new].retired is None


def test_secrets_survive_rotation(provider: FileKeyProvider) -> None:
    before = {name: provider.secret(name) for name in SECRET_NAMES}
    provider.rotate()
    assert {name: provider.secret(name) for name in SECRET_NAMES} == before


def test_other_process_changes_are_seen(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    server = new_keyring(path)
    cli = FileKeyProvider.open(path, MASTER)
    new = cli.rotate()
    # The running "server" must wrap new keys under the new KEK, not the stale one.
    assert server.current_kek_id() == new
    wrapped = cli.wrap(new, b"z" * 32, b"")
    assert server.unwrap(new, wrapped, b"") == b"z" * 32
    # Concurrent writers do not lose each other's updates.
    newer = server.rotate()
    assert cli.active_kek_ids()[-2:] == [new, newer]


def test_replaced_by_another_keyring_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    ring = new_keyring(path)
    other = tmp_path / "other.json"
    new_keyring(other)
    other.replace(path)
    with pytest.raises(KeyringError):
        ring.current_kek_id()

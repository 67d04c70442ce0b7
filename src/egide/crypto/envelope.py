"""Envelope encryption: every owner's data is sealed under that owner's own data key.

Security role: this is how DESIGN.md contract 3 ("no patient data in clear at rest") is kept.
Each owner (a patient id, or "_org" for resources outside any patient compartment) has one
random 256-bit data-encryption key (DEK), stored only wrapped under a key-encryption key (KEK)
of the keyring (NIST SP 800-57 Part 1 section 6.1.1; OWASP ASVS 5.0 V11.1.2). Data is sealed
with AES-256-GCM (NIST SP 800-38D) under the DEK. Destroying the wrapped DEK destroys the data
(crypto-shredding, GDPR art. 17), and rotating KEKs re-wraps DEKs without touching the data.

Sealed format v1 (what `seal` returns and `open` accepts):

    0x01 | len(key_id) (1 byte) | key_id (ASCII) | nonce (12 random bytes) | ciphertext || tag

The AES-GCM associated data is the header (every byte before the ciphertext, so version, key id
and nonce) followed by the caller's `aad` (which binds the ciphertext to its row: type, id,
version, patient). Flipping any bit of the header, ciphertext, tag or aad fails to open. The
header is self-delimiting, so header || aad is unambiguous.

A DEK is wrapped with associated data `b"egide-dek/1"` || len16(owner) || owner ||
len16(key_id) || key_id, so a wrapped key copied into another owner's row, or a row whose key id
was changed, fails to unwrap (DecryptionError).

Decisions:

* `open` for an owner with no key row at all raises DecryptionError: nothing was ever sealed
  for that owner, so the ciphertext was moved or forged. A shredded owner raises KeyShredded.
* `seal` for a shredded owner raises KeyShredded: a shredded patient never comes back with a
  fresh key silently. `shred` of an owner without a key records a shredded tombstone for the
  same reason.
* Unwrapped DEKs are cached in `session.info` for the current transaction only and dropped when
  it ends (commit, rollback, savepoint end): a shred committed by another process must take
  effect at this process's next transaction, and clear keys should not outlive the unit of work.
  Within one transaction the key row is read once.
* Nothing here commits; the caller owns the transaction (DESIGN.md contract 2). A new key row
  is flushed at once: when two transactions race to create the same owner's DEK, the second
  gets the database's primary-key IntegrityError (sqlalchemy.exc.IntegrityError) and must roll
  back and retry, and then uses the winner's key: two different keys for one owner never exist.
  (On SQLite writers are serialised by BEGIN IMMEDIATE, so the race cannot happen there.)
* Shredding sets the wrapped key to NULL. Copies of the old wrapped key may survive in database
  pages (PostgreSQL until VACUUM), WAL and backups; they are useless once the KEK that wrapped
  them is retired, so erasure is complete after the next `rotate` + `rewrap_all` + `retire`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, SessionTransaction

from egide.core.clock import Clock, SystemClock
from egide.core.ids import RandomSource, SystemRandom
from egide.crypto.aead import KEY_SIZE, NONCE_SIZE, TAG_SIZE, Aead, AesGcm
from egide.crypto.errors import DecryptionError, KeyShredded
from egide.crypto.keyring import KeyProvider
from egide.crypto.models import DataKey

VERSION = 0x01
_CACHE = "egide.crypto.dek_cache"  # session.info key: owner -> (key_id, dek)
_REWRAP_BATCH = 256


def _dek_aad(owner: str, key_id: str) -> bytes:
    """Associated data of a wrapped DEK: binds it to its owner and key id (length-prefixed)."""
    out = [b"egide-dek/1"]
    for field in (owner, key_id):
        raw = field.encode()
        out.append(struct.pack(">H", len(raw)) + raw)
    return b"".join(out)


def _clear_cache(session: Session, _transaction: SessionTransaction) -> None:
    cache = session.info.get(_CACHE)
    if cache is not None:
        cache.clear()


def _cache(session: Session) -> dict[str, tuple[str, bytes]]:
    cache: dict[str, tuple[str, bytes]] | None = session.info.get(_CACHE)
    if cache is None:
        cache = {}
        session.info[_CACHE] = cache
        # Instance-level listener: drop clear DEKs as soon as any transaction of it ends.
        event.listen(session, "after_transaction_end", _clear_cache)
    return cache


def _check_owner(owner: str) -> None:
    if not 1 <= len(owner) <= 64:
        msg = "owner must be 1 to 64 characters"
        raise ValueError(msg)


def _fail() -> DecryptionError:
    return DecryptionError("decryption failed")


class Envelope:
    """Seals and opens owners' data under their own DEKs; shreds and re-wraps those keys."""

    def __init__(
        self,
        provider: KeyProvider,
        *,
        aead: Aead | None = None,
        random: RandomSource | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._provider = provider
        self._aead: Aead = aead or AesGcm()
        self._random = random or SystemRandom()
        self._clock = clock or SystemClock()

    # -- data ----------------------------------------------------------------------------

    def seal(self, session: Session, *, owner: str, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt `plaintext` for `owner`, bound to `aad`; creates the owner's DEK if needed."""
        _check_owner(owner)
        key_id, dek = self._dek(session, owner, create=True)
        raw_id = key_id.encode("ascii")
        nonce = self._random.token_bytes(NONCE_SIZE)  # random 96-bit nonce, SP 800-38D 8.2.2
        header = bytes([VERSION, len(raw_id)]) + raw_id + nonce
        return header + self._aead.encrypt(dek, nonce, plaintext, header + aad)

    def open(self, session: Session, *, owner: str, sealed: bytes, aad: bytes) -> bytes:
        """Decrypt what `seal` produced for `owner` with the same `aad`.

        DecryptionError on any tampering or misplacement, KeyShredded if the key was shredded.
        """
        _check_owner(owner)
        if len(sealed) < 2 or sealed[0] != VERSION:
            raise _fail()
        id_len = sealed[1]
        body_at = 2 + id_len + NONCE_SIZE
        if len(sealed) < body_at + TAG_SIZE:
            raise _fail()
        try:
            sealed_key_id = sealed[2 : 2 + id_len].decode("ascii")
        except UnicodeDecodeError:
            raise _fail() from None
        key_id, dek = self._dek(session, owner, create=False)
        if sealed_key_id != key_id:
            raise _fail()  # sealed under another owner's key, or a forged header
        header, nonce = sealed[:body_at], sealed[body_at - NONCE_SIZE : body_at]
        return self._aead.decrypt(dek, nonce, sealed[body_at:], header + aad)

    # -- keys ----------------------------------------------------------------------------

    def shred(self, session: Session, *, owner: str) -> bool:
        """Destroy the owner's DEK (crypto-shredding). True if a live key was destroyed.

        False if it was already shredded or never existed; in the latter case a shredded
        tombstone is recorded so later `seal` calls refuse too.
        """
        _check_owner(owner)
        _cache(session).pop(owner, None)
        now = self._clock.now()
        row = session.get(DataKey, owner, populate_existing=True, with_for_update=True)
        if row is None:
            session.add(
                DataKey(
                    owner=owner,
                    key_id=self._new_key_id(),
                    kek_id=None,
                    wrapped=None,
                    created_at=now,
                    shredded_at=now,
                )
            )
            session.flush()
            return False
        if row.shredded_at is not None or row.wrapped is None:
            return False
        row.wrapped = None
        row.kek_id = None
        row.shredded_at = now
        session.flush()
        return True

    def rewrap_all(
        self, session: Session, *, on_progress: Callable[[int, int], None] | None = None
    ) -> int:
        """Re-wrap every live DEK not under the current KEK; sealed data is untouched.

        Returns the number re-wrapped. A DEK under a retired KEK raises KeyringError (it can
        no longer be recovered); nothing is committed here.
        """
        current = self._provider.current_kek_id()
        pending = (DataKey.wrapped.is_not(None), DataKey.kek_id != current)
        total = session.scalar(select(func.count()).select_from(DataKey).where(*pending)) or 0
        done = 0
        while True:
            rows = session.scalars(
                select(DataKey)
                .where(*pending)
                .order_by(DataKey.owner)
                .limit(_REWRAP_BATCH)
                .with_for_update()
                .execution_options(populate_existing=True)
            ).all()
            if not rows:
                return done
            now = self._clock.now()
            for row in rows:
                assert row.wrapped is not None
                assert row.kek_id is not None
                aad = _dek_aad(row.owner, row.key_id)
                dek = self._provider.unwrap(row.kek_id, row.wrapped, aad)
                row.wrapped = self._provider.wrap(current, dek, aad)
                row.kek_id = current
                row.rewrapped_at = now
                done += 1
                if on_progress is not None:
                    on_progress(done, max(total, done))
            session.flush()  # the next batch query must no longer see these rows

    def kek_usage(self, session: Session) -> dict[str, int]:
        """KEK id -> number of live DEKs wrapped under it (active KEKs listed even at 0)."""
        usage = dict.fromkeys(self._provider.active_kek_ids(), 0)
        rows = session.execute(
            select(DataKey.kek_id, func.count())
            .where(DataKey.wrapped.is_not(None))
            .group_by(DataKey.kek_id)
        ).all()
        for kek_id, count in rows:
            if kek_id is not None:
                usage[kek_id] = int(count)
        return usage

    # -- internals -----------------------------------------------------------------------

    def _new_key_id(self) -> str:
        return "dek-" + self._random.token_bytes(16).hex()

    def _dek(self, session: Session, owner: str, *, create: bool) -> tuple[str, bytes]:
        cache = _cache(session)
        hit = cache.get(owner)
        if hit is not None:
            return hit
        # populate_existing: sessions do not expire on commit, so re-read the row to see a
        # shred committed elsewhere since this session last looked.
        row = session.get(DataKey, owner, populate_existing=True)
        if row is None:
            if not create:
                raise _fail()
            entry = self._create(session, owner)
        elif row.shredded_at is not None or row.wrapped is None or row.kek_id is None:
            msg = "the owner's data key was shredded"
            raise KeyShredded(msg)
        else:
            dek = self._provider.unwrap(row.kek_id, row.wrapped, _dek_aad(owner, row.key_id))
            if len(dek) != KEY_SIZE:
                raise _fail()
            entry = (row.key_id, dek)
        cache[owner] = entry
        return entry

    def _create(self, session: Session, owner: str) -> tuple[str, bytes]:
        dek = self._random.token_bytes(KEY_SIZE)
        key_id = self._new_key_id()
        kek_id = self._provider.current_kek_id()
        session.add(
            DataKey(
                owner=owner,
                key_id=key_id,
                kek_id=kek_id,
                wrapped=self._provider.wrap(kek_id, dek, _dek_aad(owner, key_id)),
                created_at=self._clock.now(),
            )
        )
        session.flush()  # surface a concurrent creation now, as an IntegrityError
        return key_id, dek

"""Inclusion and consistency proofs of the ledger, read from the database.

Security role (DESIGN.md, contract 5: everything is verifiable from outside). A proof lets
anyone holding the ledger's verifier key check, without trusting this server:

* that one entry is leaf `leaf_index` of the tree under a *signed* checkpoint (an inclusion
  proof, RFC 9162 section 2.1.3; RFC 6962 section 2.1.1 "Merkle audit paths");
* that a later signed checkpoint extends an earlier one, i.e. nothing the earlier one covered
  was changed, removed or reordered since (a consistency proof, RFC 9162 section 2.1.4;
  RFC 6962 section 2.1.2).

Proofs are always against checkpoints the sequencer has signed (C2SP signed notes, see
`egide.ledger.checkpoint`), never against an unsigned root of the moment: a client that checks
the note's signature and then the proof has verified the entry end to end. A proof holds hashes
only — the leaf hash of the entry and hashes of subtrees — never an entry's content, so it
reveals nothing about patients; whoever may read the entry itself can recompute its leaf hash
(SHA-256(0x00 || canonical JSON), RFC 6962 section 2.1) and compare.

Generation asks for O(log n) subtree hashes only: `merkle.inclusion_ranges` and
`merkle.consistency_ranges` name the subtrees D[lo:hi] of the RFC 9162 proof, and
`egide.ledger.tiles` finds their hashes from the stored nodes of complete subtrees at levels
4, 8, 12, ... (`ledger_node`, written by the sequencer), combining at most 8 stored nodes or
leaf hashes (`ledger_leaf`) per subtree and splitting the incomplete right edge at the
largest power of two (RFC 9162 section 2.1.1). The rows are read in one query per level,
memoised within the call: a proof costs a few dozen rows and a handful of queries whatever
the size of the ledger, instead of a pass over every leaf.

Stored hashes are not trusted. Before answering, the proof is checked against the signed
root with the verifier half of `egide.ledger.merkle` (RFC 9162 sections 2.1.3.2 and 2.1.4.2):
if a leaf or node row no longer matches the signed checkpoint (someone edited it), the call
fails with `StorageFailure` instead of serving a proof that cannot verify. Only the rows a
proof touches are checked this way; `egide ledger verify` rebuilds the whole tree.

Archived entries (`ledger.retention`) keep their leaf rows (position, sequence number and
hash: no personal data) and the nodes above them, so proofs work for every leaf and every
old checkpoint after archiving. An archived entry's inclusion proof says `"archived": true`;
its bytes are in the archive file, not in the database, so the check that the entry still
hashes to its leaf is left to whoever reads the file (`egide ledger read-archive`). Archives
made before leaf hashes were kept (schema 0003) deleted them: a proof that needs one answers
NotFound, naming the archive file, not an integrity fault.

`check_inclusion` and `check_consistency` are the client side, for the CLI's `check-proof`:
pure, standard library and `cryptography` only, no database.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from egide.core.errors import BadRequest, NotFound, StorageFailure
from egide.ledger import merkle
from egide.ledger.checkpoint import Checkpoint, CheckpointError, CheckpointVerifier
from egide.ledger.models import (
    LedgerArchive,
    LedgerCheckpoint,
    LedgerEntry,
    LedgerLeaf,
    LedgerNode,
)
from egide.ledger.tiles import MissingLeaf, TiledHashes

__all__ = [
    "MAX_INTEGER",
    "ConsistencyProof",
    "InclusionProof",
    "check_consistency",
    "check_inclusion",
    "checkpoint_note",
    "consistency_proof_for",
    "inclusion_for_seq",
    "parse_consistency",
    "parse_inclusion",
]

# Sequence numbers and sizes are stored as signed 64-bit integers (BIGINT); anything larger
# cannot name a row, and must be refused before it reaches the database driver.
MAX_INTEGER = (1 << 63) - 1


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(value: object, name: str) -> bytes:
    """Standard base64 (RFC 4648 section 4), canonical spelling only."""
    if not isinstance(value, str):
        msg = f"{name} must be a base64 string"
        raise ValueError(msg)
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        msg = f"{name} is not standard base64"
        raise ValueError(msg) from None
    if _b64(raw) != value:
        msg = f"{name} is not canonical base64"
        raise ValueError(msg)
    return raw


def _int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{name} must be an integer"
        raise ValueError(msg)
    return value


@dataclass(frozen=True)
class InclusionProof:
    """Entry `seq` is leaf `leaf_index` of the tree of `tree_size` leaves that the signed
    note `checkpoint_note` commits to; `proof` is its audit path (RFC 9162 2.1.3.1)."""

    seq: int
    leaf_index: int
    tree_size: int
    leaf_hash: bytes
    proof: list[bytes]
    checkpoint_note: bytes
    # The entry was moved to an archive file (ledger.retention): its leaf is proved, its
    # bytes are in the file, not in the database.
    archived: bool = False

    def to_json(self) -> dict[str, Any]:
        """The JSON form served by `GET /api/ledger/proof/inclusion` and `egide ledger prove`;
        `"archived": true` is added for an archived entry."""
        body: dict[str, Any] = {
            "seq": self.seq,
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "leaf_hash": _b64(self.leaf_hash),
            "proof": [_b64(p) for p in self.proof],
            "checkpoint": self.checkpoint_note.decode("utf-8"),
        }
        if self.archived:
            body["archived"] = True
        return body


@dataclass(frozen=True)
class ConsistencyProof:
    """The tree of `new_size` leaves extends the tree of `old_size` leaves (RFC 9162 2.1.4.1);
    both trees' signed notes are included so a client can check them end to end."""

    old_size: int
    new_size: int
    proof: list[bytes]
    old_checkpoint_note: bytes
    new_checkpoint_note: bytes

    def to_json(self) -> dict[str, Any]:
        """The JSON form served by `GET /api/ledger/proof/consistency`."""
        return {
            "old_size": self.old_size,
            "new_size": self.new_size,
            "proof": [_b64(p) for p in self.proof],
            "old_checkpoint": self.old_checkpoint_note.decode("utf-8"),
            "new_checkpoint": self.new_checkpoint_note.decode("utf-8"),
        }


# --------------------------------------------------------------------------- server side


def _check_int(value: int, name: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{name} must be an integer"
        raise BadRequest(msg)
    if not minimum <= value <= MAX_INTEGER:
        msg = f"{name} must be between {minimum} and {MAX_INTEGER}"
        raise BadRequest(msg)


def _latest(session: Session) -> LedgerCheckpoint:
    row = session.scalar(select(LedgerCheckpoint).order_by(LedgerCheckpoint.size.desc()))
    if row is None:
        msg = "the ledger has no signed checkpoint yet; try again after the next one"
        raise NotFound(msg)
    return row


def _checkpoint(session: Session, size: int | None, name: str) -> LedgerCheckpoint:
    """The signed checkpoint of `size` leaves (the latest one when `size` is None)."""
    if size is None:
        return _latest(session)
    _check_int(size, name, minimum=1)
    row = session.get(LedgerCheckpoint, size)
    if row is None:
        latest = session.scalar(
            select(LedgerCheckpoint.size).order_by(LedgerCheckpoint.size.desc())
        )
        if latest is None:
            msg = "the ledger has no signed checkpoint yet; try again after the next one"
        elif size > latest:
            msg = f"{name} {size} is beyond the latest signed checkpoint ({latest} leaves)"
        else:
            msg = f"there is no signed checkpoint of {size} leaves ({name})"
        raise NotFound(msg)
    return row


def _signed_root(row: LedgerCheckpoint, verifier: CheckpointVerifier | None) -> bytes:
    """The root the proof must lead to: the signed note's, when we can check the signature."""
    if verifier is None:
        return row.root
    try:
        checkpoint = verifier.verify(row.note)
    except CheckpointError as exc:
        msg = f"the signed checkpoint of {row.size} leaves does not verify ({exc})"
        raise StorageFailure(_fault(msg)) from None
    if checkpoint.size != row.size:
        msg = f"the signed checkpoint stored at size {row.size} is for size {checkpoint.size}"
        raise StorageFailure(_fault(msg))
    return checkpoint.root


def _fault(what: str) -> str:
    return f"ledger integrity fault: {what}; run `egide ledger verify`"


# Rows per IN (...) list: well below SQLite's and the drivers' bound-parameter limits.
_IN_CHUNK = 500


def _archived_through(session: Session) -> int:
    """How many leading leaves have their entries in archive files (0 when none)."""
    return session.scalar(select(func.max(LedgerArchive.through_size))) or 0


def _fetch_rows(session: Session, level: int, indexes: Sequence[int]) -> dict[int, bytes]:
    """Leaf hashes (level 0, `ledger_leaf`) or stored nodes (`ledger_node`) by index: one
    query per level (per 500 indexes), for `tiles.TiledHashes`."""
    found: dict[int, bytes] = {}
    for at in range(0, len(indexes), _IN_CHUNK):
        chunk = indexes[at : at + _IN_CHUNK]
        if level == 0:
            query = select(LedgerLeaf.leaf_index, LedgerLeaf.leaf_hash).where(
                LedgerLeaf.leaf_index.in_(chunk)
            )
        else:
            query = select(LedgerNode.index, LedgerNode.hash).where(
                LedgerNode.level == level, LedgerNode.index.in_(chunk)
            )
        for index, value in session.execute(query):
            if len(value) != merkle.HASH_SIZE:
                what = f"leaf {index}" if level == 0 else f"node ({level}, {index})"
                msg = f"the stored hash of {what} is not {merkle.HASH_SIZE} bytes"
                raise StorageFailure(_fault(msg))
            found[index] = bytes(value)
    return found


def _proof(
    session: Session,
    *,
    size: int,
    ranges: list[tuple[int, int]],
    build: Callable[[merkle.SubtreeHash], list[bytes]],
    archived: int,
) -> list[bytes]:
    """`build` a proof of the tree of `size` leaves from stored rows: the rows the subtrees
    D[lo:hi] in `ranges` need are read first, in one query per level."""
    source = TiledHashes(lambda level, indexes: _fetch_rows(session, level, indexes))
    try:
        source.prefetch(ranges)
        return build(source.subtree_hash)
    except MissingLeaf as exc:
        if exc.index < archived:
            # Not an integrity fault: an archive made before leaf hashes were kept (schema
            # 0003) removed them; the archive file has them (`egide ledger read-archive`).
            msg = (
                f"this proof needs the hash of leaf {exc.index}, which an archive made before "
                "leaf hashes were kept removed from the database; the archive file holds it"
            )
            raise NotFound(msg) from None
        msg = f"the checkpoint covers {size} leaves but leaf {exc.index} is missing"
        raise StorageFailure(_fault(msg)) from None


def checkpoint_note(session: Session, size: int | None = None) -> bytes:
    """The signed note (C2SP tlog-checkpoint) of `size` leaves, or the latest one."""
    return bytes(_checkpoint(session, size, "size").note)


def inclusion_for_seq(
    session: Session,
    *,
    seq: int,
    size: int | None = None,
    verifier: CheckpointVerifier | None = None,
) -> InclusionProof:
    """The inclusion proof of entry `seq` against the signed checkpoint of `size` leaves (the
    latest checkpoint by default).

    An archived entry (ledger.retention) is proved too, from its kept leaf hash, and marked
    `archived`. BadRequest for a malformed number; NotFound when there is no such entry, no
    such checkpoint, or the entry is not (yet) covered by it; StorageFailure when the database
    no longer matches its signed checkpoint (tampering).
    """
    _check_int(seq, "seq", minimum=1)
    row = _checkpoint(session, size, "size")
    leaf = session.scalar(select(LedgerLeaf).where(LedgerLeaf.seq == seq))
    if leaf is None:
        if session.get(LedgerEntry, seq) is None:
            msg = f"there is no ledger entry with seq {seq}"
        else:
            msg = (
                f"ledger entry seq {seq} is not in the tree yet; it will be covered by the "
                "next signed checkpoint"
            )
        raise NotFound(msg)
    if leaf.leaf_index >= row.size:
        msg = (
            f"ledger entry seq {seq} is leaf {leaf.leaf_index}, beyond the signed checkpoint "
            f"of {row.size} leaves; ask for a later checkpoint"
        )
        raise NotFound(msg)
    root = _signed_root(row, verifier)
    leaf_hash = bytes(leaf.leaf_hash)
    if len(leaf_hash) != merkle.HASH_SIZE:
        msg = f"the stored hash of leaf {leaf.leaf_index} is not {merkle.HASH_SIZE} bytes"
        raise StorageFailure(_fault(msg))
    archived_through = _archived_through(session)
    # The entry's bytes must still hash to its leaf (RFC 6962 2.1: SHA-256(0x00 || entry)),
    # or the proof would vouch for an entry whose content was changed. An archived entry's
    # bytes are in its archive file, which is checked as a whole against its checkpoint.
    entry = session.get(LedgerEntry, seq)
    archived = entry is None and leaf.leaf_index < archived_through
    if not archived and (entry is None or merkle.leaf_hash(bytes(entry.canonical)) != leaf_hash):
        what = "was deleted" if entry is None else "no longer hashes to its leaf"
        raise StorageFailure(_fault(f"entry seq {seq} (leaf {leaf.leaf_index}) {what}"))
    # PATH(m, D[n]) of RFC 9162 2.1.3.1, from O(log n) stored rows.
    index, tree_size = leaf.leaf_index, row.size
    proof = _proof(
        session,
        size=tree_size,
        ranges=merkle.inclusion_ranges(index, tree_size),
        build=lambda subtree_hash: merkle.inclusion_proof_from(subtree_hash, index, tree_size),
        archived=archived_through,
    )
    # Self-check with the verifier half of merkle.py (RFC 9162 2.1.3.2) before serving.
    try:
        merkle.verify_inclusion(
            leaf_hash=leaf_hash,
            index=leaf.leaf_index,
            tree_size=row.size,
            proof=proof,
            root=root,
        )
    except merkle.ProofError:
        msg = (
            "the stored leaf and node hashes no longer match the signed checkpoint of "
            f"{row.size} leaves"
        )
        raise StorageFailure(_fault(msg)) from None
    return InclusionProof(
        seq=seq,
        leaf_index=leaf.leaf_index,
        tree_size=row.size,
        leaf_hash=leaf_hash,
        proof=proof,
        checkpoint_note=bytes(row.note),
        archived=archived,
    )


def consistency_proof_for(
    session: Session,
    *,
    old_size: int,
    new_size: int | None = None,
    verifier: CheckpointVerifier | None = None,
) -> ConsistencyProof:
    """The consistency proof between two signed checkpoints (the latest one by default for
    `new_size`), with both notes. Both sizes must be sizes of signed checkpoints: a client
    can only trust a root that was signed.

    BadRequest for malformed sizes or old_size > new_size; NotFound when either size is not a
    signed checkpoint; StorageFailure when the stored leaf and node hashes no longer match the
    signed roots. Old sizes inside an archived prefix are served like any other.
    """
    _check_int(old_size, "old size", minimum=1)
    if new_size is not None:
        _check_int(new_size, "new size", minimum=1)
        if old_size > new_size:
            msg = f"old size {old_size} is larger than new size {new_size}"
            raise BadRequest(msg)
    new = _checkpoint(session, new_size, "new size")
    if old_size > new.size:
        msg = f"old size {old_size} is larger than the latest signed checkpoint ({new.size})"
        raise BadRequest(msg)
    old = _checkpoint(session, old_size, "old size")
    old_root, new_root = _signed_root(old, verifier), _signed_root(new, verifier)
    # PROOF(m, D[n]) of RFC 9162 2.1.4.1, from O(log n) stored rows.
    m, n = old.size, new.size
    proof = _proof(
        session,
        size=n,
        ranges=merkle.consistency_ranges(m, n),
        build=lambda subtree_hash: merkle.consistency_proof_from(subtree_hash, m, n),
        archived=_archived_through(session),
    )
    # Self-check with the verifier half (RFC 9162 2.1.4.2) against both signed roots.
    try:
        merkle.verify_consistency(
            old_size=old.size,
            new_size=new.size,
            old_root=old_root,
            new_root=new_root,
            proof=proof,
        )
    except merkle.ProofError:
        msg = (
            "the stored leaf and node hashes no longer match the signed checkpoints of "
            f"{old.size} and {new.size} leaves"
        )
        raise StorageFailure(_fault(msg)) from None
    return ConsistencyProof(
        old_size=old.size,
        new_size=new.size,
        proof=proof,
        old_checkpoint_note=bytes(old.note),
        new_checkpoint_note=bytes(new.note),
    )


# --------------------------------------------------------------------------- client side


def _hashes(value: object, name: str) -> list[bytes]:
    if not isinstance(value, list):
        msg = f"{name} must be a list of base64 hashes"
        raise ValueError(msg)
    return [_unb64(item, f"{name}[{i}]") for i, item in enumerate(value)]


def _note(value: object, name: str) -> bytes:
    if not isinstance(value, str):
        msg = f"{name} must be the signed note's text"
        raise ValueError(msg)
    return value.encode("utf-8")


def parse_inclusion(data: Mapping[str, Any]) -> InclusionProof:
    """Read the JSON form of an inclusion proof; ValueError naming the first bad field."""
    archived = data.get("archived", False)
    if not isinstance(archived, bool):
        msg = "archived must be true or false"
        raise ValueError(msg)
    return InclusionProof(
        seq=_int(data.get("seq", 0), "seq"),
        leaf_index=_int(data.get("leaf_index"), "leaf_index"),
        tree_size=_int(data.get("tree_size"), "tree_size"),
        leaf_hash=_unb64(data.get("leaf_hash"), "leaf_hash"),
        proof=_hashes(data.get("proof"), "proof"),
        checkpoint_note=_note(data.get("checkpoint"), "checkpoint"),
        archived=archived,
    )


def parse_consistency(data: Mapping[str, Any]) -> ConsistencyProof:
    """Read the JSON form of a consistency proof; ValueError naming the first bad field."""
    return ConsistencyProof(
        old_size=_int(data.get("old_size"), "old_size"),
        new_size=_int(data.get("new_size"), "new_size"),
        proof=_hashes(data.get("proof"), "proof"),
        old_checkpoint_note=_note(data.get("old_checkpoint"), "old_checkpoint"),
        new_checkpoint_note=_note(data.get("new_checkpoint"), "new_checkpoint"),
    )


def check_inclusion(
    proof: InclusionProof, verifier: CheckpointVerifier, *, entry: bytes | None = None
) -> Checkpoint:
    """Verify an inclusion proof end to end: the checkpoint's signature (C2SP signed-note),
    its size against the proof's, then the audit path to its root (RFC 9162 2.1.3.2). With
    `entry` (the entry's canonical bytes), also that they hash to the leaf.

    Raises CheckpointError or merkle.ProofError; returns the verified checkpoint.
    """
    checkpoint = verifier.verify(proof.checkpoint_note)
    if checkpoint.size != proof.tree_size:
        msg = f"the proof is for {proof.tree_size} leaves, its checkpoint for {checkpoint.size}"
        raise merkle.ProofError(msg)
    if entry is not None and merkle.leaf_hash(entry) != proof.leaf_hash:
        msg = "the entry does not hash to the proof's leaf hash"
        raise merkle.ProofError(msg)
    merkle.verify_inclusion(
        leaf_hash=proof.leaf_hash,
        index=proof.leaf_index,
        tree_size=proof.tree_size,
        proof=proof.proof,
        root=checkpoint.root,
    )
    return checkpoint


def check_consistency(
    proof: ConsistencyProof,
    verifier: CheckpointVerifier,
    *,
    trusted_old: Sequence[bytes] = (),
) -> tuple[Checkpoint, Checkpoint]:
    """Verify a consistency proof end to end: both notes' signatures, their sizes, then the
    proof between their roots (RFC 9162 2.1.4.2). `trusted_old`: notes the client already
    holds (e.g. from a witness); the old checkpoint must then be one of them, byte for byte.

    Raises CheckpointError or merkle.ProofError; returns (old, new) checkpoints.
    """
    old = verifier.verify(proof.old_checkpoint_note)
    new = verifier.verify(proof.new_checkpoint_note)
    if old.origin != new.origin:
        msg = f"the checkpoints are of two logs ({old.origin!r}, {new.origin!r})"
        raise CheckpointError(msg)
    if (old.size, new.size) != (proof.old_size, proof.new_size):
        msg = (
            f"the proof is for sizes {proof.old_size} -> {proof.new_size}, its checkpoints "
            f"for {old.size} -> {new.size}"
        )
        raise merkle.ProofError(msg)
    if trusted_old and proof.old_checkpoint_note not in trusted_old:
        msg = "the old checkpoint is not one the client already trusts"
        raise CheckpointError(msg)
    merkle.verify_consistency(
        old_size=old.size,
        new_size=new.size,
        old_root=old.root,
        new_root=new.root,
        proof=proof.proof,
    )
    return old, new

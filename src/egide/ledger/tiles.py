"""Subtree hashes of the ledger's Merkle tree from stored nodes and leaves, in O(log n) lookups.

Proofs (RFC 9162 sections 2.1.3 and 2.1.4) need the hashes of O(log n) subtrees, but a
subtree may hold millions of leaves. The sequencer therefore stores, as the tree grows, the
hash of every complete subtree of 2**level leaves aligned on its size, for the levels that
are multiples of `TILE_HEIGHT` (4, 8, 12, ...): the roots of the full tiles of C2SP
tlog-tiles with tiles of height 4, about n / 15 rows for n leaves (`ledger_node`). With them,
MTH(D[lo:hi]) (RFC 9162 section 2.1.1) is found as follows:

* a perfect subtree at a stored level is one stored node;
* a perfect subtree at a level in between combines 2, 4 or 8 stored nodes of the stored level
  below it (levels 1 to 3 combine 2 to 8 leaf hashes, read from `ledger_leaf`);
* any other range (the incomplete right edge of a tree) is split at the largest power of two
  smaller than its size, exactly as RFC 9162 section 2.1.1 defines MTH, until only perfect
  subtrees remain.

A stored node that is missing is rebuilt from the 16 subtrees of the stored level below it
(so an incomplete node table costs time, never correctness); a missing leaf hash cannot be
rebuilt and raises `MissingLeaf`.

The module is pure (standard library and `egide.ledger.merkle`): the rows come from a `Fetch`
callable, so the same code runs over the database (`egide.ledger.proofs`) and over lists in
the property tests, where its proofs must equal the list-based ones of `merkle` exactly. The
hashes it returns are not trusted: proofs built from them are checked against a signed root
before they are served.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from egide.ledger.merkle import EMPTY_ROOT, node_hash

__all__ = ["TILE_HEIGHT", "Fetch", "MissingLeaf", "TiledHashes", "stored_nodes"]

TILE_HEIGHT = 4

# fetch(level, indexes) -> {index: hash} for the rows that exist among `indexes`: level 0 reads
# leaf hashes, a positive level (a multiple of TILE_HEIGHT) stored nodes. Absent rows are
# simply left out of the answer.
Fetch = Callable[[int, Sequence[int]], Mapping[int, bytes]]

_Atom = tuple[int, int]  # (level, index): one stored row


class MissingLeaf(LookupError):
    """The hash of leaf `index` is needed and not stored."""

    def __init__(self, index: int) -> None:
        super().__init__(f"leaf {index} is missing")
        self.index = index


def stored_nodes(size: int) -> int:
    """How many nodes a tree of `size` leaves stores: one per complete aligned subtree at each
    positive level that is a multiple of TILE_HEIGHT."""
    count, level = 0, TILE_HEIGHT
    while size >> level:
        count += size >> level
        level += TILE_HEIGHT
    return count


def _perfect_fold(hashes: list[bytes]) -> bytes:
    """MTH of a perfect subtree given its 2**r equal-sized parts, left to right."""
    while len(hashes) > 1:
        hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
    return hashes[0]


def _block_atoms(level: int, index: int) -> list[_Atom]:
    """The stored rows the perfect subtree (level, index) is combined from (up to 8)."""
    base = level - level % TILE_HEIGHT
    spread = level - base
    return [(base, (index << spread) + j) for j in range(1 << spread)]


def _children(level: int, index: int) -> list[_Atom]:
    """The 16 subtrees of the stored level below a stored node (level >= TILE_HEIGHT)."""
    first = index << TILE_HEIGHT
    return [(level - TILE_HEIGHT, first + j) for j in range(1 << TILE_HEIGHT)]


def _blocks(lo: int, hi: int, out: list[_Atom]) -> None:
    """The perfect aligned subtrees that MTH(D[lo:hi]) is built from (RFC 9162 2.1.1)."""
    n = hi - lo
    if n <= 0:
        return
    if n & (n - 1) == 0:
        level = n.bit_length() - 1
        if lo % n == 0:
            out.append((level, lo >> level))
            return
        k = n >> 1  # a perfect tree not aligned on its size: its halves, recursively
    else:
        k = 1 << ((n - 1).bit_length() - 1)  # the largest power of two smaller than n
    _blocks(lo, lo + k, out)
    _blocks(lo + k, hi, out)


class TiledHashes:
    """MTH(D[lo:hi]) of one tree from stored nodes and leaf hashes, memoised: make one per
    proof. Call `prefetch` with the ranges the proof needs first, so rows are read in one
    batch per level; `subtree_hash` reads whatever it still lacks on demand."""

    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch
        self._stored: dict[_Atom, bytes] = {}
        self._absent: set[_Atom] = set()
        self._memo: dict[tuple[int, int], bytes] = {}

    @property
    def rows_read(self) -> int:
        """How many rows were asked for so far (found or not)."""
        return len(self._stored) + len(self._absent)

    def _load(self, atoms: Iterable[_Atom]) -> None:
        by_level: dict[int, set[int]] = {}
        for level, index in atoms:
            if (level, index) not in self._stored and (level, index) not in self._absent:
                by_level.setdefault(level, set()).add(index)
        for level, indexes in sorted(by_level.items()):
            found = self._fetch(level, sorted(indexes))
            for index in indexes:
                value = found.get(index)
                if value is None:
                    self._absent.add((level, index))
                else:
                    self._stored[(level, index)] = value

    def prefetch(self, ranges: Iterable[tuple[int, int]]) -> None:
        """Read every row the given ranges need, one fetch per level and round; a round more
        for the children of stored nodes found missing."""
        blocks: list[_Atom] = []
        for lo, hi in ranges:
            _blocks(lo, hi, blocks)
        wanted = {atom for block in blocks for atom in _block_atoms(*block)}
        while wanted:
            self._load(wanted)
            wanted = {
                child
                for level, index in wanted
                if level > 0 and (level, index) in self._absent
                for child in _children(level, index)
            }

    def _row(self, level: int, index: int) -> bytes | None:
        if (level, index) not in self._stored and (level, index) not in self._absent:
            self._load([(level, index)])
        return self._stored.get((level, index))

    def _block(self, level: int, index: int) -> bytes:
        key = (index << level, (index + 1) << level)
        cached = self._memo.get(key)
        if cached is not None:
            return cached
        if level % TILE_HEIGHT == 0:
            value = self._row(level, index)
            if value is None:
                if level == 0:
                    raise MissingLeaf(index)
                # A missing node: rebuild it from the 16 subtrees of the stored level below.
                children = _children(level, index)
                self._load(children)
                value = _perfect_fold([self._block(*child) for child in children])
        else:
            atoms = _block_atoms(level, index)
            self._load(atoms)
            value = _perfect_fold([self._block(*atom) for atom in atoms])
        self._memo[key] = value
        return value

    def subtree_hash(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) (RFC 9162 section 2.1.1); raises MissingLeaf when a needed leaf hash
        is not stored."""
        if hi < lo or lo < 0:
            msg = f"no subtree D[{lo}:{hi}]"
            raise ValueError(msg)
        key = (lo, hi)
        cached = self._memo.get(key)
        if cached is not None:
            return cached
        n = hi - lo
        if n == 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0 and lo % n == 0:
            return self._block(n.bit_length() - 1, lo // n)
        # MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])), k the largest power of two
        # smaller than n (RFC 9162 2.1.1); a perfect range off its alignment splits in halves.
        k = n >> 1 if n & (n - 1) == 0 else 1 << ((n - 1).bit_length() - 1)
        value = node_hash(self.subtree_hash(lo, lo + k), self.subtree_hash(lo + k, hi))
        self._memo[key] = value
        return value

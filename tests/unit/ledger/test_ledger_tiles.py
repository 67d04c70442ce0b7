"""Proofs from stored tile nodes equal the list-based proofs of RFC 9162, bit for bit.

`merkle.inclusion_proof_from` / `consistency_proof_from` over `tiles.TiledHashes` (nodes at
levels 4, 8, ... as `CompactTree.extend` records them, leaf hashes below) must give exactly
`merkle.inclusion_proof` / `consistency_proof` over the whole list of leaves, for random
sizes, indexes and old sizes; also when some stored nodes are missing (they are rebuilt from
the level below), and after prefetching, with no further reads and O(log n) rows.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from egide.ledger import merkle
from egide.ledger.tiles import TILE_HEIGHT, MissingLeaf, TiledHashes, stored_nodes

Nodes = dict[tuple[int, int], bytes]


def _leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def _grow(leaves: Sequence[bytes], chunks: Sequence[int]) -> tuple[merkle.CompactTree, Nodes]:
    """Append the leaves in chunks of the given sizes (cycled), as sequencer passes would."""
    tree, nodes, at, i = merkle.CompactTree(), {}, 0, 0
    while at < len(leaves):
        step = chunks[i % len(chunks)] if chunks else len(leaves)
        for level, index, value in tree.extend(leaves[at : at + step], node_stride=TILE_HEIGHT):
            assert (level, index) not in nodes  # each subtree completes once
            nodes[(level, index)] = value
        at, i = at + step, i + 1
    return tree, nodes


class Store:
    """The two tables as dicts, counting the fetches (one per level and round)."""

    def __init__(self, leaves: Sequence[bytes], nodes: Nodes) -> None:
        self.leaves, self.nodes, self.fetches = leaves, nodes, 0

    def fetch(self, level: int, indexes: Sequence[int]) -> Mapping[int, bytes]:
        self.fetches += 1
        assert list(indexes) == sorted(set(indexes))
        if level == 0:
            return {i: self.leaves[i] for i in indexes if 0 <= i < len(self.leaves)}
        assert level % TILE_HEIGHT == 0
        return {i: self.nodes[(level, i)] for i in indexes if (level, i) in self.nodes}


@st.composite
def grown(draw: st.DrawFn) -> tuple[list[bytes], Nodes, int]:
    n = draw(st.integers(min_value=1, max_value=700))
    chunks = draw(st.lists(st.integers(min_value=1, max_value=90), max_size=6))
    leaves = _leaves(n)
    tree, nodes = _grow(leaves, chunks)
    assert tree.size == n
    return leaves, nodes, n


@settings(max_examples=150, deadline=None)
@given(grown(), st.data())
def test_tiled_proofs_equal_the_list_based_ones(
    case: tuple[list[bytes], Nodes, int], data: st.DataObject
) -> None:
    leaves, nodes, n = case
    index = data.draw(st.integers(min_value=0, max_value=n - 1), label="index")
    old = data.draw(st.integers(min_value=1, max_value=n), label="old size")
    size = data.draw(st.integers(min_value=index + 1, max_value=n), label="tree size")
    # Prove against an older size too: nodes of the grown tree serve every smaller tree.
    for tree_size in (n, size):
        source = TiledHashes(Store(leaves, nodes).fetch)
        got = merkle.inclusion_proof_from(source.subtree_hash, index, tree_size)
        assert got == merkle.inclusion_proof(leaves[:tree_size], index)
    source = TiledHashes(Store(leaves, nodes).fetch)
    got = merkle.consistency_proof_from(source.subtree_hash, old, n)
    assert got == merkle.consistency_proof(leaves, old)
    assert source.subtree_hash(0, n) == merkle.root_of(leaves)


@settings(max_examples=100, deadline=None)
@given(grown(), st.data())
def test_missing_nodes_are_rebuilt_from_the_level_below(
    case: tuple[list[bytes], Nodes, int], data: st.DataObject
) -> None:
    leaves, nodes, n = case
    keep = data.draw(st.lists(st.booleans(), min_size=len(nodes), max_size=len(nodes)))
    partial = {key: value for (key, value), kept in zip(nodes.items(), keep, strict=True) if kept}
    index = data.draw(st.integers(min_value=0, max_value=n - 1))
    old = data.draw(st.integers(min_value=1, max_value=n))
    store = Store(leaves, partial)
    source = TiledHashes(store.fetch)
    ranges = merkle.inclusion_ranges(index, n) + merkle.consistency_ranges(old, n)
    source.prefetch(ranges)
    read, fetches = source.rows_read, store.fetches
    inclusion = merkle.inclusion_proof_from(source.subtree_hash, index, n)
    assert inclusion == merkle.inclusion_proof(leaves, index)
    consistency = merkle.consistency_proof_from(source.subtree_hash, old, n)
    assert consistency == merkle.consistency_proof(leaves, old)
    # Prefetching read everything the proofs needed, in batches.
    assert (source.rows_read, store.fetches) == (read, fetches)


@given(st.integers(min_value=0, max_value=2_000), st.data())
def test_extend_records_every_complete_aligned_subtree_at_stored_levels(
    n: int, data: st.DataObject
) -> None:
    chunks = data.draw(st.lists(st.integers(min_value=1, max_value=300), max_size=4))
    leaves = _leaves(n)
    tree, nodes = _grow(leaves, chunks)
    assert tree.root() == merkle.root_of(leaves)
    assert len(nodes) == stored_nodes(n)
    expected = {
        (level, index)
        for level in range(TILE_HEIGHT, n.bit_length(), TILE_HEIGHT)
        for index in range(n >> level)
    }
    assert set(nodes) == expected
    for (level, index), value in random.Random(n).sample(sorted(nodes.items()), min(40, n // 16)):
        assert value == merkle.root_of(leaves[index << level : (index + 1) << level])


def test_extend_is_append_without_the_records() -> None:
    leaves = _leaves(100)
    one, other = merkle.CompactTree(), merkle.CompactTree()
    for h in leaves:
        one.append(h)
    every = other.extend(leaves, node_stride=1)  # every perfect subtree of level >= 1
    assert one == other
    assert len(every) == 100 - (100).bit_count()  # n - popcount(n) merges
    with pytest.raises(ValueError, match="32 bytes"):
        other.extend([b"short"], node_stride=4)
    with pytest.raises(ValueError, match="node_stride"):
        other.extend([], node_stride=0)


def test_a_proof_reads_o_log_n_rows_in_few_queries() -> None:
    """At a million leaves, a proof reads a few dozen rows, not a million."""
    n = 1_000_003
    fake = {}

    def fetch(level: int, indexes: Sequence[int]) -> Mapping[int, bytes]:
        fake[level] = fake.get(level, 0) + len(indexes)
        # Any 32-byte values will do for counting; stored levels only below the size.
        return {i: bytes(32) for i in indexes if (i + 1) << level <= n}

    worst = 0
    for index in (0, 1, 65_535, 500_000, 999_999, n - 1):
        fake.clear()
        source = TiledHashes(fetch)
        source.prefetch(merkle.inclusion_ranges(index, n))
        merkle.inclusion_proof_from(source.subtree_hash, index, n)
        worst = max(worst, source.rows_read)
        assert len(fake) <= n.bit_length() // TILE_HEIGHT + 1  # one query per level
    assert worst <= 8 * 2 * n.bit_length()
    assert stored_nodes(n) < n // 15 + 1


def test_a_missing_leaf_is_reported() -> None:
    leaves = _leaves(40)
    _, nodes = _grow(leaves, [40])
    gone = dict(enumerate(leaves))
    del gone[37]

    def fetch(level: int, indexes: Sequence[int]) -> Mapping[int, bytes]:
        if level == 0:
            return {i: gone[i] for i in indexes if i in gone}
        return {i: nodes[(level, i)] for i in indexes if (level, i) in nodes}

    source = TiledHashes(fetch)
    assert merkle.inclusion_proof_from(source.subtree_hash, 3, 32) == merkle.inclusion_proof(
        leaves[:32], 3
    )
    with pytest.raises(MissingLeaf) as caught:
        merkle.inclusion_proof_from(TiledHashes(fetch).subtree_hash, 3, 40)
    assert caught.value.index == 37

"""The verifier's chunked tree rebuild gives the RFC 6962 root at every checkpoint size.

`ledger.verify.TreeCheck` hashes a chunk of leaves at a time, level by level, and folds the
perfect subtrees before it; after an archived prefix of any size it goes leaf by leaf until
the size is aligned. These properties hold it to the plain definition (`merkle.root_of`,
RFC 9162 section 2.1.1) with small chunks, so every boundary case comes up.
"""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from egide.ledger.checkpoint import Checkpoint
from egide.ledger.merkle import CompactTree, root_of
from egide.ledger.verify import Report, TreeCheck


def _leaves(n: int) -> list[bytes]:
    return [hashlib.sha256(b"\x00" + i.to_bytes(4, "big")).digest() for i in range(n)]


def _run(
    leaves: list[bytes],
    start: int,
    sizes: set[int],
    height: int,
    forged: int | None,
    batch: int = 0,
) -> tuple[int, Report]:
    """Feed the leaves after `start` one by one (`add`), or `batch` at a time (`extend`)."""
    expected = {
        s: Checkpoint(
            origin="test/log",
            size=s,
            root=hashlib.sha256(b"forged").digest() if s == forged else root_of(leaves[:s]),
        )
        for s in sizes
    }
    prefix = CompactTree()
    for leaf in leaves[:start]:
        prefix.append(leaf)
    report = Report()
    check = TreeCheck(prefix, expected, report, height=height)
    rest = leaves[start:]
    if batch:
        for i in range(0, len(rest), batch):
            check.extend(rest[i : i + batch])
    else:
        for leaf in rest:
            check.add(leaf)
    return check.finish(), report


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    n=st.integers(min_value=1, max_value=200),
    height=st.integers(min_value=1, max_value=5),
)
def test_every_checkpoint_root_matches_the_definition(
    data: st.DataObject, n: int, height: int
) -> None:
    leaves = _leaves(n)
    start = data.draw(st.integers(min_value=0, max_value=n - 1), label="archived prefix")
    sizes = data.draw(st.sets(st.integers(min_value=start + 1, max_value=n), max_size=12))
    batch = data.draw(st.integers(min_value=0, max_value=70), label="batch (0: one by one)")
    size, report = _run(leaves, start, sizes | {n}, height, forged=None, batch=batch)
    assert size == n
    assert report.ok, report.faults


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    n=st.integers(min_value=1, max_value=200),
    height=st.integers(min_value=1, max_value=5),
)
def test_a_wrong_root_at_any_size_is_a_fault_naming_that_size(
    data: st.DataObject, n: int, height: int
) -> None:
    leaves = _leaves(n)
    start = data.draw(st.integers(min_value=0, max_value=n - 1), label="archived prefix")
    forged = data.draw(st.integers(min_value=start + 1, max_value=n), label="forged size")
    _, report = _run(leaves, start, {forged, n}, height, forged=forged)
    message = (
        f"the tree of size {forged} does not match its signed checkpoint: entries were "
        f"changed, inserted, removed or reordered before leaf {forged}"
    )
    assert report.faults == [message]


def test_a_swapped_pair_of_leaves_is_caught_across_a_chunk_boundary() -> None:
    leaves = _leaves(40)
    swapped = [*leaves]
    swapped[7], swapped[8] = swapped[8], swapped[7]  # 8 is a chunk boundary at height 3
    expected = {40: Checkpoint(origin="test/log", size=40, root=root_of(leaves))}
    report = Report()
    check = TreeCheck(CompactTree(), expected, report, height=3)
    for leaf in swapped:
        check.add(leaf)
    assert check.finish() == 40
    assert not report.ok

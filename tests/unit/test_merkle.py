"""The Merkle math (``projections.merkle``) against the RFC 6962 §2.1 definitions written
literally (recursive, over the leaves): every size 1..300, every leaf, every pair of sizes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections import merkle

MAX = 300


def mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return merkle.leaf_hash(d[0])
    k = merkle._split(len(d))
    return merkle.node_hash(mth(d[:k]), mth(d[k:]))


def path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = merkle._split(len(d))
    return [*path(m, d[:k]), mth(d[k:])] if m < k else [*path(m - k, d[k:]), mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = merkle._split(n)
    if m <= k:
        return [*subproof(m, d[:k], b), mth(d[k:])]
    return [*subproof(m - k, d[k:], False), mth(d[:k])]


DATA = [f"event-{i}".encode() for i in range(MAX)]


def store(n: int) -> dict[tuple[int, int], bytes]:
    """The SQL store's content, built as the projector builds it: by ``append`` in batches."""
    nodes: dict[tuple[int, int], bytes] = {}
    size, frontier = 0, []
    for start in range(0, n, 7):
        created, stack = merkle.append(size, frontier, [merkle.leaf_hash(x) for x in DATA[start:min(n, start + 7)]])
        nodes.update({(lvl, idx): h for lvl, idx, h in created})
        size, frontier = min(n, start + 7), [h for _, _, h in stack]
    return nodes


FULL = store(MAX)


def get(level: int, index: int) -> bytes:
    return FULL[(level, index)]


def test_roots_and_inclusion_paths_for_every_size_and_leaf() -> None:
    for n in range(1, MAX + 1):
        root = merkle.root_hash(n, get)
        assert root == mth(DATA[:n])
        assert all(p in FULL for p in merkle.peaks(n))
        for m in range(n):
            proof = merkle.inclusion_path(m, n, get)
            assert proof == path(m, DATA[:n])
            assert merkle.verify_inclusion(m, n, merkle.leaf_hash(DATA[m]), proof, root)
            assert len(merkle.needed(lambda g, m=m, n=n: merkle.inclusion_path(m, n, g))) <= 2 * n.bit_length()


def test_consistency_for_every_pair_of_sizes() -> None:
    roots = [b""] + [merkle.root_hash(n, get) for n in range(1, MAX + 1)]
    for new in range(1, 130):
        for old in range(1, new + 1):
            proof = merkle.consistency_proof(old, new, get)
            assert proof == subproof(old, DATA[:new], True)
            assert merkle.verify_consistency(old, new, roots[old], roots[new], proof)
            if old < new:  # a proof from another history is refused
                assert not merkle.verify_consistency(old, new, merkle.leaf_hash(b"forged"), roots[new], proof)


@settings(max_examples=400)
@given(st.integers(1, MAX), st.data())
def test_consistency_sampled_over_the_whole_range(new: int, data: st.DataObject) -> None:
    old = data.draw(st.integers(1, new))
    proof = merkle.consistency_proof(old, new, get)
    assert proof == subproof(old, DATA[:new], True)
    assert merkle.verify_consistency(old, new, mth(DATA[:old]), mth(DATA[:new]), proof)


@settings(max_examples=300)
@given(st.integers(2, MAX), st.data())
def test_a_proof_for_the_wrong_leaf_or_a_tampered_path_fails(n: int, data: st.DataObject) -> None:
    m = data.draw(st.integers(0, n - 1))
    other = data.draw(st.integers(0, n - 1).filter(lambda x: x != m))
    root = merkle.root_hash(n, get)
    proof = merkle.inclusion_path(m, n, get)
    assert not merkle.verify_inclusion(other, n, merkle.leaf_hash(DATA[m]), proof, root)  # wrong index
    assert not merkle.verify_inclusion(m, n, merkle.leaf_hash(DATA[other]), proof, root)  # wrong leaf
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[i] = bytes(32)
        assert not merkle.verify_inclusion(m, n, merkle.leaf_hash(DATA[m]), bad, root)
        assert not merkle.verify_inclusion(m, n, merkle.leaf_hash(DATA[m]), proof[:-1], root)  # truncated


def test_append_writes_two_rows_per_leaf_amortised_and_nothing_else() -> None:
    assert len(FULL) == 2 * MAX - bin(MAX).count("1")
    assert merkle.root_hash(0, get) == hashlib.sha256(b"").digest()


def test_a_tree_out_of_step_with_the_archive_stops_the_append(tmp_path: Path) -> None:
    """merkle_nodes restored from an older backup than event_archive: appending would prove
    nothing, and the projector would set every later record aside; it stops instead."""
    from datetime import UTC, datetime

    import sqlalchemy as sa

    from projections import tree
    from projections.migrate import create_schema
    from projections.models import ARCHIVE, NODES

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    create_schema(engine)
    at = datetime(2026, 1, 5, tzinfo=UTC)
    with engine.begin() as conn:
        first = tree.append(conn, [b"e0", b"e1"])
        conn.execute(sa.insert(ARCHIVE), [
            {"event_id": f"e{i}", "ticket_id": "T", "type": "acknowledged", "actor": "a", "topic": "t",
             "partition": 0, "offset": i, "occurred_at": at, "recorded_at": at, "envelope": f"e{i}",
             "prev_hash": "0" * 64, "hash": "1" * 64, "leaf_index": first + i} for i in range(2)])
        tree.check_in_step(conn)  # in step: one leaf per archived row
        conn.execute(sa.delete(NODES).where(sa.or_(NODES.c.level > 0, NODES.c.idx > 0)))  # an older tree
    with engine.begin() as conn, pytest.raises(tree.TreeError, match="has 1 leaves but the archive's last leaf "
                                                                     "index is 1"):
        tree.check_in_step(conn)

"""The archive's Merkle tree in SQL (``merkle_nodes``), over ``projections.merkle``.

The projector appends each batch's leaves in the transaction that inserts the archive rows
(under the archive's advisory lock, so there is one writer): it reads the O(log N) peaks of
the current tree, hashes the new leaves and completed parents in memory and inserts them in
one statement. Readers compute roots and proofs from the complete subtrees they need,
fetched in one query (``merkle.needed``): a one-ticket dispute file costs O(events × log N)
whatever the size of the archive.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from sqlalchemy import and_, func, or_, select
from sqlalchemy.engine import Connection

from . import bulk, merkle
from .models import ARCHIVE, NODES

T = TypeVar("T")


class TreeError(Exception):
    """The tree lacks a node a proof needs (a size beyond the tree, or rows deleted)."""


def tree_size(conn: Connection) -> int:
    last = conn.scalar(select(func.max(NODES.c.idx)).where(NODES.c.level == 0))
    return 0 if last is None else int(last) + 1


def _fetch(conn: Connection, coords: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """One query, ``level = l AND idx IN (…)`` per level: both databases answer it from the
    primary key (a row-value IN list is a full scan on SQLite)."""
    found: dict[tuple[int, int], bytes] = {}
    by_level: dict[int, list[int]] = {}
    for level, idx in coords:
        by_level.setdefault(level, []).append(idx)
    if not by_level:
        return found
    rows = conn.execute(select(NODES.c.level, NODES.c.idx, NODES.c.hash).where(or_(*(
        and_(NODES.c.level == level, NODES.c.idx.in_(sorted(idxs))) for level, idxs in by_level.items()))))
    found.update({(int(level), int(idx)): bytes(h) for level, idx, h in rows})
    return found


def compute(conn: Connection, fn: Callable[[merkle.Subtrees], T]) -> T:
    """Run a ``merkle`` computation over the stored subtrees, fetched in one query."""
    nodes = _fetch(conn, merkle.needed(fn))

    def get(level: int, index: int) -> bytes:
        try:
            return nodes[(level, index)]
        except KeyError:
            raise TreeError(f"the Merkle tree has no node ({level}, {index})") from None

    return fn(get)


def append(conn: Connection, envelopes: Sequence[bytes]) -> int:
    """Append the leaves of ``envelopes`` (archive order); returns the first one's leaf index.
    The caller holds the archive's write lock and inserts the rows in the same transaction."""
    return append_leaves(conn, [merkle.leaf_hash(e) for e in envelopes])


def append_leaves(conn: Connection, leaf_hashes: Sequence[bytes], size: int | None = None) -> int:
    """``append`` with the leaf hashes already computed and, if known, the tree's size."""
    size = tree_size(conn) if size is None else size
    stored = _fetch(conn, set(merkle.peaks(size)))
    try:
        frontier = [stored[p] for p in merkle.peaks(size)]
    except KeyError:
        raise TreeError(f"the Merkle tree of {size} leaves lacks one of its peaks") from None
    created, _ = merkle.append(size, frontier, leaf_hashes)
    bulk.append(conn, NODES, [{"level": lvl, "idx": idx, "hash": h} for lvl, idx, h in created])
    return size


def check_in_step(conn: Connection) -> int:
    """The tree has exactly one leaf per archived row; returns its size. Not so (e.g.
    merkle_nodes restored from an older backup than event_archive), appending would prove
    nothing and every later record would be set aside as refused: the projector stops and
    says why instead."""
    size = tree_size(conn)
    last = conn.scalar(select(func.max(ARCHIVE.c.leaf_index)))
    if (0 if last is None else int(last) + 1) != size:
        raise TreeError(f"the Merkle tree has {size} leaves but the archive's last leaf index is {last}: "
                        "restore both tables from the same backup, or rebuild the tree (migration 0008)")
    return size


def root(conn: Connection, size: int) -> bytes:
    return compute(conn, lambda get: merkle.root_hash(size, get))


def leaves(conn: Connection, indices: Sequence[int]) -> dict[int, bytes]:
    """The stored leaf hashes of some leaf indices (to compare with their envelopes)."""
    return {idx: h for (_, idx), h in _fetch(conn, {(0, i) for i in indices}).items()}


def consistency(conn: Connection, old: int, new: int) -> list[bytes]:
    return compute(conn, lambda get: merkle.consistency_proof(old, new, get))

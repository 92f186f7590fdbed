"""RFC 6962 / RFC 9162 §2.1 Merkle tree math over the event archive, with no I/O.

Why our own ~150 lines rather than a library: the tree lives in SQL next to the archive
(``projections.tree``), appended in the projector's transaction, and every proof must be
O(log N) row lookups. ``pymerkle`` stores leaf blobs behind its own interface
(``_store_blob``/``_get_blob``) and computes every subtree root from the leaves
(``hash_range``: a proof near the root hashes O(N) leaves, less with its cache), and its
proofs carry its own rule/subset bits rather than RFC 9162's bare audit path, which the
standalone verifier would then have to reproduce. What remains is the RFC's few
recursions, written here once and property-tested against the RFC's literal definitions
(``tests/unit/test_merkle.py``). This module needs nothing but ``hashlib``: the offline
verifier (``projections.dispute_check``, run by ``docs/verify_dispute_file.py``) imports it
from the source tree, without the database or the broker.

Hashing (RFC 6962 §2.1): leaf = SHA-256(0x00 || envelope), node = SHA-256(0x01 || left ||
right). The tree of n leaves splits at k, the largest power of two smaller than n, so every
left part is a *complete* subtree aligned on its size: the store only needs the hash of each
complete subtree ``(level, index)`` (leaves are level 0, index = leaf index), and any root,
inclusion path or consistency proof is O(log N) of those (see ``Subtrees``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

# The hash of the complete subtree (level, index): leaves index*2**level .. (index+1)*2**level - 1.
Subtrees = Callable[[int, int], bytes]
Node = tuple[int, int, bytes]  # (level, index, hash) of a complete subtree

EMPTY_ROOT = hashlib.sha256(b"").digest()  # MTH({}) = HASH()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than n (n ≥ 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _complete(start: int, size: int, get: Subtrees) -> bytes:
    level = size.bit_length() - 1
    if size != 1 << level or start % size:
        raise ValueError(f"[{start}, {start + size}) is not a complete aligned subtree")
    return get(level, start >> level)


def range_hash(start: int, size: int, get: Subtrees) -> bytes:
    """MTH(D[start:start+size]) for a range the RFC's recursion produces (``start`` aligned):
    the right fold of its complete subtrees, largest first."""
    parts = []
    while size:
        k = size if size & (size - 1) == 0 else _split(size)
        parts.append(_complete(start, k, get))
        start, size = start + k, size - k
    out = parts.pop()
    while parts:
        out = node_hash(parts.pop(), out)
    return out


def root_hash(size: int, get: Subtrees) -> bytes:
    return range_hash(0, size, get) if size else EMPTY_ROOT


def peaks(size: int) -> list[tuple[int, int]]:
    """The complete subtrees (level, index) whose right fold is the root of a tree of
    ``size`` leaves, left to right: one per set bit of ``size``."""
    out, start = [], 0
    for level in reversed(range(size.bit_length())):
        if size >> level & 1:
            out.append((level, start >> level))
            start += 1 << level
    return out


def inclusion_path(index: int, size: int, get: Subtrees) -> list[bytes]:
    """PATH(index, D[0:size]) (RFC 6962 §2.1.1), from the leaf's sibling up."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size}")
    out, start, n, m = [], 0, size, index
    while n > 1:
        k = _split(n)
        if m < k:
            out.append(range_hash(start + k, n - k, get))
            n = k
        else:
            out.append(range_hash(start, k, get))
            start, m, n = start + k, m - k, n - k
    return out[::-1]


def consistency_proof(old: int, new: int, get: Subtrees) -> list[bytes]:
    """PROOF(old, D[0:new]) (RFC 6962 §2.1.2): the tree of ``new`` leaves extends the one of
    ``old`` leaves (0 < old ≤ new)."""
    if not 0 < old <= new:
        raise ValueError(f"no consistency proof from {old} to {new} leaves")
    out, start, n, m, whole = [], 0, new, old, True
    while m != n:
        k = _split(n)
        if m <= k:
            out.append(range_hash(start + k, n - k, get))
            n = k
        else:
            out.append(range_hash(start, k, get))
            start, m, n, whole = start + k, m - k, n - k, False
    base = [] if whole else [range_hash(start, n, get)]
    return base + out[::-1]


def verify_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2 (0 < old ≤ new)."""
    if not 0 < old <= new:
        return False
    if old == new:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old & (old - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == old_root and sr == new_root and sn == 0


def append(size: int, frontier: Sequence[bytes], leaves: Iterable[bytes]) -> tuple[list[Node], list[Node]]:
    """Append leaf hashes to a tree of ``size`` leaves whose ``peaks`` hash to ``frontier``:
    returns every complete subtree the leaves create (1 + one per completed parent: 2 per leaf
    amortised) and the new frontier. The caller needs only the O(log N) peaks, not the tree."""
    stack: list[Node] = [(lvl, idx, h) for (lvl, idx), h in zip(peaks(size), frontier, strict=True)]
    created: list[Node] = []
    for h in leaves:
        node: Node = (0, size, h)
        created.append(node)
        size += 1
        while stack and stack[-1][0] == node[0]:
            left = stack.pop()
            node = (node[0] + 1, left[1] >> 1, node_hash(left[2], node[2]))
            created.append(node)
        stack.append(node)
    return created, stack


def needed(compute: Callable[[Subtrees], object]) -> set[tuple[int, int]]:
    """The complete subtrees a computation reads. Which ones depends only on sizes and
    indices, never on hash values: a store fetches them all in one query, then computes."""
    seen: set[tuple[int, int]] = set()

    def record(level: int, index: int) -> bytes:
        seen.add((level, index))
        return b"\x00" * 32

    compute(record)
    return seen

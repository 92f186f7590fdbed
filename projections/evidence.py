"""The proofs a dispute file carries, and the whole archive checked against its tree.

A dispute file carries, for each event of its tickets, the exact envelope bytes (base64),
its leaf index and its audit path to a signed tree head, and for each ticket its entry in
the head's map of every ticket's history with its path (``projections.ticket_map``):
whoever holds the operator's public key checks, without the product or its database, that
the file shows each ticket's whole history as signed (``projections.dispute_check``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from . import merkle, ticket_history, ticket_map, tree
from .heads import SignedHead, head_for_proofs

EVIDENCE_SCHEMA = "slaledger.inclusion-proofs/1"
log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Leaf:
    event_id: str
    leaf_index: int | None
    envelope: bytes
    ticket_id: str


def ticket_evidence(engine: Engine, leaves: Sequence[Leaf], head: SignedHead | None,
                    signer: Callable[[], SignedHead] | None = None) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The evidence section of a dispute file and the findings (kind, French message) met
    while building it: the archive no longer matching the head, a proof that fails.

    ``head``: the one asked for, else the latest signed; when it does not cover every leaf
    and a ``signer`` is at hand, a new head is signed on demand."""
    findings: list[tuple[str, str]] = []
    indices = [x.leaf_index for x in leaves if x.leaf_index is not None]
    if head is None:
        head = head_for_proofs(engine, max(indices) + 1 if indices else 0)
        if signer is not None and (head is None or (indices and max(indices) >= head.tree_size)):
            try:
                head = signer()
            except SQLAlchemyError as exc:  # e.g. a worker whose role only reads: the latest head serves
                log.warning("no tree head signed on demand; proofs go to the latest head", error=str(exc))
    doc: dict[str, Any] = {"schema": EVIDENCE_SCHEMA, "head": head.to_dict() if head else None,
                           "public_key_id": head.key_id if head else None, "proofs": {}, "histories": {}}
    if head is None:
        return doc, findings
    root = bytes.fromhex(head.root_hash)
    size = head.tree_size
    covered = sorted({i for i in indices if i < size})
    with engine.connect() as conn:
        try:
            current = tree.root(conn, size) if size else merkle.EMPTY_ROOT
            paths = tree.compute(conn, lambda get: {i: merkle.inclusion_path(i, size, get) for i in covered})
        except tree.TreeError as exc:
            findings.append(("missing", f"L'arbre de Merkle de l'archive est incomplet : {exc}."))
            return doc, findings
        if head.ticket_map_root is not None:
            findings += _histories(conn, leaves, head, doc["histories"])
    if current != root:
        findings.append(("altered", f"L'archive ne correspond plus à la tête d'arbre signée n° {head.head_id} "
                                    f"du {head.signed_fields()['timestamp']} ({size} événements) : elle a été "
                                    "réécrite depuis."))
    for leaf in leaves:
        if leaf.leaf_index is None or leaf.leaf_index >= size:
            continue
        path = paths[leaf.leaf_index]
        if not merkle.verify_inclusion(leaf.leaf_index, size, merkle.leaf_hash(leaf.envelope), path, root):
            findings.append(("altered", f"L'événement {leaf.event_id} (feuille {leaf.leaf_index}) n'est pas dans "
                                        f"l'archive signée par la tête n° {head.head_id} (preuve d'inclusion "
                                        "invalide)."))
        doc["proofs"][leaf.event_id] = {"leaf_index": leaf.leaf_index,
                                        "inclusion_path": [p.hex() for p in path]}
    return doc, findings


def _histories(conn: Any, leaves: Sequence[Leaf], head: SignedHead, out: dict[str, Any]) -> list[tuple[str, str]]:
    """Each ticket's entry in the head's map and its path, from the ticket's leaves below the
    head's size (log order); an entry the signed map does not hold means rows were deleted."""
    assert head.ticket_map_root is not None
    findings = []
    by_ticket: dict[str, list[bytes]] = {}
    for leaf in sorted(leaves, key=lambda x: x.leaf_index if x.leaf_index is not None else -1):
        if leaf.leaf_index is not None and leaf.leaf_index < head.tree_size:
            by_ticket.setdefault(leaf.ticket_id, []).append(merkle.leaf_hash(leaf.envelope))
    map_root = bytes.fromhex(head.ticket_map_root)
    for ticket_id, hashes in by_ticket.items():
        try:
            found = ticket_map.proof(conn, ticket_id, hashes, head.tree_size)
        except ticket_map.MapError as exc:
            findings.append(("missing", f"Ticket {ticket_id} : pas de preuve de complétude ({exc})."))
            continue
        entry = ticket_history.map_leaf(ticket_id, found.count, found.history_hash)
        if not merkle.verify_inclusion(found.ordinal, found.tickets, entry, found.inclusion_path, map_root):
            findings.append(("missing", f"Ticket {ticket_id} : l'archive ne contient plus l'historique signé par la "
                                        f"tête n° {head.head_id} (événement supprimé, ajouté ou déplacé)."))
        out[ticket_id] = found.to_dict()
    return findings


# --- the whole archive against its tree and heads (``audit verify``) ----------------------------

def verify_tree(engine: Engine, batch: int = 5000) -> list[str]:
    """Every difference between the archive and its Merkle tree or its signed heads, O(N):
    the tree is rebuilt from the rows' envelopes in seq order; each row must be the leaf it
    says, each stored leaf its row's, the stored root the rebuilt one, and the rebuilt tree
    at each signed head's size must have that head's root. A rewrite of the archive that
    re-hashed the chain and rebuilt the tree still differs from the heads signed before it."""
    from sqlalchemy import select

    from .heads import list_heads
    from .models import ARCHIVE, NODES

    out: list[str] = []
    heads = sorted(list_heads(engine), key=lambda h: h.tree_size)
    pending = [h for h in heads if h.tree_size == 0]
    heads = [h for h in heads if h.tree_size > 0]
    out += [f"head {h.head_id}: signs an empty tree with another root" for h in pending
            if h.root_hash != merkle.EMPTY_ROOT.hex()]
    size = 0
    frontier: list[bytes] = []
    chunk: list[tuple[int, int | None, bytes]] = []

    def flush(conn: Any) -> None:
        nonlocal size, frontier
        if not chunk:
            return
        stored = {int(i): bytes(h) for i, h in conn.execute(
            select(NODES.c.idx, NODES.c.hash).where(NODES.c.level == 0, NODES.c.idx >= size,
                                                    NODES.c.idx < size + len(chunk)))}
        for offset, (seq, leaf_index, envelope) in enumerate(chunk):
            leaf = merkle.leaf_hash(envelope)
            if leaf_index != size + offset:
                out.append(f"archive row {seq}: leaf index {leaf_index}, expected {size + offset}")
            if stored.get(size + offset) != leaf:
                out.append(f"archive row {seq}: its envelope is not leaf {size + offset} of the tree")
            _, stack = merkle.append(size + offset, frontier, [leaf])
            frontier = [h for _, _, h in stack]
            while heads and heads[0].tree_size == size + offset + 1:
                head = heads.pop(0)
                if _fold(frontier).hex() != head.root_hash:
                    out.append(f"head {head.head_id} ({head.tree_size} events, signed "
                               f"{head.signed_fields()['timestamp']}): the archive no longer has the root it "
                               "signed (rewritten since)")
        size += len(chunk)
        chunk.clear()

    with engine.connect() as conn, engine.connect() as lookup:
        rows = conn.execution_options(yield_per=batch).execute(
            select(ARCHIVE.c.seq, ARCHIVE.c.leaf_index, ARCHIVE.c.envelope).order_by(ARCHIVE.c.seq))
        for seq, leaf_index, envelope in rows:
            chunk.append((seq, leaf_index, envelope.encode()))
            if len(chunk) >= batch:
                flush(lookup)
        flush(lookup)
        stored_size = tree.tree_size(lookup)
        # the projector may append while this reads: more leaves than rows read is not a fault
        if stored_size < size:
            out.append(f"the tree has {stored_size} leaves, the archive {size} rows")
        elif size and tree.root(lookup, size) != _fold(frontier):
            out.append("the tree's stored nodes do not hash to the archive's root")
    out += [f"head {h.head_id} signs {h.tree_size} events, the archive has {size}" for h in heads]
    return out


def _fold(frontier: Sequence[bytes]) -> bytes:
    """The root of a tree from its peaks (left to right)."""
    if not frontier:
        return merkle.EMPTY_ROOT
    out = frontier[-1]
    for peak in reversed(frontier[:-1]):
        out = merkle.node_hash(peak, out)
    return out

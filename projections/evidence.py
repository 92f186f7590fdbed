"""Inclusion proofs for a dispute file, and the offline check of a dispute file.

A dispute file carries, for each event of its tickets, the exact envelope bytes (base64),
its leaf index and its audit path to a signed tree head, and that head with its signature:
whoever holds the operator's public key can check, without the product or its database,
that every event is in the signed archive as shown (``check_dispute_file``; the same steps
in ``docs/verify_dispute_file.py`` with only ``cryptography``). Given a file issued earlier,
the same leaf must carry the same bytes in both: two signed trees that disagree on a leaf
prove that the archive was rewritten in between.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from . import merkle, tree
from .checkpoint import VerifierKey
from .heads import HeadError, SignedHead, latest_head, witness_problems

EVIDENCE_SCHEMA = "slaledger.inclusion-proofs/1"
log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Leaf:
    event_id: str
    leaf_index: int | None
    envelope: bytes


def ticket_evidence(engine: Engine, leaves: Sequence[Leaf], head: SignedHead | None,
                    signer: Callable[[], SignedHead] | None = None) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The evidence section of a dispute file and the findings (kind, French message) met
    while building it: the archive no longer matching the head, a proof that fails.

    ``head``: the one asked for, else the latest signed; when it does not cover every leaf
    and a ``signer`` is at hand, a new head is signed on demand."""
    findings: list[tuple[str, str]] = []
    indices = [x.leaf_index for x in leaves if x.leaf_index is not None]
    if head is None:
        head = latest_head(engine)
        if signer is not None and (head is None or (indices and max(indices) >= head.tree_size)):
            try:
                head = signer()
            except SQLAlchemyError as exc:  # e.g. a worker whose role only reads: the latest head serves
                log.warning("no tree head signed on demand; proofs go to the latest head", error=str(exc))
    doc: dict[str, Any] = {"schema": EVIDENCE_SCHEMA, "head": head.to_dict() if head else None,
                           "public_key_id": head.key_id if head else None, "proofs": {}}
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


# --- the offline check ------------------------------------------------------------------------

def _events(doc: dict[str, Any]) -> list[tuple[Any, dict[str, Any]]]:
    """(the ticket id it is shown under, the event entry) for every event of the file."""
    return [(t.get("ticket_id"), e) for t in doc.get("tickets", []) if isinstance(t, dict)
            for e in t.get("timeline", []) if isinstance(e, dict)]


SHOWN_FIELDS = ("event_id", "type", "occurred_at", "recorded_at", "actor")


def _shown_differs(ticket_id: Any, entry: dict[str, Any], shown: dict[str, Any]) -> list[str]:
    """What the file shows of an event that its archived bytes do not say: a field, the
    ticket it is filed under, the « answer » flag that stops the administrative week."""
    eid = entry.get("event_id")
    out = [f"event {eid}: its {name} in the file ({entry.get(name)!r}) is not the archived envelope's "
           f"({shown.get(name)!r})" for name in SHOWN_FIELDS if shown.get(name) != entry.get(name)]
    if shown.get("ticket_id") != ticket_id:
        out.append(f"event {eid}: shown under ticket {ticket_id!r}, but its archived bytes belong to "
                   f"{shown.get('ticket_id')!r}")
    raw_payload = shown.get("payload")
    payload: dict[str, Any] = raw_payload if isinstance(raw_payload, dict) else {}
    answer = shown.get("type") == "customer_informed" and bool(payload.get("answer"))
    if "answer" in entry and bool(entry.get("answer")) != answer:
        out.append(f"event {eid}: marked {'as' if entry.get('answer') else 'not as'} the answer to the request, "
                   "which its archived bytes do not say")
    return out


def check_dispute_file(doc: Any, public: Ed25519PublicKey, earlier: Any = None,
                       witnesses: Sequence[VerifierKey] = (), required: int = 0) -> tuple[list[str], int]:
    """Every problem of a dispute file (English, one line each) and how many events were
    checked. Needs nothing but the file and the key; ``earlier``: a file issued before.

    What it proves: the head is the operator's, and every event the file shows is, byte for
    byte, in the archive that head signed, under the ticket it is shown under. What it does
    not: that no event was left out of the file, or the verdicts (``audit replay``
    recomputes them from the events)."""
    problems: list[str] = []
    if not isinstance(doc, dict) or not isinstance(doc.get("evidence"), dict):
        return ["the file carries no evidence section (not a signed dispute file)"], 0
    raw_head = doc["evidence"].get("head")
    try:
        head = SignedHead.from_dict(raw_head)
    except HeadError as exc:
        return [f"tree head: {exc}"], 0
    if not head.verify(public):
        problems.append(f"tree head {head.head_id}: the signature does not verify with this public key "
                        "(forged, altered, or signed with another key)")
    problems += witness_problems(head, witnesses, required)
    shown_head = head.to_dict()
    written = raw_head if isinstance(raw_head, dict) else {}
    problems += [f"tree head {head.head_id}: its {name} as written in the file ({written.get(name)!r}) is not "
                 f"the value signed ({shown_head[name]!r})" for name in head.signed_fields()
                 if written.get(name) != shown_head[name]]
    root, checked = bytes.fromhex(head.root_hash), 0
    for ticket_id, entry in _events(doc):
        eid = entry.get("event_id")
        if entry.get("inclusion_path") is None and "envelope_base64" in entry:
            problems.append(f"event {eid}: not covered by the file's signed head (recorded after it was signed): "
                            "not proven by this file; ask for a new one after the next head")
            continue
        try:
            envelope = base64.b64decode(entry["envelope_base64"], validate=True)
            shown = json.loads(envelope)
            path = [bytes.fromhex(p) for p in entry["inclusion_path"]]
            index = int(entry["leaf_index"])
            if not isinstance(shown, dict):
                raise ValueError("not an object")
        except (KeyError, TypeError, ValueError, binascii.Error):
            problems.append(f"event {eid}: no readable envelope, leaf index and inclusion path")
            continue
        checked += 1
        problems += _shown_differs(ticket_id, entry, shown)
        if not merkle.verify_inclusion(index, head.tree_size, merkle.leaf_hash(envelope), path, root):
            problems.append(f"event {eid} (leaf {index}): the inclusion proof fails against the signed root "
                            "(event altered, or a proof for another leaf)")
    if earlier is not None:
        earlier_problems, _ = check_dispute_file(earlier, public)
        if earlier_problems:  # an unproven file proves nothing, a rewrite least of all
            problems.append(f"earlier file: does not verify ({earlier_problems[0]}); not compared")
        else:
            problems += _against_earlier(doc, head, earlier)
    return problems, checked


def _against_earlier(doc: dict[str, Any], head: SignedHead, earlier: Any) -> list[str]:
    """An append-only log never changes a leaf: the same event at another leaf or with other
    bytes, or two heads of one size with different roots, prove a rewrite. Both files have
    been checked against the key first."""
    out = []
    old = SignedHead.from_dict(earlier["evidence"]["head"])
    if old.tree_size == head.tree_size and old.root_hash != head.root_hash:
        out.append(f"tree heads {old.head_id} and {head.head_id} both sign {head.tree_size} events with different "
                   "roots: the archive was rewritten")
    before = {e.get("event_id"): e for _, e in _events(earlier) if e.get("inclusion_path") is not None}
    for _, entry in _events(doc):
        was = before.get(entry.get("event_id"))
        if was is None or entry.get("inclusion_path") is None:
            continue
        if (was.get("leaf_index"), base64.b64decode(was.get("envelope_base64") or "")) != (
                entry.get("leaf_index"), base64.b64decode(entry.get("envelope_base64") or "")):
            out.append(f"event {entry.get('event_id')}: leaf {entry.get('leaf_index')} differs from the earlier "
                       f"file's (leaf {was.get('leaf_index')}): the archive was rewritten since")
    return out


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

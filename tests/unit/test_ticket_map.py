"""The map of every ticket's history (``projections.ticket_map``) on a real SQLite database:
committed incrementally at heads, it equals the map computed from scratch as of every head,
and every ticket's proof as of every head verifies against that head's root."""

from __future__ import annotations

import hashlib
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine

from projections import merkle, ticket_history, ticket_map
from projections.migrate import create_schema


def _scratch_root(log: list[tuple[str, bytes]]) -> tuple[bytes, dict[str, list[bytes]], list[str]]:
    order: list[str] = []
    by_ticket: dict[str, list[bytes]] = {}
    for ticket, leaf in log:
        if ticket not in by_ticket:
            order.append(ticket)
        by_ticket.setdefault(ticket, []).append(leaf)
    leaves = [ticket_history.map_leaf(t, len(by_ticket[t]), ticket_history.history_hash(by_ticket[t]))
              for t in order]
    created, _ = merkle.append(0, [], leaves)
    nodes = {(lv, i): h for lv, i, h in created}
    return merkle.root_hash(len(leaves), lambda lv, i: nodes[(lv, i)]), by_ticket, order


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(0, 12), max_size=9), st.booleans()), min_size=1, max_size=8))
def test_incremental_commits_equal_the_map_from_scratch_as_of_every_head(
        tmp_path_factory: object, batches: list[tuple[list[int], bool]]) -> None:
    folder: Path = tmp_path_factory.mktemp("map")  # type: ignore[attr-defined]
    engine = create_engine(f"sqlite:///{folder / 'db.sqlite'}")
    create_schema(engine)
    log: list[tuple[str, bytes]] = []
    heads: list[tuple[int, bytes]] = []
    for tickets, head in batches:
        batch = [(f"T-{t}", len(log) + n, hashlib.sha256(f"{len(log) + n}".encode()).digest())
                 for n, t in enumerate(tickets)]
        with engine.begin() as conn:
            ticket_map.record(conn, batch)
        log += [(t, h) for t, _, h in batch]
        if head:
            with engine.begin() as conn:
                root = ticket_map.commit(conn, len(log))
                assert ticket_map.commit(conn, len(log)) == root  # a second head of that size: the same map
            assert root == _scratch_root(log)[0]
            heads.append((len(log), root))
    for size, root in heads:  # proofs as of each head, after later heads rewrote nodes
        _, by_ticket, order = _scratch_root(log[:size])
        with engine.connect() as conn:
            for ticket in order:
                proof = ticket_map.proof(conn, ticket, by_ticket[ticket], size)
                leaf = ticket_history.map_leaf(ticket, proof.count, proof.history_hash)
                assert proof.ordinal == order.index(ticket) and proof.tickets == len(order)
                assert merkle.verify_inclusion(proof.ordinal, proof.tickets, leaf, proof.inclusion_path, root)
    engine.dispose()

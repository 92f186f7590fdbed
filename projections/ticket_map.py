"""The map of every ticket's history, committed at each signed head (#26 item 1).

An inclusion proof shows that an event is in the log; it cannot show that no event of the
ticket was left out of a dispute file. So each signed head also signs ``ticket_map_root``:
the root of an RFC 6962 tree whose leaves are every ticket's entry (its event count and
history hash, ``projections.ticket_history``) as of the head's tree size. A dispute file
carries its ticket's entry and inclusion path to that root; the verifier recomputes count
and hash from the events the file shows.

- Leaves are the tickets in the order of their first event in the log (``ordinal``): the map
  grows at its right end like the log, so a head rewrites only the O(log T) nodes above each
  ticket that changed since the previous head, never the whole map (see bench/ticket_map_bench.py).
- ``record`` (the projector, one call per batch, set-based): each ticket's count and history
  hash move forward with its new leaves (``ticket_map_tickets``).
- ``commit`` (``sign_head``, under the archive's lock): the nodes above the tickets changed
  since the last commit are written as new versions (``ticket_map_nodes.since_size`` = the
  head's size), older versions stay, so the map as of any signed head remains provable.
- ``proof``: a ticket's entry as of a head (counted from its archive rows below the head's
  size) and its path in the map as of that head.

Events written before this module existed are covered the same way: migration 0012 computes
every ticket's entry from the archive and commits the map at the archive's size; the next
head signs it. Heads signed before carry no map root, so a file proven against one of them
cannot prove completeness (the verifier says so).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, func, insert, or_, select
from sqlalchemy.engine import Connection

from . import bulk, merkle
from .models import MAP_COMMITS, MAP_NODES, MAP_TICKETS
from .ticket_history import HISTORY_START, history_hash, map_leaf

Leaf = tuple[str, int, bytes]  # (ticket id, leaf index, leaf hash), in log order


@dataclass(frozen=True)
class MapProof:
    """A ticket's entry in the map as of a head, and its path (from the leaf's sibling up)."""

    ordinal: int
    tickets: int
    count: int
    history_hash: bytes
    inclusion_path: list[bytes]

    def to_dict(self) -> dict[str, object]:
        return {"ordinal": self.ordinal, "tickets": self.tickets, "count": self.count,
                "history_hash": self.history_hash.hex(), "inclusion_path": [p.hex() for p in self.inclusion_path]}


def record(conn: Connection, leaves: Sequence[Leaf]) -> None:
    """Move each ticket's entry forward by its new leaves (log order), in the projector's
    batch transaction: one read of the batch's tickets, one upsert."""
    if not leaves:
        return
    ids = sorted({t for t, _, _ in leaves})
    state = {row.ticket_id: row for row in conn.execute(
        select(MAP_TICKETS).where(bulk.among(conn, MAP_TICKETS.c.ticket_id, ids)))}
    next_ordinal = None
    rows: dict[str, dict[str, object]] = {}
    for ticket_id, leaf_index, leaf in leaves:
        row = rows.get(ticket_id)
        if row is None:
            known = state.get(ticket_id)
            if known is None:
                if next_ordinal is None:
                    next_ordinal = int(conn.scalar(select(func.coalesce(func.max(MAP_TICKETS.c.ordinal) + 1, 0))))
                row = {"ticket_id": ticket_id, "ordinal": next_ordinal, "event_count": 0,
                       "history_hash": HISTORY_START}
                next_ordinal += 1
            else:
                row = {"ticket_id": ticket_id, "ordinal": known.ordinal, "event_count": known.event_count,
                       "history_hash": bytes(known.history_hash)}
            rows[ticket_id] = row
        row["event_count"] = int(row["event_count"]) + 1  # type: ignore[call-overload]
        row["history_hash"] = history_hash([leaf], row["history_hash"])  # type: ignore[arg-type]
        row["last_leaf"] = leaf_index
    bulk.upsert(conn, MAP_TICKETS, list(rows.values()), set_={  # the ordinal never changes
        name: (lambda new, name=name: new[name]) for name in ("event_count", "history_hash", "last_leaf")})


def _latest(conn: Connection, coords: set[tuple[int, int]], size: int) -> dict[tuple[int, int], bytes]:
    """The nodes ``coords`` as of archive size ``size`` (each one's last version at or below
    it), in one query answered from the primary key."""
    by_level: dict[int, list[int]] = {}
    for level, idx in coords:
        by_level.setdefault(level, []).append(idx)
    if not by_level:
        return {}
    newer = MAP_NODES.alias("newer")
    superseded = select(newer.c.since_size).where(
        newer.c.level == MAP_NODES.c.level, newer.c.idx == MAP_NODES.c.idx,
        newer.c.since_size > MAP_NODES.c.since_size, newer.c.since_size <= size).exists()
    rows = conn.execute(select(MAP_NODES.c.level, MAP_NODES.c.idx, MAP_NODES.c.hash).where(
        or_(*(and_(MAP_NODES.c.level == level, MAP_NODES.c.idx.in_(sorted(idxs)))
              for level, idxs in by_level.items())),
        MAP_NODES.c.since_size <= size, ~superseded))
    return {(int(level), int(idx)): bytes(h) for level, idx, h in rows}


def _getter(nodes: dict[tuple[int, int], bytes]) -> merkle.Subtrees:
    def get(level: int, idx: int) -> bytes:
        try:
            return nodes[(level, idx)]
        except KeyError:
            raise MapError(f"the ticket map lacks its node ({level}, {idx})") from None
    return get


class MapError(Exception):
    """The map cannot give a proof (a head signed before the map, or rows deleted)."""


def commit(conn: Connection, size: int) -> bytes:
    """The map's root as of archive size ``size`` (the whole archive: the caller holds the
    archive's lock), committing the nodes above every ticket changed since the last commit."""
    done = conn.scalar(select(MAP_COMMITS.c.root).where(MAP_COMMITS.c.tree_size == size))
    if done is not None:
        return bytes(done)
    previous = conn.scalar(select(func.max(MAP_COMMITS.c.tree_size)))
    if previous is None:
        return _first_commit(conn, size)
    changed = {int(o): map_leaf(t, int(c), bytes(h)) for t, o, c, h in conn.execute(
        select(MAP_TICKETS.c.ticket_id, MAP_TICKETS.c.ordinal, MAP_TICKETS.c.event_count,
               MAP_TICKETS.c.history_hash).where(MAP_TICKETS.c.last_leaf >= previous))}
    tickets = int(conn.scalar(select(func.coalesce(func.max(MAP_TICKETS.c.ordinal) + 1, 0))))
    # Which complete subtrees change (indices only), then the siblings and peaks they need.
    levels: list[set[int]] = [set(changed)]
    while levels[-1]:
        level = len(levels)
        levels.append({i >> 1 for i in levels[-1] if ((i >> 1) + 1) << level <= tickets})
    written = {(lv, i) for lv, idxs in enumerate(levels) for i in idxs}
    needed = {(lv, i ^ 1) for lv, idxs in enumerate(levels[:-1]) for i in idxs
              if ((i >> 1) + 1) << (lv + 1) <= tickets} | set(merkle.peaks(tickets))
    nodes = _latest(conn, needed - written, size)
    nodes.update({(0, i): h for i, h in changed.items()})
    for level in range(1, len(levels)):
        for i in sorted(levels[level]):
            nodes[(level, i)] = merkle.node_hash(nodes[(level - 1, 2 * i)], nodes[(level - 1, 2 * i + 1)])
    # new rows only (this size is committed once: checked above), by COPY: an executemany of
    # them was a tenth of the projector's time while it caught up (#31)
    bulk.append(conn, MAP_NODES, [{"level": lv, "idx": i, "since_size": size, "hash": nodes[(lv, i)]}
                                  for lv, i in sorted(written)])
    root = merkle.root_hash(tickets, _getter(nodes))
    conn.execute(insert(MAP_COMMITS).values(tree_size=size, tickets=tickets, root=root))
    return root


def _first_commit(conn: Connection, size: int, chunk: int = 50_000) -> bytes:
    """The whole map at its first commit (migration 0012 over an existing archive), built
    leaf after leaf in ordinal order: memory follows a chunk, not the number of tickets."""
    tickets, frontier, last = 0, list[bytes](), -1
    while True:
        rows = conn.execute(select(MAP_TICKETS.c.ticket_id, MAP_TICKETS.c.ordinal, MAP_TICKETS.c.event_count,
                                   MAP_TICKETS.c.history_hash).where(MAP_TICKETS.c.ordinal > last)
                            .order_by(MAP_TICKETS.c.ordinal).limit(chunk)).all()
        if not rows:
            break
        created, stack = merkle.append(tickets, frontier, [map_leaf(t, int(c), bytes(h)) for t, _, c, h in rows])
        bulk.append(conn, MAP_NODES, [{"level": lv, "idx": i, "since_size": size, "hash": h}
                                      for lv, i, h in created])
        tickets, frontier, last = tickets + len(rows), [h for _, _, h in stack], int(rows[-1].ordinal)
    root = merkle.EMPTY_ROOT if not frontier else frontier[-1]
    for peak in reversed(frontier[:-1]):
        root = merkle.node_hash(peak, root)
    conn.execute(insert(MAP_COMMITS).values(tree_size=size, tickets=tickets, root=root))
    return root


def proof(conn: Connection, ticket_id: str, leaves: Sequence[bytes], size: int) -> MapProof:
    """The ticket's entry as of archive size ``size`` and its path in the map committed at
    that size; ``leaves``: the ticket's leaf hashes below ``size``, in log order."""
    commit_row = conn.execute(select(MAP_COMMITS.c.tickets, MAP_COMMITS.c.root)
                              .where(MAP_COMMITS.c.tree_size == size)).first()
    if commit_row is None:
        raise MapError(f"no ticket map was committed at {size} events (a head signed before the map)")
    ordinal = conn.scalar(select(MAP_TICKETS.c.ordinal).where(MAP_TICKETS.c.ticket_id == ticket_id))
    tickets = int(commit_row.tickets)
    if ordinal is None or int(ordinal) >= tickets:
        raise MapError(f"ticket {ticket_id} is not in the map committed at {size} events")
    index = int(ordinal)
    nodes = _latest(conn, merkle.needed(lambda get: merkle.inclusion_path(index, tickets, get)), size)
    path = merkle.inclusion_path(index, tickets, _getter(nodes))
    return MapProof(index, tickets, len(leaves), history_hash(leaves), path)


def moved(conn: Connection, size: int) -> set[str]:
    """Tickets whose entry moved past the archive size ``size``."""
    return set(conn.scalars(select(MAP_TICKETS.c.ticket_id).where(MAP_TICKETS.c.last_leaf >= size)))


def verify(conn: Connection, batch: int = 5000) -> list[str]:
    """Every difference between the map and the archive (``audit verify``, O(N)): each
    ticket's place, count and history hash recomputed from the archive's leaves in log
    order, and the map's root at the archive's size when a commit was made at it."""
    from .models import ARCHIVE

    entries: dict[str, tuple[int, int, bytes]] = {}  # ticket → (ordinal, count, history hash)
    size, last = 0, -1
    while True:
        rows = conn.execute(select(ARCHIVE.c.ticket_id, ARCHIVE.c.leaf_index, ARCHIVE.c.envelope)
                            .where(ARCHIVE.c.leaf_index > last).order_by(ARCHIVE.c.leaf_index).limit(batch)).all()
        if not rows:
            break
        for ticket_id, _, envelope in rows:
            ordinal, count, history = entries.get(ticket_id, (len(entries), 0, HISTORY_START))
            entries[ticket_id] = (ordinal, count + 1, history_hash([merkle.leaf_hash(envelope.encode())], history))
        size, last = size + len(rows), int(rows[-1].leaf_index)
    # (the projector may append while this reads: an entry moved past the rows read is not a fault)
    stored = {t: (int(o), int(c), bytes(h)) for t, o, c, h in conn.execute(
        select(MAP_TICKETS.c.ticket_id, MAP_TICKETS.c.ordinal, MAP_TICKETS.c.event_count, MAP_TICKETS.c.history_hash)
        .where(MAP_TICKETS.c.last_leaf < size))}
    entries = {t: e for t, e in entries.items() if t in stored or t not in moved(conn, size)}
    out = [f"ticket {t}: its entry in the map of histories is not the one its archived events give"
           for t in sorted(set(entries) | set(stored)) if entries.get(t) != stored.get(t)]
    root = conn.scalar(select(MAP_COMMITS.c.root).where(MAP_COMMITS.c.tree_size == size))
    if root is not None and not out:
        leaves = [map_leaf(t, c, h) for t, (_, c, h) in sorted(entries.items(), key=lambda x: x[1][0])]
        created, _ = merkle.append(0, [], leaves)
        nodes = {(lv, i): h for lv, i, h in created}
        if merkle.root_hash(len(leaves), lambda lv, i: nodes[(lv, i)]) != bytes(root):
            out.append(f"the map of histories committed at {size} events does not hash to its stored root")
    return out

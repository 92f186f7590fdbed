"""What committing the map of every ticket's history costs at each signed head (#26), with
1,000,000 tickets in the map: the projector's ``ticket_map.record`` per batch and
``ticket_map.commit`` per head (every ~5 s), for heads that follow 10, 100 and 1,000 new
events (a tenth of them filing new tickets, the rest on random existing tickets). Printed:
time per head, per event appended, and the node rows a head writes. Prints its figures; no
assertions.

    .venv/bin/python bench/ticket_map_bench.py [--tickets 1000000] [--database URL]

The million tickets are written directly (``ticket_map_tickets`` and one commit of the whole
map). Default database: a SQLite file in a temporary directory; a --database URL must name
an empty database.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, func, insert, select, text

from projections import ticket_map
from projections.migrate import create_schema
from projections.models import MAP_COMMITS, MAP_NODES, MAP_TICKETS
from projections.ticket_history import history_hash


def seed(engine: object, tickets: int) -> int:
    """``tickets`` tickets of one event each, leaves 0 … tickets - 1; the map committed.

    On PostgreSQL the rows are generated in SQL (``generate_series``) with placeholder
    hashes: a commit's cost (rows read and written, nodes hashed) does not depend on the hash
    values, and hashing a million entries in Python first would only slow the set-up."""
    if engine.dialect.name == "postgresql":  # type: ignore[attr-defined]
        with engine.begin() as conn:  # type: ignore[attr-defined]
            conn.execute(text("INSERT INTO ticket_map_tickets (ticket_id, ordinal, event_count, history_hash, "
                              "last_leaf) SELECT 'T-' || lpad(i::text, 8, '0'), i, 1, "
                              "sha256(i::text::bytea), i FROM generate_series(0, :n - 1) AS i"), {"n": tickets})
            for level in range(tickets.bit_length()):
                conn.execute(text("INSERT INTO ticket_map_nodes (level, idx, since_size, hash) SELECT :l, i, :n, "
                                  "sha256(i::text::bytea) FROM generate_series(0, (:n >> :l) - 1) AS i"),
                             {"l": level, "n": tickets})
            conn.execute(insert(MAP_COMMITS).values(tree_size=tickets, tickets=tickets, root=bytes(32)))
        with engine.connect() as conn:  # type: ignore[attr-defined]
            conn.execute(text("ANALYZE"))  # the statistics autovacuum keeps in a live database
            conn.commit()
        return tickets
    with engine.begin() as conn:  # type: ignore[attr-defined]
        for start in range(0, tickets, 50_000):
            conn.execute(insert(MAP_TICKETS), [
                {"ticket_id": f"T-{i:08d}", "ordinal": i, "event_count": 1,
                 "history_hash": history_hash([hashlib.sha256(str(i).encode()).digest()]), "last_leaf": i}
                for i in range(start, min(start + 50_000, tickets))])
        ticket_map.commit(conn, tickets)
    return tickets


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--database", default="")
    args = parser.parse_args()
    rng = random.Random(26)
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(args.database or f"sqlite:///{Path(tmp) / 'map.db'}")
        create_schema(engine)
        t0 = time.perf_counter()
        size = seed(engine, args.tickets)
        known = args.tickets
        print(f"map of {args.tickets:,} tickets ({engine.dialect.name}) built in {time.perf_counter() - t0:.0f} s",
              flush=True)
        for per_head in (10, 100, 1000):
            records, commits, rows = [], [], []
            for _ in range(5):
                batch = []
                for _ in range(per_head):
                    if rng.random() < 0.1:
                        ticket, known = f"T-{known:08d}", known + 1
                    else:
                        ticket = f"T-{rng.randrange(known):08d}"
                    batch.append((ticket, size, hashlib.sha256(str(size).encode()).digest()))
                    size += 1
                with engine.begin() as conn:
                    before = conn.scalar(select(func.count()).select_from(MAP_NODES))
                    t1 = time.perf_counter()
                    ticket_map.record(conn, batch)
                    t2 = time.perf_counter()
                    ticket_map.commit(conn, size)
                    t3 = time.perf_counter()
                    rows.append(conn.scalar(select(func.count()).select_from(MAP_NODES)) - before)
                records.append(t2 - t1)
                commits.append(t3 - t2)
            record, commit = statistics.median(records), statistics.median(commits)
            print(f"  {per_head:>5} events per head: record {record * 1000:.1f} ms, commit {commit * 1000:.1f} ms "
                  f"→ {(record + commit) * 1000:.1f} ms per head, {(record + commit) / per_head * 1e6:.0f} µs per "
                  f"event appended; {statistics.median(rows):,.0f} node rows per head (median of 5)", flush=True)


if __name__ == "__main__":
    main()

"""One ticket's dispute file from a large archive (the web view's download, `audit replay
--source archive --ticket`), at two archive sizes in one run (#16): it reads that ticket's
rows only and proves each event in the Merkle tree against a signed head, and (#26) the
ticket's whole history in the head's map of histories, so its cost should
follow the ticket, not the archive (target: ratio ≤ 1.5 between 200,000 and 2,000,000
events). Printed next to the former path (every row of the archive read and its chain
checked) at the same sizes. Prints its figures; no assertions.

    .venv/bin/python bench/dispute_bench.py [--sizes 200000,2000000] [--database URL]

The archive is written directly in SQL (rows, chain, tree and map of histories through the
projector's own ``tree.append`` and ``ticket_map.record``), 4 events per ticket. Default
database: a SQLite file in a temporary directory; a --database URL must name an empty database.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, insert, select

from projections import merkle, ticket_map, tree
from projections.archive_hash import GENESIS_HASH, chain_hash
from projections.audit.dispute_file import dispute_file
from projections.audit.replay import Filters, replay
from projections.audit.sources import archive_records
from projections.heads import sign_head
from projections.migrate import create_schema
from projections.models import ARCHIVE
from sla.events import EventType, encode_event, new_event
from slaledger.settings import load_policy

STEPS = [EventType.ACKNOWLEDGED, EventType.RESOLVED, EventType.CLOSED]


def fill(engine: Any, start: int, n: int) -> str:
    """Append events ``start`` … ``n`` - 1 (4 per ticket) with their chain and tree; returns
    the id of a ticket filed in the middle of them."""
    base = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    with engine.connect() as conn:
        prev = conn.scalar(select(ARCHIVE.c.hash).order_by(ARCHIVE.c.seq.desc()).limit(1)) or GENESIS_HASH
    seq, middle, rows = start, "", []
    while seq < n:
        with engine.begin() as conn:
            while seq < n and len(rows) < 20_000:
                tid = f"D-{seq:08d}"
                if seq >= (start + n) // 2 and not middle:
                    middle = tid
                at = base + timedelta(minutes=seq % 100_000)
                events = [new_event(EventType.TICKET_FILED, tid, occurred_at=at, recorded_at=at, actor="bench",
                                    payload={"kind": "assistance", "channel": "portal", "member": f"m-{seq % 300}",
                                             "product": "ent", "subject": "s"}, event_id=uuid.uuid4())]
                events += [new_event(kind, tid, occurred_at=at + timedelta(hours=i),
                                     recorded_at=at + timedelta(hours=i), actor="bench", event_id=uuid.uuid4())
                           for i, kind in enumerate(STEPS, 1)]
                for event in events:
                    raw = encode_event(event)
                    digest = chain_hash(prev, raw)
                    rows.append({"event_id": str(event.event_id), "ticket_id": tid, "type": str(event.type),
                                 "occurred_at": event.occurred_at, "recorded_at": event.recorded_at,
                                 "actor": "bench", "topic": "bench", "partition": 0, "offset": seq,
                                 "envelope": raw.decode(), "prev_hash": prev, "hash": digest, "raw": raw})
                    prev, seq = digest, seq + 1
            raws = [r.pop("raw") for r in rows]
            first = tree.append(conn, raws)
            for i, row in enumerate(rows):
                row["leaf_index"] = first + i
            conn.execute(insert(ARCHIVE), rows)
            ticket_map.record(conn, [(r["ticket_id"], r["leaf_index"], merkle.leaf_hash(raw))
                                     for r, raw in zip(rows, raws, strict=True)])
            rows = []
    return middle


def one_ticket(engine: Any, ticket: str, policy: Any, *, by_tree: bool) -> float:
    """Seconds for one ticket's dispute file (median of 5): ``by_tree`` the ticket's rows and
    their proofs; else the former path (every row read, the whole chain checked)."""
    times = []
    for _ in range(5 if by_tree else 1):
        t0 = time.perf_counter()
        if by_tree:
            result = replay(archive_records(engine, ticket=ticket), policy, Filters(ticket=ticket),
                            source="archive", engine=engine)
        else:
            result = replay(archive_records(engine), policy, Filters(ticket=ticket), source="archive")
        doc = dispute_file(result)
        times.append(time.perf_counter() - t0)
        assert result.ok and ticket in result.tickets, result.findings
        assert not by_tree or all(e["inclusion_path"] is not None for e in doc["tickets"][0]["timeline"])
        assert not by_tree or doc["tickets"][0]["history_proof"]["count"] == 4  # its whole history, proven
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="200000,2000000")
    parser.add_argument("--database", default="")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    policy = load_policy()
    key = Ed25519PrivateKey.generate()
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(args.database or f"sqlite:///{Path(tmp) / 'archive.db'}")
        create_schema(engine)
        figures, filled = [], 0
        for size in sizes:
            t0 = time.perf_counter()
            ticket = fill(engine, filled, size)
            filled = size
            head = sign_head(engine, key, policy)
            print(f"archive of {size:,} events ({engine.dialect.name}) written in {time.perf_counter() - t0:.0f} s; "
                  f"head {head.head_id} signed", flush=True)
            by_tree = one_ticket(engine, ticket, policy, by_tree=True)
            walk = one_ticket(engine, ticket, policy, by_tree=False)
            figures.append((size, by_tree, walk))
            print(f"  one ticket's dispute file, proofs in the tree: {by_tree * 1000:.1f} ms; former path "
                  f"(whole chain walked): {walk:.2f} s", flush=True)
        (small, t_small, w_small), (big, t_big, w_big) = figures[0], figures[-1]
        print(f"ratio {big:,} / {small:,} events: proofs in the tree {t_big / t_small:.2f} (target <= 1.5); "
              f"former path {w_big / w_small:.2f}")


if __name__ == "__main__":
    main()

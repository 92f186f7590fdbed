"""What appending to the Merkle tree costs the projector (#16; target: at most 20 % slower).

The projector's transaction (``Projection.apply_batch``: decode, fold, tickets, clocks,
archive rows, tree, checkpoints) on the same N event records, in batches of 2,000 as the
projector reads them, into a fresh PostgreSQL database: once as shipped, once with the tree
append replaced by a stub that only numbers the leaves, in the same run. The broker is left
out: it costs both runs the same. Prints its figures; no assertions.

    .venv/bin/python bench/projector_tree_bench.py [--events 200000] [--server postgresql+psycopg://postgres@127.0.0.1:5432/]
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import create_engine

from projections import projection as projection_module
from projections import tree
from projections.migrate import create_schema
from projections.projection import Incoming, Projection
from sla.events import EventType, encode_event, new_event
from slaledger.devdb import fresh_database
from slaledger.settings import load_policy
from streams.topics import EVENTS

STEPS = [EventType.ACKNOWLEDGED, EventType.RESOLVED, EventType.CLOSED]


def records(n: int) -> list[Incoming]:
    base = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    out: list[Incoming] = []
    while len(out) < n:
        tid = f"P-{len(out):08d}"
        at = base + timedelta(minutes=len(out) % 100_000)
        events = [new_event(EventType.TICKET_FILED, tid, occurred_at=at, recorded_at=at, actor="bench",
                            payload={"kind": "assistance", "channel": "portal", "member": f"m-{len(out) % 300}",
                                     "product": "ent", "subject": "s"}, event_id=uuid.uuid4())]
        events += [new_event(kind, tid, occurred_at=at + timedelta(hours=i), recorded_at=at + timedelta(hours=i),
                             actor="bench", event_id=uuid.uuid4()) for i, kind in enumerate(STEPS, 1)]
        for event in events:
            out.append(Incoming(EVENTS, len(out) % 4, len(out), encode_event(event), tid.encode()))
    return out[:n]


class NoTree:
    """Stands in for ``projections.tree`` in the projection: numbers leaves, writes nothing."""

    def __init__(self) -> None:
        self.size = 0

    def append_leaves(self, conn: Any, leaf_hashes: list[bytes], size: int | None = None) -> int:
        first, self.size = self.size, self.size + len(leaf_hashes)
        return first

    def check_in_step(self, conn: Any) -> int:
        """No tree: always in step."""
        return self.size


def run(server: str, batch: list[Incoming], with_tree: bool) -> float:
    with fresh_database(server, "slaledger_bench_") as url:
        engine = create_engine(url)
        try:
            create_schema(engine)
            projection = Projection(load_policy())
            projection_module.tree = tree if with_tree else NoTree()  # type: ignore[assignment]
            t0 = time.perf_counter()
            for i in range(0, len(batch), 2000):
                with engine.begin() as conn:
                    projection.apply_batch(conn, batch[i:i + 2000])
            return time.perf_counter() - t0
        finally:
            projection_module.tree = tree
            engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, choices=[1, 2], default=2)
    parser.add_argument("--server", default="postgresql+psycopg://postgres@127.0.0.1:5432/")
    args = parser.parse_args()
    batch = records(args.events)
    # alternated, best of two each: the machine is shared, a neighbour's burst hits one run only
    without = min(run(args.server, batch, with_tree=False), run(args.server, batch, with_tree=False)) \
        if args.rounds > 1 else run(args.server, batch, with_tree=False)
    with_tree = min(run(args.server, batch, with_tree=True), run(args.server, batch, with_tree=True)) \
        if args.rounds > 1 else run(args.server, batch, with_tree=True)
    print(f"projector transaction, {args.events:,} events in batches of 2,000 (PostgreSQL, best of {args.rounds}):")
    print(f"  without the tree: {without:.1f} s ({args.events / without:,.0f} events/s)")
    print(f"  with the tree:    {with_tree:.1f} s ({args.events / with_tree:,.0f} events/s)")
    print(f"  cost of the tree: {100 * (with_tree / without - 1):+.1f} % (target <= +20 %)")


if __name__ == "__main__":
    main()

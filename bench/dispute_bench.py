"""One ticket's dispute file from a large archive (the web view's download, `audit replay
--source archive --ticket`): every row's hash and link are checked, only that ticket's rows
are decoded. Printed next to a whole-archive replay (every row decoded and folded) of the
same archive, in the same run. Prints its figures; no assertions.

    .venv/bin/python bench/dispute_bench.py [--events 200000] [--database URL]

Default database: a SQLite file in a temporary directory; a --database URL must name an
empty database (the benchmark writes its archive there).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, insert

from projections.archive_hash import GENESIS_HASH, chain_hash
from projections.audit import Filters, archive_records, replay
from projections.migrate import create_schema
from projections.models import ARCHIVE
from sla.events import EventType, encode_event, new_event
from slaledger.settings import load_policy

STEPS = [EventType.ACKNOWLEDGED, EventType.RESOLVED, EventType.CLOSED]


def fill(engine: object, n: int) -> str:
    """n events (4 per ticket) appended to the archive with their hash chain; a ticket id."""
    base, prev, rows, seq = datetime(2026, 1, 5, 8, 0, tzinfo=UTC), GENESIS_HASH, [], 0
    middle = ""
    with engine.begin() as conn:  # type: ignore[attr-defined]
        while seq < n:
            tid = f"D-{seq:08d}"
            if seq >= n // 2 and not middle:
                middle = tid
            at = base + timedelta(minutes=seq % 100_000)
            events = [new_event(EventType.TICKET_FILED, tid, occurred_at=at, recorded_at=at, actor="bench",
                                payload={"kind": "assistance", "channel": "portal", "member": f"m-{seq % 300}",
                                         "product": "ent", "subject": "s"}, event_id=uuid.uuid4())]
            events += [new_event(kind, tid, occurred_at=at + timedelta(hours=i), recorded_at=at + timedelta(hours=i),
                                 actor="bench", event_id=uuid.uuid4()) for i, kind in enumerate(STEPS, 1)]
            for event in events:
                raw = encode_event(event)
                digest = chain_hash(prev, raw)
                rows.append({"event_id": str(event.event_id), "ticket_id": tid, "type": str(event.type),
                             "occurred_at": event.occurred_at, "recorded_at": event.recorded_at, "actor": "bench",
                             "topic": "bench", "partition": 0, "offset": seq, "envelope": raw.decode(),
                             "prev_hash": prev, "hash": digest})
                prev, seq = digest, seq + 1
            if len(rows) >= 20_000:
                conn.execute(insert(ARCHIVE), rows)
                rows = []
        if rows:
            conn.execute(insert(ARCHIVE), rows)
    return middle


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--database", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(args.database or f"sqlite:///{Path(tmp) / 'archive.db'}")
        create_schema(engine)
        ticket = fill(engine, args.events)
        policy = load_policy()
        t0 = time.perf_counter()
        one = replay(archive_records(engine), policy, Filters(ticket=ticket), source="archive", engine=engine)
        single = time.perf_counter() - t0
        t0 = time.perf_counter()
        whole = replay(archive_records(engine), policy, Filters(), source="archive", engine=engine, timelines=False,
                       summarize_closed=True)
        full = time.perf_counter() - t0
        assert one.ok and whole.ok and ticket in one.tickets
        print(f"archive of {args.events:,} events ({engine.dialect.name})")
        print(f"one ticket's dispute file: {single:.2f} s ({args.events / single:,.0f} rows/s checked)")
        print(f"whole-archive replay:      {full:.2f} s ({args.events / full:,.0f} rows/s decoded and folded)")
        print(f"ratio: {full / single:.1f}x faster for one ticket")


if __name__ == "__main__":
    main()

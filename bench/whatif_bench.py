"""What-if speed and memory (#29): a year of a region — 50,000 tickets, about 350,000 events
in the SQL archive — judged by the current policy and by a draft (target ≤ 60 s, memory flat
in the number of tickets), next to a plain audit replay of the same events in the same run.
Each measure runs in a process of its own, so each maximum RSS is its own; the what-if is
measured at two archive sizes to show that its memory does not follow the tickets. Prints
its figures; no assertions.

    .venv/bin/python bench/whatif_bench.py [--sizes 10000,50000] [--database URL] [--draft FILE]

The archive is written directly in SQL with its hash chain (the what-if does not read the
Merkle tree; the plain replay walks the chain), a realistic mix of a year: portal requests
(some after hours and on Fridays), incidents, administrative requests that wait for the
member, go-lives. Default database: a SQLite file in a temporary directory; a --database URL
must name an empty database.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, select

from projections.archive_hash import GENESIS_HASH, chain_hash
from projections.audit.replay import Filters, replay
from projections.audit.sources import archive_records
from projections.migrate import create_schema
from projections.models import ARCHIVE
from projections.whatif import compare, ticket_histories
from sla.events import Event, EventType, encode_event, new_event
from slaledger.settings import load_policy

ROOT = Path(__file__).resolve().parents[1]
YEAR = (datetime(2026, 1, 1, tzinfo=UTC) - timedelta(hours=1), datetime(2027, 1, 1, tzinfo=UTC) - timedelta(hours=1))
E = EventType


def ticket(rng: random.Random, n: int) -> list[Event]:
    """One ticket's events: ~7 on average over the mix."""
    tid = f"Y-{n:07d}"
    filed = YEAR[0] + timedelta(minutes=rng.randrange(int((YEAR[1] - YEAR[0]).total_seconds() // 60) - 90 * 1440))
    kind = rng.choices(["assistance", "incident", "administrative", "go_live"], [55, 20, 15, 10])[0]
    channel = "portal" if kind in ("assistance", "incident") or rng.random() < 0.5 else "email"
    steps: list[tuple[EventType, float, dict[str, Any]]] = [(E.ACKNOWLEDGED, rng.uniform(0.2, 30), {})]
    if kind == "incident":
        steps += [(E.CUSTOMER_INFORMED, rng.uniform(0.5, 6), {"message": "Délai", "restoration_eta": None}),
                  (E.CUSTOMER_INFORMED, rng.uniform(1, 10), {"message": "Point"})]
    if kind in ("administrative", "go_live") or rng.random() < 0.2:
        steps += [(E.WAITING_FOR_CUSTOMER, rng.uniform(2, 72), {"reason": "Pièce"}),
                  (E.CUSTOMER_RESPONDED, rng.uniform(2, 200), {"message": "Voici", "elements_complete": True})]
    if rng.random() < 0.6:
        steps.append((E.CUSTOMER_INFORMED, rng.uniform(1, 48), {"message": "Nous étudions votre demande."}))
    steps += [(E.CUSTOMER_INFORMED, rng.uniform(2, 150), {"message": "Réponse", "answer": True}),
              (E.RESOLVED, rng.uniform(1, 400), {"resolution": "Fait"}), (E.CLOSED, rng.uniform(24, 100), {})]
    payload = {"kind": kind, "channel": channel, "member": f"m-{rng.randrange(300):03d}", "product": "ent",
               "subject": "Demande", **({"elements_complete": True} if kind == "go_live" else {})}
    events = [new_event(E.TICKET_FILED, tid, occurred_at=filed, recorded_at=filed, actor="bench", payload=payload,
                        event_id=uuid.uuid4())]
    at = filed
    for event_type, hours, extra in steps:
        at += timedelta(hours=hours)
        if extra.get("restoration_eta", 0) is None:
            extra = {**extra, "restoration_eta": at + timedelta(hours=4)}
        events.append(new_event(event_type, tid, occurred_at=at, recorded_at=at, actor="bench", payload=extra,
                                event_id=uuid.uuid4()))
    return events


def fill(url: str, start: int, end: int) -> int:
    """Append tickets ``start`` … ``end`` - 1 with their chain; returns the events written."""
    engine = create_engine(url)
    rng = random.Random(start)
    with engine.connect() as conn:
        prev = conn.scalar(select(ARCHIVE.c.hash).order_by(ARCHIVE.c.seq.desc()).limit(1)) or GENESIS_HASH
        seq = conn.scalar(select(ARCHIVE.c.seq).order_by(ARCHIVE.c.seq.desc()).limit(1)) or 0
    written, rows = 0, []
    for n in range(start, end):
        for event in ticket(rng, n):
            raw = encode_event(event)
            digest = chain_hash(prev, raw)
            seq += 1
            rows.append({"event_id": str(event.event_id), "ticket_id": event.ticket_id, "type": str(event.type),
                         "occurred_at": event.occurred_at, "recorded_at": event.recorded_at, "actor": "bench",
                         "topic": "bench", "partition": 0, "offset": seq, "envelope": raw.decode(),
                         "prev_hash": prev, "hash": digest})
            prev = digest
        if len(rows) >= 20_000 or n == end - 1:
            with engine.begin() as conn:
                conn.execute(insert(ARCHIVE), rows)
            written += len(rows)
            rows = []
    engine.dispose()
    return written


def measure(what: str, url: str, draft: str) -> dict[str, Any]:
    """One measure in this process: seconds, events, tickets and maximum RSS."""
    engine = create_engine(url)
    policy = load_policy()
    t0 = time.perf_counter()
    if what == "replay":
        result = replay(archive_records(engine), policy, Filters(), source="archive", engine=engine,
                        timelines=False, summarize_closed=True)
        out = {"events": result.events_read, "tickets": result.closed_summarized + len(result.tickets),
               "findings": len(result.findings)}
    else:
        filters = Filters(filed_from=YEAR[0], filed_to=YEAR[1])
        comparison = compare(ticket_histories(archive_records(engine, by_ticket=True), filters), policy,
                             load_policy(draft), datetime(2027, 6, 1, tzinfo=UTC))
        doc = comparison.document(source="archive", filters=filters, draft_name=Path(draft).name, draft_version=None)
        out = {"events": comparison.events, "tickets": comparison.tickets, "changes": len(doc["changes"])}
    out["seconds"] = time.perf_counter() - t0
    out["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run(what: str, url: str, draft: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--measure", what, "--database", url, "--draft", draft],
                          check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,50000", help="tickets in the archive at each measure")
    parser.add_argument("--database", default="")
    parser.add_argument("--draft", default=str(ROOT / "docs" / "drafts" / "saturday-ouvrable.toml"))
    parser.add_argument("--measure", choices=["replay", "whatif"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.database, args.draft)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database or f"sqlite:///{Path(tmp) / 'archive.db'}"
        create_schema(create_engine(url))
        filled = 0
        for size in (int(x) for x in args.sizes.split(",")):
            t0 = time.perf_counter()
            fill(url, filled, size)
            filled = size
            print(f"archive of {size:,} tickets ({url.split(':', 1)[0]}) written in {time.perf_counter() - t0:.0f} s",
                  flush=True)
            whatif, plain = run("whatif", url, args.draft), run("replay", url, args.draft)
            print(f"  what-if ({Path(args.draft).name}): {whatif['tickets']:,} tickets, {whatif['events']:,} events "
                  f"in {whatif['seconds']:.1f} s ({whatif['events'] / whatif['seconds']:,.0f} events/s), "
                  f"{whatif['changes']:,} clocks change; max RSS {whatif['max_rss_mib']:.0f} MiB", flush=True)
            print(f"  plain audit replay of the same archive: {plain['events']:,} events in {plain['seconds']:.1f} s "
                  f"({plain['events'] / plain['seconds']:,.0f} events/s); max RSS {plain['max_rss_mib']:.0f} MiB; "
                  f"what-if / replay time {whatif['seconds'] / plain['seconds']:.2f}", flush=True)


if __name__ == "__main__":
    main()

"""A Prometheus scrape of the projector at two archive sizes in one run (#20): it reads the
open queue and the running totals (``projections.totals``), so its cost should follow the
open tickets, not the history (target: ratio ≤ 1.5 between 10,000 and 1,000,000 archived
events, the same 500 open tickets). Printed next to ``totals.recount``, which computes the
same totals from the whole history as every scrape did before. Prints its figures; no
assertions.

    .venv/bin/python bench/metrics_bench.py [--sizes 10000,1000000] [--database URL]

The history is written directly in SQL (closed tickets of 5 events each: filed,
acknowledged, a breach for one in four, resolved, closed; their stopped clocks and
judgments; a few dead letters), then the totals are filled as the migration does. The scrape
is taken at the last filing, so this month's verdicts (``projections.compliance``) are read
from a month of history. Default: a fresh database on
the local PostgreSQL (postgres@127.0.0.1), dropped at the end.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import create_engine, insert, text

from projections import totals
from projections.metrics import ProjectionCollector
from projections.migrate import create_schema
from projections.models import ARCHIVE, CLOCKS, DEAD, JUDGMENTS, TICKETS
from sla.events import EventType, encode_event, new_event

OPEN = 500
MEMBERS = 300
BASE = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)


def ticket_row(tid: str, i: int, status: str, acked: datetime | None) -> dict[str, Any]:
    filed = BASE + timedelta(minutes=i)
    return {"ticket_id": tid, "status": status, "kind": "assistance", "channel": "portal", "product": "ent",
            "member": f"m-{i % MEMBERS}", "subject": "s", "filed_at": filed, "recorded_at": filed,
            "acknowledged_at": acked, "resolved_at": None, "closed_at": None, "restoration_eta": None, "version": 5,
            "state": {}}


def fill(engine: Any, start: int, n: int) -> None:
    """Archive events ``start`` … ``n`` - 1 as closed tickets of 5 events."""
    archive, tickets, judgments, clocks = [], [], [], []
    seq = start

    def flush() -> None:
        with engine.begin() as conn:
            if archive:
                conn.execute(insert(ARCHIVE), archive)
            if tickets:
                conn.execute(insert(TICKETS), tickets)
            if judgments:
                conn.execute(insert(JUDGMENTS), judgments)
            if clocks:
                conn.execute(insert(CLOCKS), clocks)
        archive.clear(), tickets.clear(), judgments.clear(), clocks.clear()

    while seq < n:
        i = seq // 5
        tid = f"H-{i:08d}"
        filed = BASE + timedelta(minutes=i)
        acked = filed + timedelta(hours=1 + i % 7)
        breached = i % 4 == 0
        tickets.append(ticket_row(tid, i, "closed", acked))
        judgments.append({"ticket_id": tid, "sla": "intake", "outcome": "breached" if breached else "met",
                          "member": f"m-{i % MEMBERS}", "judged_at": acked})
        clocks.append({"ticket_id": tid, "sla": "intake", "member": f"m-{i % MEMBERS}", "kind": "assistance",
                       "contractual": True, "status": "breached" if breached else "met", "deadline": filed,
                       "warning_at": filed, "started_at": filed, "stopped_at": acked,
                       "remaining_at_close_seconds": -60.0, "policy_version": "convention-2026.1",
                       "explanation": "x", "evaluated_at": acked,
                       "decided_at": filed if breached else acked})
        third = "sla_breached" if breached else "customer_informed"
        for step, kind in enumerate(("ticket_filed", "acknowledged", third, "resolved", "closed")):
            at = filed + timedelta(hours=step)
            if kind == "sla_breached":
                envelope = encode_event(new_event(EventType.SLA_BREACHED, tid, occurred_at=at, recorded_at=at,
                                                  actor="slaledger/sla-clock",
                                                  payload={"sla": "intake", "deadline": at,
                                                           "policy_version": "convention-2026.1",
                                                           "explanation": "Échéance dépassée."})).decode()
            else:
                envelope = f'{{"event_id":"{uuid.uuid4()}","ticket_id":"{tid}","type":"{kind}"}}'
            archive.append({"event_id": str(uuid.uuid4()), "ticket_id": tid, "type": kind, "occurred_at": at,
                            "recorded_at": at, "actor": "bench", "topic": "slaledger.ticket-events", "partition": 0,
                            "offset": seq, "envelope": envelope, "prev_hash": "0" * 64, "hash": "1" * 64})
            seq += 1
        if len(archive) >= 20_000:
            flush()
    flush()


def open_queue(engine: Any) -> None:
    """The same open tickets at every size, each with a running intake clock."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(insert(TICKETS), [ticket_row(f"O-{i:04d}", i, "open", None) for i in range(OPEN)])
        conn.execute(insert(CLOCKS), [{
            "ticket_id": f"O-{i:04d}", "sla": "intake", "member": f"m-{i % MEMBERS}", "kind": "assistance",
            "contractual": True, "status": "running", "deadline": now + timedelta(hours=i % 9 - 2),
            "warning_at": now + timedelta(hours=i % 9 - 3), "started_at": now - timedelta(hours=1),
            "stopped_at": None, "remaining_at_close_seconds": None, "policy_version": "convention-2026.1",
            "explanation": "x", "evaluated_at": now} for i in range(OPEN)])
        conn.execute(insert(DEAD), [{"topic": "slaledger.dead-letters", "partition": 0, "offset": i,
                                     "reason_kind": "unreadable event", "reason": "unreadable event: x",
                                     "origin_topic": None, "origin_partition": None, "origin_offset": None,
                                     "dead_lettered_at": now} for i in range(20)])


def timed(fn: Any, runs: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--database", help="an empty database (default: a fresh one on the local PostgreSQL)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    admin, name = None, None
    url = args.database
    if url is None:
        name = f"metrics_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    engine = create_engine(url)
    try:
        create_schema(engine)
        open_queue(engine)
        done, figures = 0, []
        for size in sizes:
            t0 = time.perf_counter()
            fill(engine, done, size)
            done = size
            with engine.begin() as conn:
                recount_s = timed(lambda conn=conn: totals.recount(conn), 3)
                totals.fill(conn, totals.recount(conn))
            with engine.connect() as conn:  # as autovacuum would have by then (committed: kept)
                conn.execute(text("ANALYZE"))
                conn.commit()
            # "now" at the last filing: this month's verdicts (slaledger_sla_month_clocks) are a
            # month of history, up to ~44,000 clocks at one filing a minute
            last = BASE + timedelta(minutes=size // 5)
            collector = ProjectionCollector(engine, now=lambda last=last: last)
            scrape_s = timed(lambda c=collector: [s for family in c.collect() for s in family.samples], 7)
            series = sum(len(family.samples) for family in collector.collect())
            figures.append((size, scrape_s, recount_s, series))
            print(f"{size:>9,} archived events (filled in {time.perf_counter() - t0:.0f} s): "
                  f"scrape {scrape_s * 1000:.1f} ms ({series} samples), history recounted {recount_s * 1000:.0f} ms",
                  flush=True)
        (small, s_scrape, s_recount, _), (large, l_scrape, l_recount, _) = figures[0], figures[-1]
        print(f"scrape ratio {large:,}/{small:,} events: {l_scrape / s_scrape:.2f} (target ≤ 1.5); "
              f"the former per-scrape history read (recount): {l_recount / s_recount:.1f}")
    finally:
        engine.dispose()
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()

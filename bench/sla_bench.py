"""sla/ throughput on one core: intake deadlines per second and events folded per second.

Targets (issue 2): >= 200,000 deadlines/s and >= 300,000 events/s. Run:
    .venv/bin/python bench/sla_bench.py [--tickets 50000]
"Events folded" = decoding-free fold of pre-built events into ticket state plus one
clock evaluation per ticket (what the live pipeline does per batch).
"""

from __future__ import annotations

import argparse
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

from sla.clock import evaluate, first_deadline
from sla.events import EventType, new_event
from sla.ticket import Ticket
from slaledger.settings import load_policy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deadlines", type=int, default=300_000)
    parser.add_argument("--tickets", type=int, default=50_000)
    args = parser.parse_args()
    policy = load_policy()
    version = policy.versions[0]
    intake = next(s for s in version.slas if s.name == "intake")
    rng = random.Random(7)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    instants = [base + timedelta(seconds=rng.randrange(0, 2 * 365 * 86400)) for _ in range(args.deadlines)]

    t0 = time.perf_counter()
    for instant in instants:
        first_deadline(intake, version, instant)
    dt = time.perf_counter() - t0
    print(f"intake deadlines: {len(instants) / dt:,.0f}/s ({len(instants):,} in {dt:.2f} s; target >= 200,000/s)")

    tickets = []
    for i in range(args.tickets):
        tid = f"T-{i}"
        filed_at = base + timedelta(seconds=rng.randrange(0, 365 * 86400))
        kind = rng.choice(["assistance", "incident", "administrative", "go_live"])
        ev = [
            new_event(EventType.TICKET_FILED, tid, occurred_at=filed_at, recorded_at=filed_at, actor="b",
                      payload={"kind": kind, "channel": rng.choice(["portal", "phone"]), "product": "p",
                               "member": "m", "subject": "s"}, event_id=uuid.uuid4()),
        ]
        t = filed_at
        for event_type, payload in [
            (EventType.ACKNOWLEDGED, {}),
            (EventType.CUSTOMER_INFORMED, {"message": "m", "restoration_eta": t + timedelta(days=1)}),
            (EventType.WAITING_FOR_CUSTOMER, {}),
            (EventType.CUSTOMER_RESPONDED, {"elements_complete": True}),
            (EventType.RESOLVED, {}),
        ]:
            t += timedelta(minutes=rng.randrange(1, 600))
            ev.append(new_event(event_type, tid, occurred_at=t, recorded_at=t, actor="b", payload=payload,
                                event_id=uuid.uuid4()))
        tickets.append(ev)
    total = sum(len(e) for e in tickets)
    now = base + timedelta(days=400)

    t0 = time.perf_counter()
    for events in tickets:
        ticket = Ticket(events[0].ticket_id)
        for event in events:
            ticket.apply(event)
        evaluate(ticket, policy, now)
    dt = time.perf_counter() - t0
    print(f"events folded (+1 clock evaluation per ticket): {total / dt:,.0f}/s "
          f"({total:,} events, {len(tickets):,} tickets in {dt:.2f} s; target >= 300,000/s)")

    t0 = time.perf_counter()
    for events in tickets:
        ticket = Ticket(events[0].ticket_id)
        for event in events:
            ticket.apply(event)
    dt = time.perf_counter() - t0
    print(f"events applied (state only): {total / dt:,.0f}/s")


if __name__ == "__main__":
    main()

"""Where a command's time goes in the worker's own code, by stage, in microseconds per
command (issue #20): what remains once Faust and the broker are taken away. No Kafka: the
stages are the ones ``streams.app.Pipeline._process`` runs for each record, on the same
functions, over n tickets each filed then acknowledged (the pipeline bench's load).

    .venv/bin/python bench/domain_profile.py [--tickets 20000] [--profile]

Stages: decode the command; decide (sla.ticket state machine, policy check) and apply the
events (fold); the wakeup (clock evaluation, due facts, next deadline); encode the events;
the stored value (state to dict, then JSON as the table's changelog carries it); reading
a stored ticket back (JSON, dict to state) as the next batch does. ``--profile`` adds the
functions that cost most under cProfile.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime

from sla.events import encode_event
from sla.ticket import Command, CommandType, Ticket, decide, ticket_from_dict
from slaledger.settings import load_policy
from streams.codec import decode_command, encode_command
from streams.processor import TicketProcessor
from streams.table_values import stored

FILE = {"kind": "assistance", "channel": "portal", "member": "m-001", "product": "ent", "subject": "bench"}


def commands(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        tid = f"B-{i:07d}"
        for command_type, payload in ((CommandType.FILE, FILE), (CommandType.ACKNOWLEDGE, {})):
            out.append(encode_command(Command(command_type, tid, "bench", payload, command_id=uuid.uuid4())))
    return out


def run(records: list[bytes], processor: TicketProcessor) -> dict[str, float]:
    """Seconds spent per stage over all records."""
    spent: dict[str, float] = defaultdict(float)
    table: dict[str, bytes] = {}
    clock = time.perf_counter
    for data in records:
        now = datetime.now(UTC)
        t0 = clock()
        command = decode_command(data)
        t1 = clock()
        raw = table.get(command.ticket_id)
        ticket = ticket_from_dict(json.loads(raw)) if raw else None
        t2 = clock()
        events = decide(ticket, command, now, policy=processor.policy)
        state = ticket if ticket is not None else Ticket(command.ticket_id)
        for event in events:
            state.apply(event)
        t3 = clock()
        wakeup = processor.wakeup(state, now)
        t4 = clock()
        encoded = [encode_event(e) for e in events]
        t5 = clock()
        table[command.ticket_id] = json.dumps(stored(state, wakeup)).encode()
        t6 = clock()
        spent["decode command"] += t1 - t0
        spent["read stored ticket"] += t2 - t1
        spent["decide + fold"] += t3 - t2
        spent["wakeup (clock)"] += t4 - t3
        spent["encode events"] += t5 - t4
        spent["store ticket (dict + JSON)"] += t6 - t5
        assert encoded
    return spent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tickets", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    processor = TicketProcessor(load_policy())
    records = commands(args.tickets)
    run(records[:2000], processor)  # warm caches (calendars, policy lookups)
    spent = run(records, processor)
    total = sum(spent.values())
    n = len(records)
    print(f"{n:,} commands ({args.tickets:,} tickets filed then acknowledged), worker's own code only:")
    for stage, seconds in spent.items():
        print(f"  {stage:<28} {seconds / n * 1e6:7.1f} µs  ({seconds / total:.0%})")
    print(f"  {'total':<28} {total / n * 1e6:7.1f} µs  = {n / total:,.0f} commands/s on one core")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(run, records, processor)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()

"""Audit replay speed (issues 5, 31): replay N events from the broker vs a raw kafka-python
consumer reading the same topic, in the same run; RSS before, at 300,000 events read and at
the end (memory must not follow the log). Runs on the
embedded Tansu and on a single-node Apache Kafka, each in a process of its own (so each
RSS is its own), and prints both side by side.

    .venv/bin/python bench/audit_bench.py [--events 1000000] [--brokers tansu,kafka]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kafka import KafkaConsumer

from projections.audit.kafka_source import kafka_records
from projections.audit.replay import Filters, replay
from projections.audit.sources import LogRecord
from sla.events import EventType, encode_event, new_event
from slaledger.brokers.embedded import EmbeddedBroker
from slaledger.brokers.kafka_cluster import KafkaCluster, provision
from slaledger.settings import load_policy
from streams.kafka_security import client_options
from streams.kafka_tools import partitions_of, producer, true_end_offsets
from streams.topics import EVENTS

MID = 300_000  # events read when the RSS is noted the first time
STEPS = [EventType.ACKNOWLEDGED, EventType.WAITING_FOR_CUSTOMER, EventType.RESOLVED, EventType.CLOSED]


def rss_mib() -> float:
    """The maximum RSS of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def sampled(records: Iterator[LogRecord], at: int, samples: dict[str, float]) -> Iterator[LogRecord]:
    """The records, with the RSS noted once ``at`` of them have been read."""
    for n, record in enumerate(records, 1):
        if n == at:
            samples["rss_mid"], samples["max_rss_mid"] = current_rss_mib(), rss_mib()
        yield record


def histories(total: int) -> Iterator[tuple[bytes, bytes]]:
    """At least ``total`` event records (key, value): tickets filed, acknowledged, waiting,
    resolved and closed an hour apart. The domain builds one ticket's events
    (``sla.events.new_event``); every ticket is a copy with its own ticket id, member and event
    ids (building each one took a millisecond on the loaded machine: 1,000,000 took minutes)."""
    proto, at = "A-00000000", datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    events = [new_event(EventType.TICKET_FILED, proto, occurred_at=at, recorded_at=at, actor="bench",
                        payload={"kind": "assistance", "channel": "portal", "member": "m-000",
                                 "product": "ent", "subject": "s"}, event_id=uuid.uuid4())]
    events += [new_event(kind, proto, occurred_at=at + timedelta(hours=step), recorded_at=at + timedelta(hours=step),
                         actor="bench", event_id=uuid.uuid4()) for step, kind in enumerate(STEPS, 1)]
    template = [(str(e.event_id).encode(), encode_event(e)) for e in events]
    for n in range(0, total, len(events)):
        tid = f"A-{n:08d}".encode()
        member = f'"m-{n // len(events) % 300:03d}"'.encode()
        for event_id, value in template:
            yield tid, (value.replace(proto.encode(), tid).replace(b'"m-000"', member)
                        .replace(event_id, str(uuid.uuid4()).encode()))


def one_broker(kind: str, total: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, (
            EmbeddedBroker(log_path=Path(tmp) / "tansu.log") if kind == "tansu"
            else KafkaCluster(Path(tmp) / "kafka", 1)) as broker:
        print(f"== {kind}", flush=True)
        provision(broker, 4)  # topics and ACLs; this process is the admin of a Kafka cluster
        kafka = producer(broker.bootstrap, embedded=False, linger_ms=5, batch_size=256 * 1024)
        t0, n = time.perf_counter(), 0
        for key, value in histories(total):
            kafka.send(EVENTS, key=key, value=value)
            n += 1
        kafka.flush()
        kafka.close()
        print(f"produced {n:,} events in {time.perf_counter() - t0:.1f} s")

        # the replay's reader's settings (``read_topic``): read_committed, 5,000 records a poll, TLS on Kafka
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
                                 isolation_level="read_committed", max_poll_records=5_000, **client_options())
        tps = partitions_of(consumer, EVENTS)
        consumer.assign(tps)
        ends = true_end_offsets(consumer, tps)
        t0, seen = time.perf_counter(), 0
        while seen < n:
            seen += sum(len(v) for v in consumer.poll(timeout_ms=500).values())
        raw = seen / (time.perf_counter() - t0)
        consumer.close()
        print(f"raw kafka-python consumer: {raw:,.0f} records/s (ends {sum(ends.values()):,})")

        before = current_rss_mib()
        samples = {"rss_mid": 0.0, "max_rss_mid": 0.0}
        t0 = time.perf_counter()
        result = replay(sampled(kafka_records(broker.bootstrap), MID, samples), load_policy(), Filters(),
                        source="kafka", timelines=False, summarize_closed=True)
        elapsed = time.perf_counter() - t0
        rate = result.events_read / elapsed
        print(f"audit replay (decode + sla/ fold, whole log, closed tickets summarized): {rate:,.0f} events/s "
              f"({result.events_read:,} events, {result.closed_summarized:,} closed tickets summarized, "
              f"{len(result.tickets):,} open tickets held, {elapsed:.1f} s)")
        end = current_rss_mib()
        print(f"ratio replay / raw consumer: {rate / raw:.2f} (target >= 0.8)")
        print(f"RSS: {before:,.0f} MiB before replay, {samples['rss_mid']:,.0f} MiB at {MID:,} events, {end:,.0f} MiB "
              f"at {result.events_read:,}; max RSS {samples['max_rss_mid']:,.0f} -> {rss_mib():,.0f} MiB "
              f"(the raw consumer's run included; targets <= 200 MiB, flat)", flush=True)
        return {"raw": raw, "replay": rate, "ratio": rate / raw, "rss_before": before, "rss_mid": samples["rss_mid"],
                "rss_after": end, "max_rss_mid": samples["max_rss_mid"], "max_rss": rss_mib()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--brokers", default="tansu,kafka", help="comma-separated: tansu, kafka")
    parser.add_argument("--json", help=argparse.SUPPRESS)  # one broker, figures to this file (child process)
    args = parser.parse_args()
    if args.json:
        Path(args.json).write_text(json.dumps(one_broker(args.brokers, args.events)))
        return
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.brokers.split(","):
            out = Path(tmp) / f"{kind}.json"
            subprocess.run([sys.executable, __file__, "--events", str(args.events), "--brokers", kind,
                            "--json", str(out)], check=True)
            figures[kind] = json.loads(out.read_text())
    print(f"\n{args.events:,} events | raw kafka-python rec/s | audit replay events/s | replay / raw | "
          f"RSS before / at {MID:,} / at the end | max RSS at {MID:,} / at the end")
    for kind, f in figures.items():
        print(f"{kind:>6} | {f['raw']:,.0f} | {f['replay']:,.0f} | {f['ratio']:.2f} | "
              f"{f['rss_before']:,.0f} / {f['rss_mid']:,.0f} / {f['rss_after']:,.0f} MiB | "
              f"{f['max_rss_mid']:,.0f} / {f['max_rss']:,.0f} MiB")
    for kind, f in figures.items():  # one line per target, for the lead
        verdict(f"replay / raw reader, {kind}, {args.events:,} events", f"{f['ratio']:.2f}", ">= 0.8",
                f["ratio"] >= 0.8)
        verdict(f"replay max RSS, {kind}, at {MID:,} / {args.events:,} events",
                f"{f['max_rss_mid']:,.0f} / {f['max_rss']:,.0f} MiB", "<= 200 MiB and flat (+10 % at most)",
                f["max_rss"] <= 200 and f["max_rss"] <= 1.1 * f["max_rss_mid"])


def verdict(what: str, value: str, target: str, met: bool) -> None:
    print(f"SUMMARY {what}: {value} (target {target}): {'met' if met else 'NOT met'}", flush=True)


if __name__ == "__main__":
    main()

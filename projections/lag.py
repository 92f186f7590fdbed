"""The projector's consumer lag, measured apart from the scrape (``LagProbe``)."""

from __future__ import annotations

import threading
import time
from typing import Any

import structlog
from kafka import KafkaConsumer
from sqlalchemy import Engine

from sla.log_names import EVENTS
from streams.kafka_security import client_options
from streams.kafka_tools import partitions_of, true_end_offsets

from .projection import checkpoints

log = structlog.get_logger(__name__)


# A range of offsets this short is read and its records counted: on Apache Kafka the worker
# commits each batch in a transaction (streams/fence.py), whose commit marker takes an offset
# no reader receives, so at rest the end is one past the last event. Longer ranges (a backlog)
# count by offsets, markers included (one per committed batch).
COUNTED_BELOW = 64
COUNT_SECONDS = 1.0


def consumer_lag(engine: Engine, bootstrap: str) -> dict[tuple[str, int], int]:
    """By events partition, the records the projector has not projected yet."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             isolation_level="read_committed", **client_options())
    try:
        tps = partitions_of(consumer, EVENTS)
        consumer.assign(tps)
        ends = true_end_offsets(consumer, tps)
        done = checkpoints(engine)
        ranges = {tp: (done.get(tp.partition, -1) + 1, end) for tp, end in ends.items()}
        counted = _count_records(consumer, {tp: r for tp, r in ranges.items() if 0 < r[1] - r[0] <= COUNTED_BELOW})
    finally:
        consumer.close()
    return {(tp.topic, tp.partition): counted.get(tp, max(0, end - start)) for tp, (start, end) in ranges.items()}


def _count_records(consumer: KafkaConsumer, ranges: dict[Any, tuple[int, int]]) -> dict[Any, int]:
    """The committed records in each [start, end), for those read to their end within
    COUNT_SECONDS (an open transaction holds a read_committed reader before it)."""
    counts = dict.fromkeys(ranges, 0)
    if not ranges:
        return {}
    consumer.assign(list(ranges))
    for tp, (start, _) in ranges.items():
        consumer.seek(tp, start)
    deadline = time.monotonic() + COUNT_SECONDS
    pending = set(ranges)
    while pending and time.monotonic() < deadline:
        for tp, records in consumer.poll(timeout_ms=100).items():
            if tp in pending:
                counts[tp] += sum(1 for r in records if r.offset < ranges[tp][1])
        pending = {tp for tp in pending if consumer.position(tp) < ranges[tp][1]}
    return {tp: count for tp, count in counts.items() if tp not in pending}


class LagProbe:
    """The projector's consumer lag, measured in a background thread: a scrape never waits
    on Kafka (with the broker down, /metrics would time out and every SQL-derived gauge
    would vanish with it). A measure older than ``stale_after`` is not reported."""

    def __init__(self, engine: Engine, bootstrap: str, interval: float = 5.0, stale_after: float = 60.0) -> None:
        self.engine, self.bootstrap, self.interval, self.stale_after = engine, bootstrap, interval, stale_after
        self._latest: dict[tuple[str, int], int] = {}
        self._at = float("-inf")
        threading.Thread(target=self._run, name="lag-probe", daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                self._latest, self._at = consumer_lag(self.engine, self.bootstrap), time.monotonic()
            except Exception as exc:  # the broker or the database is down: keep the last measure
                log.warning("consumer lag not measured", error=str(exc))
            time.sleep(self.interval)

    def __call__(self) -> dict[tuple[str, int], int]:
        return self._latest if time.monotonic() - self._at < self.stale_after else {}

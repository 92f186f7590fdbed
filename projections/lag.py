"""The projector's consumer lag, measured apart from the scrape (``LagProbe``)."""

from __future__ import annotations

import threading
import time

import structlog
from kafka import KafkaConsumer
from sqlalchemy import Engine

from sla.log_names import EVENTS
from streams.kafka_security import client_options
from streams.kafka_tools import partitions_of, true_end_offsets

from .projection import checkpoints

log = structlog.get_logger(__name__)


def consumer_lag(engine: Engine, bootstrap: str) -> dict[tuple[str, int], int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             **client_options())
    try:
        tps = partitions_of(consumer, EVENTS)
        consumer.assign(tps)
        ends = true_end_offsets(consumer, tps)
    finally:
        consumer.close()
    done = checkpoints(engine)
    return {(tp.topic, tp.partition): max(0, end - (done.get(tp.partition, -1) + 1)) for tp, end in ends.items()}


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

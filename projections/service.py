"""The projector process: migrate, project (follow the topic), serve /metrics, stop on SIGTERM."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from types import FrameType

import structlog
from kafka import KafkaConsumer
from prometheus_client import CollectorRegistry, start_http_server
from sqlalchemy import Engine, create_engine

from slaledger.settings import Settings
from streams.kafka_security import client_options
from streams.kafka_tools import partitions_of, true_end_offsets
from streams.topics import EVENTS

from .alerts import start_alert_pusher
from .metrics import ProjectionCollector
from .projector import checkpoints, create_schema, run_projector
from .projector import rebuild as rebuild_projection

log = structlog.get_logger(__name__)


def engine_for(settings: Settings) -> Engine:
    if settings.database.startswith("sqlite:///"):
        Path(settings.database.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return create_engine(settings.database, pool_pre_ping=True)


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


def serve_projector(settings: Settings, *, rebuild: bool = False, follow: bool = True) -> int:
    policy = settings.policy()
    engine = engine_for(settings)
    create_schema(engine)
    log.info("projector configured", settings=settings.public())
    if rebuild:
        rebuild_projection(engine, settings.bootstrap, policy)
        return 0
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("projector stopping", signal=signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if settings.metrics_port:
        registry = CollectorRegistry()
        registry.register(ProjectionCollector(engine, lag=LagProbe(engine, settings.bootstrap)))
        start_http_server(settings.metrics_port, addr=settings.web_host, registry=registry)
        log.info("projector metrics served", url=f"http://{settings.web_host}:{settings.metrics_port}/metrics")
    if settings.alertmanager_url:
        start_alert_pusher(engine, settings.alertmanager_url, settings.ticket_url, settings.alert_interval, stop)
    applied = run_projector(engine, settings.bootstrap, policy, follow=follow, should_stop=stop.is_set)
    log.info("projector stopped", events_applied=applied)
    return 0

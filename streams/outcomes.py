"""Commands' outcomes: how an HTTP caller awaits the agent's answer to the command it sent."""

from __future__ import annotations

import asyncio
from typing import Protocol

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from service.outcomes import Outcome, OwnerChanged

from .kafka_security import KafkaSecurity, aiokafka_options
from .topics import OUTCOMES

log = structlog.get_logger(__name__)


class WaiterSettings(KafkaSecurity, Protocol):
    """What the waiter reads of the settings."""

    @property
    def bootstrap(self) -> str: ...
    @property
    def embedded(self) -> bool: ...
    @property
    def partitions(self) -> int: ...


class OutcomeWaiter:
    """Lets an HTTP handler await the outcome of the command it sent.

    Each worker reads every partition of the outcomes topic (no consumer group), from the
    end as of its start; outcomes for commands it did not send are ignored. Several callers
    may wait for one command id (a retry with the same idempotency key while the first
    request is still waiting): the first outcome answers them all.
    """

    def __init__(self, settings: WaiterSettings) -> None:
        self.settings = settings
        self._futures: dict[str, list[asyncio.Future[Outcome]]] = {}
        self._partitions: dict[str, int] = {}  # command id → its ticket's partition
        self.ready = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None

    def expect(self, command_id: str, partition: int | None = None) -> asyncio.Future[Outcome]:
        """A future answered by the command's outcome; ``partition``: its ticket's, so that a
        fenced partition can turn its callers away (``abandon``)."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._futures.setdefault(command_id, []).append(future)
        if partition is not None:
            self._partitions[command_id] = partition
        return future

    def forget(self, command_id: str, future: asyncio.Future[Outcome]) -> None:
        waiting = self._futures.get(command_id, [])
        if future in waiting:
            waiting.remove(future)
        if not waiting:
            self._futures.pop(command_id, None)
            self._partitions.pop(command_id, None)

    def abandon(self, partition: int, reason: str) -> int:
        """Answer every caller waiting on a command of ``partition`` with ``OwnerChanged``
        (HTTP 503: retry with the same key, on any worker): this worker was fenced from the
        partition, so what it decided of it was refused and the new owner decides again. Returns
        how many callers were turned away."""
        turned = 0
        for command_id in [cid for cid, p in self._partitions.items() if p == partition]:
            for future in self._futures.get(command_id, []):
                if not future.done():
                    future.set_exception(OwnerChanged(reason))
                    turned += 1
        return turned

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap, enable_auto_commit=False, group_id=None,
            auto_offset_reset="latest", **aiokafka_options(self.settings),
            # only outcomes of committed batches: never a fenced worker's (streams.fence)
            isolation_level="read_uncommitted" if self.settings.embedded else "read_committed",
            # Tansu answers an empty fetch after half the wait even when an outcome arrives
            # meanwhile: a short wait there; Kafka answers as soon as a record arrives.
            fetch_max_wait_ms=50 if self.settings.embedded else 500,
        )
        await consumer.start()
        self._consumer = consumer
        try:
            tps = [TopicPartition(OUTCOMES, p) for p in range(self.settings.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:  # resolve the position now, before any command is sent
                await consumer.position(tp)
            self.ready.set()
            while True:
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    for record in records:
                        self._deliver(record.value)
        finally:
            self.ready.clear()
            await consumer.stop()

    def _deliver(self, value: bytes | None) -> None:
        try:
            outcome = Outcome.decode(value)
        except ValueError:
            log.warning("unreadable outcome ignored")
            return
        for future in self._futures.pop(outcome.command_id, []):
            if not future.done():
                future.set_result(outcome)

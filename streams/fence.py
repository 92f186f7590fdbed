"""The fence (#30): a worker that lost a partition cannot write to it any more.

"One worker per partition" holds only while the group sees every worker. A worker paused
past its session timeout (SIGSTOP, a long GC, a cut to the group coordinator) still holds
its producer and may append when it wakes: the textbook zombie writer. Kafka's own fence
is the producer epoch of a transactional id. Each partition of the worker's topics has
one transactional id (``transactional_id``, as Faust's ``exactly_once`` names one per
partition); the worker that is given the partition starts a producer with that id
(``claim``), and the broker bumps the id's epoch and aborts whatever the previous holder
left open. From then on the previous holder's sends and commits fail with a fencing error:
nothing it decided reaches a ``read_committed`` reader (projector, replay, the outcomes
waiter, the worker's own recovery).

A batch's writes for one partition — events, outcomes, dead letters, the tables'
changelog records and positions — go through ``transaction(partition)`` and are committed
at once. A fence is logged once per partition with the ticket partition it concerns,
counted (``Fence.fenced_writes``, for the entry point's ``slaledger_fenced_writes_total``:
``streams/`` has no metrics server), and raised as ``Fenced``: the caller drops
the partition and answers its waiting callers 503 (they retry with their key).

Faust reads the tables' changelogs (table recovery) with ``read_committed`` too
(``read_committed_changelogs``), and its recovery, which waits for the record before the
end offset, is told when the end is a transaction marker (``recovery_past_markers``).

The embedded broker (Tansu, dev mode) refuses InitProducerId: dev mode writes without
transactions (acks=all, no producer id) and so has no fence; it runs one worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import InvalidProducerEpoch, KafkaError, ProducerFenced
from aiokafka.producer.transaction_manager import TransactionState
from faust.transport.drivers import aiokafka as driver

from .topics import APP_ID

log = structlog.get_logger(__name__)

FENCING_ERRORS = (ProducerFenced, InvalidProducerEpoch)
STOP_SECONDS = 5.0
TRANSACTION_TIMEOUT_MS = 60_000  # a transaction its holder left open is aborted after this at the latest


TRANSACTIONAL_PREFIX = f"{APP_ID}-partition-"  # the worker's principal may use these ids only


def transactional_id(partition: int) -> str:
    """The one transactional id of a ticket partition: whoever holds it may write there."""
    return f"{TRANSACTIONAL_PREFIX}{partition}"


class Fenced(Exception):
    """Another worker owns this partition now: nothing of the batch was committed."""

    def __init__(self, partition: int) -> None:
        super().__init__(f"partition {partition} is fenced: another worker owns it")
        self.partition = partition


class Fence:
    """One transactional producer per partition this worker owns.

    ``options``: aiokafka producer options (bootstrap servers, security, batch size)."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = dict(options)
        self._producers: dict[int, AIOKafkaProducer] = {}
        self._depth: dict[int, int] = {}  # nested ``transaction`` of one partition: one transaction
        self._fenced: set[int] = set()  # logged once
        self.fenced_writes = 0  # transactions refused by the fence, since the start

    @property
    def partitions(self) -> set[int]:
        return set(self._producers)

    async def claim(self, partitions: set[int]) -> None:
        """Hold exactly ``partitions``: release the others, and take the new ones, which
        fences their previous holder (its open transaction is aborted before this returns)."""
        for partition in self.partitions - partitions:
            await self.release(partition)
        for partition in sorted(partitions - self.partitions):
            producer = AIOKafkaProducer(**self.options, acks="all", transactional_id=transactional_id(partition),
                                        transaction_timeout_ms=TRANSACTION_TIMEOUT_MS)
            try:
                await producer.start()
                await producer.begin_transaction()  # waits for the producer id: the epoch is bumped now
                await producer.commit_transaction()
            except BaseException:
                await producer.stop()
                raise
            self._producers[partition] = producer
            self._fenced.discard(partition)
            log.info("partition claimed", partition=partition, transactional_id=transactional_id(partition))

    async def release(self, partition: int) -> None:
        producer = self._producers.pop(partition, None)
        self._depth.pop(partition, None)
        if producer is not None:
            # a fenced producer's pending batches are never delivered, and ``stop`` waits for them
            with suppress(KafkaError, TimeoutError):
                await asyncio.wait_for(producer.stop(), STOP_SECONDS)

    def producer(self, partition: int) -> AIOKafkaProducer:
        """The partition's producer, to send inside ``transaction(partition)``."""
        producer = self._producers.get(partition)
        if producer is None:
            raise Fenced(partition)
        return producer

    @asynccontextmanager
    async def transaction(self, partition: int) -> AsyncIterator[AIOKafkaProducer]:
        """Everything sent with the yielded producer is committed together when the
        outermost ``transaction`` of the partition ends, or not at all."""
        producer = self.producer(partition)
        depth = self._depth.get(partition, 0)
        self._depth[partition] = depth + 1
        try:
            if depth == 0:
                await producer.begin_transaction()
            yield producer
            if depth == 0:
                await producer.flush()  # the changelog batches, whose futures nobody awaits
                await producer.commit_transaction()
        except Fenced:
            raise
        except FENCING_ERRORS as exc:
            await self._on_fenced(partition, exc)
            raise Fenced(partition) from None
        except BaseException as exc:
            if _fatal(producer):  # a send the broker fenced left the producer unusable
                await self._on_fenced(partition, exc)
                raise Fenced(partition) from None
            if depth == 0 and partition in self._producers:
                with suppress(KafkaError):
                    await producer.abort_transaction()
            raise
        finally:
            if partition in self._depth:
                self._depth[partition] -= 1

    async def _on_fenced(self, partition: int, exc: BaseException) -> None:
        self.fenced_writes += 1
        if partition not in self._fenced:
            self._fenced.add(partition)
            log.error("writes fenced: another worker owns the partition", partition=partition,
                      transactional_id=transactional_id(partition), error=type(exc).__name__)
        await self.release(partition)

    async def stop(self) -> None:
        for partition in list(self._producers):
            await self.release(partition)


def read_committed_changelogs() -> None:
    """Faust's consumer (table recovery) reads committed records only: a zombie's aborted
    changelog records never become a table's state. (Faust sets this only with its own
    ``exactly_once``, which would also run its transactions on its commit interval.)"""
    create = driver.AIOKafkaConsumerThread._create_worker_consumer
    if getattr(create, "read_committed", False):
        return

    def read_committed(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._isolation_level = "read_committed"  # read by ``start``, which builds the fetcher
        return consumer

    read_committed.read_committed = True  # type: ignore[attr-defined]
    driver.AIOKafkaConsumerThread._create_worker_consumer = read_committed  # type: ignore[method-assign]


MARKER_CHECK_SECONDS = 0.5


async def recovery_past_markers(app: Any) -> None:
    """Faust's table recovery ends when it has applied the record before a changelog
    partition's end; a transactional changelog ends with a commit marker, which no reader
    receives. When Faust's reader has passed the end and every record read is applied, the
    partition is recovered (what Faust's ``exactly_once`` does, ``detect_aborted_tx``)."""
    recovery = app.tables.recovery
    while True:
        await asyncio.sleep(MARKER_CHECK_SECONDS)
        if not recovery.in_recovery or not app.tables.changelog_queue.empty():
            continue
        offsets = recovery.active_offsets
        for tp, last in list(recovery.active_highwaters.items()):
            if last is None or offsets.get(tp) is None or offsets[tp] >= last:
                continue
            position = await app.consumer.position(tp)
            if position is not None and position > last:
                log.info("changelog recovered to its end marker", topic=tp.topic, partition=tp.partition, end=last)
                offsets[tp] = last


def _fatal(producer: AIOKafkaProducer) -> bool:
    """The producer can no longer be used: aiokafka moves it there when the broker fences
    one of its sends (the error then reaches the batch's future, not the commit)."""
    manager = producer._txn_manager
    return manager is not None and bool(manager.state == TransactionState.FATAL_ERROR)

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
end offset, is told when the end is a transaction marker (``streams.changelog_markers``).

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


class Unwritten(Exception):
    """Nothing of the partition's batch was committed (the transaction was aborted), while
    this worker already holds its effects (tables, positions): the caller drops its local
    state of the partition and has the group give it back, recovered from the log."""

    def __init__(self, partition: int, reason: str) -> None:
        super().__init__(f"partition {partition}: {reason}")
        self.partition = partition


class Fenced(Unwritten):
    """Another worker claimed the partition's transactional id since this worker did."""

    def __init__(self, partition: int) -> None:
        super().__init__(partition, "fenced: another worker claimed it")


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
        """Hold exactly ``partitions``, each with a fresh epoch: every assignment claims every
        assigned partition anew, kept ones included. A kept partition may have been another
        worker's in between (this worker paused past its session, then given it back): its
        old producer is fenced already. A claim fences the previous holder, and aborts what it
        left open, before this returns. The claims run in parallel (one InitProducerId round
        trip each, in the group's rebalance)."""
        started = asyncio.get_running_loop().time()
        await asyncio.gather(*(self.release(partition) for partition in list(self._producers)))
        claimed = await asyncio.gather(*(self._claim(partition) for partition in sorted(partitions)),
                                       return_exceptions=True)
        failures = [result for result in claimed if isinstance(result, BaseException)]
        if failures:
            raise failures[0]
        log.info("partitions claimed", partitions=sorted(partitions),
                 seconds=round(asyncio.get_running_loop().time() - started, 3))

    async def _claim(self, partition: int) -> None:
        producer = AIOKafkaProducer(**self.options, acks="all", transactional_id=transactional_id(partition),
                                    transaction_timeout_ms=TRANSACTION_TIMEOUT_MS)
        try:
            await producer.start()
            await producer.begin_transaction()  # waits for the producer id: the epoch is bumped now
            await producer.commit_transaction()
        except BaseException:
            with suppress(KafkaError, TimeoutError):
                await asyncio.wait_for(producer.stop(), STOP_SECONDS)
            raise
        self._producers[partition] = producer
        self._fenced.discard(partition)
        log.debug("partition claimed", partition=partition, transactional_id=transactional_id(partition))

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
        except Unwritten:
            raise
        except Exception as exc:
            cause = _fatal_error(producer) or exc  # a send the broker refused reaches the batch's future
            if isinstance(cause, FENCING_ERRORS):
                await self._on_fenced(partition, cause)
                raise Fenced(partition) from None
            if depth > 0:
                raise
            # not a fence (a timeout below min.insync.replicas, a missing ACL, aiokafka's sender
            # failing): aborted, and the producer let go; the next assignment claims it anew
            log.error("transaction aborted", partition=partition, transactional_id=transactional_id(partition),
                      error=repr(cause))
            if _fatal_error(producer) is None:
                with suppress(KafkaError, TimeoutError):
                    await asyncio.wait_for(producer.abort_transaction(), STOP_SECONDS)
            await self.release(partition)
            raise Unwritten(partition, f"transaction aborted: {cause!r}") from exc
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


def request_rejoin(app: Any) -> None:
    """Have Faust's consumer join its group again (on its own thread's loop): the group then
    assigns anew — the same partitions when nothing else changed — and this worker claims
    them anew and recovers the tables' partitions it dropped."""
    thread = app.consumer._thread
    consumer = thread._consumer
    if consumer is None:
        return
    thread.thread_loop.call_soon_threadsafe(consumer._coordinator.request_rejoin)
    log.info("rejoining the group: a refused partition is to be claimed and recovered again")


def _fatal_error(producer: AIOKafkaProducer) -> BaseException | None:
    """What made the producer unusable, or None: aiokafka moves it to its fatal state when
    its sender fails — the broker fenced a send (the error then reaches the batch's future,
    not the commit), or something else did (seen at a group's start: an AssertionError in
    aiokafka's sender), which is no fence."""
    manager = producer._txn_manager
    if manager is None or manager.state != TransactionState.FATAL_ERROR:
        return None
    waiter = manager._transaction_waiter
    if waiter.done() and not waiter.cancelled() and waiter.exception() is not None:
        return waiter.exception()
    return RuntimeError("producer in its fatal state")

"""Reading the worker's topics directly, without Faust: the records as the worker handles them.

``ThreadedReader``: the agent's commands reader, an aiokafka consumer on its own thread and
event loop, so that it fetches while the agent decides (Faust runs its own consumer on a
thread for the same reason). On the agent's loop, a fetch response is read only when the
agent awaits; measured on the embedded broker at 120,000 commands, the agent waited 8 s of
26 s for fetches.

``RangeReader``: a range of offsets of one partition, read on the agent's loop (gap repair,
recovery of the events topic)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from .topics import EVENTS

T = TypeVar("T")

BATCH_SIZE = 2000  # records decided together: the broker's acknowledgements are awaited once per batch


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes

    def context(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}


class ThreadedReader:
    def __init__(self, topic: str, **options: Any) -> None:
        self.topic, self.options = topic, options
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"reader-{topic}", daemon=True)
        self.consumer: AIOKafkaConsumer | None = None

    async def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self.loop))

    async def start(self) -> None:
        self.thread.start()

        async def start() -> None:  # created on the thread's loop, which it then uses
            self.consumer = AIOKafkaConsumer(**self.options)
            await self.consumer.start()

        await self._call(start())

    async def assign(self, partitions: set[int], seeks: Mapping[int, int]) -> None:
        """Read exactly ``partitions``; those in ``seeks`` from that offset."""
        async def assign() -> None:
            assert self.consumer is not None
            self.consumer.assign([TopicPartition(self.topic, p) for p in sorted(partitions)])
            for partition, offset in seeks.items():
                self.consumer.seek(TopicPartition(self.topic, partition), offset)

        await self._call(assign())

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        assert self.consumer is not None
        return await self._call(self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records))

    def highwater(self, tp: TopicPartition) -> int | None:
        """The partition's end as the last fetch reported it (a read of the consumer's state)."""
        return self.consumer.highwater(tp) if self.consumer is not None else None

    async def stop(self) -> None:
        if self.consumer is not None:
            await self._call(self.consumer.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        await asyncio.to_thread(self.thread.join, 5)


class RangeReader:
    """Records [start, end) of a partition, read directly, one consumer per topic (created
    at first use). ``options``: aiokafka consumer options (servers, security, isolation);
    ``ebb``: awaited after each batch handed out, once the caller has processed it (Faust
    holds back its consumer until the tables' changelog writes are sent; records read
    directly must wait the same way: measured, a first start folding 1M events grew to
    2.1 GiB without it)."""

    def __init__(self, options: Mapping[str, Any], embedded: bool, ebb: Callable[[], Awaitable[None]]) -> None:
        self.options, self.embedded, self.ebb = dict(options), embedded, ebb
        self._readers: dict[str, AIOKafkaConsumer] = {}  # by topic: a gap repair's append may read the events
        self._ends_reader: AIOKafkaConsumer | None = None

    async def _reader(self, topic: str) -> AIOKafkaConsumer:
        if topic not in self._readers:
            reader = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **self.options,
                                      fetch_max_wait_ms=50 if self.embedded else 500)
            await reader.start()
            self._readers[topic] = reader
        return self._readers[topic]

    async def records(self, topic: str, partition: int, start: int, end: int | None) -> AsyncIterator[list[Record]]:
        """Records [start, end) in batches; ``end`` None: to the end the fetches report. Each
        next batch waits for the changelog writes of the one before (``ebb``). Gives up after
        30 s without progress."""
        reader = await self._reader(topic)
        tp = TopicPartition(topic, partition)
        reader.assign([tp])
        reader.seek(tp, start)
        if end is not None and end <= start:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while loop.time() < deadline:
            batch = (await reader.getmany(tp, timeout_ms=50, max_records=BATCH_SIZE)).get(tp, [])
            found = [Record(topic, partition, r.offset, r.key, r.value)
                     for r in batch if end is None or r.offset < end]
            if found:
                deadline = loop.time() + 30
                yield found
                await self.ebb()  # the caller has processed them: their changelog writes go first
            position = await reader.position(tp)
            if end is not None and position >= end:
                return
            high = reader.highwater(tp)
            if not batch and high is not None and high <= position:
                return  # the partition ends before ``end``: nothing more to read

    async def position(self, topic: str, partition: int) -> int:
        """Where the last read of the partition stopped (the next offset it would give)."""
        return int(await (await self._reader(topic)).position(TopicPartition(topic, partition)))

    async def highwater(self, topic: str, partition: int) -> int | None:
        """The partition's end as the last fetch reported it."""
        return (await self._reader(topic)).highwater(TopicPartition(topic, partition))

    async def events_ends(self, partitions: set[int]) -> dict[int, int]:
        """The end offsets of events partitions, in one request of a consumer that fetches
        nothing (on the embedded broker, a hint only: ``Recovery.bound``)."""
        if self._ends_reader is None:  # kept once started only: a half-started one would fail every tick
            reader = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **self.options)
            try:
                await reader.start()
            except BaseException:
                await reader.stop()
                raise
            self._ends_reader = reader
        found = await self._ends_reader.end_offsets([TopicPartition(EVENTS, p) for p in partitions])
        return {tp.partition: int(offset) for tp, offset in found.items()}

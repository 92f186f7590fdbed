"""Recovery and gap repair: every partition handled without a hole, and what another writer appended applied.

Events. The events topic is read only to *recover*: when a partition is assigned, and when
its end moves past what the worker itself appended (a restore, another writer), it is read
from its events position (``streams.positions``: all offsets below it are applied) to the
end, and what the tickets lack is applied (idempotent by event id). After each append the
position moves past our own records when they follow it without a hole (``advance``).

Gaps. A partition's records must be decided without a hole: a batch that starts past the
stored position, or skips offsets inside (seen with Faust's stream after a SIGKILL: 174,
then 384…), has the missing range read directly and decided first. Reprocessing is
harmless (deterministic event ids); skipping is not.

Every batch goes through ``process``: decided and appended by the ``Appender``, then the
events position follows the appends, then the batch's table writes go out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError

from .appender import Appender
from .batches import TableWrites
from .positions import Positions
from .reader import Record
from .topics import EVENTS

log = structlog.get_logger(__name__)

# How often the end of each events partition is compared with what the agent appended
# (another writer: recovery).
STALL_SECONDS = 3.0


class Ranges(Protocol):
    """What recovery reads directly (``reader.RangeReader``)."""
    def records(self, topic: str, partition: int, start: int, end: int | None) -> AsyncIterator[list[Record]]: ...
    async def position(self, topic: str, partition: int) -> int: ...
    async def highwater(self, topic: str, partition: int) -> int | None: ...
    async def events_ends(self, partitions: set[int]) -> dict[int, int]: ...


class Recovery:
    """``embedded``: the broker is Tansu (dev mode), whose end offsets are hints only."""

    def __init__(self, appender: Appender, positions: Positions, writes: TableWrites, ranges: Ranges,
                 embedded: bool) -> None:
        self.appender, self.positions, self.writes, self.ranges = appender, positions, writes, ranges
        self.embedded = embedded
        # Events partitions read to their end since assigned (``recover``), and when each
        # end was last compared with the events position.
        self.recovered: set[int] = set()
        self._checked: dict[int, float] = {}
        # Fenced: by events partition, the offset our last transaction's marker takes (``advance``).
        self._markers: dict[int, int] = {}

    # --- every batch ----------------------------------------------------------------------
    async def process(self, records: list[Record]) -> None:
        """Handle a batch; fenced, one transaction per partition."""
        if self.appender.fence is None:
            await self._decide(records, self.appender.producer())
            return
        by_partition: dict[int, list[Record]] = {}
        for record in records:
            by_partition.setdefault(record.partition, []).append(record)
        for partition, part in by_partition.items():
            async with self.appender.writing(partition) as producer:
                await self._decide(part, producer)

    async def _decide(self, records: list[Record], producer: AIOKafkaProducer) -> None:
        appended = await self.appender.decide(records, producer)
        if appended is None:
            return
        for partition, offsets in appended.items():
            await self.advance(partition, offsets)
        await self.writes.flush(producer)

    async def process_delivered(self, records: list[Record]) -> None:
        """Process a batch as it was fetched, filling each hole first: a partition's records
        may skip offsets at the batch's start or inside it (measured with Faust's stream on
        Apache Kafka after a SIGKILL: 174, then 384…; 109 commands lost when only a batch's
        first offset was checked). The records before a hole are processed, the hole is
        read directly, then the batch goes on."""
        segment: list[Record] = []
        following: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic, record.partition)
            if key not in following:
                following[key] = self.positions.expected(*key) or 0
            if record.offset > following[key]:
                if segment:
                    await self.process(segment)
                    segment = []
                await self._repair_gap(record.topic, record.partition, record.offset)
            following[key] = max(following[key], record.offset + 1)
            segment.append(record)
        if segment:
            await self.process(segment)

    async def _repair_gap(self, topic: str, partition: int, upto: int) -> None:
        """Process records [expected, upto) of a partition that the batch skipped. With no
        position recorded at all, the partition is read from 0: the records are idempotent,
        a skipped command is not."""
        expected = self.positions.expected(topic, partition) or 0
        if upto <= expected:
            return
        log.warning("gap in delivered records, reading it directly", topic=topic, partition=partition,
                    first=expected, upto=upto)
        async for records in self.ranges.records(topic, partition, expected, upto):
            await self.process(records)

    # --- the events position ----------------------------------------------------------------
    async def advance(self, partition: int, offsets: list[int]) -> None:
        """After an append: the position moves past our own records when they follow it
        without a hole; a hole is another writer's records (a restore, a tree head), read.

        Fenced, one offset between the position and our records, where our previous append
        ended, is that transaction's marker; a longer hole is read up to our records only (ours are not
        committed yet: a read_committed reader stops before them), and a hole among ours
        is left to the next look at the partition's end (``check_ends``)."""
        fenced = self.appender.fence is not None
        offsets.sort()
        at = self.positions.events(partition)
        contiguous = offsets[-1] - offsets[0] + 1 == len(offsets)
        if fenced and at is not None and at == self._markers.get(partition) == offsets[0] - 1:
            at = offsets[0]
        elif fenced and at is not None and offsets[0] > at:
            log.info("records of another writer before ours, read", partition=partition, position=at,
                     first=offsets[0])
            await self._read_events(partition, at, offsets[0])
            at = self.positions.events(partition)
        if at == offsets[0] and contiguous:
            self.positions.set_events(partition, offsets[-1] + 1)
            if fenced:
                self._markers[partition] = offsets[-1] + 1
        elif fenced:
            log.info("records of another writer among ours, read later", partition=partition, position=at,
                     first=offsets[0], last=offsets[-1])
        else:
            log.info("records of another writer among ours, read", partition=partition, position=at,
                     first=offsets[0], last=offsets[-1], appended=len(offsets))
            await self._read_events(partition, at or 0, offsets[-1] + 1)

    async def recover(self, partitions: set[int]) -> None:
        """At assignment: apply what each events partition holds past its events position
        (states a crash lost, a restored log) before deciding any command of it."""
        ends = await self._ends(partitions)
        if ends is None:
            return
        for partition in sorted(partitions):
            start = self.positions.events(partition)
            if start is None or ends[partition] > start or self.embedded:
                read, complete = await self._read_events(partition, start or 0, self._bound(ends[partition]))
                if not complete:  # the broker stopped answering: commands wait, the next tick goes on
                    log.warning("events partition not recovered yet", partition=partition, read=read)
                    continue
                log.info("events partition recovered", partition=partition, start=start or 0, read=read)
            self.recovered.add(partition)

    def keep(self, active: set[int]) -> None:
        """Forget the partitions no longer assigned (recovered again if they come back)."""
        self.recovered &= active

    async def follow(self, active: set[int]) -> None:
        """At each tick: recover the active partitions not recovered yet, then read what
        another writer appended past their events position (every STALL_SECONDS)."""
        if active - self.recovered:
            await self.recover(active - self.recovered)
        now = asyncio.get_running_loop().time()
        due = {p for p in active & self.recovered if now - self._checked.get(p, 0.0) >= STALL_SECONDS}
        if not due:
            return
        ends = await self._ends(due)
        if ends is None:
            return
        for partition in sorted(due):
            self._checked[partition] = now
            at = self.positions.events(partition) or 0
            if ends[partition] == at + 1 and at == self._markers.get(partition):
                continue  # only our last transaction's commit marker: nothing to read (nor to commit)
            if ends[partition] > at:
                read, _ = await self._read_events(partition, at, self._bound(ends[partition]))
                log.info("events appended by another writer applied", partition=partition, start=at, read=read)

    async def _ends(self, partitions: set[int]) -> dict[int, int] | None:
        """The events partitions' end offsets, or None when no broker answered within the
        client's request timeout (a cut link, a whole cluster restarting): nothing was read
        nor written, so the next tick simply asks again. Raised, it stopped the worker
        (Faust stops the app on a timer's error) after 40 s without a broker."""
        try:
            return await self.ranges.events_ends(partitions)
        except KafkaTimeoutError as exc:
            log.warning("events partitions' ends not known: no broker answered; asked again at the next tick",
                        partitions=sorted(partitions), error=str(exc))
            return None

    def _bound(self, end: int) -> int | None:
        """Where a read of the events stops: the end offset on Apache Kafka; on the embedded
        broker, whose ListOffsets answers the last batch's base + 1, the fetches' end."""
        return None if self.embedded else end

    async def _read_events(self, partition: int, start: int, end: int | None) -> tuple[int, bool]:
        """Apply the events [start, end) of a partition; the position then covers what was
        read. (records read, whether the read reached ``end`` or the partition's end). Fenced,
        each batch read is its own transaction (``process``, unless an outer one holds it): a
        long recovery stays far below the transaction timeout, past which the broker would
        abort it and fence this worker."""
        read = 0
        async for records in self.ranges.records(EVENTS, partition, start, end):
            await self.process(records)
            read += len(records)
        async with self.appender.writing(partition) as producer:
            reached = await self.ranges.position(EVENTS, partition)
            self.positions.set_events(partition, min(reached, end) if end is not None else reached)
            await self.writes.flush(producer)
        high = end if end is not None else await self.ranges.highwater(EVENTS, partition)
        return read, high is not None and reached >= high

    # --- partitions lost ------------------------------------------------------------------
    def lost(self, partitions: set[int]) -> None:
        """Revoked: a partition may come back after another worker appended to it, its
        events are recovered again."""
        self.recovered -= partitions

    def fenced(self, partition: int) -> None:
        """Another worker owns the partition: forget what this worker knows of its log."""
        self.recovered.discard(partition)
        self._markers.pop(partition, None)

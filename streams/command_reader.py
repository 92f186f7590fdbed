"""The command reader: the agent's loop, reading its commands partitions in batches from their stored positions.

Faust's per-record stream costs about 87 µs a record here, more than deciding the command:
the agent reads its partitions itself, with one aiokafka consumer on its own thread
(``reader.ThreadedReader``). Faust still does what it is good at: the consumer group
assigns the partitions, with the tables' changelogs (their partitions are the agent's), and
recovers the tables before the agent reads. Each partition is read from the position
stored in the ``positions`` table (``streams.positions``): every command below it is
decided. On a revocation the agent finishes its batch, sends its writes and stops reading
the partitions before the group moves them (one writer per ticket).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import structlog
from aiokafka import TopicPartition

from .fence import Fence, Unwritten
from .positions import Positions
from .reader import BATCH_SIZE, Record, ThreadedReader
from .recovery import Recovery
from .topics import COMMANDS

log = structlog.get_logger(__name__)


class CommandReader:
    """``reader``: not started yet (``run`` starts it); ``lock``: one batch at a time (the
    agent, recovery and the timer); ``active``: the partitions the worker may write now;
    ``recovered``: whether Faust has recovered the tables; ``on_refused``: a partition
    whose batch was refused (``fence.Unwritten``), to drop; ``flush``: send the producer's
    pending writes; ``ebb``: wait for the tables' changelog writes (Faust's own consumer waits this way)."""

    def __init__(self, reader: ThreadedReader, lock: asyncio.Lock, positions: Positions, recovery: Recovery,
                 fence: Fence | None, active: Callable[[], set[int]], recovered: Callable[[], bool],
                 on_refused: Callable[[int], None], flush: Callable[[], Awaitable[None]],
                 ebb: Callable[[], Awaitable[None]]) -> None:
        self.reader, self.lock, self.positions, self.recovery, self.fence = reader, lock, positions, recovery, fence
        self.active, self.recovered, self.on_refused, self.flush, self.ebb = active, recovered, on_refused, flush, ebb
        self.reading: set[int] = set()  # commands partitions read now
        self._holding = False  # between a revocation and the next assignment: read nothing
        self._stopping = False
        self._started = False
        self._snapshots: dict[int, tuple[datetime, int]] = {}  # partition -> (when, its end then)
        self._read_until: dict[int, datetime] = {}

    async def run(self) -> None:
        """The ticket agent: read, recover the events of a partition first, decide."""
        reader = self.reader
        await reader.start()
        self._started = True
        while not self._stopping:
            if self._holding or not self.recovered():
                await asyncio.sleep(0.05)
                continue
            active = self.active()
            if active != self.reading:
                async with self.lock:
                    await self._assign(active)
            if not self.reading:
                await asyncio.sleep(0.05)
                continue
            fetched = await reader.getmany(timeout_ms=100, max_records=BATCH_SIZE)
            if not fetched:
                continue
            async with self.lock:
                if self._stopping:
                    return
                by_partition = {tp.partition: [Record(COMMANDS, tp.partition, m.offset, m.key, m.value)
                                               for m in messages]
                                for tp, messages in fetched.items() if tp.partition in self.reading}
                try:
                    if set(by_partition) - self.recovery.recovered:
                        await self.recovery.recover(set(by_partition) - self.recovery.recovered)
                        if set(by_partition) - self.recovery.recovered:  # not recovered yet: read them again later
                            await self._assign(self.reading, force=True)
                            continue
                except Unwritten as refused:
                    self.on_refused(refused.partition)
                    await self._assign(self.reading, force=True)  # the others' fetched records: read again
                    continue
                for records in by_partition.values():  # one refused partition stops no other
                    try:
                        await self.recovery.process_delivered(records)
                    except Unwritten as refused:
                        self.on_refused(refused.partition)
            await self.ebb()  # Faust's own consumer waits for the changelog writes this way too

    async def _assign(self, partitions: set[int], force: bool = False) -> None:
        """Read exactly ``partitions``, each from its stored position (records before it are
        decided); the partitions kept go on from where the reader is unless ``force``."""
        kept = set() if force else self.reading & partitions
        await self.reader.assign(partitions, {p: self.positions.expected(COMMANDS, p) or 0 for p in partitions - kept})
        if partitions != self.reading:
            log.info("commands partitions read", partitions=sorted(partitions))
        self.reading = set(partitions)

    async def revoked(self, lost: set[int]) -> None:
        """Stop deciding commands of the revoked partitions before the group moves them (one
        writer per ticket), and send their table writes; until the next assignment, read
        nothing. A partition may come back after another worker appended to it: its events
        are recovered again (and its transactional id claimed again: ``assigned``)."""
        self._holding = True
        async with self.lock:
            self.reading -= lost
            self.recovery.lost(lost)
            await self.flush()
            if self.fence is not None:
                for partition in lost & self.fence.partitions:
                    await self.fence.release(partition)

    async def assigned(self, partitions: set[int]) -> None:
        """Take every assigned partition's transactional id anew, kept ones included, before
        anything is read: their previous holder, alive or not, can write there no more, and
        this worker holds a fresh epoch for each (``Fence.claim``)."""
        if self.fence is not None:
            async with self.lock:
                await self.fence.claim(partitions)
        self._holding = False

    def fenced(self, partition: int) -> None:
        """Another worker owns the partition: stop reading it."""
        self.reading.discard(partition)

    def read_until(self, partitions: set[int]) -> dict[int, datetime]:
        """For each partition whose events are recovered and whose commands are read: the
        latest instant such that every command the log held then is decided. Only up to it
        may a verdict be drawn (a backlog still holds part of the tickets' history).

        The instant is that of a snapshot of the partition's end (its high watermark), kept
        until the reader passes it; a partition read to its end is read until now. Asking
        for the end *now* instead would, under a steady flow of commands, rarely find the
        reader there: the due facts and the readiness waited for a lull (a restarted
        worker under load was not ready after 120 s in CI)."""
        now = datetime.now(UTC)
        eligible = partitions & self.recovery.recovered & self.reading if self._started else set()
        for gone in [p for p in self._read_until if p not in eligible]:
            del self._read_until[gone]
        for gone in [p for p in self._snapshots if p not in eligible]:
            del self._snapshots[gone]
        for partition in eligible:
            position = self.positions.expected(COMMANDS, partition) or 0
            snapshot = self._snapshots.get(partition)
            if snapshot is not None and position >= snapshot[1]:
                self._read_until[partition] = snapshot[0]
                del self._snapshots[partition]
            if partition not in self._snapshots:
                high = self.reader.highwater(TopicPartition(COMMANDS, partition))
                if high is not None and position >= high:
                    self._read_until[partition] = now
                elif high is not None:
                    self._snapshots[partition] = (now, high)
        return dict(self._read_until)

    @property
    def stopping(self) -> bool:
        return self._stopping

    def stop(self) -> None:
        """Read nothing more (the batch in hand is finished: ``close`` under the lock)."""
        self._stopping = True

    async def close(self) -> None:
        if self._started:
            await self.reader.stop()

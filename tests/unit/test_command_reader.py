"""The agent reads its commands partitions itself (``CommandReader``): each
partition from its stored position, and a partition revoked by the group is never decided
again by this worker, even from a batch fetched before the revocation (one writer per
ticket)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from functools import partial
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition

from sla.ticket import Command, CommandType
from streams.codec import encode_command
from streams.command_reader import CommandReader
from streams.table_values import partition_for, position_key
from streams.topics import COMMANDS
from tests.unit.test_redelivery import FILE, Sent, Worker, worker


class Reader:
    """An aiokafka consumer as the agent uses it: batches handed out one per ``getmany``;
    ``during_fetch`` runs inside the first (what the group does while a batch is fetched)."""

    def __init__(self, batches: list[dict[int, list[tuple[int, str]]]], during_fetch: Any = None) -> None:
        self.batches, self.during_fetch = batches, during_fetch
        self.seeks: list[tuple[int, int]] = []
        self.assigned: list[int] = []
        self.fetched = asyncio.Event()

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def assign(self, partitions: set[int], seeks: dict[int, int]) -> None:
        self.assigned = sorted(partitions)
        self.seeks.extend(seeks.items())

    def highwater(self, tp: TopicPartition) -> None:
        return None

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        if not self.batches:
            self.fetched.set()
            await asyncio.sleep(0.01)
            return {}
        if self.during_fetch is not None:
            await self.during_fetch()
            self.during_fetch = None
        batch = self.batches.pop(0)
        return {TopicPartition(COMMANDS, p): [SimpleNamespace(offset=o, key=tid.encode(), value=filing(tid))
                                              for o, tid in records] for p, records in batch.items()}


def filing(tid: str) -> bytes:
    return encode_command(Command(CommandType.FILE, tid, "agent:test", FILE, datetime.now(UTC)))


def ticket_on(partition: int, n: int) -> str:
    return next(f"T-{partition}-{i}" for i in range(n, 10_000) if partition_for(f"T-{partition}-{i}", 4) == partition)


def reading(reader: Reader, partitions: set[int], positions: dict[int, int] | None = None) -> tuple[Worker, Any]:
    """A worker whose group assigned ``partitions`` and whose tables are recovered, its
    command reader run until its reader has nothing more to give."""
    w = worker(Sent())
    for partition, offset in (positions or {}).items():
        w.positions.table[position_key(COMMANDS, partition, 4)] = offset

    async def nothing() -> None:
        pass

    async def run() -> CommandReader:
        commands = CommandReader(reader, asyncio.Lock(), w.positions, w.recovery, fence=None,  # type: ignore[arg-type]
                                 active=lambda: set(partitions), recovered=lambda: True,
                                 on_refused=lambda partition: None, flush=nothing, ebb=nothing)
        await w.recovery.recover({0, 1, 2, 3})  # their events partitions are empty
        if reader.during_fetch is not None:
            reader.during_fetch = partial(reader.during_fetch, commands)
        task = asyncio.create_task(commands.run())
        await reader.fetched.wait()
        commands.stop()
        await task
        return commands

    return w, asyncio.run(run())


def test_each_partition_is_read_from_its_stored_position() -> None:
    reader = Reader([])
    _, commands = reading(reader, {0, 2}, positions={2: 17})
    assert sorted(reader.seeks) == [(0, 0), (2, 17)] and reader.assigned == [0, 2]
    assert commands.reading == {0, 2}


def test_a_batch_fetched_before_its_partition_was_revoked_is_not_decided() -> None:
    one, two = ticket_on(1, 0), ticket_on(2, 0)
    partitions = {1, 2}

    async def rebalance(commands: CommandReader) -> None:  # while the batch is fetched, the group moves partition 1
        await commands.revoked({1})
        partitions.discard(1)
        await commands.assigned({2})

    w, commands = reading(Reader([{1: [(0, one)], 2: [(0, two)]}], during_fetch=rebalance), partitions)
    assert one.encode() not in w.tickets and two.encode() in w.tickets
    assert commands.reading == {2}


class FlowingReader(Reader):
    """A partition whose end moves on while the agent reads it (a steady flow of commands)."""

    def __init__(self) -> None:
        super().__init__([])
        self.ends: dict[int, int] = {}

    def highwater(self, tp: TopicPartition) -> int | None:  # type: ignore[override]
        return self.ends.get(tp.partition)


def test_a_partition_under_a_steady_flow_is_read_until_the_last_end_it_passed() -> None:
    """Verdicts (the due facts) and readiness need the commands read up to an instant, not a
    lull in the flow: under load the reader is rarely at the very end, and a restarted worker
    was once never ready. The instant is that of the last end the reader passed."""
    reader = FlowingReader()
    w, commands = reading(reader, {0})

    def at(offset: int) -> None:
        w.positions.table[position_key(COMMANDS, 0, 4)] = offset

    assert commands.read_until({0}) == {}  # no end known yet: nothing may be judged
    at(5)
    reader.ends[0] = 10
    before = datetime.now(UTC)
    assert commands.read_until({0}) == {}  # behind the end seen now: remembered
    reader.ends[0], then = 20, datetime.now(UTC)
    at(12)  # past the end seen then, not at the end now
    first = commands.read_until({0})[0]
    assert before <= first <= then
    assert commands.read_until({0}) == {0: first}  # behind the new end: still that instant
    at(20)
    latest = commands.read_until({0})[0]
    assert latest > first  # at the end: read until now
    assert commands.read_until({1}) == {}  # a partition not read is judged nowhere
    assert commands.read_until({0})[0] >= latest  # dropped above, judged again from its position

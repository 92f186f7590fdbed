"""The agent reads its commands partitions itself (``Pipeline._read_commands``): each
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
from faust.types import TP

from sla.ticket import Command, CommandType
from streams.codec import encode_command
from streams.recovery_watch import RecoveryWatch
from streams.table_values import partition_for, position_key
from streams.topics import COMMANDS
from tests.unit.test_redelivery import FILE, Sent, pipeline

CHANGELOG = "slaledger-tickets-changelog"


class Reader:
    """An aiokafka consumer as the agent uses it: batches handed out one per ``getmany``;
    ``during_fetch`` runs inside the first (what the group does while a batch is fetched)."""

    def __init__(self, batches: list[dict[int, list[tuple[int, str]]]], during_fetch: Any = None) -> None:
        self.batches, self.during_fetch = batches, during_fetch
        self.seeks: list[tuple[int, int]] = []
        self.assigned: list[int] = []
        self.fetched = asyncio.Event()

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


def reading(reader: Reader, partitions: set[int], positions: dict[int, int] | None = None) -> Any:
    """A pipeline whose group assigned ``partitions`` and whose tables are recovered, run
    until its reader has nothing more to give."""
    p = pipeline(Sent())
    for partition, offset in (positions or {}).items():
        p.positions[position_key(COMMANDS, partition, 4)] = offset
    p.events_recovered = {0, 1, 2, 3}
    p.reading, p.holding, p.stopping, p.lock = set(), False, False, asyncio.Lock()
    p.tickets_changelog = CHANGELOG
    recovery = SimpleNamespace(completed=SimpleNamespace(is_set=lambda: True))
    p.app = SimpleNamespace(producer=p.app.producer, tables=SimpleNamespace(recovery=recovery),  # type: ignore[assignment]
                            rebalancing=False,
                            assignor=SimpleNamespace(assigned_actives=lambda: {TP(CHANGELOG, q) for q in partitions}))
    p.recovery_watch = RecoveryWatch(recovery, rebalancing=lambda: False)

    async def command_reader() -> Reader:
        p._command_reader_ = reader
        return reader

    async def ebb() -> None:
        pass

    p._command_reader, p._ebb = command_reader, ebb  # type: ignore[method-assign]
    if reader.during_fetch is not None:
        reader.during_fetch = partial(reader.during_fetch, p)

    async def run() -> None:
        task = asyncio.create_task(p._read_commands())
        await reader.fetched.wait()
        p.stopping = True
        await task

    asyncio.run(run())
    return p


def test_each_partition_is_read_from_its_stored_position() -> None:
    reader = Reader([])
    p = reading(reader, {0, 2}, positions={2: 17})
    assert sorted(reader.seeks) == [(0, 0), (2, 17)] and reader.assigned == [0, 2]
    assert p.reading == {0, 2}


def test_a_batch_fetched_before_its_partition_was_revoked_is_not_decided() -> None:
    one, two = ticket_on(1, 0), ticket_on(2, 0)
    partitions = {1, 2}

    async def rebalance(p: Any) -> None:  # while the batch is fetched, the group moves partition 1
        await p._on_revoked(None, {TP(CHANGELOG, 1)})
        partitions.discard(1)
        await p._on_assigned(None, {TP(CHANGELOG, 2)})

    p = reading(Reader([{1: [(0, one)], 2: [(0, two)]}], during_fetch=rebalance), partitions)
    assert one.encode() not in p.tickets and two.encode() in p.tickets
    assert p.reading == {2}

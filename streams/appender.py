"""The appender: a batch of records decided, its events appended, its tickets stored, its callers answered.

The single writer of the events topic for the worker's partitions. Every record is decided
(or applied, for events read back to recover) against the latest state, then
1. all resulting events and dead letters are sent and the broker's acknowledgement awaited,
2. each touched ticket is stored once, with its next wakeup (scheduled in the deadline
index), 3. the waiting HTTP callers are answered (outcomes topic), 4. the positions are
recorded, after the states they cover. A partition's writes go through ``writing``: its
transaction when fenced (``streams.fence``), Faust's producer otherwise (dev mode).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer

from service.handler import Step
from service.outcomes import Outcome
from sla.events import Event, encode_event
from sla.ticket import Ticket, ticket_from_dict

from .batches import SentBatch, TableWrites, send_batched
from .codec import is_fact
from .fence import Fence
from .positions import Positions
from .processor import TicketProcessor
from .reader import Record
from .table_values import Refusals, partition_for, refusals_of, stored
from .topics import COMMANDS, DEAD_LETTERS, EVENTS, OUTCOMES

log = structlog.get_logger(__name__)

Appended = dict[int, list[int]]  # by events partition, the offsets our events got


class Appender:
    """``schedule``: the deadline index's (partition, ticket id, wakeup); ``fence``: None in
    dev mode; ``producer``: Faust's aiokafka producer, asked for when first written to."""

    def __init__(self, processor: TicketProcessor, tickets: Any, positions: Positions, writes: TableWrites,
                 schedule: Callable[[int, str, datetime | None], None], fence: Fence | None,
                 producer: Callable[[], AIOKafkaProducer]) -> None:
        self.processor, self.tickets, self.positions, self.writes = processor, tickets, positions, writes
        self.schedule, self.fence, self.producer = schedule, fence, producer

    @asynccontextmanager
    async def writing(self, partition: int) -> AsyncIterator[AIOKafkaProducer]:
        """Where a partition's writes go: its transaction (``streams.fence``, committed when
        the outermost ``writing`` of the partition ends), or Faust's producer (dev mode)."""
        if self.fence is None:
            yield self.producer()
            return
        async with self.fence.transaction(partition) as producer:
            yield producer

    async def decide(self, records: list[Record], producer: AIOKafkaProducer) -> Appended | None:
        """Handle a batch (see the module); the offsets the events got, for the events
        position (``Recovery.advance``), or None when every record was handled before.

        A command below the partition's expected offset was decided before (its events were
        acknowledged before the position moved): a redelivery of it is dropped, not decided
        again against a newer state. Events (read to recover) are always applied, idempotent
        by id: they rebuild a state whose changelog write a crash lost."""
        positions = self.positions
        decided = {p: positions.expected(COMMANDS, p) or 0 for p in {r.partition for r in records
                                                                      if r.topic == COMMANDS}}
        records = [r for r in records if r.topic != COMMANDS or r.offset >= decided[r.partition]]
        if not records:
            return None
        now = datetime.now(UTC)
        cache: dict[str, Ticket | None] = {}
        refused: dict[str, Refusals] = {}
        touched: dict[str, tuple[int, Ticket]] = {}
        emit: list[tuple[int, Event]] = []
        letters: list[tuple[Record, str]] = []
        outcomes: list[Outcome] = []
        for record in records:
            tid = record.key.decode("utf-8", "replace") if record.key else ""
            if tid not in cache:
                raw = self.tickets.get(tid.encode()) if tid else None
                cache[tid] = ticket_from_dict(raw) if raw else None
                refused[tid] = refusals_of(raw)
            step = self._step(record, tid, cache[tid], refused[tid], now)
            if step.dead_letter:
                log.warning("record dead-lettered", reason=step.dead_letter, **record.context(), ticket_id=tid)
                letters.append((record, step.dead_letter))
            if step.ticket is not None:
                cache[tid] = step.ticket
                touched[tid] = (record.partition, step.ticket)
            current = cache[tid]
            if step.refusal is not None and current is not None:  # remembered with the ticket
                cid, status, body = step.refusal
                refused[tid][cid] = (status, body)
                touched.setdefault(tid, (record.partition, current))
            emit.extend((record.partition, event) for event in step.emit)
            if step.outcome is not None:
                outcomes.append(step.outcome)
        acknowledged = await self.append(producer, emit, letters)
        states = []  # prepared while the broker writes the events, stored once it has them
        for tid, (partition, ticket) in touched.items():
            wakeup = self.processor.wakeup(ticket, now)  # once per ticket and batch
            states.append((partition, tid, wakeup, stored(ticket, wakeup, refused[tid])))
        appended = await acknowledged
        for partition, tid, wakeup, value in states:
            self.writes.put(self.tickets, partition, tid.encode(), value)
            self.schedule(partition, tid, wakeup)
        if emit and log.is_enabled_for(logging.DEBUG):  # (its arguments cost 3 % of a command)
            for _, event in emit:
                log.debug("event appended", ticket_id=event.ticket_id, event_id=str(event.event_id),
                          type=str(event.type))
        if outcomes:
            count = len(await producer.partitions_for(OUTCOMES))
            answered = await send_batched(producer, OUTCOMES, [(partition_for(o.command_id, count),
                                                                o.command_id.encode(), o.encode()) for o in outcomes])
            _retrieved(answered)  # the transaction's commit says whether they are written
        for (topic, partition), last in {(r.topic, r.partition): r.offset for r in records}.items():
            if topic == EVENTS:
                positions.set_events(partition, last + 1)
            else:
                positions.handled(topic, partition, last)
        return appended

    def _step(self, record: Record, tid: str, ticket: Ticket | None, refused: Refusals, now: datetime) -> Step:
        """The handler's decision on one record: an event read back, a timer's fact or a command."""
        try:
            if record.topic == EVENTS:
                return self.processor.on_event(ticket, record.key, record.value, now)
            if is_fact(record.value):
                return self.processor.on_fact(ticket, record.key, record.value, now)
            return self.processor.on_command(ticket, record.value, now, refused)
        except Exception as exc:  # never stop the worker on one record
            log.exception("record processing failed", **record.context(), ticket_id=tid)
            return Step(dead_letter=f"processing error: {type(exc).__name__}: {exc}")

    async def append(self, producer: AIOKafkaProducer, events: list[tuple[int, Event]],
                     letters: Sequence[tuple[Record, str]] = ()) -> Awaitable[Appended]:
        """Send events (and dead letters) to their ticket's partition. What it returns, awaited,
        waits until the broker has them all and gives the offsets the events got, by
        partition (the caller prepares the states meanwhile)."""
        sent = await send_batched(producer, EVENTS, [(p, e.ticket_id.encode(), encode_event(e)) for p, e in events])
        dead = await send_batched(producer, DEAD_LETTERS, [(0, record.key, dead_letter(record, reason))
                                                           for record, reason in letters])
        _retrieved([*sent, *dead])  # awaited in order below: a refused one stops there

        async def acknowledged() -> Appended:
            appended: Appended = {}
            for batch in sent:
                appended.setdefault(batch.partition, []).extend(await batch.offsets())
            for batch in dead:
                await batch.future
            return appended

        return acknowledged()


def _retrieved(batches: Sequence[SentBatch]) -> None:
    """Mark the batches' failures as seen: a refused transaction fails every batch of it,
    which asyncio would otherwise log one by one ("Future exception was never retrieved");
    the fence reports the refusal once (``streams.fence``)."""
    for batch in batches:
        batch.future.add_done_callback(lambda future: future.cancelled() or future.exception())


def dead_letter(record: Record, reason: str) -> bytes:
    """The dead-letters topic's record: why, and the original record as it was read."""
    body = {
        "reason": reason,
        "origin": {"topic": record.topic, "partition": record.partition, "offset": record.offset},
        "key": base64.b64encode(record.key).decode() if record.key else None,
        "value": base64.b64encode(record.value).decode() if record.value else None,
        "dead_lettered_at": datetime.now(UTC).isoformat(),
    }
    return json.dumps(body).encode()

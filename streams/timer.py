"""The deadline timer: each due SLA fact sent to the agent, from an index of when each ticket needs a look.

The timer does not write events: it sends each due fact as a record of the commands topic
(``codec.encode_fact``), which the agent appends if the ticket still owes it (one writer
per ticket). Only partitions the agent has caught up on are looked at: a backlog still
holds part of the tickets' history, and no verdict may be drawn before it is read.

The index (``streams.deadlines``) holds, per partition, when each ticket needs the timer
next; the agent schedules a ticket each time it stores it. With the RocksDB store, only
the next DUE_LOOKAHEAD of the due keys stored with the tickets (``streams.store``) are
loaded, tick by tick; with the memory store, every ticket is indexed from its stored
wakeup when its partition is assigned.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from aiokafka.errors import KafkaTimeoutError
from faust.exceptions import ProducerSendError

from sla.events import Event
from sla.ticket import ticket_from_dict

from .codec import encode_fact
from .deadlines import DeadlineIndex
from .processor import TicketProcessor
from .store import KeyPartitionedRocksDBStore
from .table_values import STALE, is_ticket_key, partition_for, wakeup_of
from .topics import COMMANDS

log = structlog.get_logger(__name__)

# How long the timer waits before looking again at a ticket whose facts it just sent
# (normally the agent reschedules it sooner, when the facts come back).
FACT_RECHECK = timedelta(seconds=5)
# How long a sent fact is remembered, to send the very same bytes again if it is still not
# applied at the next look (a broker failover can hold the events topic for seconds).
FACT_MEMORY = timedelta(hours=1)
# How far ahead the timer loads the due keys stored in RocksDB (``store.due``) into its
# in-memory index: only the next minute's deadlines are held, whatever the open queue.
DUE_LOOKAHEAD = timedelta(seconds=60)


class DeadlineTimer:
    """``tickets``: the ticket table; ``producer``: Faust's producer (its ``send``), asked
    for when facts are sent; ``partitions``: the topics' partition count."""

    def __init__(self, processor: TicketProcessor, tickets: Any, partitions: int,
                 producer: Callable[[], Any]) -> None:
        self.processor, self.tickets, self.partitions, self.producer = processor, tickets, partitions, producer
        self.index = DeadlineIndex()
        self._indexed: set[int] = set()
        # RocksDB: per partition, the instant up to which its stored due keys are in ``index``
        # (None: none yet).
        self._due_loaded: dict[int, datetime | None] = {}
        # Facts sent, by id, with when: a fact due again before the agent has applied it is
        # re-sent byte for byte. Derived anew, it would carry a later recording time and the
        # explanation of the ticket as it stands then (measured: a breach re-sent during a
        # leader failover, after a late acknowledgement, read as one event with two contents
        # by the audit).
        self._sent: dict[uuid.UUID, tuple[Event, datetime]] = {}
        self._stopping = False

    def schedule(self, partition: int, ticket_id: str, at: datetime | None) -> None:
        """When the ticket needs a look next (None: never, as it stands)."""
        self.index.schedule(partition, ticket_id, at)

    def index_partitions(self, active: set[int]) -> None:
        """Index the partitions newly assigned, or load the next due keys of the others."""
        if active != self._indexed:
            self._rebuild_index(active)
        else:
            self._load_due(active, datetime.now(UTC))

    async def send_due(self, read_until: dict[int, datetime]) -> None:
        """Send the facts due on each partition by the instant its commands are read until
        (``CommandReader.read_until``): one round trip for every fact due at this tick, not
        one per ticket."""
        now = datetime.now(UTC)
        facts: list[Event] = []
        for partition, until in read_until.items():
            for _, ticket_id in self.index.pop_due(until, [partition]):
                raw = self.tickets.get(ticket_id.encode())
                if not raw:
                    continue
                ticket = ticket_from_dict(raw)
                due = [self.first_copy(fact, now) for fact in self.processor.due(ticket, until)]
                if due:
                    facts.extend(due)
                    self.index.schedule(partition, ticket_id, until + FACT_RECHECK)
                else:
                    self.index.schedule(partition, ticket_id, self.processor.wakeup(ticket, until))
        if facts and not self._stopping:
            try:
                await self._send(facts)
            except (KafkaTimeoutError, ProducerSendError) as exc:
                if not isinstance(exc, KafkaTimeoutError) and not isinstance(exc.__cause__, KafkaTimeoutError):
                    raise
                # each ticket is looked at again FACT_RECHECK later, and its facts sent again
                # byte for byte (``first_copy``): the agent appends a fact once, however often sent
                log.warning("sla facts not sent: no broker answered; sent again at the next look",
                            facts=len(facts), error=str(exc))

    async def _send(self, facts: list[Event]) -> None:
        send = self.producer().send
        pending = [await send(COMMANDS, f.ticket_id.encode(), encode_fact(f), None, None, None) for f in facts]
        for future in pending:
            await future
        for fact in facts:
            log.info("sla fact sent to the agent", ticket_id=fact.ticket_id, event_id=str(fact.event_id),
                     type=str(fact.type), sla=fact.payload["sla"])

    def first_copy(self, fact: Event, now: datetime) -> Event:
        """The fact as first sent, if it was sent within FACT_MEMORY (else this one)."""
        if len(self._sent) > 100_000:  # forget what is long applied
            self._sent = {i: (e, at) for i, (e, at) in self._sent.items() if now - at < FACT_MEMORY}
        known = self._sent.get(fact.event_id)
        if known is not None and now - known[1] < FACT_MEMORY:
            return known[0]
        self._sent[fact.event_id] = (fact, now)
        return fact

    def drop(self, partition: int) -> None:
        """Another worker owns the partition: forget its deadlines (indexed again when it is
        assigned back)."""
        self._indexed.discard(partition)
        self._due_loaded.pop(partition, None)
        self.index.drop_partitions(self._indexed)

    def stop(self) -> None:
        """Send nothing more (the worker is stopping: its producer next)."""
        self._stopping = True

    def _rebuild_index(self, active: set[int]) -> None:
        """Index the newly assigned partitions. From RocksDB, nothing is read now: the due
        keys stored with the tickets are loaded tick by tick, up to DUE_LOOKAHEAD ahead
        (``_load_due``), so a deadline already due, or due during the start, is read at the
        first tick, before any later one. From memory, every ticket is read from the wakeup
        stored with it (no fold at start)."""
        now = datetime.now(UTC)
        self.index.drop_partitions(active)
        for partition in [p for p in self._due_loaded if p not in active]:
            del self._due_loaded[partition]
        fresh = active - self._indexed
        store = self.tickets.data
        if isinstance(store, KeyPartitionedRocksDBStore):
            for partition in fresh:
                if not store.due_indexed(partition):  # written before the index existed: once
                    count = store.index_due(partition, lambda key, value: self._stale_wakeup(store, value, now))
                    log.info("deadline index stored", partition=partition, tickets=count)
                self._due_loaded[partition] = None
            self._indexed = set(active)
            loaded = self._load_due(fresh, now)
            log.info("deadline index restored", partitions=sorted(active), scheduled=loaded)
            return
        count = 0
        for partition, ticket_id, wakeup in self._stored_wakeups(fresh):
            if wakeup is STALE:
                raw = self.tickets.get(ticket_id.encode())
                wakeup = self.processor.wakeup(ticket_from_dict(raw), now) if raw else None
            self.index.schedule(partition, ticket_id, wakeup)  # type: ignore[arg-type]
            count += 1
        log.info("deadline index rebuilt", partitions=sorted(active), tickets=count, scheduled=len(self.index))
        self._indexed = set(active)

    def _stale_wakeup(self, store: KeyPartitionedRocksDBStore, value: bytes, now: datetime) -> datetime | None:
        raw = store._decode_value(value)
        return self.processor.wakeup(ticket_from_dict(raw), now) if raw else None

    def _load_due(self, partitions: Collection[int], now: datetime) -> int:
        """Schedule the stored due keys up to ``now + DUE_LOOKAHEAD`` not loaded yet."""
        store = self.tickets.data
        until, count = now + DUE_LOOKAHEAD, 0
        if not isinstance(store, KeyPartitionedRocksDBStore):
            return 0
        for partition in partitions:
            if partition not in self._due_loaded:
                continue
            for at, ticket_id in store.due(partition, self._due_loaded[partition], until):
                self.index.schedule(partition, ticket_id, at)
                count += 1
            self._due_loaded[partition] = until
        return count

    def _stored_wakeups(self, partitions: set[int]) -> Iterator[tuple[int, str, datetime | object | None]]:
        store = self.tickets.data
        if isinstance(store, KeyPartitionedRocksDBStore):  # raw bytes, one database per partition
            for partition in partitions:
                for key, value in store.raw_items(partition):
                    if is_ticket_key(key):
                        yield partition, key.decode(), wakeup_of(value)
            return
        for key, value in list(self.tickets.items()):
            if not is_ticket_key(key):
                continue
            ticket_id = key.decode() if isinstance(key, bytes) else str(key)
            partition = partition_for(ticket_id, self.partitions)
            if partition in partitions and value:
                yield partition, ticket_id, wakeup_of(value)

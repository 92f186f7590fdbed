"""The Faust application: topics, the ticket agent, the deadline timer, the outcome waiter.

One record per command. The agent reads the commands topic only and is the single writer
of the events topic for its partitions: it decides a command, appends the events, stores
the ticket and answers, and never reads back what it appended. The deadline timer does not
write events: it sends each due SLA fact as a record of the commands topic
(``codec.encode_fact``), which the agent appends if the ticket still owes it.

The agent reads its commands partitions itself, in batches, with one aiokafka consumer
(``_read_commands``): Faust's per-record stream cost more than deciding a command. Faust
still does what it is good at: the consumer group assigns the partitions, with the tables'
changelogs (their partitions are the agent's), and recovers the tables before the agent
reads. On a revocation the agent finishes its batch, sends its writes and stops reading
the partitions before the group moves them (one writer per ticket). Each partition is read
from the position stored in the ``positions`` table, after the states it covers: every
command below it is decided. Events, outcomes and changelog records go out in aiokafka
batches (``batches.py``).

The events topic is read only to *recover*: when a partition is assigned, and when its end
moves past what the agent itself appended (a restore, another writer), the agent reads it
from its events position (all offsets below it are applied) to the end and applies what it
lacks (idempotent by event id). The events position is kept in the ticket table, on the
changelog partition of the tickets it describes, after them: a crash can lose the last
states only together with the position that covers them, so recovery reads their events
again.

Gap repair. A partition's records must be decided without a hole: a batch that starts
past the stored position, or skips offsets inside (seen with Faust's stream after a
SIGKILL: 174, then 384…), has the missing range read directly and decided first.
Reprocessing is harmless (deterministic event ids); skipping is not.

Data flow: HTTP command → commands topic (key = ticket id) → the agent (decides with
the sla/ state machine, appends events, stores the ticket, answers on the outcomes topic)
→ events topic → projector, audit.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import faust
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from faust.types import TP

from service.handler import Step
from service.outcomes import CommandUnavailable, NoOutcome, Outcome
from sla.events import Event, encode_event
from sla.policy import Policy
from sla.ticket import Command, Ticket, ticket_from_dict

from .batches import TableWrites, send_batched
from .codec import encode_command, encode_fact, is_fact
from .deadlines import DeadlineIndex
from .embedded import patch_faust_fetch_wait, patch_faust_highwaters
from .fence import Fence, Fenced, read_committed_changelogs, recovery_past_markers
from .kafka_security import aiokafka_options, faust_credentials
from .outcomes import OutcomeWaiter, WaiterSettings
from .processor import TicketProcessor
from .reader import ThreadedReader
from .recovery_watch import RecoveryWatch
from .store import SCHEME as STORE_SCHEME
from .store import KeyPartitionedRocksDBStore, store_options
from .store import register as register_store
from .table_values import (
    STALE,
    Refusals,
    events_position_key,
    is_ticket_key,
    partition_for,
    position_key,
    refusals_of,
    stored,
    wakeup_of,
)
from .tables import DeclaredTables  # restart (#31): no fixed wait at start
from .topics import APP_ID, COMMANDS, DEAD_LETTERS, EVENTS, OUTCOMES, POSITION_TABLE, TICKET_TABLE
from .transport import broker_urls
from .transport import register as register_transport
from .web_server import SCHEME as WEB_SCHEME
from .web_server import register as register_web_server

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
# How often the end of each events partition is compared with what the agent appended
# (another writer: recovery).
STALL_SECONDS = 3.0
BATCH_SIZE = 2000  # records decided together: the broker's acknowledgements are awaited once per batch
PRODUCER_BATCH_BYTES = 512 * 1024  # a batch of events or changelog records (aiokafka's default: 16 KiB)


class WorkerSettings(WaiterSettings, Protocol):
    """What the worker reads of the settings (``slaledger.settings.Settings`` has it all):
    passed in as a value, so this layer never imports the entrypoints'. Its Kafka address
    and security are the waiter's."""
    @property
    def store_url(self) -> str: ...
    @property
    def web_host(self) -> str: ...
    @property
    def web_port(self) -> int: ...
    @property
    def data_dir(self) -> str: ...
    @property
    def timer_interval(self) -> float: ...
    @property
    def command_timeout(self) -> float: ...
    @property
    def session_timeout(self) -> float: ...
    @property
    def heartbeat_interval(self) -> float: ...
    @property
    def rebalance_timeout(self) -> float: ...
    @property
    def commit_interval(self) -> float: ...
    @property
    def transactions(self) -> bool: ...


def advertised_host(web_host: str) -> str:
    """The address other workers use to forward a read to this one (``table_route``): a
    worker bound to every interface (in a container) advertises its own address."""
    if web_host in ("0.0.0.0", "::", ""):
        return socket.gethostbyname(socket.gethostname())
    return web_host


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes

    def context(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}


def _last_offsets(records: list[Record]) -> dict[tuple[str, int], int]:
    return {(r.topic, r.partition): r.offset for r in records}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Pipeline:
    """Everything a worker runs, built from settings; ``app`` is the Faust application.

    What the edge may use (the HTTP layer attaches its views to ``app`` from outside):
    ``load`` a ticket of this worker's partitions, ``submit`` a command and await its
    outcome, ``local_tickets`` and ``status`` for readiness."""

    def __init__(self, settings: WorkerSettings, policy: Policy,
                 on_recovery_stalled: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.policy = policy
        if settings.embedded:
            patch_faust_highwaters(settings.bootstrap)
            patch_faust_fetch_wait()
        self.processor = TicketProcessor(policy)
        self.index = DeadlineIndex()
        self.indexed_partitions: set[int] = set()
        # RocksDB: per partition, the instant up to which its stored due keys are in ``index``
        # (None: none yet).
        self.due_loaded: dict[int, datetime | None] = {}
        self.waiter = OutcomeWaiter(settings)
        # Apache Kafka: each partition's batches in transactions, a zombie fenced (``streams.fence``);
        # Tansu (dev mode) refuses transactions: one worker, writes through Faust's producer.
        self.fence = (Fence({"bootstrap_servers": settings.bootstrap, "max_batch_size": PRODUCER_BATCH_BYTES,
                             **aiokafka_options(settings)})
                      if settings.transactions and not settings.embedded else None)
        if self.fence is not None:
            read_committed_changelogs()
        register_store()
        register_transport()
        register_web_server()
        self.app = app = faust.App(
            APP_ID,
            broker=broker_urls(settings.bootstrap, embedded=settings.embedded),
            producer_acks=-1,  # acks=all: a record is written once min.insync.replicas have it
            broker_credentials=faust_credentials(settings),
            store=settings.store_url,
            autodiscover=False,
            topic_partitions=settings.partitions,
            topic_allow_declare=False,
            processing_guarantee="at_least_once",
            web_enabled=True,
            web=f"{WEB_SCHEME}://",  # without Faust's own routes (streams.web_server)
            web_bind=settings.web_host,
            web_host=settings.web_host,
            web_port=settings.web_port,
            canonical_url=f"http://{advertised_host(settings.web_host)}:{settings.web_port}",
            datadir=str(Path(settings.data_dir) / "faust"),
            broker_session_timeout=settings.session_timeout,
            broker_heartbeat_interval=settings.heartbeat_interval,
            broker_rebalance_timeout=settings.rebalance_timeout,
            broker_commit_interval=settings.commit_interval,
            producer_max_batch_size=PRODUCER_BATCH_BYTES,
            table_standby_replicas=0,
            web_in_thread=False,
            TableManager=DeclaredTables,  # restart (#31)
        )
        raw = {"key_serializer": "raw", "value_serializer": "raw"}
        p = settings.partitions
        self.commands = app.topic(COMMANDS, partitions=p, **raw)  # type: ignore[arg-type]
        self.outcomes = app.topic(OUTCOMES, partitions=p, **raw)  # type: ignore[arg-type]
        self.dead_letters = app.topic(DEAD_LETTERS, partitions=1, **raw)  # type: ignore[arg-type]
        # Keys raw, as on the topics, so the changelog partition (by key) is the ticket's
        # partition even when the timer or the gap repair writes (no current event).
        options = store_options() if settings.store_url.startswith(STORE_SCHEME) else None
        self.tickets = app.Table(TICKET_TABLE, partitions=p, key_type=bytes, use_partitioner=True, options=options)
        self.positions = app.Table(POSITION_TABLE, partitions=p, key_type=bytes, use_partitioner=True,
                                   options=options)
        self.writes = TableWrites()  # their changelog records go out in batches (``TableWrites.flush``)
        self.lock = asyncio.Lock()  # one batch at a time: the agent, recovery and the timer
        self.filled: dict[tuple[str, int], int] = {}
        # Fenced: by events partition, the offset our last transaction's marker takes (``_advance_events``).
        self.markers: dict[int, int] = {}
        self._markers_watch: asyncio.Task[None] | None = None  # ``fence.recovery_past_markers``
        # Events partitions read to their end since assigned (``_recover_events``), and when
        # each end was last compared with the events position.
        self.events_recovered: set[int] = set()
        self.events_checked: dict[int, float] = {}
        self._readers: dict[str, AIOKafkaConsumer] = {}  # by topic: a gap repair's append may read the events
        self._ends_reader: AIOKafkaConsumer | None = None
        # Ready once the tables are recovered and the backlog found at start has been read
        # (after a dev-mode restore, the tickets are rebuilt from the events topic).
        self.caught_up_once = False
        # Facts sent by the timer, by id, with when: a fact due again before the agent has
        # applied it is re-sent byte for byte. Derived anew, it would carry a later
        # recording time and the explanation of the ticket as it stands then (measured: a
        # breach re-sent during a leader failover, after a late acknowledgement, read as one
        # event with two contents by the audit).
        self.sent_facts: dict[uuid.UUID, tuple[Event, datetime]] = {}
        self.tickets_changelog = self.tickets.changelog_topic.get_topic_name()  # its partitions are ours
        self.reading: set[int] = set()  # commands partitions the agent reads (``_read_commands``)
        self.holding = False  # between a revocation and the next assignment: read nothing
        self.stopping = False
        self._command_reader_: ThreadedReader | None = None
        app.task(self._read_commands)
        app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]
        app.on_before_shutdown.connect(self._on_shutdown)  # type: ignore[arg-type]
        app.timer(settings.timer_interval, name="deadline_timer")(self._deadline_timer)
        app.task(self._deadline_timer)  # restart (#31): a first tick once recovered, not a timer_interval later
        app.task(self.waiter.run)
        # a table recovery that stopped moving is handed to the entry point (``on_recovery_stalled``)
        self.recovery_watch = RecoveryWatch(app.tables.recovery, lambda: bool(app.rebalancing),  # type: ignore[attr-defined]
                                            on_recovery_stalled)
        app.task(self.recovery_watch.run)

    # --- what the edge uses -------------------------------------------------------------
    def load(self, ticket_id: str) -> Ticket | None:
        """This worker's copy of a ticket (its partitions only; reads are routed to the owner)."""
        raw = self.tickets.get(ticket_id.encode())
        return ticket_from_dict(raw) if raw else None

    def local_tickets(self, statuses: Collection[str] = (), member: str | None = None) -> list[Ticket]:
        """The tickets of this worker's partitions (when no SQL read model is configured)."""
        return [ticket_from_dict(raw) for key, raw in list(self.tickets.items())
                if raw and is_ticket_key(key) and (not statuses or raw["status"] in statuses)
                and (not member or raw["member"] == member)]

    @property
    def accepting(self) -> bool:
        """Commands can be sent: their outcomes will be heard."""
        return self.waiter.ready.is_set()

    async def send(self, command: Command) -> None:
        """Send a command nobody waits for (demo feeder): it is decided like any other."""
        await self.commands.send(key=command.ticket_id.encode(), value=encode_command(command))

    async def submit(self, command: Command) -> Outcome:
        """Send a command to its ticket's partition and await the agent's outcome. Raises
        ``CommandUnavailable`` (nothing sent, or its partition fenced from this worker: the new
        owner decides it again) or ``NoOutcome`` (timed out: may be applied)."""
        cid = str(command.command_id)
        future = self.waiter.expect(cid, partition_for(command.ticket_id, self.settings.partitions))
        try:
            await self.send(command)
            return await asyncio.wait_for(future, timeout=self.settings.command_timeout)
        except KafkaError as exc:
            log.warning("command not sent: broker unavailable", ticket_id=command.ticket_id, command_id=cid,
                        error=repr(exc))
            raise CommandUnavailable(repr(exc)) from None
        except TimeoutError:
            log.warning("command outcome timed out", ticket_id=command.ticket_id, command_id=cid)
            raise NoOutcome(cid) from None
        finally:
            self.waiter.forget(cid, future)

    def status(self) -> dict[str, Any]:
        """Readiness: tables recovered, outcomes heard, the backlog found at start read."""
        ready = self.recovered and self.accepting and self.caught_up_once
        return {"ready": ready, "tables_recovered": self.recovered, "caught_up": self.caught_up_once,
                "partitions": sorted(self.active_partitions())}

    @property
    def recovered(self) -> bool:
        return self.recovery_watch.recovered

    def active_partitions(self) -> set[int]:
        """The partitions the group gave this worker, that it may still write (a fenced one
        waits for the next assignment)."""
        assigned = {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == self.tickets_changelog}
        return assigned if self.fence is None else assigned & self.fence.partitions

    # --- the agent -----------------------------------------------------------------------
    async def _read_commands(self) -> None:
        """The ticket agent: reads its commands partitions itself, in batches, from the
        position it stored (``positions`` table). Faust's per-record stream costs about
        87 µs a record here, more than deciding the command; Faust still assigns the
        partitions (with the tables' changelogs) and recovers the tables."""
        reader = await self._command_reader()
        while not self.stopping:
            if self.holding or not self.recovered:
                await asyncio.sleep(0.05)
                continue
            active = self.active_partitions()
            if active != self.reading:
                async with self.lock:
                    await self._assign_reader(reader, active)
            if not self.reading:
                await asyncio.sleep(0.05)
                continue
            fetched = await reader.getmany(timeout_ms=100, max_records=BATCH_SIZE)
            if not fetched:
                continue
            async with self.lock:
                if self.stopping:
                    return
                records = [Record(COMMANDS, tp.partition, m.offset, m.key, m.value)
                           for tp, messages in fetched.items() if tp.partition in self.reading for m in messages]
                partitions = {r.partition for r in records}
                try:
                    if partitions - self.events_recovered:
                        await self._recover_events(partitions - self.events_recovered)
                        if partitions - self.events_recovered:  # not recovered yet: read them again later
                            await self._assign_reader(reader, self.reading, force=True)
                            continue
                    await self._process_delivered(records)
                except Fenced as fenced:
                    self._drop_fenced(fenced.partition)
            await self._ebb()  # Faust's own consumer waits for the changelog writes this way too

    async def _command_reader(self) -> ThreadedReader:
        reader = ThreadedReader(COMMANDS, bootstrap_servers=self.settings.bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=4 * 1024 * 1024, **self._reader_options(),
                                fetch_max_wait_ms=50 if self.settings.embedded else 100)
        await reader.start()
        self._command_reader_ = reader
        return reader

    async def _assign_reader(self, reader: ThreadedReader, partitions: set[int], force: bool = False) -> None:
        """Read exactly ``partitions``, each from its stored position (records before it are
        decided); the partitions kept go on from where the reader is unless ``force``."""
        kept = set() if force else self.reading & partitions
        await reader.assign(partitions, {p: self._expected(COMMANDS, p) or 0 for p in partitions - kept})
        if partitions != self.reading:
            log.info("commands partitions read", partitions=sorted(partitions))
        self.reading = set(partitions)

    async def _on_revoked(self, sender: Any, revoked: set[TP], **_: Any) -> None:
        """Stop deciding commands of the revoked partitions before the group moves them (one
        writer per ticket), and send their table writes; until the next assignment, read
        nothing. A partition may come back after another worker appended to it: its events
        are recovered again."""
        self.holding = True
        async with self.lock:
            lost = {tp.partition for tp in revoked}
            self.reading -= lost
            self.events_recovered -= lost
            await self.app.producer.flush()

    async def _on_assigned(self, sender: Any, assigned: set[TP], **_: Any) -> None:
        """Take the assigned partitions' transactional ids before anything is read: their
        previous holder, alive or not, can write there no more."""
        if self.fence is not None:
            if self._markers_watch is None:  # Faust starts its app tasks only once the tables are recovered
                self._markers_watch = asyncio.create_task(recovery_past_markers(self.app))
            async with self.lock:
                await self.fence.claim({tp.partition for tp in assigned if tp.topic == self.tickets_changelog})
        self.holding = False

    def _drop_fenced(self, partition: int) -> None:
        """Another worker owns the partition: stop reading it and forget what this worker
        holds of it that the log may not have (its tables' local state, the positions and
        writes of the refused batch). The next assignment recovers it from the changelog."""
        turned = self.waiter.abandon(partition, f"partition {partition} fenced: another worker owns it")
        if turned:
            log.warning("callers of a fenced partition answered unavailable", partition=partition, callers=turned)
        self.reading.discard(partition)
        self.events_recovered.discard(partition)
        self.indexed_partitions.discard(partition)
        self.due_loaded.pop(partition, None)
        self.index.drop_partitions(self.indexed_partitions)
        self.writes.drop(partition)
        self.markers.pop(partition, None)
        for key in [key for key in self.filled if key[1] == partition]:
            del self.filled[key]
        for table in (self.tickets, self.positions):
            store = table.data
            if isinstance(store, KeyPartitionedRocksDBStore):
                store.forget_partition(partition)
            else:
                for key in [k for k in list(store.keys()) if partition_for(k.decode(), self.settings.partitions)
                            == partition]:
                    del store[key]

    async def _on_shutdown(self, sender: Any, **_: Any) -> None:
        """Finish the batch in hand, then read nothing more: Faust stops the producer next."""
        self.stopping = True
        async with self.lock:
            if self._command_reader_ is not None:
                await self._command_reader_.stop()
            if self.fence is not None:
                await self.fence.stop()
            if self._markers_watch is not None:
                self._markers_watch.cancel()

    async def _process_delivered(self, records: list[Record]) -> None:
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
                following[key] = self._expected(*key) or 0
            if record.offset > following[key]:
                if segment:
                    await self._process(segment)
                    segment = []
                await self._repair_gap(record.topic, record.partition, record.offset)
            following[key] = max(following[key], record.offset + 1)
            segment.append(record)
        if segment:
            await self._process(segment)

    async def _process(self, records: list[Record]) -> None:
        """Handle a batch (``_decide``); fenced, one transaction per partition."""
        if self.fence is None:
            await self._decide(records, self._producer())
            return
        by_partition: dict[int, list[Record]] = {}
        for record in records:
            by_partition.setdefault(record.partition, []).append(record)
        for partition, part in by_partition.items():
            async with self._writing(partition) as producer:
                await self._decide(part, producer)

    @asynccontextmanager
    async def _writing(self, partition: int) -> AsyncIterator[AIOKafkaProducer]:
        """Where a partition's writes go: its transaction (``streams.fence``, committed when
        the outermost ``_writing`` of the partition ends), or Faust's producer (dev mode)."""
        if self.fence is None:
            yield self._producer()
            return
        async with self.fence.transaction(partition) as producer:
            yield producer

    async def _decide(self, records: list[Record], producer: AIOKafkaProducer) -> None:
        """Handle a batch: decide/apply every record against the latest state, then
        1. append all resulting events and dead letters and wait for the broker,
        2. store each touched ticket once, 3. answer the waiting HTTP callers,
        4. record the positions (after the states they cover).

        A command below the partition's expected offset was decided before (its events were
        acknowledged before the position moved): a redelivery of it is dropped, not decided
        again against a newer state. Events (read to recover) are always applied, idempotent
        by id: they rebuild a state whose changelog write a crash lost."""
        decided = {p: self._expected(COMMANDS, p) or 0 for p in {r.partition for r in records if r.topic == COMMANDS}}
        records = [r for r in records if r.topic != COMMANDS or r.offset >= decided[r.partition]]
        if not records:
            return
        now = utcnow()
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
            try:
                if record.topic == EVENTS:
                    step = self.processor.on_event(cache[tid], record.key, record.value, now)
                elif is_fact(record.value):
                    step = self.processor.on_fact(cache[tid], record.key, record.value, now)
                else:
                    step = self.processor.on_command(cache[tid], record.value, now, refused[tid])
            except Exception as exc:  # never stop the worker on one record
                log.exception("record processing failed", **record.context(), ticket_id=tid)
                step = Step(dead_letter=f"processing error: {type(exc).__name__}: {exc}")
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
        acknowledged = await self._append(producer, emit, letters)
        states = []  # prepared while the broker writes the events, stored once it has them
        for tid, (partition, ticket) in touched.items():
            wakeup = self.processor.wakeup(ticket, now)  # once per ticket and batch
            states.append((partition, tid, wakeup, stored(ticket, wakeup, refused[tid])))
        appended = await acknowledged
        for partition, tid, wakeup, value in states:
            self.writes.put(self.tickets, partition, tid.encode(), value)
            self.index.schedule(partition, tid, wakeup)
        if emit and log.is_enabled_for(logging.DEBUG):  # (its arguments cost 3 % of a command)
            for _, event in emit:
                log.debug("event appended", ticket_id=event.ticket_id, event_id=str(event.event_id),
                          type=str(event.type))
        if outcomes:
            count = len(await producer.partitions_for(OUTCOMES))
            await send_batched(producer, OUTCOMES, [(partition_for(o.command_id, count),
                                                     o.command_id.encode(), o.encode()) for o in outcomes])
        for (topic, partition), last in _last_offsets(records).items():
            if topic == EVENTS:
                self._set_events_position(partition, last + 1)
            else:  # never back (records below it are dropped above; a gap repair may come late)
                position = max(self._expected(topic, partition) or 0, last + 1)
                self.filled[(topic, partition)] = position
                self.writes.put(self.positions, partition, position_key(topic, partition, self.settings.partitions),
                                position)
        for partition, offsets in appended.items():
            await self._advance_events(partition, offsets)
        await self.writes.flush(producer)

    def _expected(self, topic: str, partition: int) -> int | None:
        stored = self.positions.get(position_key(topic, partition, self.settings.partitions))
        seen = self.filled.get((topic, partition))
        known = [v for v in (stored, seen) if v is not None]
        return max(known) if known else None

    # --- the events position: every offset below it is applied ---------------------------
    def _events_position(self, partition: int) -> int | None:
        value = self.tickets.get(events_position_key(partition, self.settings.partitions))
        return int(value["events_position"]) if value else None

    def _set_events_position(self, partition: int, offset: int) -> None:
        if offset > (self._events_position(partition) or 0) or self._events_position(partition) is None:
            self.writes.put(self.tickets, partition, events_position_key(partition, self.settings.partitions),
                            {"events_position": offset})

    async def _advance_events(self, partition: int, offsets: list[int]) -> None:
        """After an append: the position moves past our own records when they follow it
        without a hole; a hole is another writer's records (a restore, a tree head), read.

        Fenced, one offset between the position and our records, where our previous append
        ended, is that transaction's marker; a longer hole is read up to our records only (ours are not
        committed yet: a read_committed reader stops before them), and a hole among ours
        is left to the next look at the partition's end (``_check_events_ends``)."""
        offsets.sort()
        at = self._events_position(partition)
        contiguous = offsets[-1] - offsets[0] + 1 == len(offsets)
        if self.fence is not None and at is not None and at == self.markers.get(partition) == offsets[0] - 1:
            at = offsets[0]
        elif self.fence is not None and at is not None and offsets[0] > at:
            log.info("records of another writer before ours, read", partition=partition, position=at,
                     first=offsets[0])
            await self._read_events(partition, at, offsets[0])
            at = self._events_position(partition)
        if at == offsets[0] and contiguous:
            self._set_events_position(partition, offsets[-1] + 1)
            if self.fence is not None:
                self.markers[partition] = offsets[-1] + 1
        elif self.fence is not None:
            log.info("records of another writer among ours, read later", partition=partition, position=at,
                     first=offsets[0], last=offsets[-1])
        else:
            log.info("records of another writer among ours, read", partition=partition, position=at,
                     first=offsets[0], last=offsets[-1], appended=len(offsets))
            await self._read_events(partition, at or 0, offsets[-1] + 1)

    async def _recover_events(self, partitions: set[int]) -> None:
        """At assignment: apply what each events partition holds past its events position
        (states a crash lost, a restored log) before deciding any command of it."""
        ends = await self._events_ends(partitions)
        for partition in sorted(partitions):
            start = self._events_position(partition)
            if start is None or ends[partition] > start or self.settings.embedded:
                read, complete = await self._read_events(partition, start or 0, self._bound(ends[partition]))
                if not complete:  # the broker stopped answering: commands wait, the next tick goes on
                    log.warning("events partition not recovered yet", partition=partition, read=read)
                    continue
                log.info("events partition recovered", partition=partition, start=start or 0, read=read)
            self.events_recovered.add(partition)

    async def _check_events_ends(self, partitions: set[int]) -> None:
        """Every STALL_SECONDS, read what another writer appended past the events position."""
        now = asyncio.get_running_loop().time()
        due = {p for p in partitions & self.events_recovered if now - self.events_checked.get(p, 0.0) >= STALL_SECONDS}
        if not due:
            return
        ends = await self._events_ends(due)
        for partition in sorted(due):
            self.events_checked[partition] = now
            at = self._events_position(partition) or 0
            if ends[partition] > at:
                read, _ = await self._read_events(partition, at, self._bound(ends[partition]))
                log.info("events appended by another writer applied", partition=partition, start=at, read=read)

    async def _events_ends(self, partitions: set[int]) -> dict[int, int]:
        """The end offsets of events partitions, in one request of a consumer that fetches
        nothing (on the embedded broker, a hint only: see ``_bound``)."""
        if self._ends_reader is None:
            self._ends_reader = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap, group_id=None,
                                                 enable_auto_commit=False, **self._reader_options())
            await self._ends_reader.start()
        found = await self._ends_reader.end_offsets([TopicPartition(EVENTS, p) for p in partitions])
        return {tp.partition: int(offset) for tp, offset in found.items()}

    def _bound(self, end: int) -> int | None:
        """Where a read of the events stops: the end offset on Apache Kafka; on the embedded
        broker, whose ListOffsets answers the last batch's base + 1, the fetches' end."""
        return None if self.settings.embedded else end

    async def _read_events(self, partition: int, start: int, end: int | None) -> tuple[int, bool]:
        """Apply the events [start, end) of a partition; the position then covers what was
        read. (records read, whether the read reached ``end`` or the partition's end)."""
        read = 0
        async with self._writing(partition) as producer:
            async for records in self._records(EVENTS, partition, start, end):
                await self._process(records)
                read += len(records)
            reader, tp = await self._reader(EVENTS), TopicPartition(EVENTS, partition)
            reached = await reader.position(tp)
            self._set_events_position(partition, min(reached, end) if end is not None else reached)
            await self.writes.flush(producer)
        high = end if end is not None else reader.highwater(tp)
        return read, high is not None and reached >= high

    # --- reading a range directly (gap repair, recovery) ------------------------------------
    async def _repair_gap(self, topic: str, partition: int, upto: int) -> None:
        """Process records [expected, upto) of a partition that the batch skipped. With no
        position recorded at all, the partition is read from 0: the records are idempotent,
        a skipped command is not."""
        expected = self._expected(topic, partition) or 0
        if upto <= expected:
            return
        log.warning("gap in delivered records, reading it directly", topic=topic, partition=partition,
                    first=expected, upto=upto)
        async for records in self._records(topic, partition, expected, upto):
            await self._process(records)

    async def _ebb(self) -> None:
        """Faust holds back its consumer until the tables' changelog writes are sent; records
        read directly must wait the same way (measured: a first start folding 1M events
        grew to 2.1 GiB without it)."""
        await self.app.producer.buffer.wait_until_ebb()

    def _reader_options(self) -> dict[str, Any]:
        """Every reader of the worker reads what was committed only: nothing a fenced
        worker sent (``streams.fence``; Tansu, which has no transactions, reads as it is)."""
        isolation = "read_uncommitted" if self.settings.embedded else "read_committed"
        return {**aiokafka_options(self.settings), "isolation_level": isolation}

    async def _reader(self, topic: str) -> AIOKafkaConsumer:
        if topic not in self._readers:
            reader = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap, group_id=None,
                                      enable_auto_commit=False, **self._reader_options(),
                                      fetch_max_wait_ms=50 if self.settings.embedded else 500)
            await reader.start()
            self._readers[topic] = reader
        return self._readers[topic]

    async def _records(self, topic: str, partition: int, start: int, end: int | None) -> AsyncIterator[list[Record]]:
        """Records [start, end) of a partition in batches, read directly; ``end`` None: to the
        end the fetches report. Each next batch waits for the changelog writes of the one
        before (``_ebb``). Gives up after 30 s without progress."""
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
                await self._ebb()  # the caller has processed them: their changelog writes go first
            position = await reader.position(tp)
            if end is not None and position >= end:
                return
            high = reader.highwater(tp)
            if not batch and high is not None and high <= position:
                return  # the partition ends before ``end``: nothing more to read

    async def _append(self, producer: AIOKafkaProducer, events: list[tuple[int, Event]],
                      letters: Sequence[tuple[Record, str]] = ()) -> Awaitable[dict[int, list[int]]]:
        """Send events (and dead letters) to their ticket's partition. What it returns, awaited,
        waits until the broker has them all and gives the offsets the events got, by
        partition (the caller prepares the states meanwhile)."""
        sent = await send_batched(producer, EVENTS, [(p, e.ticket_id.encode(), encode_event(e)) for p, e in events])
        dead = await send_batched(producer, DEAD_LETTERS, [(0, record.key, self._dead_letter(record, reason))
                                                           for record, reason in letters])

        async def acknowledged() -> dict[int, list[int]]:
            appended: dict[int, list[int]] = {}
            for batch in sent:
                appended.setdefault(batch.partition, []).extend(await batch.offsets())
            for batch in dead:
                await batch.future
            return appended

        return acknowledged()

    def _producer(self) -> AIOKafkaProducer:
        """Faust's aiokafka producer (on this loop), for the batch API (``send_batched``)."""
        return self.app.producer._ensure_producer()  # type: ignore[attr-defined]

    @staticmethod
    def _dead_letter(record: Record, reason: str) -> bytes:
        body = {
            "reason": reason,
            "origin": {"topic": record.topic, "partition": record.partition, "offset": record.offset},
            "key": base64.b64encode(record.key).decode() if record.key else None,
            "value": base64.b64encode(record.value).decode() if record.value else None,
            "dead_lettered_at": utcnow().isoformat(),
        }
        return json.dumps(body).encode()

    # --- the timer ---------------------------------------------------------------------------
    async def _deadline_timer(self) -> None:
        if not self.recovered or self.stopping:
            return
        active = self.active_partitions()
        self.events_recovered &= active
        async with self.lock:
            try:
                if active - self.events_recovered:
                    await self._recover_events(active - self.events_recovered)
                await self._check_events_ends(active)
            except Fenced as fenced:
                self._drop_fenced(fenced.partition)
                return
        if active != self.indexed_partitions:
            self._rebuild_index(active)
        else:
            self._load_due(active, utcnow())
        if not self.caught_up_once and active and self._caught_up(active) == active:
            self.caught_up_once = True
            log.info("worker caught up", partitions=sorted(active))
        now = utcnow()
        facts: list[Event] = []
        for partition, ticket_id in self.index.pop_due(now, self._caught_up(active)):
            ticket = self.load(ticket_id)
            if ticket is None:
                continue
            due = [self._first_copy(fact, now) for fact in self.processor.due(ticket, now)]
            if due:
                facts.extend(due)
                self.index.schedule(partition, ticket_id, now + FACT_RECHECK)
            else:
                self.index.schedule(partition, ticket_id, self.processor.wakeup(ticket, now))
        if facts and not self.stopping:  # one round trip for every fact due at this tick, not one per ticket
            send = self.app.producer.send
            pending = [await send(COMMANDS, f.ticket_id.encode(), encode_fact(f), None, None, None) for f in facts]
            for future in pending:
                await future
            for fact in facts:
                log.info("sla fact sent to the agent", ticket_id=fact.ticket_id, event_id=str(fact.event_id),
                         type=str(fact.type), sla=fact.payload["sla"])

    def _first_copy(self, fact: Event, now: datetime) -> Event:
        """The fact as first sent, if it was sent within FACT_MEMORY (else this one)."""
        if len(self.sent_facts) > 100_000:  # forget what is long applied
            self.sent_facts = {i: (e, at) for i, (e, at) in self.sent_facts.items() if now - at < FACT_MEMORY}
        known = self.sent_facts.get(fact.event_id)
        if known is not None and now - known[1] < FACT_MEMORY:
            return known[0]
        self.sent_facts[fact.event_id] = (fact, now)
        return fact

    def _caught_up(self, partitions: set[int]) -> set[int]:
        """Partitions whose events the agent has recovered and whose commands it has read to
        the end: only there may a verdict be drawn (a backlog still holds part of the
        tickets' history)."""
        out = set()
        reader = self._command_reader_
        for partition in partitions & self.events_recovered & self.reading:
            high = reader.highwater(TopicPartition(COMMANDS, partition)) if reader else None
            if high is not None and (self._expected(COMMANDS, partition) or 0) >= high:
                out.add(partition)
        return out

    def _rebuild_index(self, active: set[int]) -> None:
        """Index the newly assigned partitions. From RocksDB, nothing is read now: the due
        keys stored with the tickets are loaded tick by tick, up to DUE_LOOKAHEAD ahead
        (``_load_due``), so a deadline already due, or due during the start, is read at the
        first tick, before any later one. From memory, every ticket is read from the wakeup
        stored with it (no fold at start)."""
        now = utcnow()
        self.index.drop_partitions(active)
        for partition in [p for p in self.due_loaded if p not in active]:
            del self.due_loaded[partition]
        fresh = active - self.indexed_partitions
        store = self.tickets.data
        if isinstance(store, KeyPartitionedRocksDBStore):
            for partition in fresh:
                if not store.due_indexed(partition):  # written before the index existed: once
                    count = store.index_due(partition, lambda key, value: self._stale_wakeup(store, value, now))
                    log.info("deadline index stored", partition=partition, tickets=count)
                self.due_loaded[partition] = None
            self.indexed_partitions = set(active)
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
        self.indexed_partitions = set(active)

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
            if partition not in self.due_loaded:
                continue
            for at, ticket_id in store.due(partition, self.due_loaded[partition], until):
                self.index.schedule(partition, ticket_id, at)
                count += 1
            self.due_loaded[partition] = until
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
            partition = partition_for(ticket_id, self.settings.partitions)
            if partition in partitions and value:
                yield partition, ticket_id, wakeup_of(value)

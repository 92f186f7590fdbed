"""The worker: the Faust application and the collaborators it is made of, built and wired here.

One record per command. The agent reads the commands topic only and is the single writer
of the events topic for its partitions: it decides a command, appends the events, stores
the ticket and answers, and never reads back what it appended. The collaborators, each in
its own module and handed what it shares:

- ``CommandReader`` (``command_reader.py``): the agent's loop, reading its commands
  partitions in batches from their stored positions; stops reading a partition before the
  group moves it.
- ``Positions`` (``positions.py``): where each partition is (commands: the ``positions``
  table; events: the events position, in the ticket table).
- ``Recovery`` (``recovery.py``): every batch handled without a hole (gap repair), the
  events topic read back when a partition is assigned or another writer appended to it.
- ``Appender`` (``appender.py``): a batch decided (``service.handler`` through
  ``processor.py``), its events appended, its tickets stored, its callers answered; in the
  partition's transaction when fenced (``fence.py``).
- ``DeadlineTimer`` (``timer.py``): the deadline index, and each due SLA fact sent as a
  record of the commands topic (``codec.encode_fact``), appended by the agent if the
  ticket still owes it.
- ``Fence`` (``fence.py``), ``RecoveryWatch`` (``recovery_watch.py``), ``OutcomeWaiter``
  (``outcomes.py``).

``Pipeline`` holds the Faust app and its tables, routes the group's signals (assignment,
revocation, a fenced partition, shutdown) and the timer's tick to them, and is what the
edge uses (``load``, ``submit``, ``status``...).

Data flow: HTTP command → commands topic (key = ticket id) → the agent (decides with
the sla/ state machine, appends events, stores the ticket, answers on the outcomes topic)
→ events topic → projector, audit.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Protocol

import faust
import structlog
from aiokafka.errors import KafkaError
from faust.types import TP

from service.outcomes import CommandUnavailable, NoOutcome, Outcome
from sla.policy import Policy
from sla.ticket import Command, Ticket, ticket_from_dict

from .appender import Appender
from .batches import TableWrites
from .changelog_markers import CommittedProbe, recovery_past_markers
from .codec import encode_command
from .command_reader import CommandReader
from .fence import Fence, Unwritten, read_committed_changelogs, request_rejoin
from .kafka_security import aiokafka_options, faust_credentials
from .outcomes import OutcomeWaiter, WaiterSettings
from .positions import Positions
from .processor import TicketProcessor
from .reader import RangeReader, ThreadedReader
from .recovery import Recovery
from .recovery_watch import RecoveryWatch
from .store import SCHEME as STORE_SCHEME
from .store import KeyPartitionedRocksDBStore, store_options
from .store import register as register_store
from .table_values import is_ticket_key, partition_for
from .tables import DeclaredTables  # restart (#31): no fixed wait at start
from .tansu import patch_faust_fetch_wait, patch_faust_highwaters
from .timer import DeadlineTimer
from .topics import APP_ID, COMMANDS, DEAD_LETTERS, OUTCOMES, POSITION_TABLE, TICKET_TABLE
from .transport import broker_urls
from .transport import register as register_transport
from .web_server import SCHEME as WEB_SCHEME
from .web_server import register as register_web_server

log = structlog.get_logger(__name__)

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


def reader_options(settings: WorkerSettings) -> dict[str, Any]:
    """Every reader of the worker reads what was committed only: nothing a fenced worker
    sent (``streams.fence``; Tansu, which has no transactions, reads as it is)."""
    isolation = "read_uncommitted" if settings.embedded else "read_committed"
    return {"bootstrap_servers": settings.bootstrap, **aiokafka_options(settings), "isolation_level": isolation}


class Pipeline:
    """Everything a worker runs, built from settings; ``app`` is the Faust application.

    What the edge may use (the HTTP layer attaches its views to ``app`` from outside):
    ``load`` a ticket of this worker's partitions, ``submit`` a command and await its
    outcome, ``local_tickets`` and ``status`` for readiness."""

    def __init__(self, settings: WorkerSettings, policy: Policy,
                 on_recovery_stalled: Callable[[], None] | None = None) -> None:
        self.settings = settings
        if settings.embedded:
            patch_faust_highwaters(settings.bootstrap)
            patch_faust_fetch_wait()
        self.waiter = OutcomeWaiter(settings)
        # Apache Kafka: each partition's batches in transactions, a zombie fenced (``streams.fence``);
        # Tansu (dev mode) refuses transactions: one worker, writes through Faust's producer.
        self.fence = (Fence({"bootstrap_servers": settings.bootstrap, "max_batch_size": PRODUCER_BATCH_BYTES,
                             **aiokafka_options(settings)})
                      if settings.transactions and not settings.embedded else None)
        if self.fence is not None:
            read_committed_changelogs()
        self.app = app = self._faust_app(settings)
        raw = {"key_serializer": "raw", "value_serializer": "raw"}
        p = settings.partitions
        self.commands = app.topic(COMMANDS, partitions=p, **raw)  # type: ignore[arg-type]
        self.outcomes = app.topic(OUTCOMES, partitions=p, **raw)  # type: ignore[arg-type]
        self.dead_letters = app.topic(DEAD_LETTERS, partitions=1, **raw)  # type: ignore[arg-type]
        # Keys raw, as on the topics, so the changelog partition (by key) is the ticket's
        # partition even when the timer or the gap repair writes (no current event).
        options = store_options() if settings.store_url.startswith(STORE_SCHEME) else None
        self.tickets = app.Table(TICKET_TABLE, partitions=p, key_type=bytes, use_partitioner=True, options=options)
        positions_table = app.Table(POSITION_TABLE, partitions=p, key_type=bytes, use_partitioner=True,
                                    options=options)
        self.tickets_changelog = self.tickets.changelog_topic.get_topic_name()  # its partitions are ours
        # Ready once the tables are recovered and the backlog found at start has been read
        # (after a dev-mode restore, the tickets are rebuilt from the events topic).
        self.caught_up_once = False
        self._markers_watch: asyncio.Task[None] | None = None  # ``changelog_markers.recovery_past_markers``
        self._markers_probe = CommittedProbe(reader_options(settings))
        # a table recovery that stopped moving is handed to the entry point (``on_recovery_stalled``)
        self.recovery_watch = watch = RecoveryWatch(app.tables.recovery,  # type: ignore[attr-defined]
                                                    lambda: bool(app.rebalancing), on_recovery_stalled)

        # The collaborators, handed what they share; Faust's producer is asked for when used.
        processor = TicketProcessor(policy)
        self.writes = TableWrites()  # the tables' changelog records go out in batches (``TableWrites.flush``)
        self.lock = asyncio.Lock()  # one batch at a time: the agent, recovery and the timer
        self.timer = DeadlineTimer(processor, self.tickets, p, producer=lambda: app.producer)
        self.positions = Positions(self.tickets, positions_table, self.writes, p)
        appender = Appender(processor, self.tickets, self.positions, self.writes, self.timer.schedule, self.fence,
                            producer=lambda: app.producer._ensure_producer())  # type: ignore[attr-defined]
        ranges = RangeReader(reader_options(settings), settings.embedded,
                             ebb=lambda: app.producer.buffer.wait_until_ebb())
        self.recovery = Recovery(appender, self.positions, self.writes, ranges, settings.embedded)
        commands = ThreadedReader(COMMANDS, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                                  max_partition_fetch_bytes=4 * 1024 * 1024, **reader_options(settings),
                                  fetch_max_wait_ms=50 if settings.embedded else 100)
        self.reader = CommandReader(commands, self.lock, self.positions, self.recovery, self.fence,
                                    active=self.active_partitions, recovered=lambda: watch.recovered,
                                    on_refused=self._drop_fenced, flush=lambda: app.producer.flush(),
                                    ebb=lambda: app.producer.buffer.wait_until_ebb())

        app.task(self.reader.run)
        app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]
        app.on_before_shutdown.connect(self._on_shutdown)  # type: ignore[arg-type]
        app.timer(settings.timer_interval, name="deadline_timer")(self._on_tick)
        app.task(self._on_tick)  # restart (#31): a first tick once recovered, not a timer_interval later
        app.task(self.waiter.run)
        app.task(self.recovery_watch.run)

    @staticmethod
    def _faust_app(settings: WorkerSettings) -> faust.App:
        register_store()
        register_transport()
        register_web_server()
        return faust.App(
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

    # --- what the edge uses -------------------------------------------------------------
    def load(self, ticket_id: str) -> Ticket | None:
        """This worker's copy of a ticket (its partitions only; reads are routed to the owner)."""
        raw = self.tickets.get(ticket_id.encode())
        return ticket_from_dict(raw) if raw else None

    def serves(self, ticket_id: str) -> bool:
        """This worker answers for the ticket now: its partition is assigned here, writable, and
        its tables recovered. A ticket it lacks then does not exist; otherwise the partition is
        being taken back (after a fence, a rejoin recovers it) and "not found" would be false."""
        return self.recovered and partition_for(ticket_id, self.settings.partitions) in self.active_partitions()

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

    # --- the group's signals, routed to the collaborators ---------------------------------
    async def _on_revoked(self, sender: Any, revoked: set[TP], **_: Any) -> None:
        await self.reader.revoked({tp.partition for tp in revoked})

    async def _on_assigned(self, sender: Any, assigned: set[TP], **_: Any) -> None:
        if self.fence is not None and self._markers_watch is None:
            # Faust starts its app tasks only once the tables are recovered
            self._markers_watch = asyncio.create_task(recovery_past_markers(self.app, self._markers_probe))
        await self.reader.assigned({tp.partition for tp in assigned if tp.topic == self.tickets_changelog})

    def _drop_fenced(self, partition: int) -> None:
        """A batch of the partition was refused (fenced: another worker claimed it; or aborted):
        stop reading it, forget what this worker holds of it that the log may not have (its
        tables' local state, the positions and writes of the refused batch), and ask the group
        for an assignment again (``fence.request_rejoin``). A zombie learns it lost the
        partition; a worker the group still gives it (another's claim landed after its own)
        claims it anew and Faust recovers its tables from the changelog, from the start."""
        turned = self.waiter.abandon(partition, f"partition {partition} refused: its owner may have changed")
        if turned:
            log.warning("callers of a fenced partition answered unavailable", partition=partition, callers=turned)
        self.reader.fenced(partition)
        self.recovery.fenced(partition)
        self.timer.drop(partition)
        self.writes.drop(partition)
        self.positions.forget(partition)
        for table in (self.tickets, self.positions.table):
            # Faust recovers a kept partition from where its last recovery ended, or from the
            # store's persisted offset: neither, and it reads the changelog from its start
            self.app.tables.recovery.active_offsets.pop(TP(table.changelog_topic.get_topic_name(), partition), None)  # type: ignore[attr-defined]
            store = table.data
            if isinstance(store, KeyPartitionedRocksDBStore):
                store.forget_partition(partition)
            else:
                for key in [k for k in list(store.keys()) if partition_for(k.decode(), self.settings.partitions)
                            == partition]:
                    del store[key]
        request_rejoin(self.app)

    async def _on_shutdown(self, sender: Any, **_: Any) -> None:
        """Finish the batch in hand, then read nothing more: Faust stops the producer next."""
        self.reader.stop()
        self.timer.stop()
        async with self.lock:
            await self.reader.close()
            if self.fence is not None:
                await self.fence.stop()
            if self._markers_watch is not None:
                self._markers_watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._markers_watch
                await self._markers_probe.stop()

    async def _on_tick(self) -> None:
        """The timer's tick: the events recovered and followed, the deadlines indexed, the
        due facts sent once the partition's backlog is read."""
        if not self.recovered or self.reader.stopping:
            return
        active = self.active_partitions()
        self.recovery.keep(active)
        async with self.lock:
            try:
                # not a partition refused while this tick waited for the lock (its rejoin recovers it)
                await self.recovery.follow(active & self.active_partitions())
            except Unwritten as refused:
                self._drop_fenced(refused.partition)
                return
        self.timer.index_partitions(active)
        read_until = self.reader.read_until(active)
        if not self.caught_up_once and active and set(read_until) == active:
            self.caught_up_once = True
            log.info("worker caught up", partitions=sorted(active))
        await self.timer.send_due(read_until)

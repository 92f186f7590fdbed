"""At-least-once delivery of commands: a record delivered again (after a crash, from the
last offset commit; or by the gap repair) is never decided a second time. An applied
command is recognised by its event id; a refused one by the refusals kept with the ticket
(a ``close`` refused with 409 must not close the ticket when it comes back)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from sla.events import EventType
from sla.ticket import Command, CommandType, ticket_from_dict
from slaledger.settings import load_policy
from streams.appender import Appender
from streams.batches import TableWrites
from streams.codec import encode_command
from streams.positions import Positions
from streams.processor import TicketProcessor
from streams.reader import Record
from streams.recovery import Ranges, Recovery
from streams.table_values import events_position_key, partition_for, refusals_of
from streams.timer import DeadlineTimer
from streams.topics import COMMANDS, EVENTS, OUTCOMES

FILE = {"kind": "incident", "channel": "phone", "product": "ent", "member": "m-001", "subject": "Panne"}
TID = "SL-REDELIVER"


class Batch:
    def __init__(self) -> None:
        self.values: list[bytes] = []

    def append(self, key: bytes | None, value: bytes, timestamp: None) -> bool:
        self.values.append(value)
        return True


class Sent(list[tuple[str, bytes]]):
    """A producer that records what is sent and gives each record the next offset of its
    partition: Faust's ``send`` and aiokafka's batch API, which the worker uses directly."""
    def __init__(self) -> None:
        super().__init__()
        self.ends: dict[tuple[str, int], int] = {}

    def _record(self, topic: str, partition: int, value: bytes) -> int:
        if topic != "changelog":  # the tables' (``Table``): read back from the tables
            self.append((topic, value))
        offset = self.ends[(topic, partition)] = self.ends.get((topic, partition), -1) + 1
        return offset

    @staticmethod
    def _done(topic: str, partition: int, offset: int) -> asyncio.Future[Any]:
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(SimpleNamespace(topic=topic, partition=partition, offset=offset))
        return done

    async def send(self, topic: str, key: bytes | None, value: bytes, *_: Any) -> asyncio.Future[Any]:
        partition = partition_for(key.decode(), 4) if key else 0
        return self._done(topic, partition, self._record(topic, partition, value))

    async def flush(self) -> None:
        pass

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(4))

    def create_batch(self) -> Batch:
        return Batch()

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> Any:
        offsets = [self._record(topic, partition, value) for value in batch.values]
        return self._done(topic, partition, offsets[0] if offsets else 0)

    def outcomes(self) -> list[str]:
        """The results, in the order of their commands (``command``: ids in offset order):
        outcomes go out in a batch per partition of their command id."""
        found = [json.loads(v) for t, v in self if t == OUTCOMES]
        return [o["result"] for o in sorted(found, key=lambda o: uuid.UUID(o["command_id"]).int)]

    def events(self) -> list[str]:
        return [json.loads(v)["type"] for t, v in self if t == EVENTS]


class Table(dict[bytes, Any]):
    """A Faust table as the worker writes it (``TableWrites``): its store is itself."""
    changelog_topic = SimpleNamespace(get_topic_name=lambda: "changelog")

    @property
    def data(self) -> Table:
        return self

    def _encode_value(self, value: Any) -> bytes:
        return json.dumps(value).encode()

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        pass


class DirectReads:
    """Direct reads (``reader.RangeReader``) of an events topic that holds nothing and of
    the commands given."""

    def __init__(self, commands: list[Record] | None = None) -> None:
        self.commands = commands or []
        self.read: list[tuple[int, int | None]] = []  # (start, end) of each range of commands read

    async def records(self, topic: str, partition: int, start: int, end: int | None) -> AsyncIterator[list[Record]]:
        if topic == COMMANDS:
            self.read.append((start, end))
            yield self.commands[start:end]

    async def position(self, topic: str, partition: int) -> int:
        return 0

    async def highwater(self, topic: str, partition: int) -> int | None:
        return 0

    async def events_ends(self, partitions: set[int]) -> dict[int, int]:
        return {p: 0 for p in partitions}


@dataclass
class Worker:
    """The agent's collaborators as ``streams.app.Pipeline`` wires them, over dict tables
    and a recording producer, without a fence (dev mode's writes)."""
    tickets: Table
    positions: Positions
    processor: TicketProcessor
    timer: DeadlineTimer
    recovery: Recovery


def worker(sent: Sent, ranges: Ranges | None = None) -> Worker:
    processor, tickets, writes = TicketProcessor(load_policy()), Table(), TableWrites()
    positions = Positions(tickets, Table(), writes, 4)
    timer = DeadlineTimer(processor, tickets, 4, producer=lambda: sent)
    appender = Appender(processor, tickets, positions, writes, timer.schedule, None,
                        producer=lambda: sent)  # type: ignore[arg-type,return-value]
    for partition in range(4):  # recovered: the events partitions are empty
        tickets[events_position_key(partition, 4)] = {"events_position": 0}
    return Worker(tickets, positions, processor, timer,
                  Recovery(appender, positions, writes, ranges or DirectReads(), embedded=False))


def command(offset: int, command_type: CommandType, payload: dict[str, Any] | None = None) -> Record:
    cmd = Command(command_type, TID, "agent:test", payload or {}, datetime.now(UTC), uuid.UUID(int=offset + 1),
                  reply=True)
    return Record(COMMANDS, 0, offset, TID.encode(), encode_command(cmd))


def test_a_refused_command_delivered_again_is_answered_again_not_applied() -> None:
    sent = Sent()
    w = worker(sent)
    history = [command(0, CommandType.FILE, FILE), command(1, CommandType.ACKNOWLEDGE),
               command(2, CommandType.CLOSE), command(3, CommandType.RESOLVE, {"resolution": "Réparé"})]
    asyncio.run(w.recovery.process(history))
    assert sent.outcomes() == ["created", "accepted", "conflict", "accepted"]
    assert ticket_from_dict(w.tickets[TID.encode()]).status.value == "resolved"
    assert [result for result, _ in refusals_of(w.tickets[TID.encode()]).values()] == ["conflict"]

    # Delivered again from the last commit, by this worker (positions known)...
    sent.clear()
    asyncio.run(w.recovery.process(history[2:]))
    assert sent == [] and ticket_from_dict(w.tickets[TID.encode()]).status.value == "resolved"

    # ...or by a worker that has no position for the partition (gap repair from offset 0):
    # each command is answered as it was the first time, nothing is applied again.
    w.positions.table.clear()
    w.positions.forget()
    asyncio.run(w.recovery.process(history))
    assert sent.outcomes() == ["created", "accepted", "conflict", "accepted"] and sent.events() == []
    assert ticket_from_dict(w.tickets[TID.encode()]).status.value == "resolved"


def test_refusals_kept_are_bounded() -> None:
    sent = Sent()
    w = worker(sent)
    asyncio.run(w.recovery.process([command(0, CommandType.FILE, FILE)]
                           + [command(i, CommandType.CLOSE) for i in range(1, 40)]))
    assert sent.outcomes().count("conflict") == 39
    assert len(refusals_of(w.tickets[TID.encode()])) == 20


def test_a_fact_due_again_before_it_is_applied_is_sent_byte_for_byte() -> None:
    """A breach re-sent while the events topic is held up (a leader failover) is the same
    record, not one re-derived later with another recording time and explanation."""
    from dataclasses import replace
    from datetime import timedelta

    from sla.events import encode_event
    from tests.conftest import ev

    timer = worker(Sent()).timer
    now = datetime.now(UTC)
    first = ev(EventType.SLA_BREACHED, now, TID, sla="intake", deadline=now, policy_version="v",
               explanation="Rien n'était enregistré à l'échéance.")
    later = replace(first, recorded_at=now + timedelta(seconds=5),
                    payload={**first.payload, "explanation": "Prise en compte tardive."})
    assert timer.first_copy(first, now) is first
    assert encode_event(timer.first_copy(later, now + timedelta(seconds=5))) == encode_event(first)
    assert timer.first_copy(later, now + timedelta(hours=2)) is later  # long forgotten: derived anew


def test_the_timer_s_fact_is_appended_by_the_agent_once_and_only_while_it_is_due() -> None:
    """One record per command: the timer sends a due fact on the commands topic; the agent
    appends it (the only writer of the events topic), once, and not at all if the ticket
    no longer owes it (an acknowledgement decided in between)."""
    from sla.events import encode_event
    from streams.codec import encode_fact
    from tests.conftest import ev, filed

    sent = Sent()
    w = worker(sent)
    late, acked = TID, "SL-ACK2"
    assert partition_for(late, 4) == partition_for(acked, 4) == 0
    long_ago = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)  # a Monday: intake due at 12:00
    log = [filed(long_ago, ticket_id=late), filed(long_ago, ticket_id=acked)]
    asyncio.run(w.recovery.process([Record(EVENTS, 0, i, e.ticket_id.encode(), encode_event(e))
                                    for i, e in enumerate(log)]))
    assert w.positions.events(0) == 2
    sent.ends[(EVENTS, 0)] = 1  # the log holds offsets 0 and 1: ours come next
    now = datetime.now(UTC)
    facts = w.processor.due(ticket_from_dict(w.tickets[late.encode()]), now)
    moot = w.processor.due(ticket_from_dict(w.tickets[acked.encode()]), now)
    assert facts and moot
    ack = ev(EventType.ACKNOWLEDGED, long_ago, acked)
    asyncio.run(w.recovery.process([Record(EVENTS, 0, 2, acked.encode(), encode_event(ack))]))
    sent.ends[(EVENTS, 0)] = 2

    sent_by_timer = facts + facts + moot  # each of the late ticket's facts twice (a resend)
    asyncio.run(w.recovery.process([Record(COMMANDS, 0, i, f.ticket_id.encode(), encode_fact(f))
                                    for i, f in enumerate(sent_by_timer)]))
    appended = [json.loads(v) for t, v in sent if t == EVENTS]
    assert [a["event_id"] for a in appended] == [str(f.event_id) for f in facts]
    assert {e.payload["sla"] for e in facts} and all(a["ticket_id"] == late for a in appended)
    assert w.positions.events(0) == 3 + len(facts)  # past the log and our own appends, no hole
    assert sent.outcomes() == []


def test_an_unreadable_fact_is_dead_lettered() -> None:
    from streams.codec import FACT_PREFIX

    sent = Sent()
    w = worker(sent)
    asyncio.run(w.recovery.process([Record(COMMANDS, 0, 0, TID.encode(), FACT_PREFIX + b'{"event_id":1}}')]))
    assert [t for t, _ in sent] == ["slaledger.dead-letters"]
    assert "unreadable fact" in json.loads(sent[0][1])["reason"]


def test_a_hole_inside_a_delivered_batch_is_read_before_the_records_after_it() -> None:
    """Faust may deliver a partition's records with a jump inside one batch (measured on
    Apache Kafka after a SIGKILL: 174, then 384…): the skipped commands are read directly
    and decided in order, before those that follow the hole."""
    sent = Sent()
    log = [command(0, CommandType.FILE, FILE), command(1, CommandType.ACKNOWLEDGE),
           command(2, CommandType.INFORM, {"message": "En cours"}),
           command(3, CommandType.RESOLVE, {"resolution": "Réparé"}), command(4, CommandType.CLOSE)]
    log_reader = DirectReads(commands=log)
    w = worker(sent, log_reader)
    asyncio.run(w.recovery.process_delivered([log[0], log[3], log[4]]))  # 1 and 2 skipped
    assert log_reader.read == [(1, 3)]
    assert sent.outcomes() == ["created", "accepted", "accepted", "accepted", "accepted"]
    assert ticket_from_dict(w.tickets[TID.encode()]).status.value == "closed"
    assert w.positions.expected(COMMANDS, 0) == 5

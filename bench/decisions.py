"""The partition suite's own check (issue 30): one decision per command, and every event
decided on a state the log contains.

A zombie worker (paused, or cut from its group while it still reaches the partition
leaders) decides commands against the state it holds while the new owner of its
partitions decides against the log's. Reading the log back shows it two ways:

- *two decisions for one command*: the events topic holds two records of one event id
  (``command_event_id(command_id)``) that differ in more than their recording time, or
  the outcomes topic holds two different answers (result, events) for one command id;
- *a decision off the log*: replaying each ticket's events in log order (one partition per
  ticket), the command behind each event, decided again (``sla.ticket.decide``) on the
  state the earlier events give, is refused or gives another event: it was decided on a
  state the log does not have. A command sent again with its idempotency key is a second
  record of the same command id (received later): the event must follow from one of them.
  And the version chain: a first answer (not a replay) gives the ticket's version after its
  event, which must be that event's place in the ticket's log — a decider holding a state
  with an event more or less than the log answers another version, even when the event
  it chose happens to be valid on the log's state.

Each finding names the ticket, the command and the two decisions.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

from service.outcomes import ACCEPTED, CREATED, Outcome
from sla.events import Event, decode_event
from sla.policy import Policy
from sla.ticket import Command, DomainError, Ticket, command_event_id, decide
from streams.codec import CommandDecodeError, decode_command, is_fact
from streams.kafka_tools import read_topic
from streams.topics import COMMANDS, EVENTS, OUTCOMES, is_tree_head


def decision(event: Event) -> dict[str, Any]:
    """What a decision chose: the event without its recording time."""
    out = event.to_dict()
    out.pop("recorded_at")
    return out


def describe(event: Event | dict[str, Any]) -> str:
    data = decision(event) if isinstance(event, Event) else event
    return f"{data['type']} {data['payload']} at {data['occurred_at']}"


def check_decisions(bootstrap: str, policy: Policy, examples: int = 10) -> dict[str, Any]:
    commands: dict[uuid.UUID, list[Command]] = defaultdict(list)
    for record in read_topic(bootstrap, COMMANDS, timeout=600):
        if record.value is None or is_fact(record.value):
            continue
        try:
            command = decode_command(record.value)
        except CommandDecodeError:
            continue
        commands[command_event_id(command.command_id)].append(command)
    partitions: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
    for record in read_topic(bootstrap, EVENTS, timeout=600):
        if not is_tree_head(record.key):
            partitions[record.partition].append((record.offset, record.value))

    two: list[str] = []
    off_log: list[str] = []
    first: dict[uuid.UUID, dict[str, Any]] = {}
    tickets: dict[str, Ticket] = {}
    place: dict[str, tuple[str, int]] = {}  # event id -> (ticket, version after it in the log)
    for records in partitions.values():
        for _, value in sorted(records):
            event = decode_event(value)
            sent = commands.get(event.event_id, [])
            cid = str(sent[0].command_id) if sent else "(a fact)"
            chosen = decision(event)
            if event.event_id in first:
                if first[event.event_id] != chosen:
                    two.append(f"{event.ticket_id} command {cid}: {describe(first[event.event_id])} "
                               f"then {describe(chosen)}")
                continue
            first[event.event_id] = chosen
            before = tickets.get(event.ticket_id)
            if sent:
                reasons = [redecided(before, c, event, policy) for c in sent]
                if all(reasons):
                    off_log.append(f"{event.ticket_id} command {cid} ({sent[0].type}), event {event.event_id} "
                                   f"at log version {before.version if before else 0}: {reasons[0]}")
            ticket = tickets.setdefault(event.ticket_id, Ticket(event.ticket_id))
            ticket.apply(event)
            place[str(event.event_id)] = (event.ticket_id, ticket.version)

    answers: dict[str, set[tuple[str, tuple[str, ...]]]] = defaultdict(set)
    for record in read_topic(bootstrap, OUTCOMES, timeout=600):
        try:
            outcome = Outcome.decode(record.value)
        except ValueError:
            continue
        events = tuple(outcome.body.get("events") or ())
        answers[outcome.command_id].add((outcome.result, events))
        answered = (outcome.body.get("ticket") or {}).get("version")
        if (outcome.result in (CREATED, ACCEPTED) and not outcome.body.get("replayed") and len(events) == 1
                and events[0] in place and answered != place[events[0]][1]):
            tid, version = place[events[0]]
            off_log.append(f"{tid} command {outcome.command_id}: answered at version {answered}, its event "
                           f"{events[0]} is version {version} of the log")
    for cid, seen in answers.items():
        if len(seen) > 1:
            ticket = next((c[0].ticket_id for c in commands.values() if str(c[0].command_id) == cid), "?")
            two.append(f"{ticket} command {cid}: answered " + " and ".join(
                f"{result} {list(events)}" for result, events in sorted(seen)))
    return {"two_decisions": len(two), "two_decisions_examples": two[:examples],
            "off_log_decisions": len(off_log), "off_log_examples": off_log[:examples],
            "commands_checked": len(commands)}


def redecided(before: Ticket | None, command: Command, event: Event, policy: Policy) -> str | None:
    """None when deciding ``command`` on ``before`` (the log's state) gives ``event``; else how
    not. Decided at the event's own time: any instant after the command's reception gives
    the same event."""
    try:
        again = decide(before if before is not None and before.exists else None, command,
                       max(event.recorded_at, event.occurred_at), policy=policy)
    except DomainError as exc:
        return f"the log's state refuses it ({exc.message}), the log has {describe(event)}"
    match = next((e for e in again if e.event_id == event.event_id), None)
    if match is None or decision(match) != decision(event):
        return f"the log's state gives {describe(match) if match else 'no such event'}, the log has {describe(event)}"
    return None

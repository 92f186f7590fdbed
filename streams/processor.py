"""What the ticket agent does with one record, without Faust: easy to test, easy to read.

SLA facts (warning, breach, retraction) are never derived here: only the deadline timer
derives them, and only for partitions the agent has caught up on. Deriving them while a
backlog is replayed would judge a ticket on part of its history (filed, but its
acknowledgement not yet read) and emit a breach that the next record retracts. The timer
sends each fact *as a record of the commands topic* (``encode_fact``); the agent appends
it only if it is still due against the ticket as it stands when the record comes.

The agent owns a partition of the commands topic and is the single writer of the events of
the tickets keyed to it: it reads one record per command and never reads back what it
appended. The events topic is read only to recover (``on_event``): at assignment, and when
another writer (a restore) appended to it. For each record the processor returns what to
do: the new ticket state, the events to append, the outcome to send back to the HTTP
caller, or the reason the record goes to the dead-letter topic. Sending happens before the
state is stored, so a crash in between re-decides the same command, which yields the same
event ids.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from sla.clock import evaluate, next_wakeup
from sla.events import (
    Event,
    EventDecodeError,
    decode_event,
    encode_event,
    envelope_ids,
    parse_instant,
    validate_ticket_id,
)
from sla.facts import due_facts
from sla.policy import Policy, PolicyError
from sla.ticket import Command, CommandType, DomainError, Ticket, command_event_id, decide, hidden_from
from sla.view import ticket_view

from .topics import is_tree_head, tree_head_shaped

log = structlog.get_logger(__name__)
# What happened to a command, in the domain's words; the HTTP layer maps them to codes.
CREATED, ACCEPTED = "created", "accepted"  # a filing / any other command, applied
REFUSED = ("conflict", "invalid", "not_found")  # sla.ticket.DomainError.code
RESULTS = frozenset({CREATED, ACCEPTED, *REFUSED})
# Outcomes written by workers of an earlier release (HTTP statuses), read during a rolling deploy.
_LEGACY_STATUS = {201: CREATED, 200: ACCEPTED, 404: "not_found", 409: "conflict", 422: "invalid"}


class CommandDecodeError(ValueError):
    pass


# A fact sent by the timer on the commands topic: the event's own bytes, wrapped so that one
# prefix test tells it from a command (whose sorted keys start with "actor").
FACT_PREFIX, FACT_SUFFIX = b'{"fact":', b"}"


def encode_fact(event: Event) -> bytes:
    return FACT_PREFIX + encode_event(event) + FACT_SUFFIX


def is_fact(data: bytes) -> bool:
    return data.startswith(FACT_PREFIX)


def encode_command(command: Command) -> bytes:
    body: dict[str, Any] = {
        "command_id": str(command.command_id),
        "type": str(command.type),
        "ticket_id": command.ticket_id,
        "actor": command.actor,
        "payload": dict(command.payload),
        "occurred_at": command.occurred_at.isoformat() if command.occurred_at else None,
        "reply": command.reply,
        "scope_member": command.scope_member,
    }
    if command.received_at is not None:
        body["received_at"] = command.received_at.isoformat()
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def decode_command(data: bytes) -> Command:
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CommandDecodeError(f"not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise CommandDecodeError("command: must be a JSON object")
    expected = {"command_id", "type", "ticket_id", "actor", "payload", "occurred_at", "reply", "scope_member",
                "received_at"}
    optional = {"reply", "scope_member", "received_at"}
    if not set(raw) <= expected or not expected - optional <= set(raw):
        raise CommandDecodeError(f"command: fields must be {sorted(expected)} ({', '.join(sorted(optional))} optional)")
    try:
        command_type = CommandType(raw["type"])
        command_id = uuid.UUID(str(raw["command_id"]))
        ticket_id = validate_ticket_id(raw["ticket_id"])
        occurred = parse_instant(raw["occurred_at"], "occurred_at") if raw["occurred_at"] is not None else None
        received = parse_instant(raw["received_at"], "received_at") if raw.get("received_at") is not None else None
    except (ValueError, EventDecodeError) as exc:
        raise CommandDecodeError(str(exc)) from None
    if not isinstance(raw["payload"], dict) or not isinstance(raw["actor"], str):
        raise CommandDecodeError("command: payload must be an object and actor a string")
    scope = raw.get("scope_member")
    if scope is not None and not isinstance(scope, str):
        raise CommandDecodeError("command: scope_member must be a string")
    return Command(command_type, ticket_id, raw["actor"], raw["payload"], occurred, command_id,
                   reply=bool(raw.get("reply", False)), scope_member=scope, received_at=received)


def command_id_of(data: bytes) -> str | None:
    """Best effort: the command id of an unreadable command, to answer its caller."""
    try:
        raw = json.loads(data)
        return str(uuid.UUID(str(raw["command_id"])))
    except Exception:
        return None


@dataclass
class Outcome:
    """The answer to a command, sent back to its caller on the outcomes topic: ``result`` is
    one of ``RESULTS``; ``body`` the accepted ticket, or the refusal's French message."""

    command_id: str
    result: str
    body: dict[str, Any]

    def encode(self) -> bytes:
        return json.dumps({"command_id": self.command_id, "result": self.result, "body": self.body},
                          ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes | None) -> Outcome:
        """Raises ValueError on anything but an outcome."""
        try:
            raw = json.loads(data or b"")
            if "result" not in raw and "status" in raw:  # written by a worker before 2026-11-29
                raw["result"] = _LEGACY_STATUS.get(int(raw["status"]), "conflict")
            outcome = cls(str(raw["command_id"]), str(raw["result"]), dict(raw["body"]))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not an outcome: {exc}") from None
        if outcome.result not in RESULTS:
            raise ValueError(f"not an outcome: result {outcome.result!r}")
        return outcome


@dataclass
class Step:
    """The result of handling one record."""

    ticket: Ticket | None = None  # store this state (None: nothing changed)
    emit: list[Event] = field(default_factory=list)  # append these events, in order, first
    outcome: Outcome | None = None
    dead_letter: str | None = None  # reason, if the record is unreadable
    refusal: tuple[str, str, dict[str, Any]] | None = None  # (command id, result, answer) to remember


def _event_id_int(data: bytes) -> int | None:
    """The event id of an encoded event, read without decoding it (None if not found)."""
    ids = envelope_ids(data)
    try:
        return uuid.UUID(ids[0]).int if ids else None
    except ValueError:
        return None


class TicketProcessor:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def on_command(self, ticket: Ticket | None, data: bytes, now: datetime,
                   refused: Mapping[str, tuple[str, dict[str, Any]]] | None = None) -> Step:
        """Decide a command. ``refused``: the ticket's remembered refusals, by command id; a
        refused command delivered again (at-least-once) gets its first answer, never a
        second decision against a newer state (a ``close`` refused (conflict) must not apply
        later)."""
        try:
            command = decode_command(data)
        except CommandDecodeError as exc:
            command_id = command_id_of(data)
            outcome = Outcome(command_id, "invalid", {"error": str(exc)}) if command_id else None
            return Step(dead_letter=f"unreadable command: {exc}", outcome=outcome)
        cid = str(command.command_id)
        reply = command.reply
        if refused and cid in refused:
            result, body = refused[cid]
            return Step(outcome=Outcome(cid, result, body) if reply else None)
        if (ticket is not None and not hidden_from(ticket, command)
                and command_event_id(command.command_id).int in ticket.event_ids):
            # Redelivered after a crash: its events were sent before the state was stored.
            if not reply:
                return Step()
            return Step(outcome=Outcome(cid, CREATED if command.type is CommandType.FILE else ACCEPTED,
                                        self._accepted(ticket, [command_event_id(command.command_id)], now,
                                                       replayed=True)))
        try:
            events = decide(ticket, command, now, max_backdate=self._max_backdate(ticket, command, now),
                            products=self.policy.products)
        except DomainError as exc:
            body = {"error": exc.message, "code": exc.code}
            if reply:
                return Step(outcome=Outcome(cid, exc.code, body), refusal=(cid, exc.code, body))
            # Nobody waits for this answer (bulk import, replay): keep the refusal on record.
            return Step(dead_letter=f"command refused: {exc.message}", refusal=(cid, exc.code, body))
        state = ticket if ticket is not None else Ticket(command.ticket_id)
        if command.type is CommandType.FILE:
            try:
                self.policy.version_for(events[0].occurred_at).check_covers(events[0].occurred_at)
            except PolicyError as exc:
                if reply:
                    return Step(outcome=Outcome(cid, "invalid", {"error": str(exc), "code": "invalid"}))
                return Step(dead_letter=f"command refused: {exc}")
        for event in events:
            state.apply(event)
        emitted = events
        result = CREATED if command.type is CommandType.FILE else ACCEPTED
        return Step(
            ticket=state,
            emit=emitted,
            outcome=Outcome(cid, result, self._accepted(state, [e.event_id for e in emitted], now)) if reply else None,
        )

    def _max_backdate(self, ticket: Ticket | None, command: Command, now: datetime) -> timedelta | None:
        """How far back this command may be dated: the limit of the policy version that
        judges the ticket (for a filing, the one in force at its date)."""
        at = ticket.filed_at if ticket is not None and ticket.filed_at is not None else command.occurred_at or now
        try:
            return self.policy.version_for(at).backdate_limit(command.actor)
        except PolicyError:
            return None  # no version judges it: the filing is refused below

    def on_event(self, ticket: Ticket | None, key: bytes | None, data: bytes, now: datetime) -> Step:
        if is_tree_head(key):  # a signed tree head of the archive (the projector publishes it): no ticket's
            return Step() if tree_head_shaped(data) else Step(dead_letter="unreadable tree head")
        if ticket is not None and _event_id_int(data) in ticket.event_ids:
            return Step()  # our own event coming back, or a redelivery: skip the full decode
        try:
            event = decode_event(data)
        except EventDecodeError as exc:
            return Step(dead_letter=f"unreadable event: {exc}")
        if key is not None and key != event.ticket_id.encode():
            return Step(dead_letter=f"key mismatch: record key {key!r} is not ticket_id {event.ticket_id!r}")
        state = ticket if ticket is not None else Ticket(event.ticket_id)
        if event.event_id.int in state.event_ids:
            return Step()  # already applied (our own event coming back, or a redelivery)
        state.apply(event)
        return Step(ticket=state)

    def on_fact(self, ticket: Ticket | None, key: bytes | None, data: bytes, now: datetime) -> Step:
        """A fact the timer sent: appended if the ticket, as it stands now, owed it at the
        fact's own instant (an acknowledgement decided between the timer's look and this
        record makes a breach moot; a warning that comes after its deadline still stands),
        skipped if it is already applied (a redelivery, or a fact sent twice)."""
        try:
            fact = decode_event(data[len(FACT_PREFIX):-len(FACT_SUFFIX)])
        except EventDecodeError as exc:
            return Step(dead_letter=f"unreadable fact: {exc}")
        if key is not None and key != fact.ticket_id.encode():
            return Step(dead_letter=f"key mismatch: record key {key!r} is not ticket_id {fact.ticket_id!r}")
        if ticket is None or fact.event_id.int in ticket.event_ids:
            return Step()
        if fact.event_id not in {f.event_id for f in self.due(ticket, fact.recorded_at)}:
            log.info("fact no longer due, not appended", ticket_id=fact.ticket_id, event_id=str(fact.event_id),
                     type=str(fact.type))
            return Step()
        ticket.apply(fact)
        return Step(ticket=ticket, emit=[fact])

    def due(self, ticket: Ticket, now: datetime) -> list[Event]:
        """For the timer: SLA facts due now (it sends them; it never writes the table)."""
        if not ticket.exists:
            return []
        try:
            return due_facts(ticket, evaluate(ticket, self.policy, now), now)
        except PolicyError:  # filed before any policy version: no clock
            return []

    def wakeup(self, state: Ticket, now: datetime) -> datetime | None:
        """When the timer should look at this ticket: now if a fact is already due (e.g. a
        retraction after a late acknowledgement), else the next warning or deadline."""
        if not state.exists:
            return None
        try:
            found = evaluate(state, self.policy, now)
        except PolicyError:
            return None
        if due_facts(state, found, now):
            return now
        return next_wakeup(found, state)

    def _accepted(self, ticket: Ticket, event_ids: list[uuid.UUID], now: datetime,
                  replayed: bool = False) -> dict[str, Any]:
        """The caller's answer. ``events`` names the events that record the command, also
        when it was applied before (``replayed``: a redelivery after a crash), so a client
        can always tie its accepted request to the log."""
        return {
            "events": [str(i) for i in event_ids],
            "replayed": replayed,
            "ticket": ticket_view(ticket, self.policy, now),
        }

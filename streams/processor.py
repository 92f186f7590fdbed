"""The agent's records, decoded and handed to the command handler (``service.handler``).

Each record the agent reads is a command or a fact (commands topic, ``streams.codec``) or
an event read back to recover (events topic, which also carries the archive's signed tree
heads). This module turns record keys and bytes into what the handler decides on, and an
unreadable record, or one whose key is not its ticket's, into a dead letter; the decision
is the handler's, with the same interface for every caller (``due`` and ``wakeup`` for the
timer). Without Faust: the tests drive it with bytes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from service.handler import CommandHandler, Step
from service.outcomes import Outcome
from sla.events import Event, EventDecodeError, decode_event, envelope_ids
from sla.ticket import Ticket

from .codec import CommandDecodeError, command_id_of, decode_command, decode_fact
from .topics import is_tree_head, tree_head_shaped


class TicketProcessor(CommandHandler):
    """The command handler, fed with the agent's records."""

    def on_command(self, ticket: Ticket | None, data: bytes, now: datetime,
                   refused: Mapping[str, tuple[str, dict[str, Any]]] | None = None) -> Step:
        try:
            command = decode_command(data)
        except CommandDecodeError as exc:
            command_id = command_id_of(data)
            outcome = Outcome(command_id, "invalid", {"error": str(exc)}) if command_id else None
            return Step(dead_letter=f"unreadable command: {exc}", outcome=outcome)
        return self.handle(ticket, command, now, refused)

    def on_event(self, ticket: Ticket | None, key: bytes | None, data: bytes, now: datetime) -> Step:
        if is_tree_head(key):  # a signed tree head of the archive (the projector publishes it): no ticket's
            return Step() if tree_head_shaped(data) else Step(dead_letter="unreadable tree head")
        if ticket is not None and _event_id_int(data) in ticket.event_ids:
            return Step()  # our own event coming back, or a redelivery: skip the full decode
        event = _read(decode_event, "event", key, data)
        return Step(dead_letter=event) if isinstance(event, str) else self.recover(ticket, event)

    def on_fact(self, ticket: Ticket | None, key: bytes | None, data: bytes, now: datetime) -> Step:
        fact = _read(decode_fact, "fact", key, data)
        return Step(dead_letter=fact) if isinstance(fact, str) else self.append_fact(ticket, fact)


def _read(decode: Callable[[bytes], Event], what: str, key: bytes | None, data: bytes) -> Event | str:
    """The record's event (or fact), or why it is a dead letter: unreadable, or keyed to another ticket."""
    try:
        event = decode(data)
    except EventDecodeError as exc:
        return f"unreadable {what}: {exc}"
    if key is not None and key != event.ticket_id.encode():
        return f"key mismatch: record key {key!r} is not ticket_id {event.ticket_id!r}"
    return event


def _event_id_int(data: bytes) -> int | None:
    """The event id of an encoded event, read without decoding it (None if not found)."""
    ids = envelope_ids(data)
    try:
        return uuid.UUID(ids[0]).int if ids else None
    except ValueError:
        return None

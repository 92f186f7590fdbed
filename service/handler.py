"""The command handler: what the ticket agent does with a decoded command, event or fact.

The worker (``streams/``) reads records, decodes them and hands them here with the
ticket's current state; it gets back a ``Step``: the new state, the events to append, the
outcome to send to the caller, or the reason the record goes to the dead-letter topic.
Sending happens before the state is stored, so a crash in between re-decides the same
command, which yields the same event ids. Nothing here reads or writes a topic or a table.

SLA facts (warning, breach, retraction) are never derived while a command is handled: only
the deadline timer derives them (``due``), for partitions the agent has caught up on.
Deriving them while a backlog is replayed would judge a ticket on part of its history
(filed, but its acknowledgement not yet read) and emit a breach that the next record
retracts. The timer sends each fact back to the agent, which appends it only if it is
still due against the ticket as it stands when the fact comes (``append_fact``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from sla.clock import evaluate, next_wakeup
from sla.events import Event
from sla.facts import due_facts
from sla.policy import Policy, PolicyError
from sla.ticket import Command, CommandType, DomainError, Ticket, command_event_id, decide, hidden_from
from sla.view import ticket_view

from .outcomes import ACCEPTED, CREATED, Outcome

log = structlog.get_logger(__name__)


@dataclass
class Step:
    """The result of handling one command, event or fact."""

    ticket: Ticket | None = None  # store this state (None: nothing changed)
    emit: list[Event] = field(default_factory=list)  # append these events, in order, first
    outcome: Outcome | None = None
    dead_letter: str | None = None  # reason, if the record is unreadable or its command refused unheard
    refusal: tuple[str, str, dict[str, Any]] | None = None  # (command id, result, answer) to remember


class CommandHandler:
    """Decides commands under ``policy`` and keeps the agent's single-writer promises: a
    command applied or refused once is answered the same way when it comes again."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def handle(self, ticket: Ticket | None, command: Command, now: datetime,
               refused: Mapping[str, tuple[str, dict[str, Any]]] | None = None) -> Step:
        """Decide ``command``. ``refused``: the ticket's remembered refusals, by command id; a
        refused command delivered again (at-least-once) gets its first answer, never a
        second decision against a newer state (a ``close`` refused (conflict) must not apply
        later)."""
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
            return Step(outcome=Outcome(cid, _result(command),
                                        self._accepted(ticket, [command_event_id(command.command_id)], now,
                                                       replayed=True)))
        try:
            events = decide(ticket, command, now, policy=self.policy)
        except DomainError as exc:
            body = {"error": exc.message, "code": exc.code}
            if reply:
                return Step(outcome=Outcome(cid, exc.code, body), refusal=(cid, exc.code, body))
            # Nobody waits for this answer (bulk import, replay): keep the refusal on record.
            return Step(dead_letter=f"command refused: {exc.message}", refusal=(cid, exc.code, body))
        state = ticket if ticket is not None else Ticket(command.ticket_id)
        for event in events:
            state.apply(event)
        if not reply:
            return Step(ticket=state, emit=events)
        return Step(ticket=state, emit=events,
                    outcome=Outcome(cid, _result(command), self._accepted(state, [e.event_id for e in events], now)))

    def recover(self, ticket: Ticket | None, event: Event) -> Step:
        """An event read back from the log (at assignment, or appended by another writer):
        folded in unless the state already holds it."""
        state = ticket if ticket is not None else Ticket(event.ticket_id)
        if event.event_id.int in state.event_ids:
            return Step()  # already applied (our own event coming back, or a redelivery)
        state.apply(event)
        return Step(ticket=state)

    def append_fact(self, ticket: Ticket | None, fact: Event) -> Step:
        """A fact the timer sent: appended if the ticket, as it stands now, owed it at the
        fact's own instant (an acknowledgement decided between the timer's look and this
        record makes a breach moot; a warning that comes after its deadline still stands),
        skipped if it is already applied (a redelivery, or a fact sent twice)."""
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


def _result(command: Command) -> str:
    return CREATED if command.type is CommandType.FILE else ACCEPTED

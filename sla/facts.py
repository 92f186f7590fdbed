"""The SLA facts the log should contain: warnings, breaches and retractions due by ``now``
and not yet recorded, with deterministic ids (emitted by the worker's timer only)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from .clock import Clock, ClockStatus, Cycle, warning_instant
from .events import Event, EventType, new_event, sla_fact_id
from .explain import explanation
from .ticket import Ticket

SLA_CLOCK_ACTOR = "slaledger/sla-clock"


def due_facts(ticket: Ticket, ticket_clocks: Iterable[Clock], now: datetime) -> list[Event]:
    """Warnings, breaches and retractions that are due by ``now`` and not yet recorded.

    Ids are derived from (ticket, SLA, deadline, policy version, fact type), so asking twice
    — two timers, a restart, a replay — yields the same events, which ``Ticket.apply``
    then ignores.
    """
    out: list[Event] = []
    for clock in ticket_clocks:
        if clock.status is ClockStatus.EXCLUDED:
            breached: list[Cycle] = []
        else:
            breached = [c for c in clock.cycles if c.overdue]
        for cycle in breached:
            if not ticket.has_fact(EventType.SLA_BREACHED, clock.sla, cycle.deadline):
                out.append(_fact(EventType.SLA_BREACHED, ticket, clock, cycle.deadline, cycle.deadline, now))
        current = clock.current
        if (
            clock.status is ClockStatus.RUNNING
            and clock.at_risk
            and current is not None
            and not ticket.has_fact(EventType.SLA_WARNING_RAISED, clock.sla, current.deadline)
        ):
            warning_at = warning_instant(clock.definition, current)
            out.append(_fact(EventType.SLA_WARNING_RAISED, ticket, clock, current.deadline, warning_at, now))
        for deadline, breach_id in clock.retracted:
            if not ticket.has_fact(EventType.SLA_BREACH_RETRACTED, clock.sla, deadline):
                out.append(
                    _fact(EventType.SLA_BREACH_RETRACTED, ticket, clock, deadline, now, now, breach_id=breach_id)
                )
    return out


def _fact(
    fact_type: EventType,
    ticket: Ticket,
    clock: Clock,
    deadline: datetime,
    occurred_at: datetime,
    now: datetime,
    breach_id: uuid.UUID | None = None,
) -> Event:
    payload: dict[str, Any] = {
        "sla": clock.sla,
        "deadline": deadline,
        "policy_version": clock.policy_version.id,
        "explanation": explanation(clock, live=False),
    }
    if breach_id is not None:
        payload["breach_event_id"] = str(breach_id)
    return new_event(
        fact_type,
        ticket.ticket_id,
        occurred_at=min(occurred_at, now),
        recorded_at=now,
        actor=SLA_CLOCK_ACTOR,
        payload=payload,
        event_id=sla_fact_id(fact_type, ticket.ticket_id, clock.sla, deadline, clock.policy_version.id),
    )

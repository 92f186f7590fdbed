"""The public shape of a ticket (API, outcomes, web view): state plus evaluated clocks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .clock import evaluate
from .events import format_instant
from .policy import Policy
from .ticket import Ticket


def ticket_view(ticket: Ticket, policy: Policy, now: datetime) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return format_instant(value) if value is not None else None

    return {
        "id": ticket.ticket_id,
        "status": str(ticket.status),
        "kind": ticket.kind,
        "channel": ticket.channel,
        "product": ticket.product,
        "member": ticket.member,
        "subject": ticket.subject,
        "filed_at": iso(ticket.filed_at),
        "recorded_at": iso(ticket.filed_recorded_at),
        "acknowledged_at": iso(ticket.acknowledged_at),
        "resolved_at": iso(ticket.resolved_at),
        "closed_at": iso(ticket.closed_at),
        "restoration_eta": iso(ticket.restoration_eta),
        "version": ticket.version,
        "clocks": [clock.to_dict() for clock in evaluate(ticket, policy, now)] if ticket.exists else [],
        "as_of": iso(now),
    }

"""The public shape of a ticket (API, outcomes, web view): state plus evaluated clocks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .clock import evaluate
from .events import format_instant, format_optional_instant
from .explain import clock_view
from .policy import Policy, PolicyError
from .ticket import Ticket


def antedated(ticket: Ticket, policy: Policy) -> list[dict[str, Any]]:
    """The ticket's facts dated more than the policy's ``antedated_after`` before their
    recording (« antidaté »), with who dated them."""
    if ticket.filed_at is None:
        return []
    try:
        limit = policy.version_for(ticket.filed_at).antedated_after
    except PolicyError:
        return []
    return [{"event_id": str(d.event_id), "type": str(d.type), "occurred_at": format_instant(d.occurred_at),
             "recorded_at": format_instant(d.recorded_at), "by": d.actor,
             "seconds_before_recording": (d.recorded_at - d.occurred_at).total_seconds()}
            for d in ticket.dated if d.recorded_at - d.occurred_at > limit]


def ticket_view(ticket: Ticket, policy: Policy, now: datetime) -> dict[str, Any]:
    return {
        "id": ticket.ticket_id,
        "status": str(ticket.status),
        "kind": ticket.kind,
        "channel": ticket.channel,
        "product": ticket.product,
        "product_name": policy.products.name(ticket.product),  # what pages show (the catalogue's name)
        "member": ticket.member,
        "subject": ticket.subject,
        "filed_at": format_optional_instant(ticket.filed_at),
        "recorded_at": format_optional_instant(ticket.filed_recorded_at),
        "acknowledged_at": format_optional_instant(ticket.acknowledged_at),
        "resolved_at": format_optional_instant(ticket.resolved_at),
        "closed_at": format_optional_instant(ticket.closed_at),
        "restoration_eta": format_optional_instant(ticket.restoration_eta),
        "version": ticket.version,
        "clocks": [clock_view(clock) for clock in evaluate(ticket, policy, now)] if ticket.exists else [],
        "antedated": antedated(ticket, policy),
        "as_of": format_instant(now),
    }

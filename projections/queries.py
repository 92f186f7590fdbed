"""Reads of the SQL read model used by the API."""

from __future__ import annotations

from sqlalchemy import Engine, select

from sla.ticket import Ticket, ticket_from_dict

from .models import TicketRow

LIST_LIMIT = 10_000


def list_tickets(engine: Engine, *, status: str | None = None, member: str | None = None) -> list[Ticket]:
    """Tickets, newest filing first, with their folded state (clocks are evaluated live)."""
    t = TicketRow.__table__
    query = select(t.c.state).order_by(t.c.filed_at.desc()).limit(LIST_LIMIT)
    if status:
        query = query.where(t.c.status == status)
    if member:
        query = query.where(t.c.member == member)
    with engine.connect() as conn:
        return [ticket_from_dict(state) for state in conn.scalars(query)]

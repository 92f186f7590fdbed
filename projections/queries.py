"""Reads of the SQL read model used by the API."""

from __future__ import annotations

from collections.abc import Collection

import structlog
from sqlalchemy import Engine, select

from sla.events import Event, EventDecodeError, decode_event
from sla.ticket import Ticket, ticket_from_dict

from .models import ArchiveRow, TicketRow

log = structlog.get_logger(__name__)

LIST_LIMIT = 10_000


def list_tickets(engine: Engine, *, status: str | None = None, member: str | None = None,
                 statuses: Collection[str] = ()) -> list[Ticket]:
    """Tickets, newest filing first, with their folded state (clocks are evaluated live).
    ``statuses``: any of them (the web queue asks for every open status in one query)."""
    t = TicketRow.__table__
    query = select(t.c.state).order_by(t.c.filed_at.desc()).limit(LIST_LIMIT)
    if status:
        query = query.where(t.c.status == status)
    if statuses:
        query = query.where(t.c.status.in_(list(statuses)))
    if member:
        query = query.where(t.c.member == member)
    with engine.connect() as conn:
        return [ticket_from_dict(state) for state in conn.scalars(query)]


def ticket_events(engine: Engine, ticket_id: str) -> list[Event]:
    """A ticket's events in log order, from the archive (the web view's timeline: the
    worker's state keeps only what the clocks need, not whole events)."""
    a = ArchiveRow.__table__
    query = select(a.c.seq, a.c.envelope).where(a.c.ticket_id == ticket_id).order_by(a.c.seq)
    out = []
    with engine.connect() as conn:
        for seq, envelope in conn.execute(query):
            try:
                out.append(decode_event(envelope.encode()))
            except EventDecodeError as exc:  # the audit reports it; a page must still show
                log.warning("unreadable archived event", ticket_id=ticket_id, archive_seq=seq, error=str(exc))
    return out

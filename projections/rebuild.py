"""``slaledger project --rebuild``: replay the events topic into shadow tables and swap them
in, keeping the other roles' grants (the archive and checkpoints are not rebuilt).

Swapping tables is the owner's right, not the projector's (``projections.roles``): on
PostgreSQL the table changes run as the live tables' owner (``SET LOCAL ROLE``), so the
rebuild runs with the migration job's credentials (``docker compose run --rm db-migrate
project --rebuild``); the running projector keeps writing the live tables meanwhile."""

from __future__ import annotations

from collections.abc import Callable

import structlog
from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection

from sla.log_names import EVENTS
from sla.policy import Policy

from .models import CLOCKS, TICKETS, shadow_tables
from .projection import Projection
from .projector import consume

log = structlog.get_logger(__name__)


def rebuild(engine: Engine, bootstrap: str, policy: Policy, *, progress: Callable[[int], object] | None = None) -> int:
    """Replay the events topic from offset 0 into shadow tables, then swap them in;
    ``progress`` is told the size of each batch read (the command's progress bar)."""
    shadow_tickets, shadow_clocks = shadow_tables()
    with engine.begin() as conn:
        _as_owner(conn)
        for table in (shadow_clocks, shadow_tickets):
            table.drop(conn, checkfirst=True)
            table.create(conn)
    projection = Projection(policy, shadow_tickets, shadow_clocks, archive=False)
    count = 0
    for batch in consume(bootstrap, {}, follow=False, topics=(EVENTS,)):
        with engine.begin() as conn:
            count += projection.apply_batch(conn, batch)
        if progress is not None:
            progress(len(batch))
    with engine.begin() as conn:
        _as_owner(conn)
        # the archive and checkpoints are not rebuilt; the live tables are replaced
        for live, shadow in ((TICKETS, shadow_tickets), (CLOCKS, shadow_clocks)):
            grants = _grants(conn, live.name)
            conn.execute(text(f"DROP TABLE {live.name}"))
            conn.execute(text(f"ALTER TABLE {shadow.name} RENAME TO {live.name}"))
            if engine.dialect.name == "postgresql":
                conn.execute(text(f"ALTER TABLE {live.name} RENAME CONSTRAINT pk_{shadow.name} TO pk_{live.name}"))
            for index in live.indexes:
                index.create(conn)
            for grantee, privilege in grants:  # e.g. Grafana's read-only role keeps its access
                conn.execute(text(f'GRANT {privilege} ON {live.name} TO "{grantee}"'))
    log.info("projection rebuilt", events=count)
    return count


def _as_owner(conn: Connection) -> None:
    """Act as the live tables' owner for the rest of this transaction (PostgreSQL): the
    shadow tables then belong to it too. Refused unless this login is, or may become, it."""
    if conn.dialect.name != "postgresql":
        return
    owner = conn.scalar(text("SELECT tableowner FROM pg_tables WHERE schemaname = current_schema() "
                             "AND tablename = :t AND tableowner <> current_user"), {"t": TICKETS.name})
    if owner is not None:
        conn.execute(text(f'SET LOCAL ROLE "{owner.replace(chr(34), chr(34) * 2)}"'))


def _grants(conn: Connection, table: str) -> list[tuple[str, str]]:
    """Privileges other roles hold on a table (PostgreSQL), to give back to its replacement."""
    if conn.dialect.name != "postgresql":
        return []
    rows = conn.execute(text(
        "SELECT grantee, privilege_type FROM information_schema.role_table_grants "
        "WHERE table_schema = current_schema() AND table_name = :t AND grantee <> current_user"), {"t": table})
    return [(grantee, privilege) for grantee, privilege in rows]

"""The projector is set-based (#31): a batch costs the same statements whatever its size,
and PostgreSQL (ANY, ON CONFLICT, COPY) and SQLite (IN, ON CONFLICT, executemany) end with
the same rows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, select

from projections import totals, tree
from projections.migrate import create_schema
from projections.models import ARCHIVE, CHECKPOINTS, CLOCKS, JUDGMENTS, TICKETS
from projections.projection import Incoming, Projection
from sla.events import encode_event
from slaledger.settings import load_policy
from streams.topics import EVENTS
from tests.integration.test_projector import history

pytestmark = pytest.mark.integration


def project(engine: Engine, records: list[Incoming], monkeypatch: pytest.MonkeyPatch) -> int:
    """Apply one batch; returns the statements it sent, COPY included (it goes through the
    driver's cursor, not through SQLAlchemy's events)."""
    import psycopg

    sent: list[str] = []
    original = psycopg.Cursor.copy

    def copy(self: Any, statement: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(statement))
        return original(self, statement, *args, **kwargs)

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    monkeypatch.setattr(psycopg.Cursor, "copy", copy)
    event.listen(engine, "before_cursor_execute", seen)
    try:
        with engine.begin() as conn:
            Projection(load_policy()).apply_batch(conn, records)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
        monkeypatch.undo()
    return len(sent)


def records(prefix: str, tickets: int, first_offset: int = 0) -> list[Incoming]:
    events = history(tickets, datetime(2026, 3, 2, 8, 0, tzinfo=UTC), prefix=prefix)
    return [Incoming(EVENTS, 0, first_offset + i, encode_event(e)) for i, e in enumerate(events)]


def snapshot(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {
            "tickets": sorted(tuple(r) for r in conn.execute(select(TICKETS.c.ticket_id, TICKETS.c.status,
                                                                    TICKETS.c.version))),
            "clocks": sorted(tuple(r) for r in conn.execute(select(CLOCKS.c.ticket_id, CLOCKS.c.sla,
                                                                   CLOCKS.c.status, CLOCKS.c.explanation))),
            "judgments": sorted(tuple(r) for r in conn.execute(select(JUDGMENTS.c.ticket_id, JUDGMENTS.c.sla,
                                                                      JUDGMENTS.c.outcome))),
            "archive": [tuple(r) for r in conn.execute(select(ARCHIVE.c.event_id, ARCHIVE.c.hash,
                                                              ARCHIVE.c.leaf_index).order_by(ARCHIVE.c.seq))],
            "root": tree.root(conn, tree.tree_size(conn)),
            "checkpoints": sorted(tuple(r) for r in conn.execute(select(CHECKPOINTS.c.topic, CHECKPOINTS.c.partition,
                                                                        CHECKPOINTS.c.offset))),
            "totals": totals.read(conn),
        }


def test_a_batch_costs_the_same_statements_whatever_its_size(database: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """10 tickets or 200: the same number of statements on both databases, and the same
    rows; a batch delivered again (all archived already) sends fewer still."""
    first, small, large = records("F", 3), records("S", 10, 100), records("L", 200, 200)
    engines = {"postgresql": create_engine(database), "sqlite": create_engine(f"sqlite:///{tmp_path / 'p.db'}")}
    try:
        for name, engine in engines.items():
            create_schema(engine)
            project(engine, first, monkeypatch)  # an archive and a tree to continue, as in the steady state
            statements = [project(engine, small, monkeypatch), project(engine, large, monkeypatch)]
            assert statements[0] == statements[1], (name, statements)
            again = [Incoming(EVENTS, 0, 1000 + i, r.value) for i, r in enumerate(small)]
            assert project(engine, again, monkeypatch) < statements[0], name
        postgres, sqlite = (snapshot(e) for e in engines.values())
        assert postgres["archive"] and postgres["clocks"] and postgres["judgments"]
        assert postgres == sqlite
    finally:
        for engine in engines.values():
            engine.dispose()

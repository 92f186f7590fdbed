"""Alembic migrations produce exactly the models' schema (PostgreSQL and SQLite)."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from projections.migrate import downgrade, upgrade
from projections.models import Base

pytestmark = pytest.mark.integration


def _diff(url: str) -> list:
    engine = create_engine(url)
    upgrade(engine)
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), Base.metadata)


def test_postgresql_schema_matches_models(database: str) -> None:
    assert _diff(database) == []
    engine = create_engine(database)
    downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}


def test_sqlite_schema_matches_models(tmp_path: Path) -> None:
    assert _diff(f"sqlite:///{tmp_path / 'db.sqlite'}") == []


def test_the_tree_of_an_archive_archived_before_it_is_built_by_the_migration(database: str) -> None:
    """0008 (#16): the rows of an existing archive become the tree's leaves, in seq order."""
    from datetime import UTC, datetime

    import sqlalchemy as sa

    from projections import merkle, tree

    engine = create_engine(database)
    upgrade(engine, "0005")
    envelopes = [f'{{"n":{i}}}' for i in range(7)]
    at = datetime(2026, 1, 5, tzinfo=UTC)
    columns = ["event_id", "ticket_id", "type", "actor", "topic", "envelope", "prev_hash", "hash"]
    archive = sa.table("event_archive", *(sa.column(c) for c in [*columns, "seq", "partition", "offset",
                                                                   "occurred_at", "recorded_at"]))
    with engine.begin() as conn:
        conn.execute(sa.insert(archive), [
            {**{c: f"{c}-{i}" for c in columns}, "envelope": e, "seq": 10 + 3 * i, "partition": 0, "offset": i,
             "occurred_at": at, "recorded_at": at} for i, e in enumerate(envelopes)])
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT leaf_index FROM event_archive ORDER BY seq")).scalars().all() == [
            0, 1, 2, 3, 4, 5, 6]
        nodes = {(0, i): merkle.leaf_hash(e.encode()) for i, e in enumerate(envelopes)}
        created, _ = merkle.append(0, [], [merkle.leaf_hash(e.encode()) for e in envelopes])
        assert tree.tree_size(conn) == 7 and len(created) == 7 + 4
        assert tree.root(conn, 7) == merkle.root_hash(7, lambda lv, i: {(a, b): h for a, b, h in created}[(lv, i)])
        assert tree.leaves(conn, [3]) == {3: nodes[(0, 3)]}


def test_the_month_of_each_verdict_is_filled_from_the_rows_by_the_migration(database: str) -> None:
    """0011 (#28): ``decided_at`` of the clocks already projected — met and retracted at the stop,
    breached at the deadline, excluded at the filing, nothing while running."""
    from datetime import UTC, datetime, timedelta

    import sqlalchemy as sa

    engine = create_engine(database)
    upgrade(engine, "0009")
    t0 = datetime(2026, 11, 2, 8, tzinfo=UTC)
    tickets = sa.table("tickets", *(sa.column(c) for c in ("ticket_id", "status", "kind", "channel", "product",
                                                             "member", "subject", "filed_at", "version", "state")))
    clocks = sa.table("sla_clocks", *(sa.column(c) for c in ("ticket_id", "sla", "member", "kind", "contractual",
                                                              "status", "deadline", "stopped_at", "policy_version",
                                                              "explanation", "evaluated_at")))
    statuses = ("met", "retracted", "breached", "excluded", "running")
    with engine.begin() as conn:
        conn.execute(sa.insert(tickets), [
            {"ticket_id": s, "status": "open", "kind": "assistance", "channel": "portal", "product": "p",
             "member": "m", "subject": "s", "filed_at": t0, "version": 1, "state": "{}"} for s in statuses])
        conn.execute(sa.insert(clocks), [
            {"ticket_id": s, "sla": "intake", "member": "m", "kind": "assistance", "contractual": True, "status": s,
             "deadline": t0 + timedelta(hours=4), "stopped_at": t0 + timedelta(hours=1) if s in statuses[:2] else None,
             "policy_version": "v", "explanation": "", "evaluated_at": t0} for s in statuses])
    upgrade(engine)
    with engine.connect() as conn:
        decided = dict(conn.execute(sa.text("SELECT status, decided_at FROM sla_clocks")).all())
    assert decided == {"met": t0 + timedelta(hours=1), "retracted": t0 + timedelta(hours=1),
                       "breached": t0 + timedelta(hours=4), "excluded": t0, "running": None}


def test_the_histories_of_an_archive_archived_before_the_map_are_committed_by_the_migration(database: str) -> None:
    """0013 (#26): every ticket's count and history hash are computed from the archive's
    leaves (no event or leaf changes) and the map is committed at the archive's size, so the
    next signed head proves the whole history of tickets filed before the map existed."""
    from datetime import UTC, datetime

    import sqlalchemy as sa

    from projections import merkle, ticket_history

    engine = create_engine(database)
    upgrade(engine, "0011")
    tickets = ["B", "A", "B", "C", "A", "B", "A"]  # B first in the log: ordinal 0
    envelopes = [f'{{"n":{i},"t":"{t}"}}' for i, t in enumerate(tickets)]
    at = datetime(2026, 1, 5, tzinfo=UTC)
    columns = ["event_id", "type", "actor", "topic", "prev_hash", "hash"]
    archive = sa.table("event_archive", *(sa.column(c) for c in [*columns, "ticket_id", "envelope", "seq",
                                                                   "partition", "offset", "occurred_at",
                                                                   "recorded_at", "leaf_index"]))
    with engine.begin() as conn:
        conn.execute(sa.insert(archive), [
            {**{c: f"{c}-{i}" for c in columns}, "ticket_id": t, "envelope": e, "seq": i + 1, "partition": 0,
             "offset": i, "occurred_at": at, "recorded_at": at, "leaf_index": i}
            for i, (t, e) in enumerate(zip(tickets, envelopes, strict=True))])
    upgrade(engine)
    leaves = [merkle.leaf_hash(e.encode()) for e in envelopes]
    expected = {t: (sum(1 for x in tickets if x == t),
                    ticket_history.history_hash([h for x, h in zip(tickets, leaves, strict=True) if x == t]))
                for t in "BAC"}
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT ticket_id, ordinal, event_count, history_hash FROM ticket_map_tickets "
                                    "ORDER BY ordinal")).all()
        assert [(r[0], r[1], r[2], bytes(r[3])) for r in rows] == [
            (t, n, *expected[t]) for n, t in enumerate("BAC")]
        size, count, root = conn.execute(sa.text("SELECT tree_size, tickets, root FROM ticket_map_commits")).one()
    map_leaves = [ticket_history.map_leaf(t, *expected[t]) for t in "BAC"]
    created, _ = merkle.append(0, [], map_leaves)
    nodes = {(lv, i): h for lv, i, h in created}
    assert (size, count, bytes(root)) == (7, 3, merkle.root_hash(3, lambda lv, i: nodes[(lv, i)]))

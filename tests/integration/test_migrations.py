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

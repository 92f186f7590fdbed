"""Alembic migrations, run from code.

On PostgreSQL the schema belongs to a role no process logs in as (``projections.roles``):
``slaledger db migrate`` migrates, and every other command only checks that the database is
at the revision it was built for (``create_schema``). SQLite (dev mode, tests) has no roles:
whoever opens it migrates it.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

MIGRATIONS = Path(__file__).parent / "migrations"


class SchemaBehind(RuntimeError):
    """The database is older than this code and this connection may not migrate it."""


def config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    command.downgrade(config(engine), revision)


def create_schema(engine: Engine) -> None:
    """Bring the database to the latest migration, or check that it is there: a database
    at the head is left alone (no DDL, so a process's login role needs no right on the
    schema); one behind is migrated when this connection may create in its schema (SQLite,
    the owner, a test's superuser), else ``SchemaBehind`` says to run the migration job."""
    head = ScriptDirectory.from_config(config(engine)).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        may_migrate = conn.dialect.name != "postgresql" or bool(conn.scalar(text(
            "SELECT has_schema_privilege(current_schema(), 'CREATE')")))
    if current == head:
        return
    if not may_migrate:
        raise SchemaBehind(f"the database schema is at revision {current or 'none'}, this version needs {head}: "
                           "run the migration job first (`slaledger db migrate`, compose service db-migrate)")
    upgrade(engine)

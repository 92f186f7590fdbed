"""A throwaway PostgreSQL database, shared by the tests and the benchmarks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text


@contextmanager
def fresh_database(server: str, prefix: str, admin_db: str = "postgres") -> Iterator[str]:
    """The URL of a new, empty database on ``server`` (a URL ending in ``/``), dropped afterwards.

    ``admin_db`` is the database connected to in order to create and drop it."""
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    admin = create_engine(server + admin_db, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()

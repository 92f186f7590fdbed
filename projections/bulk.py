"""Set-based writes: one statement per table per batch, on PostgreSQL and SQLite alike.

The projector's cost is database round trips, not Python (#31: 7 round trips per ticket
made it 0.036 of a raw reader). Every table it writes goes through these three:

- ``among``: ``column = ANY(:values)`` on PostgreSQL (one array parameter, so the statement's
  text, hence its prepared plan, does not change with the batch), ``IN (…)`` on SQLite;
- ``upsert``: ``INSERT … ON CONFLICT (key) DO UPDATE``; on PostgreSQL the rows travel as one
  JSON document read back as rows of the table's type (``json_populate_recordset``): one
  statement and one parameter whatever the number of rows, where an ``executemany``, even
  pipelined by psycopg 3, sends and plans a statement per row (the ticket map's upsert: half
  the time per row). Arrays per column (``unnest``) were tried: psycopg escapes each element
  of a text array with a regular expression, which cost more than the JSON. SQLite gets an
  ``executemany``;
- ``append``: rows that are only ever added (archive, tree nodes, clocks, judgments) go
  through PostgreSQL's ``COPY … FROM STDIN`` in its binary format, its bulk path; SQLite
  gets an ``executemany``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import JSON, ColumnElement, Table, Text, any_, cast, func, insert, literal, literal_column, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DataError, DBAPIError
from sqlalchemy.sql.elements import ColumnClause

Row = Mapping[str, Any]


def among(conn: Connection, column: ColumnClause[Any], values: Collection[Any]) -> ColumnElement[bool]:
    """``column`` is one of ``values``: ``= ANY(array)`` on PostgreSQL, ``IN`` elsewhere."""
    if conn.dialect.name == "postgresql":
        return column == any_(literal(list(values), postgresql.ARRAY(column.type)))
    return column.in_(list(values))


def upsert(conn: Connection, table: Table, rows: Sequence[Row], *,
           set_: Mapping[str, Any] | None = None) -> None:
    """Insert ``rows``, or on a primary-key conflict update the row: by default every other
    column takes the new value; ``set_`` maps a column to an expression over ``table`` and
    ``excluded`` instead (``upsert_excluded``)."""
    if not rows:
        return
    stmt = _insert(conn, table)
    names = list(rows[0])
    keys = [c.name for c in table.primary_key.columns]
    if set_ is None:
        set_ = {name: stmt.excluded[name] for name in names if name not in keys}
    else:
        set_ = {name: value(stmt.excluded) if callable(value) else value for name, value in set_.items()}
    if conn.dialect.name != "postgresql":
        conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=set_), list(rows))
        return
    # the rows as one JSON document, read back as rows of the table's own type (by name:
    # the rows are serialized as they are, a copy of each cost a twentieth of a batch)
    if any(row.keys() != rows[0].keys() for row in rows):
        raise ValueError(f"upsert into {table.name}: the rows do not all have the same columns")
    document = json.dumps(rows if isinstance(rows, list) else list(rows), default=_json_value,
                          separators=(",", ":"), check_circular=False)
    row_type: ColumnClause[Any] = literal_column(f"NULL::{conn.dialect.identifier_preparer.quote(table.name)}")
    records = func.json_populate_recordset(row_type, cast(literal(document, Text()), JSON)).table_valued(*names)
    source = select(*(records.c[name] for name in names))
    conn.execute(stmt.from_select(names, source).on_conflict_do_update(index_elements=keys, set_=set_))


def _json_value(value: Any) -> str:
    """A value ``json_populate_recordset`` reads into its column: ISO 8601 instants, ``\\x``
    hex for bytes."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    raise TypeError(f"{type(value).__name__} is not a column value")


def append(conn: Connection, table: Table, rows: Sequence[Row]) -> None:
    """Add rows that cannot be present yet (the caller checked): ``COPY`` on PostgreSQL."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(insert(table), list(rows))
        return
    names = list(rows[0])
    quote = conn.dialect.identifier_preparer.quote
    sql = f"COPY {quote(table.name)} ({', '.join(quote(n) for n in names)}) FROM STDIN (FORMAT BINARY)"
    types = _COLUMN_TYPES.get(table.name)
    if types is None or any(n not in types for n in names):  # first COPY, or a column added since
        types = _COLUMN_TYPES[table.name] = _column_types(conn, table.name)
    # the SQLAlchemy connection's own DBAPI connection: the COPY is in the batch's transaction
    try:
        with conn.connection.dbapi_connection.cursor() as cursor, cursor.copy(sql) as copy:  # type: ignore[union-attr]
            copy.set_types([types[n] for n in names])
            for row in rows:
                copy.write_row([row[n] for n in names])
    except psycopg.Error as exc:  # as SQLAlchemy raises it for its own statements: a refused
        raise DBAPIError.instance(sql, None, exc, psycopg.Error) from exc  # value is set aside
    except UnicodeEncodeError as exc:  # a lone surrogate in a text (the JSON of an upsert had
        raise DataError(sql, None, exc) from exc  # it refused by the server, 22P02)


# Built-in types' oids never change: read once per table and process, not once per batch.
_COLUMN_TYPES: dict[str, dict[str, int]] = {}


def _column_types(conn: Connection, table: str) -> dict[str, int]:
    """The type oid of each column of ``table`` as the database has it (one small query):
    a binary ``COPY`` sends each value in its column's own binary form, a third of the
    text form's cost per archive row (psycopg formats text rows value by value, #31), and
    the database's own types (migrations, shadow tables) are the ones its ``COPY`` reads."""
    return {name: int(oid) for name, oid in conn.execute(text(
        "SELECT attname, atttypid FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) AND attnum > 0 "
        "AND NOT attisdropped"), {"t": conn.dialect.identifier_preparer.quote(table)})}



def _insert(conn: Connection, table: Table) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)

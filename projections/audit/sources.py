"""The log as records: the SQL archive's rows, in append order or one ticket's only.

The topic is read by ``kafka_source``; both yield ``LogRecord``s, which the replay folds
and the integrity checks verify.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select

from ..models import ARCHIVE


@dataclass(frozen=True)
class LogRecord:
    """One record of the log as read, with where it came from."""

    raw: bytes
    source: dict[str, Any]  # {"topic", "partition", "offset"} or {"archive_seq"}
    prev_hash: str | None = None  # archive only
    hash: str | None = None
    leaf_index: int | None = None  # archive only: the row's leaf in the Merkle tree


    def where(self) -> str:
        """A topic record's place: ``topic[partition]@offset``."""
        s = self.source
        return f"{s.get('topic')}[{s.get('partition')}]@{s.get('offset')}"

    def describe(self) -> str:
        """Where the record was read, in French (for a finding)."""
        if "archive_seq" in self.source:
            return f"archive, ligne {self.source['archive_seq']}"
        return f"topic {self.where()}"


def archive_records(engine: Engine, batch: int = 5000, *, ticket: str | None = None,
                    by_ticket: bool = False) -> Iterator[LogRecord]:
    """The archive in append order; ``ticket``: only that ticket's rows (its index), for a
    one-ticket dispute file checked against the Merkle tree instead of the whole chain;
    ``by_ticket``: ticket after ticket, each in append order (the what-if folds one ticket
    at a time; the chain is not walked then)."""
    query = select(ARCHIVE.c.seq, ARCHIVE.c.envelope, ARCHIVE.c.prev_hash, ARCHIVE.c.hash, ARCHIVE.c.leaf_index)
    if ticket is not None:
        query = query.where(ARCHIVE.c.ticket_id == ticket)
    with engine.connect() as conn:
        order = (ARCHIVE.c.ticket_id, ARCHIVE.c.seq) if by_ticket else (ARCHIVE.c.seq,)
        result = conn.execution_options(yield_per=batch).execute(query.order_by(*order))
        for seq, envelope, prev_hash, digest, leaf in result:
            yield LogRecord(envelope.encode(), {"archive_seq": seq}, prev_hash, digest, leaf)

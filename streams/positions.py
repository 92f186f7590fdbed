"""Where the worker is in each partition it reads: every record below a position is handled.

Commands: the ``positions`` table, one key per partition on that partition's changelog
(``table_values.position_key``), written after the states the batch stored, so a restart
reads each partition from the first command not decided. Events: the *events position*,
kept in the ticket table on the changelog partition of the tickets it describes, after
them (``table_values.events_position_key``): a crash can lose the last states only
together with the position that covers them, so recovery reads their events again.

The writes go out with the batch's other table writes (``TableWrites``), in its
transaction when the worker is fenced.
"""

from __future__ import annotations

from typing import Any

from .batches import TableWrites
from .table_values import events_position_key, position_key


class Positions:
    """``tickets`` and ``positions``: the worker's Faust tables (or dict-like ones with a
    ``data`` store, in tests); ``partitions``: the topics' partition count."""

    def __init__(self, tickets: Any, positions: Any, writes: TableWrites, partitions: int) -> None:
        self.tickets, self.table, self.writes, self.partitions = tickets, positions, writes, partitions
        # Moved past by this worker, not necessarily flushed yet (a gap repair reads it before the table).
        self._filled: dict[tuple[str, int], int] = {}

    def expected(self, topic: str, partition: int) -> int | None:
        """The next offset to handle (None: no position recorded for the partition)."""
        stored = self.table.get(position_key(topic, partition, self.partitions))
        seen = self._filled.get((topic, partition))
        known = [v for v in (stored, seen) if v is not None]
        return max(known) if known else None

    def handled(self, topic: str, partition: int, last: int) -> None:
        """Records up to ``last`` are handled: never back (records below the position are
        dropped; a gap repair may come late)."""
        position = max(self.expected(topic, partition) or 0, last + 1)
        self._filled[(topic, partition)] = position
        self.writes.put(self.table, partition, position_key(topic, partition, self.partitions), position)

    def events(self, partition: int) -> int | None:
        """The events position: every offset below it is applied (None: never recovered)."""
        value = self.tickets.get(events_position_key(partition, self.partitions))
        return int(value["events_position"]) if value else None

    def set_events(self, partition: int, offset: int) -> None:
        if offset > (self.events(partition) or 0) or self.events(partition) is None:
            self.writes.put(self.tickets, partition, events_position_key(partition, self.partitions),
                            {"events_position": offset})

    def forget(self, partition: int | None = None) -> None:
        """Forget what this worker moved past and the table may not have (a fenced
        partition's; None: every partition's, a worker that has none)."""
        for key in [key for key in self._filled if partition is None or key[1] == partition]:
            del self._filled[key]

"""The per-partition deadline index: which ticket needs the timer next, earliest first.

A min-heap of (instant, ticket) with lazy deletion: rescheduling a ticket pushes a new
entry and records the current instant in ``_due``; an entry that no longer matches is
skipped when popped. Each tick costs O(k log n) for k due tickets, not a scan of all.
The index is memory only: it is rebuilt from the ticket table when partitions are assigned.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from datetime import datetime


class DeadlineIndex:
    def __init__(self) -> None:
        self._heaps: dict[int, list[tuple[datetime, str]]] = {}
        self._due: dict[str, tuple[int, datetime]] = {}

    def schedule(self, partition: int, ticket_id: str, at: datetime | None) -> None:
        if at is None:
            self._due.pop(ticket_id, None)
            return
        current = self._due.get(ticket_id)
        if current == (partition, at):
            return
        self._due[ticket_id] = (partition, at)
        heapq.heappush(self._heaps.setdefault(partition, []), (at, ticket_id))

    def pop_due(self, now: datetime, partitions: Iterable[int]) -> list[tuple[int, str]]:
        """Tickets due at ``now`` in the given partitions; they leave the index (the caller
        reschedules them once it knows their next instant)."""
        out = []
        for partition in partitions:
            heap = self._heaps.get(partition)
            while heap and heap[0][0] <= now:
                at, ticket_id = heapq.heappop(heap)
                if self._due.get(ticket_id) == (partition, at):
                    del self._due[ticket_id]
                    out.append((partition, ticket_id))
        return out

    def drop_partitions(self, keep: set[int]) -> None:
        for partition in [p for p in self._heaps if p not in keep]:
            for _, ticket_id in self._heaps.pop(partition):
                if self._due.get(ticket_id, (None,))[0] == partition:
                    del self._due[ticket_id]

    def earliest(self) -> datetime | None:
        return min((at for _, at in self._due.values()), default=None)

    def __len__(self) -> int:
        return len(self._due)

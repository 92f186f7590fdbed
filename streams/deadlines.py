"""The per-partition deadline index: which ticket needs the timer next, earliest first.

A min-heap of (instant, ticket) per partition with lazy deletion: rescheduling a ticket
pushes a new entry and records the current instant in the partition's ``_due``; an entry
that no longer matches is skipped when popped. Each tick costs O(k log n) for k due
tickets, not a scan of all. The index is memory only: with the RocksDB store it holds the
next minute's deadlines, loaded from the due keys stored with the tickets
(``streams.store``); with the memory store it is rebuilt from the ticket table when
partitions are assigned.

A restart indexes a million tickets at once (#20), so: ``schedule`` only appends, and the
entries reach their heap when the partition is next read (``pop_due``) — pushed one by one
when they are few, merged and reordered at once (``heapify``, O(n)) when they are many
(measured: 1M ``heappush`` of aware datetimes, 1.3 µs a ticket, against 0.4).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from datetime import datetime

# Pending entries beyond this fraction of a heap are merged by reordering the whole heap.
_REORDER_FRACTION = 8


class DeadlineIndex:
    def __init__(self) -> None:
        self._heaps: dict[int, list[tuple[datetime, str]]] = {}
        self._pending: dict[int, list[tuple[datetime, str]]] = {}  # scheduled, not in the heap yet
        self._due: dict[int, dict[str, datetime]] = {}  # a ticket's partition is its key's: it never moves

    def schedule(self, partition: int, ticket_id: str, at: datetime | None) -> None:
        due = self._due.get(partition)
        if at is None:
            if due is not None:
                due.pop(ticket_id, None)
            return
        if due is None:
            due = self._due[partition] = {}
        elif due.get(ticket_id) == at:
            return
        due[ticket_id] = at
        pending = self._pending.get(partition)
        if pending is None:
            pending = self._pending[partition] = []
        pending.append((at, ticket_id))

    def _heap(self, partition: int) -> list[tuple[datetime, str]] | None:
        """The partition's heap, with what was scheduled since it was last read."""
        heap = self._heaps.get(partition)
        pending = self._pending.pop(partition, None)
        if not pending:
            return heap
        if heap is None:
            heap = self._heaps[partition] = []
        if len(pending) * _REORDER_FRACTION > len(heap):
            heap.extend(pending)
            heapq.heapify(heap)
        else:
            for entry in pending:
                heapq.heappush(heap, entry)
        return heap

    def pop_due(self, now: datetime, partitions: Iterable[int]) -> list[tuple[int, str]]:
        """Tickets due at ``now`` in the given partitions; they leave the index (the caller
        reschedules them once it knows their next instant)."""
        out = []
        for partition in partitions:
            heap = self._heap(partition)
            due = self._due.get(partition)
            if not heap or due is None:
                continue
            while heap and heap[0][0] <= now:
                at, ticket_id = heapq.heappop(heap)
                if due.get(ticket_id) == at:
                    del due[ticket_id]
                    out.append((partition, ticket_id))
        return out

    def drop_partitions(self, keep: set[int]) -> None:
        for entries in (self._heaps, self._pending, self._due):
            for partition in [p for p in entries if p not in keep]:
                del entries[partition]

    def earliest(self) -> datetime | None:
        return min((at for due in self._due.values() for at in due.values()), default=None)

    def __len__(self) -> int:
        return sum(len(due) for due in self._due.values())

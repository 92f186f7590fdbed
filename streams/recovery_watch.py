"""Faust's table recovery, watched: one that has stopped moving is reported and handed over.

Faust's table recovery can wait forever for changelog records that never come (seen on a
fresh Apache Kafka after a rebalance during recovery: "No event received for active tp
... since recovery start"). Recovery that has not moved for RECOVERY_STALL_SECONDS is
logged with each changelog partition's offset and end, and ``on_stalled`` is called: the
entry point restarts the worker (``slaledger worker``), as a supervisor would after a crash.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger(__name__)

RECOVERY_STALL_SECONDS = 45.0
RECOVERY_POLL_SECONDS = 5.0


class RecoveryWatch:
    """``recovery``: Faust's (``app.tables.recovery``); ``rebalancing``: whether the group
    is rebalancing now (``app.rebalancing``)."""

    def __init__(self, recovery: Any, rebalancing: Callable[[], bool],
                 on_stalled: Callable[[], None] | None = None) -> None:
        self.recovery, self.rebalancing, self.on_stalled = recovery, rebalancing, on_stalled

    @property
    def recovered(self) -> bool:
        return bool(self.recovery.completed.is_set()) and not self.rebalancing()

    async def run(self) -> None:
        recovery = self.recovery
        loop = asyncio.get_running_loop()
        seen, since = None, loop.time()
        while True:
            await asyncio.sleep(RECOVERY_POLL_SECONDS)
            # a partition whose position Faust does not know yet has offset None (seen on Apache
            # Kafka during a rebalance): it has not moved
            moved = sum(offset for offset in recovery.active_offsets.values() if offset is not None)
            state = (bool(recovery.in_recovery), moved, self.rebalancing())
            if self.recovered or not recovery.in_recovery or state != seen:
                seen, since = state, loop.time()
                continue
            if loop.time() - since >= RECOVERY_STALL_SECONDS:
                log.error("table recovery stalled", seconds=round(loop.time() - since),
                          behind={f"{tp.topic}:{tp.partition}": [recovery.active_offsets.get(tp), high]
                                  for tp, high in recovery.active_highwaters.items()},
                          restarting=self.on_stalled is not None)
                if self.on_stalled is not None:
                    self.on_stalled()
                since = loop.time()

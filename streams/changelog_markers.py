"""Faust's table recovery over transactional changelogs, told when what it has not applied
of a changelog partition is transaction markers only.

Faust's recovery of a table partition ends once it has applied the record at the
partition's end offset − 1 (its "highwater"). A fenced worker's changelog ends with a
commit marker, which no reader receives: Faust would wait for it forever. Once Faust's
reader has fetched past the end, a ``read_committed`` read of the range Faust has not
applied (``CommittedProbe``) tells exactly whether a record is left: none, the rest is
markers (or aborted records) and the partition is recovered. Guessed instead from an empty
queue, a record still on its way from Faust's reader thread could be taken for a marker
and dropped from the table (a restart that "caught up" without some tickets' last state).

Nothing left to recover, the recovery is ended at once, as Faust's own loop does when it
next looks — up to 5 s later, after a wait for a record that never comes: most of a
worker's restart at 1,000,000 open tickets (#31).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

log = structlog.get_logger(__name__)

CHECK_SECONDS = 0.5  # between two looks at the recovery
PROBE_SECONDS = 2.0  # a range not read to its end by then counts as holding records (look again)


class CommittedProbe:
    """A ``read_committed`` reader of the changelogs, in no group (``options``: the
    worker's reader options)."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = options
        self._consumer: AIOKafkaConsumer | None = None

    async def holding_records(self, ranges: Mapping[TopicPartition, tuple[int, int]]) -> set[TopicPartition]:
        """The partitions whose offsets [start, end) hold a record a ``read_committed``
        reader receives, read together; those not read to their end within PROBE_SECONDS
        count among them."""
        if self._consumer is None:
            # a short fetch wait: a fetch that finds markers only returns at once anyway; no
            # offset reset: a range gone from the log is an error, not "nothing there"
            consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, fetch_max_wait_ms=50,
                                        auto_offset_reset="none", **self.options)
            try:
                await consumer.start()
            except BaseException:
                await consumer.stop()
                raise
            self._consumer = consumer
        consumer = self._consumer
        consumer.assign(list(ranges))
        for tp, (start, _) in ranges.items():
            consumer.seek(tp, start)
        holding, undecided = set(), set(ranges)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PROBE_SECONDS
        while undecided and loop.time() < deadline:
            fetched = await consumer.getmany(*undecided, timeout_ms=100)
            for tp in list(undecided):
                end = ranges[tp][1]
                if any(record.offset < end for record in fetched.get(tp, [])):
                    holding.add(tp)
                    undecided.discard(tp)
                elif await consumer.position(tp) >= end:  # read past markers only
                    undecided.discard(tp)
        return holding | undecided

    async def stop(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()


async def recovery_past_markers(app: Any, probe: CommittedProbe) -> None:
    """Runs while the worker runs: each active changelog partition whose unapplied rest is
    markers only is moved to its end, and a recovery left with nothing to do is ended."""
    recovery = app.tables.recovery
    while True:
        await asyncio.sleep(CHECK_SECONDS)
        if not recovery.in_recovery:
            continue
        try:
            await _past_markers(app, recovery, probe)
            _end_recovery(recovery)
        except Exception:  # (a rebalance under way: the position of a partition no longer assigned)
            log.exception("changelog end markers not checked, checking again")


async def _past_markers(app: Any, recovery: Any, probe: CommittedProbe) -> None:
    """Move each partition whose unapplied rest is markers only to its end: the end probed,
    and only if Faust's end and what it applied are still those the probe was asked about
    (a rebalance meanwhile moves them)."""
    offsets = recovery.active_offsets
    unapplied: dict[TopicPartition, tuple[int, int]] = {}
    for tp, last in list(recovery.active_highwaters.items()):
        applied = offsets.get(tp)
        if last is None or applied is None or applied >= last:
            continue
        position = await app.consumer.position(tp)
        if position is not None and position > last:  # Faust's reader has fetched to the end
            unapplied[TopicPartition(tp.topic, tp.partition)] = (applied + 1, last + 1)
    if not unapplied:
        return
    holding = await probe.holding_records(unapplied)
    for tp in list(recovery.active_highwaters):
        where = TopicPartition(tp.topic, tp.partition)
        if where not in unapplied or where in holding:
            continue
        start, end = unapplied[where]
        if recovery.active_highwaters.get(tp) == end - 1 and offsets.get(tp) == start - 1:
            log.info("changelog recovered to its end marker", topic=tp.topic, partition=tp.partition, end=end - 1)
            offsets[tp] = end - 1


def _end_recovery(recovery: Any) -> None:
    """Faust's own end of a recovery (``_maybe_signal_recovery_end``), now that nothing is
    left to apply, and only while its recovery waits for that signal. The signal is cleared at once: left set, a later
    recovery (a rejoin) would take it for its own end."""
    signal = recovery.signal_recovery_end
    if not recovery.in_recovery or recovery.need_recovery() or not signal._waiters:
        return
    recovery.flush_buffers()
    recovery._set_recovery_ended()
    signal.set()
    signal.clear()
    log.info("table recovery ended at the changelogs' end markers")

"""A table recovery that stops moving is reported and handed to the entry point (which
restarts the worker); one that moves, however slowly, is left alone."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from streams import recovery_watch
from streams.recovery_watch import RecoveryWatch


def watched(offsets: list[int | None]) -> list[str]:
    calls: list[str] = []
    # "unknown": a partition Faust has no position for yet (None, seen on Apache Kafka during a
    # rebalance); the watch once died on it with a TypeError, and the worker with it
    recovery = SimpleNamespace(in_recovery=True, active_offsets={"tp": 0, "unknown": None}, active_highwaters={},
                               completed=SimpleNamespace(is_set=lambda: False))
    watch = RecoveryWatch(recovery, rebalancing=lambda: False, on_stalled=lambda: calls.append("restart"))

    async def run() -> None:
        task = asyncio.create_task(watch.run())
        for offset in offsets:
            recovery.active_offsets["tp"] = offset
            await asyncio.sleep(0.011)
        task.cancel()

    asyncio.run(run())
    return calls


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recovery_watch, "RECOVERY_POLL_SECONDS", 0.001)
    monkeypatch.setattr(recovery_watch, "RECOVERY_STALL_SECONDS", 0.05)


def test_a_stalled_recovery_is_handed_over() -> None:
    calls = watched([5] * 20)
    assert calls and set(calls) == {"restart"}


def test_a_moving_recovery_is_left_alone() -> None:
    assert watched(list(range(20))) == []

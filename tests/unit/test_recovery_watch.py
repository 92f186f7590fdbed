"""A table recovery that stops moving is reported and handed to the entry point (which
restarts the worker); one that moves, however slowly, is left alone."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from streams import app as streams_app
from streams.app import Pipeline


def watched(offsets: list[int | None]) -> tuple[Pipeline, list[str]]:
    calls: list[str] = []
    # "unknown": a partition Faust has no position for yet (None, seen on Apache Kafka during a
    # rebalance); the watch once died on it with a TypeError, and the worker with it
    recovery = SimpleNamespace(in_recovery=True, active_offsets={"tp": 0, "unknown": None}, active_highwaters={},
                               completed=SimpleNamespace(is_set=lambda: False))
    p = Pipeline.__new__(Pipeline)
    p.app = SimpleNamespace(tables=SimpleNamespace(recovery=recovery), rebalancing=False)  # type: ignore[assignment]
    p.on_recovery_stalled = lambda: calls.append("restart")

    async def run() -> None:
        task = asyncio.create_task(p._watch_recovery())
        for offset in offsets:
            recovery.active_offsets["tp"] = offset
            await asyncio.sleep(0.011)
        task.cancel()

    asyncio.run(run())
    return p, calls


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams_app, "RECOVERY_POLL_SECONDS", 0.001)
    monkeypatch.setattr(streams_app, "RECOVERY_STALL_SECONDS", 0.05)


def test_a_stalled_recovery_is_handed_over() -> None:
    _, calls = watched([5] * 20)
    assert calls and set(calls) == {"restart"}


def test_a_moving_recovery_is_left_alone() -> None:
    _, calls = watched(list(range(20)))
    assert calls == []


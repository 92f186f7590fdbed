"""The projector writes a batch's archive in a thread while it folds the batch
(``projections.projection._both``): both results come back, and a failure in either is
raised only once both have ended (the connection is never left in use by a thread)."""

from __future__ import annotations

import threading
import time

import pytest

from projections.projection import _both


def test_both_results_come_back_and_the_background_ran_in_another_thread() -> None:
    threads: list[str] = []

    def background() -> int:
        threads.append(threading.current_thread().name)
        return 1

    assert _both(background, lambda: 2, alongside=True) == (1, 2)
    assert threads == ["archive-writer_0"]


def test_a_background_failure_is_raised_after_the_foreground_ended() -> None:
    ended: list[str] = []

    def background() -> None:
        raise ValueError("refused by the database")

    def foreground() -> str:
        time.sleep(0.05)
        ended.append("foreground")
        return "rows"

    with pytest.raises(ValueError, match="refused"):
        _both(background, foreground, alongside=True)
    assert ended == ["foreground"]


def test_a_foreground_failure_waits_for_the_background() -> None:
    ended: list[str] = []

    def background() -> None:
        time.sleep(0.05)
        ended.append("background")

    def foreground() -> None:
        raise KeyError("fold")

    with pytest.raises(KeyError):
        _both(background, foreground, alongside=True)
    assert ended == ["background"]


def test_without_alongside_both_run_in_this_thread_in_order() -> None:
    order: list[str] = []
    assert _both(lambda: order.append("archive") or 1, lambda: order.append("fold") or 2, alongside=False) == (1, 2)
    assert order == ["archive", "fold"]
    assert _both(None, lambda: 3, alongside=True) == (None, 3)

"""A clock of ``sla.view.ticket_view`` read for display: the state a page shows, whether it
counts down or waits for the member, and the queue's order (nearest deadline first)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sla.display import shown_state
from sla.display import worst_state as sla_worst_state
from sla.events import parse_instant


def clock_state(clock: Mapping[str, Any]) -> str:
    return shown_state(str(clock["status"]), at_risk=bool(clock["at_risk"]))


def paused_now(clock: Mapping[str, Any]) -> bool:
    segments = clock["segments"]
    return bool(segments) and segments[-1]["kind"] == "paused" and segments[-1]["end"] is None


def counting(clock: Mapping[str, Any]) -> bool:
    """Whether the clock's current deadline is still ahead of a running count (a countdown)."""
    return (clock["deadline"] is not None and clock["stopped_at"] is None and not paused_now(clock)
            and clock["status"] in ("running", "breached"))


def suspended(clock: Mapping[str, Any]) -> bool:
    """Whether the clock waits for the member (a « délai suspendu » note instead of a countdown)."""
    return clock["status"] == "paused" or (paused_now(clock) and clock["status"] == "breached")


def time_left(clock: Mapping[str, Any], now: datetime) -> float:
    """Seconds until the clock's deadline (negative once passed)."""
    return (parse_instant(clock["deadline"], "deadline") - now).total_seconds()


def worst_state(clocks: Iterable[Mapping[str, Any]]) -> str | None:
    return sla_worst_state(clock_state(c) for c in clocks)


def current_clocks(view: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A queue row's clocks: the open ones, counting down first, nearest deadline first."""
    shown = [c for c in view["clocks"] if clock_state(c) in ("breached", "at_risk", "running", "paused")]
    shown.sort(key=lambda c: (not counting(c), c["deadline"] or ""))
    return shown


def queue_sort_key(view: Mapping[str, Any]) -> tuple[int, str]:
    """Nearest deadline first; then tickets whose clocks are all paused; then the rest."""
    deadlines = [c["deadline"] for c in view["clocks"] if counting(c)]
    if deadlines:
        return 0, min(parse_instant(d, "deadline").isoformat() for d in deadlines)
    if any(paused_now(c) for c in view["clocks"]):
        return 1, view["filed_at"] or ""
    return 2, view["filed_at"] or ""

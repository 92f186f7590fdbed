"""The geometry of a clock's segments axis (``templates/axis.html`` draws it): where its
segments, deadline, "now" and round ticks fall on a 1000-wide axis, and the scale's words."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sla.events import parse_instant

from .clocks import counting

AXIS_WIDTH, AXIS_PAD = 1000.0, 12.0  # the segments axis' viewBox width and side margin

Span = tuple[str, datetime, datetime | None]


def story_segments(clock: Mapping[str, Any]) -> list[Span]:
    """The clock's segments (contiguous, each cycle cut at its stop by ``sla.clock``) as spans."""
    return [(s["kind"], parse_instant(s["start"], "start"), parse_instant(s["end"], "end") if s["end"] else None)
            for s in clock["segments"]]


@dataclass(frozen=True, slots=True)
class Stretch:
    """One drawn piece of a segment: what lies after "now" is the calendar's forecast."""

    kind: str
    start: datetime  # the segment's, for its tooltip
    end: datetime | None
    future: bool
    x: float
    width: float


@dataclass(frozen=True, slots=True)
class Mark:
    """A labelled instant on the axis (the deadline, "now", a tick)."""

    at: datetime
    x: float
    anchor: str


@dataclass(frozen=True, slots=True)
class Axis:
    index: int  # the clock's rank on the page, for the ids of the title and description
    width: float
    pad: float
    stretches: list[Stretch]
    rest: tuple[float, float] | None  # (x, width) of what remains to run until the deadline
    deadline: Mark | None
    now: Mark | None
    ticks: list[Mark]
    step: int  # seconds between two ticks
    scale: str  # « une graduation toutes les heures »: said under the axis


# The axis' tick steps (seconds), with how the scale names them: round on a clock face, and
# none more than 3 times the previous, so the clock's span fills most of its axis.
TICK_STEPS = ((5, "toutes les 5 secondes"), (10, "toutes les 10 secondes"), (30, "toutes les 30 secondes"),
              (60, "toutes les minutes"), (120, "toutes les 2 minutes"), (300, "toutes les 5 minutes"),
              (600, "toutes les 10 minutes"), (1800, "toutes les 30 minutes"), (3600, "toutes les heures"),
              (7200, "toutes les 2 heures"), (14400, "toutes les 4 heures"), (28800, "toutes les 8 heures"),
              (86400, "tous les jours"), (172800, "tous les 2 jours"), (432000, "tous les 5 jours"),
              (864000, "tous les 10 jours"), (2592000, "tous les 30 jours"))
MAX_TICKS = 10  # intervals on the axis, at most (its labels stay apart)


def round_ticks(start: datetime, end: datetime, tz: ZoneInfo) -> tuple[list[datetime], int, str]:
    """Round instants (local wall clock: 10:00, 10:30, midnight…) from the last at or before
    ``start`` to the first at or after ``end``, at the finest step of ``TICK_STEPS`` that
    needs at most ``MAX_TICKS`` intervals; and the step's name."""
    span = (end - start).total_seconds()
    for step, name in TICK_STEPS:
        if span / step > MAX_TICKS:  # too many intervals whatever the rounding
            continue
        ticks = _ticks(start, end, step, tz)
        if len(ticks) <= MAX_TICKS + 1:
            return ticks, step, name
    step, name = TICK_STEPS[-1]
    return _ticks(start, end, step, tz), step, name


def _ticks(start: datetime, end: datetime, step: int, tz: ZoneInfo) -> list[datetime]:
    """Multiples of ``step`` counted on the local wall clock from the local midnight before
    ``start``, up to the first at or after ``end``."""
    local = start.astimezone(tz).replace(tzinfo=None)
    origin = local.replace(hour=0, minute=0, second=0, microsecond=0)
    k = int((local - origin).total_seconds() // step)
    wall = origin + timedelta(seconds=k * step)
    out: list[datetime] = []
    while True:
        at = wall.replace(tzinfo=tz)
        if not out or at > out[-1]:  # the autumn hour, told once; the spring gap, skipped
            out.append(at)
        if at >= end:
            return out
        wall += timedelta(seconds=step)


def tick_label(value: datetime, step: int, tz: ZoneInfo) -> str:
    """« 10:00 », and the day at midnight (« 03/11 »): short enough for ten ticks to stay
    apart; the caption under the axis names its first and last day in full."""
    local = value.astimezone(tz)
    if (local.hour, local.minute, local.second) == (0, 0, 0):
        return f"{local:%d/%m}"
    return f"{local:%H:%M:%S}" if step < 60 else f"{local:%H:%M}"


def axis_geometry(clock: Mapping[str, Any], spans: Sequence[Span], now: datetime, index: int,
                  tz: ZoneInfo) -> Axis | None:
    """Where the clock's segments, deadline, "now" and ticks fall on a 1000-wide axis: the
    clock's own span (its start to the latest of its end, its deadline and, while it runs,
    now), widened to the round ticks around it."""
    if not spans:
        return None
    start = spans[0][1]
    deadline = parse_instant(clock["deadline"], "deadline") if clock["deadline"] else None
    horizon = max([end or max(now, lo) for _, lo, end in spans] + ([deadline] if deadline else []))
    if any(end is None for _, _, end in spans):
        horizon = max(horizon, now)
    instants, step, scale = round_ticks(start, max(horizon, start + timedelta(seconds=1)), tz)
    low, high = instants[0], instants[-1]
    span = (high - low).total_seconds()
    width, pad = AXIS_WIDTH, AXIS_PAD

    def x(t: datetime) -> float:
        return pad + (t - low).total_seconds() / span * (width - 2 * pad)

    def anchor(at: float) -> str:
        return "end" if at > width * 0.8 else "start" if at < width * 0.2 else "middle"

    stretches: list[Stretch] = []
    for kind, lo, end in spans:
        hi = end or max(now, lo)
        pieces = [(a, b, f) for a, b, f in ((lo, min(hi, now), False), (max(lo, now), hi, True)) if b > a]
        if not pieces:  # an instant: an open stretch that starts now or later
            pieces = [(lo, lo, lo > now)]
        stretches.extend(Stretch(kind, lo, end, future, x(a), max(x(b) - x(a), 1.5)) for a, b, future in pieces)
    rest = None
    if deadline is not None and counting(clock) and deadline > now:
        rest = (x(now), x(deadline) - x(now))
    deadline_mark = Mark(deadline, x(deadline), anchor(x(deadline))) if deadline is not None else None
    now_mark = Mark(now, x(now), anchor(x(now))) if start <= now <= horizon else None
    last = len(instants) - 1
    ticks = [Mark(t, x(t), "start" if i == 0 else "end" if i == last else "middle") for i, t in enumerate(instants)]
    return Axis(index, width, pad, stretches, rest, deadline_mark, now_mark, ticks, step, scale)

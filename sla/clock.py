"""The SLA clock: one deterministic fold from a ticket's events to its SLA verdicts.

``evaluate(ticket, policy, now)`` (or ``clocks(events, policy, now)``) returns, for every
SLA of the policy version in force at filing that applies to the ticket, a ``Clock``:
status, deadline, remaining time or overrun, and the ledger of segments tied to the events
that opened and closed them (``sla.explain`` tells it in French; ``sla.facts`` says which
SLA facts the log should contain by ``now``). The live pipeline, the projector and the
audit replay all call these, so they cannot disagree.

Rules of the fold
- Clock-relevant events are taken in business-time order (``occurred_at``, ties in log
  order): an acknowledgement typed in late but made before the deadline counts as made
  before the deadline.
- A clock starts on one of its ``starts_on`` signals and stops for good on a
  ``stops_on`` signal; ``restarts_on`` closes the current cycle and opens a new one
  (periodic updates); ``pauses_on``/``resumes_on`` suspend it, and the time left at the
  pause is counted again from the resumption (in open hours for a business rule).
- A cycle is breached when it stops, pauses or is evaluated strictly after its deadline;
  stopping exactly at the deadline meets it.
- A breach recorded in the log whose cycle is no longer breached (late correction,
  reclassification to an excluded product) is retracted by a new event, never deleted.
- The status ``pending`` means the clock has not started (e.g. go-live waiting for the
  member's elements).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from enum import StrEnum
from typing import Any

from .calendar import add_calendar_days, add_calendar_months
from .events import Event, EventType, format_instant
from .policy import Policy, PolicyVersion, SlaDefinition
from .ticket import Mark, Ticket, fold


class ClockStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    MET = "met"
    BREACHED = "breached"
    RETRACTED = "retracted"
    EXCLUDED = "excluded"


class SegmentKind(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    OUTSIDE_HOURS = "outside_hours"


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of a clock's life; ``None`` ids mean the calendar opened or closed it."""

    kind: SegmentKind
    start: datetime
    end: datetime | None
    opened_by: uuid.UUID | None
    closed_by: uuid.UUID | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "start": format_instant(self.start),
            "end": format_instant(self.end) if self.end else None,
            "opened_by": str(self.opened_by) if self.opened_by else None,
            "closed_by": str(self.closed_by) if self.closed_by else None,
        }


@dataclass(slots=True)
class Cycle:
    """One deadline of a clock (periodic clocks have several)."""

    start: datetime
    started_by: uuid.UUID
    counting_from: datetime  # start, or the next window opening for a window rule
    budget: float  # seconds of the rule's measure between counting_from and the first deadline
    deadline: datetime
    # The at-risk instant is ``measure_add(definition, warn_from, warn_after)``, computed only when
    # asked (most clocks a worker evaluates are stopped and never need it).
    warn_from: datetime
    warn_after: float
    end: datetime | None = None
    ended_by: uuid.UUID | None = None
    end_is_stop: bool = False
    overdue: bool = False  # crossed its deadline while running
    paused_at: datetime | None = None
    remaining: float = 0.0  # seconds of the measure left at the pause
    pauses: list[tuple[datetime, datetime | None, uuid.UUID, uuid.UUID | None]] = field(default_factory=list)
    # Each resumption that moved the deadline: (resumed at, seconds of the measure left at the
    # pause, the deadline from then on). The explanation names every deadline it tells of from
    # these, so it never names one the fold did not judge.
    moves: list[tuple[datetime, float, datetime]] = field(default_factory=list)


@dataclass(slots=True)
class Clock:
    """One SLA's verdict at ``now``. A value: nothing mutates it after ``evaluate`` builds it
    (not ``frozen`` only because frozen construction is slow on this hot path)."""

    sla: str
    definition: SlaDefinition
    policy_version: PolicyVersion
    status: ClockStatus
    at_risk: bool
    now: datetime
    cycles: tuple[Cycle, ...]
    excluded_reason: str | None = None
    retracted: tuple[tuple[datetime, uuid.UUID], ...] = ()  # breached deadlines no longer breached

    @property
    def current(self) -> Cycle | None:
        return self.cycles[-1] if self.cycles else None

    @property
    def deadline(self) -> datetime | None:
        cycle = self.current
        if cycle is None or self.status is ClockStatus.EXCLUDED:
            return None
        return cycle.deadline

    @property
    def warning_at(self) -> datetime | None:
        """When the current cycle becomes at risk (the policy's warning ratio of its budget)."""
        cycle = self.current
        if cycle is None or self.status is ClockStatus.EXCLUDED:
            return None
        return warning_instant(self.definition, cycle)

    @property
    def stopped_at(self) -> datetime | None:
        cycle = self.current
        return cycle.end if cycle is not None and cycle.end_is_stop else None

    @property
    def remaining_seconds(self) -> float | None:
        """Time left before the current deadline (negative: overrun); at the stop once stopped."""
        cycle = self.current
        if cycle is None or self.status is ClockStatus.EXCLUDED:
            return None
        if cycle.paused_at is not None and not cycle.overdue:
            return cycle.remaining
        until = cycle.end if cycle.end is not None else self.now
        return (cycle.deadline - until).total_seconds()

    def segments(self) -> list[Segment]:
        """The clock's life as contiguous stretches, each cycle ending at its stop — also
        when the stop comes before the counting starts (a request filed on Saturday and
        taken into account on Saturday never runs: one outside-hours stretch)."""
        out: list[Segment] = []
        for cycle in self.cycles:
            pieces: list[Segment] = []
            if cycle.counting_from > cycle.start:
                pieces.append(Segment(SegmentKind.OUTSIDE_HOURS, cycle.start, cycle.counting_from, cycle.started_by,
                                      None))
            cursor = cycle.counting_from
            opener = cycle.started_by if cycle.counting_from == cycle.start else None
            for paused_at, resumed_at, pause_id, resume_id in cycle.pauses:
                pieces.extend(self._running(cursor, paused_at, opener, pause_id))
                pieces.append(Segment(SegmentKind.PAUSED, paused_at, resumed_at, pause_id, resume_id))
                if resumed_at is None:
                    break
                cursor, opener = resumed_at, resume_id
            else:
                pieces.extend(self._running(cursor, cycle.end, opener, cycle.ended_by))
            out.extend(_clip(pieces, cycle.end, cycle.ended_by) if cycle.end is not None else pieces)
        return [p for p in out if p.end is None or p.end >= p.start]

    def _running(
        self, start: datetime, end: datetime | None, opened_by: uuid.UUID | None, closed_by: uuid.UUID | None
    ) -> list[Segment]:
        """A running stretch; for a business rule, split into open and outside hours."""
        calendar = self.definition.calendar
        if self.definition.rule != "business" or calendar is None:
            return [Segment(SegmentKind.RUNNING, start, end, opened_by, closed_by)]
        horizon = end if end is not None else max(self.now, start)
        pieces: list[tuple[SegmentKind, datetime, datetime | None]] = []
        cursor = start
        for lo, hi in calendar.open_intervals(start, horizon):
            if lo > cursor:
                pieces.append((SegmentKind.OUTSIDE_HOURS, cursor, lo))
            pieces.append((SegmentKind.RUNNING, lo, hi))
            cursor = hi
        if cursor < horizon or not pieces:
            kind = SegmentKind.RUNNING if not pieces and calendar.in_window(start) else SegmentKind.OUTSIDE_HOURS
            pieces.append((kind, cursor, horizon))
        if end is None:  # still running: the last stretch is open-ended
            pieces[-1] = (pieces[-1][0], pieces[-1][1], None)
        last = len(pieces) - 1
        return [
            Segment(kind, lo, hi, opened_by if i == 0 else None, closed_by if i == last else None)
            for i, (kind, lo, hi) in enumerate(pieces)
        ]

# --- the fold ---------------------------------------------------------------------------

def clocks(events: Iterable[Event], policy: Policy, now: datetime) -> list[Clock]:
    """Fold a ticket's events (log order) and evaluate its clocks at ``now``."""
    return evaluate(fold(events), policy, now)


NO_LONGER_APPLIES = "Engagement qui ne s'applique plus à ce ticket : son type ou son canal a été corrigé"


def evaluate(ticket: Ticket, policy: Policy, now: datetime) -> list[Clock]:
    if ticket.filed_at is None:
        return []
    version = policy.version_for(ticket.filed_at)
    marks = sorted(ticket.marks)  # by business time, then log position
    applicable = version.slas_for(ticket.kind, ticket.channel)
    found = [_evaluate_one(ticket, definition, version, marks, now,
                           version.excluded_reason(ticket.product, definition.name, ticket.kind))
             for definition in applicable]
    if ticket.facts:
        # A breach recorded under an SLA that no longer applies (the ticket was reclassified
        # or its channel corrected): that clock is excluded now, so its breach is retracted.
        names = {d.name for d in applicable}
        stale = {sla for (kind, sla, _) in ticket.facts if kind is EventType.SLA_BREACHED} - names
        found += [_evaluate_one(ticket, definition, version, marks, now, NO_LONGER_APPLIES)
                  for definition in version.slas if definition.name in stale]
    return found


def measure_between(definition: SlaDefinition, start: datetime, end: datetime) -> float:
    """Seconds of the rule's measure between two instants: open time for a business rule,
    local wall-clock time for a calendar rule (a pause across a daylight-saving change
    gives back the days lost, not 24 h ± 1 h each), elapsed time otherwise."""
    if definition.rule == "business" and definition.calendar is not None:
        return definition.calendar.business_seconds(start, end)
    if definition.tz is not None:
        return (_wall(end, definition.tz) - _wall(start, definition.tz)).total_seconds()
    return (end - start).total_seconds()


def measure_add(definition: SlaDefinition, start: datetime, seconds: float) -> datetime:
    if definition.rule == "business" and definition.calendar is not None:
        return definition.calendar.add_business_seconds(start, seconds)
    if definition.tz is not None:
        local = _wall(start, definition.tz) + timedelta(seconds=seconds)
        return local.replace(tzinfo=definition.tz).astimezone(UTC)
    return start + timedelta(seconds=seconds)


def _wall(instant: datetime, tz: tzinfo) -> datetime:
    """The local wall-clock reading of an instant, as a naive datetime."""
    return instant.astimezone(tz).replace(tzinfo=None)


def first_deadline(definition: SlaDefinition, version: PolicyVersion, start: datetime) -> tuple[datetime, datetime]:
    """(counting_from, deadline) of a cycle starting at ``start`` under ``definition``."""
    rule = definition.rule
    if rule == "window":
        assert definition.calendar is not None
        cal = definition.calendar
        counting_from = start if cal.in_window(start) else cal.next_opening_after(start)
        return counting_from, counting_from + timedelta(seconds=definition.duration_seconds)
    if rule == "elapsed":
        return start, start + timedelta(seconds=definition.duration_seconds)
    if rule == "business":
        assert definition.calendar is not None
        return start, definition.calendar.add_business_seconds(start, definition.duration_seconds)
    if definition.months:
        return start, add_calendar_months(start, version.tz, definition.months)
    return start, add_calendar_days(start, version.tz, definition.days)


def _start_cycle(
    definition: SlaDefinition, version: PolicyVersion, at: datetime, event_id: uuid.UUID
) -> Cycle:
    counting_from, deadline = first_deadline(definition, version, at)
    # The budget is the rule's duration, except for calendar rules (a month varies).
    budget = definition.duration_seconds or measure_between(definition, counting_from, deadline)
    return Cycle(at, event_id, counting_from, budget, deadline, counting_from, budget * version.warning_ratio)


def warning_instant(definition: SlaDefinition, cycle: Cycle) -> datetime:
    return measure_add(definition, cycle.warn_from, cycle.warn_after)


def _evaluate_one(
    ticket: Ticket,
    definition: SlaDefinition,
    version: PolicyVersion,
    marks: list[Mark],
    now: datetime,
    excluded_reason: str | None,
) -> Clock:
    ratio = version.warning_ratio
    cycles: list[Cycle] = []
    cycle: Cycle | None = None
    stopped = False
    early_stops: list[Mark] = []  # stop signals dated before any cycle started
    for mark in marks:
        sig = mark.signals
        if stopped:
            # A reopened ticket is not finished: a clock that restarts on "reopened" runs again.
            if "reopened" in sig and "reopened" in definition.restarts_on:
                cycle = _start_cycle(definition, version, mark.at, mark.event_id)
                cycles.append(cycle)
                stopped = False
            continue
        if cycle is None:
            if sig & definition.starts_on:
                cycle = _start_cycle(definition, version, mark.at, mark.event_id)
                cycles.append(cycle)
                # A stop recorded after this start but dated before it (a phone call typed in
                # afterwards, a restoration time given before the acknowledgement was entered):
                # the objective was met when the clock started.
                late = next((m for m in early_stops if m.seq > mark.seq), None)
                if late is not None:
                    _end(cycle, Mark(mark.at, late.seq, late.event_id, late.signals), stop=True)
                    stopped = True
            elif sig & definition.stops_on:
                early_stops.append(mark)
            continue
        if sig & definition.stops_on:
            _end(cycle, mark, stop=True)
            stopped = True
            continue
        if cycle.paused_at is None:
            if sig & definition.restarts_on:
                _end(cycle, mark, stop=False)
                cycle = _start_cycle(definition, version, mark.at, mark.event_id)
                cycles.append(cycle)
            elif sig & definition.pauses_on:
                cycle.paused_at = mark.at
                cycle.pauses.append((mark.at, None, mark.event_id, None))
                if mark.at > cycle.deadline:
                    cycle.overdue = True
                    cycle.remaining = 0.0
                else:
                    cycle.remaining = measure_between(definition, mark.at, cycle.deadline)
        elif sig & definition.resumes_on:
            start_pause, _, pause_id, _ = cycle.pauses[-1]
            cycle.pauses[-1] = (start_pause, mark.at, pause_id, mark.event_id)
            cycle.paused_at = None
            if not cycle.overdue:
                warn_left = cycle.remaining - cycle.budget * (1 - ratio)
                cycle.deadline = measure_add(definition, mark.at, cycle.remaining)
                cycle.moves.append((mark.at, cycle.remaining, cycle.deadline))
                cycle.warn_from, cycle.warn_after = mark.at, max(0.0, warn_left)

    if cycle is not None and not stopped and cycle.paused_at is None and now > cycle.deadline:
        cycle.overdue = True

    # Recorded breaches that no cycle supports any more.
    breached_deadlines = {c.deadline for c in cycles if c.overdue} if excluded_reason is None else set()
    retracted = tuple(
        sorted(
            (deadline, fact.event_id)
            for (fact_type, sla, deadline), fact in ticket.facts.items()
            if fact_type is EventType.SLA_BREACHED and sla == definition.name and deadline not in breached_deadlines
        )
    ) if ticket.facts else ()

    at_risk = False
    if excluded_reason is not None:
        status = ClockStatus.EXCLUDED
    elif cycle is None:
        status = ClockStatus.PENDING
    elif breached_deadlines:
        status = ClockStatus.BREACHED
    elif stopped:
        status = ClockStatus.RETRACTED if retracted else ClockStatus.MET
    elif cycle.paused_at is not None:
        status = ClockStatus.PAUSED
    else:
        status = ClockStatus.RUNNING
        at_risk = now >= warning_instant(definition, cycle)
    return Clock(
        definition.name, definition, version, status, at_risk, now, tuple(cycles), excluded_reason, retracted
    )


def _end(cycle: Cycle, mark: Mark, *, stop: bool) -> None:
    cycle.end, cycle.ended_by, cycle.end_is_stop = mark.at, mark.event_id, stop
    if cycle.paused_at is not None:
        start_pause, _, pause_id, _ = cycle.pauses[-1]
        cycle.pauses[-1] = (start_pause, mark.at, pause_id, mark.event_id)
    elif mark.at > cycle.deadline:
        cycle.overdue = True


def next_wakeup(ticket_clocks: Iterable[Clock], ticket: Ticket) -> datetime | None:
    """The earliest instant at which ``due_facts`` may return something new (for the
    timer's deadline index): the next warning or deadline of a running clock."""
    best: datetime | None = None
    for clock in ticket_clocks:
        cycle = clock.current
        if clock.status is not ClockStatus.RUNNING or cycle is None:
            continue
        if not ticket.has_fact(EventType.SLA_WARNING_RAISED, clock.sla, cycle.deadline) and not clock.at_risk:
            candidate = warning_instant(clock.definition, cycle)
        else:
            # A breach is due strictly after the deadline.
            candidate = cycle.deadline + timedelta(microseconds=1)
        if best is None or candidate < best:
            best = candidate
    return best


def _clip(pieces: list[Segment], end: datetime, ended_by: uuid.UUID | None) -> list[Segment]:
    """Cut a cycle's stretches at its stop: nothing after it, the last one closed by it."""
    kept = [p for p in pieces if p.start < end] or pieces[:1]
    if not kept:
        return []
    clipped = [replace(p, end=min(p.end, end) if p.end is not None else end) for p in kept]
    clipped[-1] = replace(clipped[-1], end=end, closed_by=ended_by)
    return clipped

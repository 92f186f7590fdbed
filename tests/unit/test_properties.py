"""Properties of the intake rule and of the fold that hold for all inputs (hypothesis)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, time, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from sla.clock import clocks, first_deadline
from sla.events import EventType
from sla.explain import clock_view
from sla.policy import Policy
from slaledger.settings import load_policy
from tests.conftest import PARIS, ev, filed

POLICY: Policy = load_policy()
VERSION = POLICY.versions[0]
INTAKE = next(s for s in VERSION.slas if s.name == "intake")
CAL = INTAKE.calendar
assert CAL is not None

instants = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0))


def intake(filed_at: datetime) -> datetime:
    return first_deadline(INTAKE, VERSION, filed_at)[1]


@given(instants)
def test_deadline_after_filing(filed_at: datetime) -> None:
    assert intake(filed_at) > filed_at


@given(instants)
def test_in_window_is_exactly_four_hours(filed_at: datetime) -> None:
    if CAL.in_window(filed_at):
        assert intake(filed_at) - filed_at == timedelta(hours=4)


@given(instants)
def test_out_of_window_is_noon_of_next_opening_day(filed_at: datetime) -> None:
    if CAL.in_window(filed_at):
        return
    due = intake(filed_at).astimezone(PARIS)
    assert due.time() == time(12, 0)
    assert CAL.is_working_day(due.date())
    # no window opens between the filing and that day's opening
    day = filed_at.astimezone(PARIS).date()
    while day < due.date():
        if CAL.is_working_day(day):
            assert CAL.at(day, CAL.open_at) <= filed_at
        day += timedelta(days=1)


@given(instants, st.integers(min_value=0, max_value=10 * 86400))
def test_deadlines_never_decrease(filed_at: datetime, delta: int) -> None:
    assert intake(filed_at) <= intake(filed_at + timedelta(seconds=delta))


@settings(max_examples=60)
@given(
    instants,
    st.sampled_from(["go_live", "administrative", "incident"]),
    st.integers(min_value=60, max_value=20 * 86400),
    st.integers(min_value=1, max_value=10 * 86400),
)
def test_pauses_never_shorten_a_deadline(start: datetime, kind: str, offset: int, length: int) -> None:
    base = [filed(start, kind=kind, channel="email", elements_complete=True),
            ev(EventType.ACKNOWLEDGED, start)]
    pause = [ev(EventType.WAITING_FOR_CUSTOMER, start + timedelta(seconds=offset)),
             ev(EventType.CUSTOMER_RESPONDED, start + timedelta(seconds=offset + length), elements_complete=False)]
    now = start + timedelta(seconds=offset + length + 1)
    plain = {c.sla: c.deadline for c in clocks(base, POLICY, now)}
    paused = {c.sla: c.deadline for c in clocks(base + pause, POLICY, now)}
    for sla, deadline in plain.items():
        if deadline is not None and paused[sla] is not None:
            assert paused[sla] >= deadline, sla


@settings(max_examples=60)
@given(
    instants,
    st.lists(
        st.tuples(
            st.sampled_from([EventType.ACKNOWLEDGED, EventType.WAITING_FOR_CUSTOMER, EventType.RESOLVED]),
            st.integers(min_value=0, max_value=30 * 86400),
        ),
        max_size=6,
    ),
    st.integers(min_value=0, max_value=60 * 86400),
)
def test_fold_is_deterministic(start: datetime, steps: list[tuple[EventType, int]], later: int) -> None:
    events = [filed(start, kind="go_live", elements_complete=True)]
    events += [ev(t, start + timedelta(seconds=s)) for t, s in steps]
    now = start + timedelta(seconds=later)
    first = [clock_view(c) for c in clocks(events, POLICY, now)]
    assert first == [clock_view(c) for c in clocks(events, POLICY, now)]
    # redelivered events (at-least-once) change nothing
    assert first == [clock_view(c) for c in clocks(events + events, POLICY, now)]


@settings(max_examples=300)
@given(instants, st.integers(min_value=1, max_value=7 * 24 * 3600), st.sampled_from(["assistance", "incident",
                                                                                       "administrative", "go_live"]))
def test_segments_cover_each_clock_from_start_to_stop(filed_at: datetime, delay: int, kind: str) -> None:
    """Contiguous, never backwards, from the filing to the acknowledgement, whatever the
    hours (a request filed and taken into account on a Saturday never runs)."""
    acked_at = filed_at + timedelta(seconds=delay)
    events = [filed(filed_at, kind=kind), ev(EventType.ACKNOWLEDGED, acked_at)]
    intake_clock = next(c for c in clocks(events, POLICY, acked_at + timedelta(days=1)) if c.sla == "intake")
    segments = intake_clock.segments()
    assert segments[0].start == filed_at and segments[-1].end == acked_at
    assert all(s.end is not None and s.start <= s.end for s in segments)
    assert all(a.end == b.start for a, b in itertools.pairwise(segments))


@given(instants, st.integers(min_value=1, max_value=5), st.integers(min_value=1, max_value=6),
       st.integers(min_value=0, max_value=23))
@settings(max_examples=200)
def test_a_pause_of_whole_days_moves_a_calendar_deadline_by_as_many_local_days(
        filed_at: datetime, pause_after_days: int, pause_days: int, pause_hour: int) -> None:
    """« Une semaine » is counted in Paris wall-clock time, also across a pause that spans a
    daylight-saving change: pausing N whole days moves the deadline by N local days."""
    filed_local = filed_at.astimezone(PARIS)
    paused = datetime.combine(filed_local.date() + timedelta(days=pause_after_days), time(pause_hour),
                              tzinfo=PARIS).astimezone(UTC)
    resumed = (paused.astimezone(PARIS) + timedelta(days=pause_days)).astimezone(UTC)
    if resumed.astimezone(PARIS).hour != pause_hour:
        return  # the resumption's wall time falls in the spring gap: not a pause of whole days
    events = [filed(filed_at, kind="administrative"), ev(EventType.ACKNOWLEDGED, filed_at + timedelta(minutes=1))]
    later = paused + timedelta(days=30)
    plain = next(c for c in clocks(events, POLICY, later) if c.sla == "administrative_answer").deadline
    if paused <= events[1].occurred_at or paused >= plain:
        return
    events += [ev(EventType.WAITING_FOR_CUSTOMER, paused),
               ev(EventType.CUSTOMER_RESPONDED, resumed, elements_complete=False)]
    moved = next(c for c in clocks(events, POLICY, later) if c.sla == "administrative_answer").deadline
    expected = (plain.astimezone(PARIS) + timedelta(days=pause_days)).astimezone(UTC)
    assert moved.astimezone(PARIS).replace(tzinfo=None) == expected.astimezone(PARIS).replace(tzinfo=None)

"""One answer to "how is this clock shown?" (sla.display), for the web, the API, the metrics
and the alerts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from sla.clock import ClockStatus
from sla.display import SHOWN_STATES, shown_state, worst_state

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
offsets = st.integers(min_value=-10_000, max_value=10_000).map(lambda s: T0 + timedelta(seconds=s))


@given(status=st.sampled_from([s.value for s in ClockStatus]), at_risk=st.booleans())
def test_only_a_running_clock_is_split(status: str, at_risk: bool) -> None:
    shown = shown_state(status, at_risk=at_risk)
    if status == "running":
        assert shown == ("at_risk" if at_risk else "running")
    else:
        assert shown == status


@given(now=offsets, warn_after=st.integers(min_value=1, max_value=5_000), due_after=st.integers(min_value=1,
                                                                                                 max_value=5_000))
def test_a_stored_running_clock_is_judged_at_now(now: datetime, warn_after: int, due_after: int) -> None:
    warning_at = T0 + timedelta(seconds=warn_after)
    deadline = warning_at + timedelta(seconds=due_after)
    shown = shown_state("running", deadline=deadline, warning_at=warning_at, now=now)
    assert shown == ("breached" if now > deadline else "at_risk" if now >= warning_at else "running")


@given(st.lists(st.sampled_from([*SHOWN_STATES, "met", "excluded", "retracted"])))
def test_a_ticket_is_shown_by_its_worst_clock(states: list[str]) -> None:
    worst = worst_state(states)
    open_states = [s for s in states if s in SHOWN_STATES]
    if not open_states:
        assert worst is None
    else:
        assert worst in open_states
        assert all(SHOWN_STATES.index(worst) <= SHOWN_STATES.index(s) for s in open_states)

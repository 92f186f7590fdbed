"""How an SLA clock is shown: one answer for the web pages, the API, the metrics and the
alerts. A running clock is shown « à risque » once its warning instant has passed (the
policy's ``warning_ratio`` of the target) and « dépassé » once its deadline has passed,
even before the timer's fact is recorded; a ticket is shown by its worst clock."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

# Worst first: the order a ticket's clocks are ranked in.
SHOWN_STATES = ("breached", "at_risk", "running", "paused", "pending")


def shown_state(status: str, *, at_risk: bool = False, deadline: datetime | None = None,
                warning_at: datetime | None = None, now: datetime | None = None) -> str:
    """The state to show for a clock of ``status`` (``sla.clock.ClockStatus`` value): an
    evaluated clock says ``at_risk`` itself; a stored one gives its ``deadline`` and
    ``warning_at``, judged at ``now``."""
    if status != "running":
        return status
    if now is not None and deadline is not None and now > deadline:
        return "breached"
    if at_risk or (now is not None and warning_at is not None and now >= warning_at):
        return "at_risk"
    return "running"


def worst_state(states: Iterable[str]) -> str | None:
    """The worst of shown states (None when none of them is an open clock's state)."""
    present = set(states)
    return next((s for s in SHOWN_STATES if s in present), None)

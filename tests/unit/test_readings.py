"""Exact readings of Article 4 (policy convention-2026.2, from 1 December 2026): the
administrative request's week stops on the answer, not on a holding message; the Local
Trust MPE exclusion covers the clauses its vendor ATEXO answers for, not the GIP's own."""

from __future__ import annotations

from datetime import timedelta

from sla.clock import ClockStatus, evaluate
from sla.events import EventType
from sla.explain import explanation
from sla.policy import Policy
from sla.ticket import fold
from tests.conftest import at, ev, filed


def admin_clock(policy: Policy, *, answer: bool | None, when: str = "2026-12-07T10:00:00+01:00") -> ClockStatus:
    events = [filed(when, kind="administrative", channel="email")]
    payload = {"message": "Nous étudions votre demande."} | ({"answer": answer} if answer is not None else {})
    events.append(ev(EventType.CUSTOMER_INFORMED, events[0].occurred_at + timedelta(days=1), **payload))
    (clock,) = [c for c in evaluate(fold(events), policy, events[0].occurred_at + timedelta(days=13))
                if c.sla == "administrative_answer"]
    return clock.status


def test_a_holding_message_does_not_answer_an_administrative_request(policy: Policy) -> None:
    assert admin_clock(policy, answer=None) is ClockStatus.BREACHED  # still unanswered a week later
    assert admin_clock(policy, answer=False) is ClockStatus.BREACHED
    assert admin_clock(policy, answer=True) is ClockStatus.MET


def test_before_december_any_message_answered_as_version_2026_1_judged(policy: Policy) -> None:
    assert admin_clock(policy, answer=None, when="2026-11-23T10:00:00+01:00") is ClockStatus.MET


def test_the_vendor_exclusion_applies_per_clause(policy: Policy) -> None:
    def statuses(when: str, kind: str) -> dict[str, ClockStatus]:
        events = [filed(when, kind=kind, product="local-trust-mpe")]
        return {c.sla: c.status for c in evaluate(fold(events), policy, at(when))}

    support = statuses("2026-12-07T10:00:00+01:00", "assistance")
    assert support["intake"] is ClockStatus.EXCLUDED  # a support request: taken into account by ATEXO
    incident = statuses("2026-12-07T10:00:00+01:00", "incident")
    assert incident["intake"] is ClockStatus.EXCLUDED
    december = statuses("2026-12-07T10:00:00+01:00", "administrative")
    assert december["intake"] is ClockStatus.RUNNING  # an administrative request is the GIP's, intake included
    assert december["administrative_answer"] is ClockStatus.RUNNING
    assert statuses("2026-12-07T10:00:00+01:00", "go_live")["intake"] is ClockStatus.RUNNING
    november = statuses("2026-11-23T10:00:00+01:00", "administrative")
    assert set(november.values()) == {ClockStatus.EXCLUDED}  # 2026.1 excluded every clause


def test_the_exclusion_reason_is_in_the_explanation_once(policy: Policy) -> None:
    events = [filed("2026-12-07T10:00:00+01:00", kind="incident", product="local-trust-mpe")]
    clocks = evaluate(fold(events), policy, at("2026-12-07T10:00:00+01:00"))
    text = explanation(next(c for c in clocks if c.sla == "intake"))
    assert "ATEXO" in text and text.lower().count("hors engagement") == 1

"""The SLA clock fold: pauses, cycles, breaches, retractions and facts."""

from __future__ import annotations

import itertools
from datetime import timedelta
from importlib import resources

import pytest

from sla.clock import ClockStatus, SegmentKind, clocks, evaluate, next_wakeup
from sla.events import EventType
from sla.explain import explanation
from sla.facts import due_facts
from sla.policy import Policy, parse_policy
from sla.ticket import fold
from tests.conftest import at, ev, filed

TINY = """
[[versions]]
id = "tiny-1"
effective_from = "2020-01-01T00:00:00Z"
timezone = "Europe/Paris"
warning_ratio = 0.75
[versions.excluded_products]
"vendor-x" = "Produit de l'éditeur"
[[versions.slas]]
name = "intake"
rule = "elapsed"
duration = 2
starts_on = ["filed"]
stops_on = ["acknowledged"]
pauses_on = ["waiting_for_customer"]
resumes_on = ["customer_responded"]
"""


@pytest.fixture
def tiny() -> Policy:
    return parse_policy(TINY)


def by_sla(found):  # type: ignore[no-untyped-def]
    return {c.sla: c for c in found}


def test_running_at_risk_then_breached_once(tiny: Policy) -> None:
    t0 = at("2026-03-16T10:00:00+01:00")
    ticket = fold([filed(t0)])
    (clock,) = evaluate(ticket, tiny, t0 + timedelta(seconds=1))
    assert clock.status is ClockStatus.RUNNING and not clock.at_risk
    assert next_wakeup([clock], ticket) == t0 + timedelta(seconds=1.5)

    now = t0 + timedelta(seconds=1.6)
    found = evaluate(ticket, tiny, now)
    (warning,) = due_facts(ticket, found, now)
    assert warning.type is EventType.SLA_WARNING_RAISED and warning.occurred_at == t0 + timedelta(seconds=1.5)
    ticket.apply(warning)
    assert due_facts(ticket, evaluate(ticket, tiny, now), now) == []

    exactly = t0 + timedelta(seconds=2)
    assert evaluate(ticket, tiny, exactly)[0].status is ClockStatus.RUNNING  # a deadline is met up to its instant
    later = t0 + timedelta(seconds=3)
    found = evaluate(ticket, tiny, later)
    assert found[0].status is ClockStatus.BREACHED
    (breach,) = due_facts(ticket, found, later)
    assert breach.type is EventType.SLA_BREACHED
    assert breach.occurred_at == t0 + timedelta(seconds=2)
    assert breach.payload["policy_version"] == "tiny-1"
    assert "délai dépassé" in breach.payload["explanation"]
    # asked again (another timer, a restart): the very same event, ignored once applied
    (again,) = due_facts(ticket, evaluate(ticket, tiny, later + timedelta(seconds=5)), later + timedelta(seconds=5))
    assert again.event_id == breach.event_id
    assert ticket.apply(breach) and not ticket.apply(again)
    assert due_facts(ticket, evaluate(ticket, tiny, later), later) == []


def test_late_acknowledgement_retracts_breach(tiny: Policy) -> None:
    t0 = at("2026-03-16T10:00:00+01:00")
    ticket = fold([filed(t0)])
    now = t0 + timedelta(seconds=10)
    (breach,) = [e for e in due_facts(ticket, evaluate(ticket, tiny, now), now) if e.type is EventType.SLA_BREACHED]
    ticket.apply(breach)
    # the acknowledgement happened at +1 s but is recorded at +20 s
    ticket.apply(ev(EventType.ACKNOWLEDGED, t0 + timedelta(seconds=1), recorded=t0 + timedelta(seconds=20)))
    now = t0 + timedelta(seconds=21)
    (clock,) = evaluate(ticket, tiny, now)
    assert clock.status is ClockStatus.RETRACTED
    (retraction,) = due_facts(ticket, [clock], now)
    assert retraction.type is EventType.SLA_BREACH_RETRACTED
    assert retraction.payload["breach_event_id"] == str(breach.event_id)
    assert "est retiré" in retraction.payload["explanation"]
    ticket.apply(retraction)
    assert due_facts(ticket, evaluate(ticket, tiny, now), now) == []
    assert evaluate(ticket, tiny, now)[0].status is ClockStatus.RETRACTED


def test_acknowledged_after_deadline_is_breached_even_without_timer(tiny: Policy) -> None:
    t0 = at("2026-03-16T10:00:00+01:00")
    (clock,) = clocks([filed(t0), ev(EventType.ACKNOWLEDGED, t0 + timedelta(seconds=5))], tiny, t0 + timedelta(days=1))
    assert clock.status is ClockStatus.BREACHED
    assert clock.remaining_seconds == -3
    assert clock.stopped_at == t0 + timedelta(seconds=5)


def test_pause_extends_by_paused_time(tiny: Policy) -> None:
    t0 = at("2026-03-16T10:00:00+01:00")
    events = [
        filed(t0),
        ev(EventType.WAITING_FOR_CUSTOMER, t0 + timedelta(seconds=1)),
        ev(EventType.CUSTOMER_RESPONDED, t0 + timedelta(seconds=11), elements_complete=False),
    ]
    (paused,) = clocks(events[:2], tiny, t0 + timedelta(seconds=5))
    assert paused.status is ClockStatus.PAUSED and paused.remaining_seconds == 1
    (clock,) = clocks(events, tiny, t0 + timedelta(seconds=11.5))
    assert clock.status is ClockStatus.RUNNING
    assert clock.deadline == t0 + timedelta(seconds=12)
    assert [s.kind for s in clock.segments()] == [SegmentKind.RUNNING, SegmentKind.PAUSED, SegmentKind.RUNNING]
    segs = clock.segments()
    assert segs[0].opened_by == events[0].event_id and segs[0].closed_by == events[1].event_id
    assert segs[1].closed_by == events[2].event_id and segs[2].end is None


def test_excluded_product_never_breaches_and_retracts_recorded_breach(tiny: Policy) -> None:
    t0 = at("2026-03-16T10:00:00+01:00")
    ticket = fold([filed(t0, product="vendor-x")])
    now = t0 + timedelta(hours=1)
    (clock,) = evaluate(ticket, tiny, now)
    assert clock.status is ClockStatus.EXCLUDED and clock.deadline is None
    assert due_facts(ticket, [clock], now) == []
    # breached first, then reclassified to the vendor's product
    ticket = fold([filed(t0)])
    (breach,) = due_facts(ticket, evaluate(ticket, tiny, now), now)
    ticket.apply(breach)
    ticket.apply(ev(EventType.RECLASSIFIED, now, product="vendor-x"))
    (clock,) = evaluate(ticket, tiny, now)
    assert clock.status is ClockStatus.EXCLUDED
    (retraction,) = due_facts(ticket, [clock], now)
    assert retraction.type is EventType.SLA_BREACH_RETRACTED


def test_go_live_pause_and_month(policy: Policy) -> None:
    events = [
        filed("2026-06-01T09:00:00+02:00", kind="go_live", channel="email"),
        ev(EventType.CUSTOMER_RESPONDED, "2026-06-01T10:00:00+02:00", elements_complete=True),
        ev(EventType.ACKNOWLEDGED, "2026-06-02T10:00:00+02:00"),
        ev(EventType.WAITING_FOR_CUSTOMER, "2026-06-10T10:00:00+02:00"),
        ev(EventType.CUSTOMER_RESPONDED, "2026-06-15T10:00:00+02:00", elements_complete=False),
    ]
    clock = by_sla(clocks(events, policy, at("2026-06-20T10:00:00+02:00")))["go_live"]
    assert clock.status is ClockStatus.RUNNING
    assert clock.deadline == at("2026-07-06T10:00:00+02:00")
    assert "Délai suspendu du mercredi 10 juin 2026 à 10:00 au lundi 15 juin 2026 à 10:00" in explanation(clock)
    assert "Échéance reportée au lundi 6 juillet 2026 à 10:00" in explanation(clock)
    resolved = [*events, ev(EventType.RESOLVED, "2026-07-06T10:00:00+02:00")]
    clock = by_sla(clocks(resolved, policy, at("2026-08-01T10:00:00+02:00")))["go_live"]
    assert clock.status is ClockStatus.MET


def test_incident_keep_informed_cycles(policy: Policy) -> None:
    events = [
        filed("2026-03-16T09:00:00+01:00", kind="incident", channel="phone"),
        ev(EventType.ACKNOWLEDGED, "2026-03-16T09:30:00+01:00"),
        ev(EventType.CUSTOMER_INFORMED, "2026-03-16T11:00:00+01:00", message="Analyse",
           restoration_eta=at("2026-03-17T12:00:00+01:00")),
    ]
    found = by_sla(clocks(events, policy, at("2026-03-16T12:00:00+01:00")))
    assert found["incident_eta"].status is ClockStatus.MET
    update = found["incident_update"]
    # 8 support hours from Monday 11:00: 7 h on Monday (until 18:00), 1 h on Tuesday → 10:00
    assert update.deadline == at("2026-03-17T10:00:00+01:00")
    events.append(ev(EventType.CUSTOMER_INFORMED, "2026-03-17T09:00:00+01:00", message="Toujours en cours"))
    update = by_sla(clocks(events, policy, at("2026-03-17T12:00:00+01:00")))["incident_update"]
    assert len(update.cycles) == 2 and update.status is ClockStatus.RUNNING
    assert update.deadline == at("2026-03-17T17:00:00+01:00")
    # no update for two days: the cycle breaches; the next update opens a new cycle
    late = by_sla(clocks(events, policy, at("2026-03-19T12:00:00+01:00")))["incident_update"]
    assert late.status is ClockStatus.BREACHED
    segments = late.segments()
    assert {s.kind for s in segments} == {SegmentKind.RUNNING, SegmentKind.OUTSIDE_HOURS}
    assert all(a.end == b.start for a, b in itertools.pairwise(segments))


def test_intake_ledger_shows_outside_hours(policy: Policy) -> None:
    events = [filed("2026-03-13T17:00:00+01:00"), ev(EventType.ACKNOWLEDGED, "2026-03-16T09:00:00+01:00")]
    clock = by_sla(clocks(events, policy, at("2026-03-16T10:00:00+01:00")))["intake"]
    assert clock.status is ClockStatus.MET
    kinds = [(s.kind, s.start, s.end) for s in clock.segments()]
    assert kinds == [
        (SegmentKind.OUTSIDE_HOURS, at("2026-03-13T17:00:00+01:00"), at("2026-03-16T08:00:00+01:00")),
        (SegmentKind.RUNNING, at("2026-03-16T08:00:00+01:00"), at("2026-03-16T09:00:00+01:00")),
    ]
    assert explanation(clock).endswith(
        "Prise en compte le lundi 16 mars 2026 à 09:00 : délai respecté (3 h d'avance)."
    )


def test_policy_version_in_force_at_filing() -> None:
    two = TINY + TINY.replace('id = "tiny-1"', 'id = "tiny-2"').replace(
        "2020-01-01T00:00:00Z", "2026-06-01T00:00:00Z").replace("duration = 2", "duration = 60")
    policy = parse_policy(two)
    before = clocks([filed("2026-05-31T23:59:59Z")], policy, at("2026-07-01T00:00:00Z"))[0]
    after = clocks([filed("2026-06-01T00:00:00Z")], policy, at("2026-06-01T00:00:01Z"))[0]
    assert before.policy_version.id == "tiny-1" and before.deadline == at("2026-06-01T00:00:01Z")
    assert after.policy_version.id == "tiny-2" and after.deadline == at("2026-06-01T00:01:00Z")


def test_a_restoration_time_entered_after_the_acknowledgement_but_dated_before_meets_the_target(
        policy: Policy) -> None:
    """A phone call typed in afterwards: the restoration time was given at 10:05, the
    acknowledgement (entered first) says 10:10. The objective was met as its clock started."""
    events = [
        filed("2026-03-16T10:00:00+01:00", kind="incident"),
        ev(EventType.ACKNOWLEDGED, "2026-03-16T10:10:00+01:00"),
        ev(EventType.CUSTOMER_INFORMED, "2026-03-16T10:05:00+01:00", message="Coupure réseau",
           restoration_eta=at("2026-03-16T14:00:00+01:00")),
    ]
    clock = by_sla(clocks(events, policy, at("2026-03-20T10:00:00+01:00")))["incident_eta"]
    assert clock.status is ClockStatus.MET
    assert clock.cycles[0].end == at("2026-03-16T10:10:00+01:00")
    # Dated before but recorded before the start too: an earlier cycle's business, not this one's.
    reordered = [events[0], events[2], events[1]]
    assert by_sla(clocks(reordered, policy, at("2026-03-16T10:30:00+01:00")))["incident_eta"].status \
        is ClockStatus.RUNNING


def test_a_clock_that_restarts_on_reopened_runs_again_after_a_stop(policy: Policy) -> None:
    text = resources.files("sla").joinpath("default_policy.toml").read_text(encoding="utf-8")
    text = text.replace('restarts_on = ["informed", "informed_with_eta"]',
                        'restarts_on = ["informed", "informed_with_eta", "reopened"]')
    reopening = parse_policy(text)
    events = [
        filed("2026-03-16T10:00:00+01:00", kind="incident"),
        ev(EventType.ACKNOWLEDGED, "2026-03-16T10:10:00+01:00"),
        ev(EventType.CUSTOMER_INFORMED, "2026-03-16T11:00:00+01:00", message="Panne",
           restoration_eta=at("2026-03-16T15:00:00+01:00")),
        ev(EventType.RESOLVED, "2026-03-16T15:00:00+01:00"),
        ev(EventType.REOPENED, "2026-03-17T09:00:00+01:00"),
    ]
    now = at("2026-03-25T10:00:00+01:00")
    assert by_sla(clocks(events, policy, now))["incident_update"].status is ClockStatus.MET  # not asked for
    clock = by_sla(clocks(events, reopening, now))["incident_update"]
    assert len(clock.cycles) == 2 and clock.status is ClockStatus.BREACHED
    assert clock.cycles[1].start == at("2026-03-17T09:00:00+01:00")


def test_a_filing_on_a_weekday_holiday_says_why_it_is_outside_hours(policy: Policy) -> None:
    clock = by_sla(clocks([filed("2026-05-01T10:00:00+02:00")], policy, at("2026-05-01T11:00:00+02:00")))["intake"]
    assert "vendredi 1er mai 2026 férié : Fête du Travail" in explanation(clock)
    assert clock.deadline == at("2026-05-04T12:00:00+02:00")


def test_a_breach_under_an_sla_that_no_longer_applies_is_retracted(policy: Policy) -> None:
    """Filed as administrative, breached its one-week answer, then reclassified as
    assistance: the administrative deadline never applied to it."""
    events = [
        filed("2026-03-02T09:00:00+01:00", kind="administrative", channel="email"),
        ev(EventType.ACKNOWLEDGED, "2026-03-02T10:00:00+01:00"),
    ]
    ticket = fold(events)
    breach = due_facts(ticket, evaluate(ticket, policy, at("2026-03-10T09:00:00+01:00")),
                       at("2026-03-10T09:00:00+01:00"))
    assert [(f.type, f.payload["sla"]) for f in breach] == [(EventType.SLA_BREACHED, "administrative_answer")]
    events += [*breach, ev(EventType.RECLASSIFIED, "2026-03-11T09:00:00+01:00", kind="assistance")]
    ticket = fold(events)
    now = at("2026-03-11T10:00:00+01:00")
    found = by_sla(evaluate(ticket, policy, now))
    assert found["administrative_answer"].status is ClockStatus.EXCLUDED
    facts = due_facts(ticket, evaluate(ticket, policy, now), now)
    assert [(f.type, f.payload["sla"]) for f in facts] == [(EventType.SLA_BREACH_RETRACTED, "administrative_answer")]
    assert due_facts(fold([*events, *facts]), evaluate(fold([*events, *facts]), policy, now), now) == []

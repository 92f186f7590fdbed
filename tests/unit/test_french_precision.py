"""Explanations never contradict the verdict: written at the precision judged, in French
that a member reads without stumbling (« 1er mai », the autumn hour named, the spring gap
said, no word twice)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sla import french
from sla.clock import ClockStatus, evaluate
from sla.events import EventType
from sla.explain import explanation
from sla.policy import Policy
from sla.ticket import fold
from tests.conftest import at, ev, filed

PARIS = ZoneInfo("Europe/Paris")


def intake(policy: Policy, when: str, *acked: str) -> tuple[ClockStatus, str]:
    events = [filed(when)] + [ev(EventType.ACKNOWLEDGED, a) for a in acked]
    (clock,) = [c for c in evaluate(fold(events), policy, at(acked[-1] if acked else when)) if c.sla == "intake"]
    return clock.status, explanation(clock, live=False)


def test_half_a_second_after_closing_is_outside_and_says_so(policy: Policy) -> None:
    _, text = intake(policy, "2026-03-02T16:00:00.500000+01:00")
    assert "16:00:00,5, hors plage" in text and "à 16:00," not in text
    _, inside = intake(policy, "2026-03-02T16:00:00+01:00")
    assert "à 16:00, dans la plage" in inside


def test_half_a_second_late_is_not_zero_seconds(policy: Policy) -> None:
    status, text = intake(policy, "2026-03-02T09:00:00+01:00", "2026-03-02T13:00:00.500000+01:00")
    assert status is ClockStatus.BREACHED
    assert "dépassée de moins d'une seconde" in text and "0 s" not in text


def test_dates_and_hours_in_french() -> None:
    assert french.date(datetime(2026, 5, 1).date()) == "vendredi 1er mai 2026"
    repeated = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 summer time, then 02:30 winter time
    assert french.instant(repeated, PARIS).endswith("à 02:30 heure d'été")
    assert french.instant(repeated + timedelta(hours=1), PARIS).endswith("à 02:30 heure d'hiver")
    assert french.instant(datetime(2026, 10, 26, 9, tzinfo=UTC), PARIS).endswith("à 10:00")


def test_a_deadline_moved_by_the_spring_gap_says_so(policy: Policy) -> None:
    # filed on the Sunday before the change, at 02:30: a week later 02:30 does not exist
    events = [filed("2026-03-22T02:30:00+01:00", kind="administrative", channel="email")]
    (clock,) = [c for c in evaluate(fold(events), policy, at("2026-03-23T10:00:00+01:00"))
                if c.sla == "administrative_answer"]
    assert "02:30 n'existe pas ce jour-là (passage à l'heure d'été) : échéance à 03:30" in explanation(clock)


def test_an_exclusion_reason_is_not_said_twice(policy: Policy) -> None:
    events = [filed("2026-11-23T10:00:00+01:00", product="local-trust-mpe")]
    (clock,) = [c for c in evaluate(fold(events), policy, at("2026-11-23T10:00:00+01:00")) if c.sla == "intake"]
    assert explanation(clock).lower().count("hors engagement") == 1


def test_a_deadline_moved_by_the_spring_gap_after_a_pause_says_so(policy: Policy) -> None:
    events = [filed("2027-03-19T02:30:00+01:00", kind="administrative", channel="email"),
              ev(EventType.WAITING_FOR_CUSTOMER, "2027-03-19T10:00:00+01:00", reason="Pièce manquante"),
              ev(EventType.CUSTOMER_RESPONDED, "2027-03-21T10:00:00+01:00", elements_complete=True, message="Voici")]
    (clock,) = [c for c in evaluate(fold(events), policy, at("2027-03-22T10:00:00+01:00"))
                if c.sla == "administrative_answer"]
    assert ("Échéance reportée au dimanche 28 mars 2027 à 03:30 par la suspension ; 02:30 n'existe pas ce jour-là"
            in explanation(clock))

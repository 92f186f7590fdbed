"""An explanation names the deadline that was judged (issue #28): a pause moves it
(« échéance reportée au … par la suspension ») and every verdict — met, breached, running,
paused — is measured from, and names, the moved one. Examples from the issue, the one-week and
one-month clocks across the October change, then a property over random event sequences."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sla import french
from sla.clock import Clock, ClockStatus, clocks
from sla.events import Event, EventType
from sla.explain import explanation
from sla.policy import Policy
from slaledger.settings import load_policy
from tests.conftest import PARIS, at, ev, filed

POLICY: Policy = load_policy()


def clock_of(events: list[Event], sla: str, now: str) -> Clock:
    return next(c for c in clocks(events, POLICY, at(now)) if c.sla == sla)


def administrative(answered: str) -> list[Event]:
    """Filed Monday 9 November 09:00 by e-mail, due a week later; waiting for the member six
    hours on the Tuesday."""
    return [filed("2026-11-09T09:00:00+01:00", kind="administrative", channel="email"),
            ev(EventType.ACKNOWLEDGED, "2026-11-09T09:10:00+01:00"),
            ev(EventType.WAITING_FOR_CUSTOMER, "2026-11-10T10:00:00+01:00"),
            ev(EventType.CUSTOMER_RESPONDED, "2026-11-10T16:00:00+01:00", elements_complete=False),
            ev(EventType.CUSTOMER_INFORMED, answered, message="Réponse", answer=True)]


def test_the_issue_example_names_the_moved_deadline_it_measures_the_overrun_from() -> None:
    clock = clock_of(administrative("2026-11-16T16:00:00+01:00"), "administrative_answer", "2026-11-20T00:00:00+01:00")
    assert clock.status is ClockStatus.BREACHED and clock.deadline == at("2026-11-16T15:00:00+01:00")
    text = explanation(clock, live=False)
    assert "réponse due le lundi 16 novembre 2026 à 09:00" in text  # the deadline as first set
    assert ("Délai suspendu du mardi 10 novembre 2026 à 10:00 au mardi 10 novembre 2026 à 16:00 (attente du "
            "demandeur). Échéance reportée au lundi 16 novembre 2026 à 15:00 par la suspension. Réponse apportée "
            "le lundi 16 novembre 2026 à 16:00 : l'échéance du lundi 16 novembre 2026 à 15:00 est dépassée "
            "de 1 h.") in text


def test_met_and_running_name_the_moved_deadline_too() -> None:
    met = clock_of(administrative("2026-11-16T14:00:00+01:00"), "administrative_answer", "2026-11-20T00:00:00+01:00")
    assert met.status is ClockStatus.MET
    assert ("Réponse apportée le lundi 16 novembre 2026 à 14:00 : délai respecté (1 h avant l'échéance du lundi "
            "16 novembre 2026 à 15:00).") in explanation(met)
    running = clock_of(administrative("2026-11-16T14:00:00+01:00")[:-1], "administrative_answer",
                       "2026-11-16T13:00:00+01:00")
    assert running.status is ClockStatus.RUNNING
    assert "Temps restant : 2 h avant l'échéance du lundi 16 novembre 2026 à 15:00." in explanation(running)
    late = clock_of(administrative("2026-11-16T14:00:00+01:00")[:-1], "administrative_answer",
                    "2026-11-16T17:00:00+01:00")
    assert "Échéance dépassée depuis 2 h (l'échéance du lundi 16 novembre 2026 à 15:00)." in explanation(late)
    paused = clock_of(administrative("2026-11-16T14:00:00+01:00")[:3], "administrative_answer",
                      "2026-11-11T00:00:00+01:00")
    assert paused.status is ClockStatus.PAUSED
    assert ("Il restera 5 j 23 h à la reprise ; l'échéance du lundi 16 novembre 2026 à 09:00 sera reportée en "
            "conséquence.") in explanation(paused)


@pytest.mark.parametrize(("events", "sla", "deadline", "due", "judged"), [
    # Paused one day before the change: due Tuesday 27 October at 10:00 (winter time), same wall time.
    pytest.param(
        [filed("2026-10-19T10:00:00+02:00", kind="administrative", channel="email"),
         ev(EventType.ACKNOWLEDGED, "2026-10-19T10:10:00+02:00"),
         ev(EventType.WAITING_FOR_CUSTOMER, "2026-10-21T10:00:00+02:00"),
         ev(EventType.CUSTOMER_RESPONDED, "2026-10-22T10:00:00+02:00", elements_complete=False),
         ev(EventType.CUSTOMER_INFORMED, "2026-10-27T11:00:00+01:00", message="Réponse", answer=True)],
        "administrative_answer", "2026-10-27T10:00:00+01:00", "réponse due le lundi 26 octobre 2026 à 10:00",
        "Échéance reportée au mardi 27 octobre 2026 à 10:00 par la suspension. Réponse apportée le mardi "
        "27 octobre 2026 à 11:00 : l'échéance du mardi 27 octobre 2026 à 10:00 est dépassée de 1 h.",
        id="one week"),
    pytest.param(
        [filed("2026-10-01T10:00:00+02:00", kind="go_live", channel="email", elements_complete=True),
         ev(EventType.ACKNOWLEDGED, "2026-10-01T10:10:00+02:00"),
         ev(EventType.WAITING_FOR_CUSTOMER, "2026-10-10T10:00:00+02:00"),
         ev(EventType.CUSTOMER_RESPONDED, "2026-10-12T10:00:00+02:00", elements_complete=False),
         ev(EventType.RESOLVED, "2026-11-03T12:00:00+01:00")],
        "go_live", "2026-11-03T10:00:00+01:00", "mise en production due le dimanche 1er novembre 2026 à 10:00",
        "Échéance reportée au mardi 3 novembre 2026 à 10:00 par la suspension. Mise en production réalisée le "
        "mardi 3 novembre 2026 à 12:00 : l'échéance du mardi 3 novembre 2026 à 10:00 est dépassée de 2 h.",
        id="one month"),
])
def test_across_the_october_change(events: list[Event], sla: str, deadline: str, due: str, judged: str) -> None:
    clock = clock_of(events, sla, "2026-11-20T00:00:00+01:00")
    assert clock.deadline == at(deadline)
    text = explanation(clock, live=False)
    assert due in text
    assert judged in text


def test_a_pause_after_the_deadline_moves_nothing_and_says_so() -> None:
    events = [
        *administrative("2026-11-18T10:00:00+01:00")[:2],
        ev(EventType.WAITING_FOR_CUSTOMER, "2026-11-17T10:00:00+01:00"),
        ev(EventType.CUSTOMER_RESPONDED, "2026-11-17T16:00:00+01:00", elements_complete=False),
        ev(EventType.CUSTOMER_INFORMED, "2026-11-18T10:00:00+01:00", message="Réponse", answer=True)]
    clock = clock_of(events, "administrative_answer", "2026-11-20T00:00:00+01:00")
    assert clock.deadline == at("2026-11-16T09:00:00+01:00")
    text = explanation(clock, live=False)
    assert "L'échéance était déjà dépassée à la suspension : elle n'est pas reportée." in text
    assert "Réponse apportée le mercredi 18 novembre 2026 à 10:00 : échéance dépassée de 2 j 1 h." in text


# --- the property ---------------------------------------------------------------------------------

_INSTANT = r"\w+ \d+(?:er)? \w+ \d{4} à \d{2}:\d{2}(?::\d{2}(?:,\d+)?)?(?: heure d'(?:été|hiver))?"
# Where a text names a deadline: « … due le X », « … au plus tard le X », « reportée au X »,
# « l'échéance du X », « Échéance du X ».
_DEADLINE = re.compile(rf"(?:due le|au plus tard le|reportée au|[ée]chéance du) ({_INSTANT})")
_OVERRUN = re.compile(r"dépassée de ([^.]+)\.")
_MARGIN = re.compile(r"délai respecté \(([^)]+?) (?:d'avance|avant l'échéance)")


def cycle_texts(clock: Clock, text: str) -> list[str]:
    """The explanation cut at each cycle's opening sentence, retractions left out."""
    text = text.split(" Le manquement déclaré pour")[0]
    head = re.escape(clock.definition.start_label)
    pieces = re.split(rf"(?=(?:{head}|Nouveau cycle) le )", text)
    return [p for p in pieces if re.match(rf"(?:{head}|Nouveau cycle) le ", p)]


STEPS = st.sampled_from(["ack", "wait", "respond", "inform", "inform_eta", "answer", "resolve", "reclassify_kind",
                         "reclassify_vendor", "reopen"])
# Around the October 2026 and March 2027 changes, and far from both.
STARTS = st.sampled_from([datetime(2026, 10, 12, 8, tzinfo=UTC), datetime(2027, 3, 15, 8, tzinfo=UTC),
                          datetime(2026, 6, 1, 8, tzinfo=UTC)])


def event_for(step: str, when: datetime) -> Event:
    if step == "ack":
        return ev(EventType.ACKNOWLEDGED, when)
    if step == "wait":
        return ev(EventType.WAITING_FOR_CUSTOMER, when)
    if step == "respond":
        return ev(EventType.CUSTOMER_RESPONDED, when, elements_complete=True)
    if step in ("inform", "inform_eta", "answer"):
        extra = {"restoration_eta": when + timedelta(hours=3)} if step == "inform_eta" else {}
        return ev(EventType.CUSTOMER_INFORMED, when, message="Information", answer=step == "answer", **extra)
    if step == "resolve":
        return ev(EventType.RESOLVED, when)
    if step == "reopen":
        return ev(EventType.REOPENED, when)
    if step == "reclassify_kind":
        return ev(EventType.RECLASSIFIED, when, kind="administrative")
    return ev(EventType.RECLASSIFIED, when, product="local-trust-mpe")


@settings(max_examples=400, deadline=None)
@given(STARTS, st.integers(min_value=0, max_value=20 * 86400),
       st.sampled_from([("administrative", "email"), ("go_live", "email"), ("incident", "portal"),
                        ("assistance", "portal"), ("administrative", "portal")]),
       st.lists(st.tuples(STEPS, st.integers(min_value=0, max_value=40 * 86400)), max_size=8),
       st.integers(min_value=0, max_value=60 * 86400), st.booleans())
def test_the_deadline_written_is_the_deadline_judged(start: datetime, shift: int, kind_channel: tuple[str, str],
                                                     steps: list[tuple[str, int]], later: int, live: bool) -> None:
    kind, channel = kind_channel
    filed_at = start + timedelta(seconds=shift)
    events = [filed(filed_at, kind=kind, channel=channel, elements_complete=kind == "go_live")]
    events += [event_for(step, filed_at + timedelta(seconds=offset)) for step, offset in steps]
    now = filed_at + timedelta(seconds=later)
    for clock in clocks(events, POLICY, now):
        if clock.status is ClockStatus.EXCLUDED or not clock.cycles:
            continue
        tz = clock.policy_version.tz
        texts = cycle_texts(clock, explanation(clock, live=live))
        assert len(texts) == len(clock.cycles), (clock.sla, explanation(clock, live=live))
        for cycle, text in zip(clock.cycles, texts, strict=True):
            named = _DEADLINE.findall(text)
            # the last deadline a cycle's text names is the one its verdict judged
            assert named and named[-1] == french.instant(cycle.deadline, tz), (clock.sla, text)
            # every deadline it names is the first one or one the fold moved it to
            moves = {french.instant(d, tz) for _, _, d in cycle.moves}
            first = _DEADLINE.findall(text.split(". ")[0] + ".")
            assert set(named) <= moves | set(first) | {french.instant(cycle.deadline, tz)}, (clock.sla, text)
            if cycle.end is not None:
                overrun = _OVERRUN.search(text)
                margin = _MARGIN.search(text)
                if overrun:
                    assert overrun.group(1) == french.duration((cycle.end - cycle.deadline).total_seconds()), text
                if margin:
                    assert margin.group(1) == french.duration((cycle.deadline - cycle.end).total_seconds()), text


def test_the_property_parses_what_the_examples_say() -> None:
    """The property's patterns read the issue's example as a reader would."""
    clock = clock_of(administrative("2026-11-16T16:00:00+01:00"), "administrative_answer", "2026-11-20T00:00:00+01:00")
    (text,) = cycle_texts(clock, explanation(clock, live=False))
    assert _DEADLINE.findall(text) == ["lundi 16 novembre 2026 à 09:00", "lundi 16 novembre 2026 à 15:00",
                                       "lundi 16 novembre 2026 à 15:00"]
    assert _OVERRUN.search(text).group(1) == "1 h"  # type: ignore[union-attr]
    assert french.instant(clock.deadline, PARIS) == "lundi 16 novembre 2026 à 15:00"  # type: ignore[arg-type]

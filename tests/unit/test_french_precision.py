"""Explanations never contradict the verdict: written at the precision judged, in French
that a member reads without stumbling (« 1er mai », the autumn hour named, the spring gap
said, no word twice)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from sla import french
from sla.clock import ClockStatus, evaluate
from sla.events import EventType
from sla.explain import explanation
from sla.policy import Policy
from sla.ticket import fold
from slaledger.settings import load_policy
from tests.conftest import at, ev, filed

PARIS = ZoneInfo("Europe/Paris")
POLICY: Policy = load_policy()


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


# --- to the minute, finer only where the verdict needs it (issue #32 item 2) -----------------

_WRITTEN = re.compile(r"(\d{1,2})(?:er)? (\w+) (\d{4}) à (\d\d):(\d\d)(?::(\d\d)(?:,(\d+))?)?")
_MONTHS = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
           "novembre", "décembre")
MONDAY = datetime(2026, 3, 2, tzinfo=PARIS)  # a week without holidays, far from a clock change


def written(text: str) -> list[tuple[datetime, str]]:
    """Every « 2 mars 2026 à 16:00:00,5 » of a text, read back as the instant it says (to the
    precision written: what a reader compares) with the time as written."""
    out = []
    for m in _WRITTEN.finditer(text):
        day, month, year, hour, minute, second, fraction = m.groups()
        micro = int((fraction or "0").ljust(6, "0"))
        out.append((datetime(int(year), _MONTHS.index(month) + 1, int(day), int(hour), int(minute),
                             int(second or 0), micro, tzinfo=PARIS), m.group(0).split(" à ")[1]))
    return out


def near(edge: datetime) -> st.SearchStrategy[datetime]:
    """An instant within two minutes of ``edge``, to the microsecond (or exactly on it)."""
    return st.one_of(st.just(edge), st.integers(-120_000_000, 120_000_000).map(
        lambda us: edge + timedelta(microseconds=us)))


def an_instant_of_the_week() -> st.SearchStrategy[datetime]:
    edges = [MONDAY + timedelta(days=d, hours=h) for d in range(5) for h in (8, 16)]
    return st.one_of(st.sampled_from(edges).flatmap(near),
                     st.integers(0, 5 * 86400 * 10**6).map(lambda us: MONDAY + timedelta(microseconds=us)))


@settings(max_examples=300, deadline=None)
@given(an_instant_of_the_week())
def test_a_filing_is_written_inside_the_window_exactly_when_the_verdict_says_so(when: datetime) -> None:
    policy = POLICY
    _, text = intake(policy, when.isoformat())
    (filed_as, shown), *_ = written(text)
    inside = ", dans la plage" in text
    assert inside == policy.versions[-1].calendars["intake"].in_window(when)
    midnight = filed_as.replace(hour=0, minute=0, second=0, microsecond=0)
    opening, closing = midnight + timedelta(hours=8), midnight + timedelta(hours=16)
    assert (opening <= filed_as <= closing) == inside, text  # what the reader compares agrees
    assert filed_as <= when and when - filed_as < timedelta(minutes=1)  # cut, never rounded
    if min(abs(when - opening), abs(when - closing)) >= timedelta(minutes=1):
        assert len(shown) == 5, text  # to the minute, away from the edges


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 59 * 10**6), st.integers(-120_000_000, 120_000_000))
def test_an_action_is_written_late_exactly_when_the_verdict_says_so(filed_us: int, late_us: int) -> None:
    when = MONDAY + timedelta(hours=9, microseconds=filed_us)
    deadline = when + timedelta(hours=4)
    acked = deadline + timedelta(microseconds=late_us)
    status, text = intake(POLICY, when.isoformat(), acked.isoformat())
    (_, _), (due, due_shown), (done, done_shown) = written(text)
    assert (status is ClockStatus.BREACHED) == (acked > deadline) == (done > due), text
    assert ("dépassée" in text) == (done > due) and ("délai respecté" in text) == (done <= due)
    if abs(acked - deadline) >= timedelta(minutes=1):
        assert len(due_shown) == len(done_shown) == 5, text


def test_times_are_written_to_the_minute() -> None:
    """The issue's example: no « 01:45:46,26395 » when nothing is judged within that minute."""
    status, text = intake(POLICY, "2026-12-07T09:45:46.263950+01:00", "2026-12-07T10:15:49.031436+01:00")
    assert status is ClockStatus.MET
    assert "à 09:45, dans la plage" in text and "Prise en compte le lundi 7 décembre 2026 à 10:15 :" in text
    assert not re.search(r"\d\d:\d\d:\d\d", text), text


def _cut(value: datetime, level: int) -> datetime:
    """The definition: the instant in UTC cut (never rounded) to ``level``."""
    value = value.astimezone(UTC)
    if level == french.MINUTE:
        return value.replace(second=0, microsecond=0)
    step = 10 ** (french.FINEST - level)
    return value.replace(microsecond=value.microsecond // step * step)


_OFFSETS = st.sampled_from([UTC, PARIS, ZoneInfo("America/St_Johns")])
_INSTANTS = st.datetimes(min_value=datetime(1950, 1, 1), max_value=datetime(2150, 1, 1), timezones=_OFFSETS)
# others near the instant judged (a microsecond to a minute and more away, either side) or anywhere
_APART = st.sampled_from([1, 10, 999, 10**6, 59 * 10**6, 61 * 10**6]).flatmap(lambda us: st.sampled_from([us, -us]))


@settings(max_examples=300)
@given(_INSTANTS, st.lists(st.one_of(st.none(), _INSTANTS, _APART), max_size=4))
def test_the_precision_is_the_coarsest_at_which_the_cut_instants_differ(value: datetime,
                                                                       drawn: list[datetime | int | None]) -> None:
    """``precision`` counts in microseconds since the epoch (the projector explains every
    clock of every batch); it agrees with cutting the datetimes themselves."""
    beside = [value + timedelta(microseconds=d) if isinstance(d, int) else d for d in drawn]
    level = french.precision(value, beside)
    others = [other for other in beside if other is not None and other != value]
    assert all(_cut(value, level) != _cut(other, level) for other in others)
    if level > french.MINUTE:
        assert any(_cut(value, level - 1) == _cut(other, level - 1) for other in others)

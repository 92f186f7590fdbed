"""The calendar is part of the policy: each version carries its own list of non-working days
(generated once with the ``holidays`` package, then committed), so a library upgrade cannot
change a verdict under the same policy version; Whit Monday and the reading of « jour
ouvrable » are explicit settings."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sla.calendar import UncoveredDate, easter, whit_monday
from sla.clock import evaluate
from sla.events import Event, EventType
from sla.explain import clock_view
from sla.policy import PolicyError, parse_policy
from sla.ticket import fold
from slaledger.cli import main
from slaledger.settings import DEFAULT_POLICY, load_policy
from tests.conftest import ev, filed

# Filings around the holidays of 2026 (Easter Monday, 1 May, Ascension, Whit Monday, 14 July,
# 11 November, Christmas), some acknowledged, judged at one instant.
PARIS = ZoneInfo("Europe/Paris")
FILINGS = ["2026-04-03T17:00:00+02:00", "2026-04-30T16:30:00+02:00", "2026-05-13T18:00:00+02:00",
           "2026-05-22T15:59:00+02:00", "2026-07-13T17:00:00+02:00", "2026-11-10T19:00:00+01:00",
           "2026-12-24T16:01:00+01:00", "2027-05-14T17:00:00+02:00"]


def archive() -> list[list[Event]]:
    """A fixed archive: each filing, every third one acknowledged two days later."""
    out = []
    for i, when in enumerate(FILINGS):
        first = filed(when, ticket_id=f"T-{i}", kind="incident" if i % 2 else "administrative")
        acked = [ev(EventType.ACKNOWLEDGED, first.occurred_at + timedelta(days=2), f"T-{i}")] if i % 3 == 0 else []
        out.append([first, *acked])
    return out


ARCHIVE = archive()


def verdicts() -> list[list[dict[str, object]]]:
    """Every clock of every ticket of the archive (deadlines, segments, explanations), judged
    in 2028 under the default policy, read afresh (nothing cached from another test)."""
    policy = load_policy()
    return [[clock_view(c) for c in evaluate(fold(events), policy, events[0].occurred_at.replace(year=2028))]
            for events in ARCHIVE]


def test_a_holidays_upgrade_changes_no_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    before = verdicts()
    real = holidays.country_holidays

    def upgraded(*args: object, **kwargs: object) -> holidays.HolidayBase:
        """A library that no longer lists Easter Monday nor Whit Monday, and adds a day."""
        found = real(*args, **kwargs)  # type: ignore[arg-type]
        for day in list(found):
            if day in (easter(day.year) + timedelta(days=1), whit_monday(day.year)):
                del found[day]
        found[date(2026, 5, 22)] = "Jour inventé"
        return found

    monkeypatch.setattr(holidays, "country_holidays", upgraded)
    assert verdicts() == before


def test_the_default_policy_pins_2024_to_2035_with_whit_monday_a_holiday() -> None:
    version = load_policy().versions[0]
    intake = version.calendars["intake"]
    assert (intake.holidays.first_year, intake.holidays.last_year) == (2024, 2035)
    assert intake.holiday_name(date(2026, 5, 25)) == "Lundi de Pentecôte"
    assert intake.holiday_name(date(2030, 4, 22)) == "Lundi de Pâques"
    assert intake.reading == "ouvré" and intake.weekdays == frozenset(range(5))
    with pytest.raises(UncoveredDate):
        intake.is_working_day(date(2036, 1, 2))
    with pytest.raises(PolicyError, match="2024–2035"):
        version.check_covers(load_policy().versions[0].effective_from.replace(year=2035, month=12, day=1))


def test_the_committed_list_is_what_the_generator_prints(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "holidays", "--from", "2024", "--to", "2035"]) == 0
    generated = re.findall(r'^"(\d{4}-\d{2}-\d{2})" = "(.+)"$', capsys.readouterr().out, re.M)
    from importlib import resources

    committed = re.findall(r'^"(\d{4}-\d{2}-\d{2})" = "(.+)"$',
                           resources.files("sla").joinpath(DEFAULT_POLICY).read_text(encoding="utf-8"), re.M)
    assert len(generated) == 12 * 11
    assert committed == generated * len(load_policy().versions)  # every version carries its own list


def _with_days(whit: str, *, drop_whit: bool) -> str:
    days = "\n".join(f'"{y}-01-01" = "Jour de l\'an"' for y in (2026, 2027))
    if not drop_whit:
        days += "\n" + "\n".join(f'"{whit_monday(y).isoformat()}" = "Lundi de Pentecôte"' for y in (2026, 2027))
    return f"""
[[versions]]
id = "v"
effective_from = "2026-01-01T00:00:00+01:00"
timezone = "Europe/Paris"
[versions.non_working_days]
years = [2026, 2027]
whit_monday = "{whit}"
[versions.non_working_days.dates]
{days}
[versions.calendars.support]
open = "09:00"
close = "18:00"
[[versions.slas]]
name = "s"
title = "t"
start_label = "a"
stop_label = "b"
due_label = "c"
rule = "business"
calendar = "support"
duration = "4h"
starts_on = ["filed"]
stops_on = ["acknowledged"]
"""


def test_whit_monday_is_an_explicit_setting_the_list_must_agree_with() -> None:
    worked = parse_policy(_with_days("working", drop_whit=True)).versions[0].calendars["support"]
    assert worked.is_working_day(whit_monday(2026)) and worked.holidays.whit_monday_worked
    assert not parse_policy(_with_days("holiday", drop_whit=False)).versions[0].calendars["support"].is_working_day(
        whit_monday(2026))
    with pytest.raises(PolicyError, match="whit_monday"):
        parse_policy(_with_days("working", drop_whit=False))
    with pytest.raises(PolicyError, match="whit_monday"):
        parse_policy(_with_days("holiday", drop_whit=True))


def test_a_country_code_is_no_longer_read_at_run_time() -> None:
    text = _with_days("holiday", drop_whit=False).replace('close = "18:00"', 'close = "18:00"\nholidays = "FR"')
    with pytest.raises(PolicyError, match="no longer read at run time"):
        parse_policy(text)
    no_list = re_sub_table(_with_days("holiday", drop_whit=False))
    with pytest.raises(PolicyError, match="non_working_days"):
        parse_policy(no_list)


def re_sub_table(text: str) -> str:
    return re.sub(r"\[versions\.non_working_days\].*?(?=\[versions\.calendars)", "", text, flags=re.S)


def test_the_ouvrable_reading_makes_saturday_the_next_day_not_a_window_day() -> None:
    text = _with_days("holiday", drop_whit=False).replace('close = "18:00"', 'close = "18:00"\nreading = "ouvrable"')
    calendar = parse_policy(text).versions[0].calendars["support"]
    friday_evening = datetime(2026, 12, 11, 19, 0, tzinfo=PARIS)
    assert not calendar.in_window(datetime(2026, 12, 12, 10, 0, tzinfo=PARIS))  # the window stays Mon–Fri
    assert calendar.next_opening_after(friday_evening) == datetime(2026, 12, 12, 9, 0, tzinfo=PARIS)
    ouvre = parse_policy(_with_days("holiday", drop_whit=False)).versions[0].calendars["support"]
    assert ouvre.next_opening_after(friday_evening) == datetime(2026, 12, 14, 9, 0, tzinfo=PARIS)
    with pytest.raises(PolicyError, match="reading"):
        parse_policy(text.replace('reading = "ouvrable"', 'reading = "ouvrés"'))


@pytest.mark.parametrize("year", range(2024, 2036))
def test_easter_and_whit_monday_match_the_library(year: int) -> None:
    names = holidays.country_holidays("FR", years=year, language="fr")
    assert names.get(easter(year) + timedelta(days=1)) == "Lundi de Pâques"
    assert names.get(whit_monday(year)) == "Lundi de Pentecôte"


@given(st.datetimes(min_value=datetime(2022, 1, 1), max_value=datetime(2037, 12, 31), timezones=st.just(UTC)))
def test_the_covered_window_agrees_with_the_calendars_day_by_day(filed_at: datetime) -> None:
    """``check_covers`` answers most filings from a precomputed window of instants: it must
    refuse exactly the filings whose day, or the day 62 days later, no calendar lists."""
    version = load_policy().versions[0]
    days = [(filed_at + span).astimezone(version.tz).date() for span in (timedelta(0), timedelta(days=62))]
    listed = all(c.holidays.covers(day) for c in version.calendars.values() for day in days)
    try:
        version.check_covers(filed_at)
        covered = True
    except PolicyError:
        covered = False
    assert covered == listed

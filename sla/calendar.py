"""Business calendars: working days, opening windows and business-time arithmetic.

The convention counts time in Europe/Paris wall-clock terms ("du lundi au vendredi
de 8h00 à 16h00", "ouvert de 9h00 à 18h00 les jours ouvrés"), so every rule here works
on local dates and times and converts back to absolute instants only at the edges.
Python's aware-datetime arithmetic within one tzinfo is wall-clock arithmetic, which
is exactly what "the same time next week" means across a DST change; elapsed time is
always computed on UTC instants.

Pure, no I/O, no library rules at run time: the non-working days are a list pinned in the
policy version (``NonWorkingDays``), generated once with the ``holidays`` package and
committed, so a library upgrade cannot change a verdict under the same policy version.
"""

from __future__ import annotations

import calendar as _stdlib_calendar
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from .errors import PolicyError

# Calendars are asked about dates a few years around "now"; beyond this range a
# policy would have to be re-published anyway.
_MAX_SCAN_DAYS = 3660


class UncoveredDate(PolicyError):
    """A day outside the years a policy version lists non-working days for: the policy
    cannot judge it (refused like any policy error, never guessed)."""


def easter(year: int) -> date:
    """Easter Sunday (Gregorian calendar; anonymous algorithm, Meeus/Jones/Butcher)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    m = (32 + 2 * e + 2 * i - h - k) % 7
    n = (a + 11 * h + 22 * m) // 451
    month, day = divmod(h + m - 7 * n + 114, 31)
    return date(year, month, day + 1)


def whit_monday(year: int) -> date:
    """Lundi de Pentecôte: a legal holiday (Code du travail, L3133-1) that many public bodies
    work as the « journée de solidarité »."""
    return easter(year) + timedelta(days=50)


@dataclass(frozen=True)
class NonWorkingDays:
    """The public holidays a policy version judges by, for the years it covers, by name."""

    first_year: int
    last_year: int
    days: Mapping[date, str]
    whit_monday_worked: bool = False  # True: Whit Monday is a working day (journée de solidarité)

    def name(self, day: date) -> str | None:
        """The holiday's French name, None on another day; a day outside the covered years is
        an error, never a guess."""
        if not self.first_year <= day.year <= self.last_year:
            raise UncoveredDate(f"the policy lists non-working days for {self.first_year}–{self.last_year} "
                                f"only, not for {day.isoformat()}")
        return self.days.get(day)

    def covers(self, day: date) -> bool:
        return self.first_year <= day.year <= self.last_year


NO_HOLIDAYS = NonWorkingDays(1, 9999, {})


@dataclass(frozen=True)
class BusinessCalendar:
    """Working days (a set of weekdays minus the version's non-working days) with a daily
    open window.

    ``open_at`` and ``close_at`` are local wall-clock times; the window is closed on
    both ends (a filing at exactly 16:00:00 is inside 08:00–16:00).
    """

    name: str
    tz: ZoneInfo
    open_at: time
    close_at: time
    weekdays: frozenset[int] = frozenset(range(5))  # Monday=0 … Friday=4
    holidays: NonWorkingDays = NO_HOLIDAYS
    # How « jour ouvrable suivant » is read: "ouvré" (the window's weekdays) or "ouvrable"
    # (Monday to Saturday); the window itself stays on ``weekdays``.
    reading: str = "ouvré"
    # Memo tables: deadlines are computed for every ticket on every evaluation.
    _working: dict[date, bool] = field(init=False, repr=False, compare=False, default_factory=dict)
    _instants: dict[tuple[date, time], datetime] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.open_at >= self.close_at:
            raise ValueError(f"calendar {self.name}: opening {self.open_at} must precede closing {self.close_at}")

    # --- days -----------------------------------------------------------------------
    def is_working_day(self, day: date) -> bool:
        working = self._working.get(day)
        if working is None:
            working = self._working[day] = day.weekday() in self.weekdays and not self.is_holiday(day)
        return working

    def is_holiday(self, day: date) -> bool:
        return self.holidays.name(day) is not None

    def holiday_name(self, day: date) -> str | None:
        """The holiday's name in French, for explanations (None on an ordinary day)."""
        return self.holidays.name(day)

    def next_working_day(self, day: date) -> date:
        """The first working day strictly after ``day``."""
        for _ in range(_MAX_SCAN_DAYS):
            day += timedelta(days=1)
            if self.is_working_day(day):
                return day
        raise ValueError(f"calendar {self.name}: no working day within ten years after {day}")

    def skipped_days(self, after: date, before: date) -> list[date]:
        """Days strictly between two dates that are not working days (for explanations)."""
        out = []
        day = after + timedelta(days=1)
        while day < before:
            if not self.is_working_day(day):
                out.append(day)
            day += timedelta(days=1)
        return out

    # --- instants ---------------------------------------------------------------------
    def local(self, instant: datetime) -> datetime:
        return instant.astimezone(self.tz)

    def at(self, day: date, wall: time) -> datetime:
        """The absolute instant of a local wall-clock time on a day (UTC-normalised)."""
        key = (day, wall)
        instant = self._instants.get(key)
        if instant is None:
            instant = self._instants[key] = datetime.combine(day, wall, tzinfo=self.tz).astimezone(UTC)
        return instant

    def in_window(self, instant: datetime) -> bool:
        local = instant.astimezone(self.tz)
        return self.is_working_day(local.date()) and self.open_at <= local.time().replace(tzinfo=None) <= self.close_at

    def is_next_day(self, day: date) -> bool:
        """A day « du jour ouvrable suivant » may be, as the calendar's ``reading`` says: a jour
        ouvré (its window's weekdays) or a jour ouvrable (Monday to Saturday), never a holiday."""
        if self.reading == "ouvrable":
            return day.weekday() < 6 and not self.is_holiday(day)
        return self.is_working_day(day)

    def next_opening_after(self, instant: datetime) -> datetime:
        """The first opening strictly after ``instant`` (UTC) on a day « du jour ouvrable
        suivant » (``is_next_day``): the window's hours, that day."""
        local = instant.astimezone(self.tz)
        day = local.date()
        if self.is_next_day(day) and local.time().replace(tzinfo=None) < self.open_at:
            return self.at(day, self.open_at)
        for _ in range(_MAX_SCAN_DAYS):
            day += timedelta(days=1)
            if self.is_next_day(day):
                return self.at(day, self.open_at)
        raise ValueError(f"calendar {self.name}: no working day within ten years after {day}")

    def open_intervals(self, start: datetime, end: datetime) -> Iterable[tuple[datetime, datetime]]:
        """The open windows intersecting ``[start, end)``, clipped to it, in order."""
        if end <= start:
            return
        day = start.astimezone(self.tz).date()
        last = end.astimezone(self.tz).date()
        while day <= last:
            if self.is_working_day(day):
                lo = max(start, self.at(day, self.open_at))
                hi = min(end, self.at(day, self.close_at))
                if lo < hi:
                    yield lo, hi
            day += timedelta(days=1)

    def business_seconds(self, start: datetime, end: datetime) -> float:
        """Open time between two instants, in seconds (0 when ``end <= start``)."""
        return sum((hi - lo).total_seconds() for lo, hi in self.open_intervals(start, end))

    def add_business_seconds(self, start: datetime, seconds: float) -> datetime:
        """The instant at which ``seconds`` of open time have elapsed since ``start``.

        Zero seconds from outside the window is ``start`` itself: nothing has to elapse.
        """
        if seconds <= 0:
            return start
        remaining = timedelta(seconds=seconds)
        day = start.astimezone(self.tz).date()
        for _ in range(_MAX_SCAN_DAYS):
            if self.is_working_day(day):
                lo = max(start, self.at(day, self.open_at))
                hi = self.at(day, self.close_at)
                if lo < hi:
                    if lo + remaining <= hi:
                        return lo + remaining
                    remaining -= hi - lo
            day += timedelta(days=1)
        raise ValueError(f"calendar {self.name}: {seconds}s of business time do not fit in ten years")


def add_calendar_days(instant: datetime, tz: ZoneInfo, days: int) -> datetime:
    """Same local wall-clock time ``days`` later (7 days ≠ 168 h across a DST change).

    A wall time that falls in the spring-forward gap is read with the winter offset
    (02:30 → 03:30 summer time); one repeated in autumn resolves to its first occurrence.
    """
    local = instant.astimezone(tz)
    return (local + timedelta(days=days)).astimezone(UTC)


def add_calendar_months(instant: datetime, tz: ZoneInfo, months: int) -> datetime:
    """Same local wall-clock time ``months`` later, clamped to the month's last day."""
    local = instant.astimezone(tz)
    month_index = local.month - 1 + months
    year, month = local.year + month_index // 12, month_index % 12 + 1
    day = min(local.day, _stdlib_calendar.monthrange(year, month)[1])
    return local.replace(year=year, month=month, day=day).astimezone(UTC)

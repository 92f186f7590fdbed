"""Business calendars: working days, opening windows and business-time arithmetic.

The convention counts time in Europe/Paris wall-clock terms ("du lundi au vendredi
de 8h00 à 16h00", "ouvert de 9h00 à 18h00 les jours ouvrés"), so every rule here works
on local dates and times and converts back to absolute instants only at the edges.
Python's aware-datetime arithmetic within one tzinfo is wall-clock arithmetic, which
is exactly what "the same time next week" means across a DST change; elapsed time is
always computed on UTC instants.

Pure: the public-holiday set is computed from the ``holidays`` package's rules, no I/O.
"""

from __future__ import annotations

import calendar as _stdlib_calendar
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays as _holidays

# Calendars are asked about dates a few years around "now"; beyond this range a
# policy would have to be re-published anyway.
_MAX_SCAN_DAYS = 3660


@lru_cache(maxsize=16)
def public_holidays(country: str, subdivision: str | None = None) -> Callable[[date], bool]:
    """Return a predicate ``is_holiday(day)`` for a country (metropolitan France: "FR").

    Years are computed on first use and cached, so a lookup is a set membership test.
    """
    per_year: dict[int, frozenset[date]] = {}

    def is_holiday(day: date) -> bool:
        year_set = per_year.get(day.year)
        if year_set is None:
            year_set = frozenset(
                _holidays.country_holidays(country, subdiv=subdivision, years=day.year).keys()
            )
            per_year[day.year] = year_set
        return day in year_set

    return is_holiday


@lru_cache(maxsize=64)
def holiday_name(country: str, day: date) -> str | None:
    """The holiday's name in French, for explanations (``None`` on an ordinary day)."""
    names = _holidays.country_holidays(country, years=day.year, language="fr")
    name = names.get(day)
    return str(name) if name is not None else None


@dataclass(frozen=True)
class BusinessCalendar:
    """Working days (a set of weekdays minus public holidays) with a daily open window.

    ``open_at`` and ``close_at`` are local wall-clock times; the window is closed on
    both ends (a filing at exactly 16:00:00 is inside 08:00–16:00).
    """

    name: str
    tz: ZoneInfo
    open_at: time
    close_at: time
    weekdays: frozenset[int] = frozenset(range(5))  # Monday=0 … Friday=4
    holiday_country: str | None = "FR"
    _is_holiday: Callable[[date], bool] = field(init=False, repr=False, compare=False)
    # Memo tables: deadlines are computed for every ticket on every evaluation.
    _working: dict[date, bool] = field(init=False, repr=False, compare=False, default_factory=dict)
    _instants: dict[tuple[date, time], datetime] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.open_at >= self.close_at:
            raise ValueError(f"calendar {self.name}: opening {self.open_at} must precede closing {self.close_at}")
        predicate = public_holidays(self.holiday_country) if self.holiday_country else (lambda _d: False)
        object.__setattr__(self, "_is_holiday", predicate)

    # --- days -----------------------------------------------------------------------
    def is_working_day(self, day: date) -> bool:
        working = self._working.get(day)
        if working is None:
            working = self._working[day] = day.weekday() in self.weekdays and not self._is_holiday(day)
        return working

    def is_holiday(self, day: date) -> bool:
        return self._is_holiday(day)

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

    def next_opening_after(self, instant: datetime) -> datetime:
        """The first window opening strictly after ``instant`` (UTC)."""
        local = instant.astimezone(self.tz)
        day = local.date()
        if self.is_working_day(day) and local.time().replace(tzinfo=None) < self.open_at:
            return self.at(day, self.open_at)
        return self.at(self.next_working_day(day), self.open_at)

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

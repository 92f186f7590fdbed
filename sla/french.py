"""French wording for instants, durations and calendars (no locale needed: deterministic)."""

from __future__ import annotations

from datetime import date as _date
from datetime import datetime, time
from zoneinfo import ZoneInfo

from .calendar import BusinessCalendar

_DAYS = ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche")
_DAYS_SHORT = ("lun.", "mar.", "mer.", "jeu.", "ven.", "sam.", "dim.")
_MONTHS = (
    "janvier", "février", "mars", "avril", "mai", "juin",
    "juillet", "août", "septembre", "octobre", "novembre", "décembre",
)


def clock_time(t: time) -> str:
    return t.strftime("%H:%M:%S") if t.second else t.strftime("%H:%M")


def date(value: _date) -> str:
    """« lundi 6 avril 2026 »."""
    return f"{_DAYS[value.weekday()]} {value.day} {_MONTHS[value.month - 1]} {value.year}"


def day(instant: datetime, tz: ZoneInfo) -> str:
    return date(instant.astimezone(tz).date())


def instant(value: datetime, tz: ZoneInfo) -> str:
    """« vendredi 13 mars 2026 à 17:00 » (seconds only when not zero)."""
    local = value.astimezone(tz)
    return f"{day(value, tz)} à {clock_time(local.time())}"


def duration(seconds: float) -> str:
    """« 2 h 15 min », « 3 j 4 h », « 45 s »."""
    total = round(abs(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = []
    if days:
        parts.append(f"{days} j")
    if hours:
        parts.append(f"{hours} h")
    if minutes and not days:
        parts.append(f"{minutes} min")
    if secs and not days and not hours:
        parts.append(f"{secs} s")
    return " ".join(parts) or "0 s"


def window(calendar: BusinessCalendar) -> str:
    """« lun.–ven. 08:00–16:00 »."""
    days = sorted(calendar.weekdays)
    if days == list(range(days[0], days[-1] + 1)):
        span = f"{_DAYS_SHORT[days[0]]}–{_DAYS_SHORT[days[-1]]}"
    else:
        span = ", ".join(_DAYS_SHORT[d] for d in days)
    return f"{span} {clock_time(calendar.open_at)}–{clock_time(calendar.close_at)}"

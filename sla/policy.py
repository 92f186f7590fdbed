"""The SLA policy: versioned, effective-dated data parsed from TOML.

A ticket is judged by the policy version in force when it was filed (``version_for``),
and every SLA fact records that version's id, so a later change of the rules never
rewrites an earlier verdict. Parsing is pure (text in, objects out); reading the file is
the caller's business.

Each SLA names
- ``rule``: how the first deadline follows from the start instant —
  ``window`` (inside the calendar's window: start + duration; outside: next opening +
  duration), ``elapsed`` (start + duration), ``business`` (duration of open time in the
  calendar), ``calendar`` (same local wall-clock time ``days`` or ``months`` later);
- the signals that start, stop, pause, resume and restart its clock (see ``SIGNALS``).
  Which waits pause which clock is this setting (``pauses_on``/``resumes_on``): the
  convention does not say whether waiting for the member suspends the administrative
  week, so the policy does, per SLA and per version, and the dispute file and the
  statement quote it;
- which kinds and channels it applies to, and whether it is contractual or an internal
  target (the convention names no number for incidents).
Durations are seconds (an integer) or a string such as ``"4h"``, ``"30m"``, ``"2s"``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .calendar import NO_HOLIDAYS, BusinessCalendar, NonWorkingDays, whit_monday
from .catalogue import Catalogue, Entry
from .errors import PolicyError
from .events import CHANNELS, KINDS

# How far past a filing a version must list non-working days: the longest deadline is a
# month, plus a pause.
_JUDGED_SPAN = timedelta(days=62)

__all__ = ["Exclusion", "Policy", "PolicyError", "PolicyVersion", "SlaDefinition", "parse_duration", "parse_policy"]

RULES = ("window", "elapsed", "business", "calendar")
# What a ticket's events say, as far as clocks are concerned (see ``sla.ticket.signals_of``).
SIGNALS = frozenset(
    {
        "filed",
        "acknowledged",
        "informed",
        "informed_with_eta",
        "answered",
        "waiting_for_customer",
        "customer_responded",
        "elements_complete",
        "resolved",
        "closed",
        "reopened",
    }
)
_WEEKDAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
# How a calendar reads « jour ouvrable suivant » (Article 4): see BusinessCalendar.is_next_day.
READINGS = ("ouvré", "ouvrable")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")


@dataclass(frozen=True)
class SlaDefinition:
    name: str
    title: str
    due_label: str
    start_label: str
    stop_label: str
    rule: str
    contractual: bool
    kinds: frozenset[str]
    channels: frozenset[str]
    starts_on: frozenset[str]
    stops_on: frozenset[str]
    pauses_on: frozenset[str]
    resumes_on: frozenset[str]
    restarts_on: frozenset[str]
    duration_seconds: float = 0.0
    calendar: BusinessCalendar | None = None
    days: int = 0
    months: int = 0
    clause: str = ""
    # Calendar rules count in this zone's wall-clock time ("one week" is 7 local days, not
    # 168 h), pauses included.
    tz: ZoneInfo | None = None
    # The monthly compliance objective (percent of the judged clocks met): the error budget of
    # the dashboards and alerts (``projections.compliance``). Judges no clock.
    objective_percent: float = 95.0

    def applies_to(self, kind: str, channel: str) -> bool:
        return kind in self.kinds and channel in self.channels


@dataclass(frozen=True)
class Exclusion:
    """A product the GIP does not support itself (Local Trust MPE: its vendor ATEXO does), for
    some clauses only (``slas``) or all of them (None)."""

    reason: str
    slas: frozenset[str] | None = None
    kinds: frozenset[str] | None = None  # the request classes concerned (None: all)


@dataclass(frozen=True)
class PolicyVersion:
    id: str
    effective_from: datetime
    tz: ZoneInfo
    warning_ratio: float
    # product → why it is excluded (French) and from which SLAs (None: every SLA)
    excluded_products: Mapping[str, Exclusion]
    calendars: Mapping[str, BusinessCalendar]
    slas: tuple[SlaDefinition, ...]
    # Who may date a fact: a business time may precede its recording by at most
    # ``max_backdate`` (people allowed to date: agents, admins), ``connector_max_backdate``
    # for the iTop connector (it relays iTop's own dates, its history at a first sync), and
    # is flagged « antidaté » beyond ``antedated_after``.
    max_backdate: timedelta = timedelta(days=30)
    connector_max_backdate: timedelta = timedelta(days=400)
    antedated_after: timedelta = timedelta(minutes=15)
    # The policy text this version was read from: its own ``[[versions]]`` table (a policy
    # document by itself), or the whole file when it does not split on such lines. Tree heads
    # sign its SHA-256 and dispute files quote it, so a member's verifier re-folds a ticket
    # with exactly these rules (``projections.dispute_check``).
    text: str = field(default="", compare=False, repr=False)

    def backdate_limit(self, actor: str) -> timedelta:
        """How far back ``actor`` (``role:label``) may date a fact."""
        return self.connector_max_backdate if actor.startswith("itop:") else self.max_backdate
    _applicable: dict[tuple[str, str], tuple[SlaDefinition, ...]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def excluded_reason(self, product: str, sla: str, kind: str) -> str | None:
        """Why ``sla`` does not apply to a ``kind`` of request about ``product`` (None: it applies)."""
        exclusion = self.excluded_products.get(product)
        if (exclusion is None or (exclusion.slas is not None and sla not in exclusion.slas)
                or (exclusion.kinds is not None and kind not in exclusion.kinds)):
            return None
        return exclusion.reason

    def check_covers(self, filed_at: datetime) -> None:
        """Raise PolicyError unless this version can judge a filing at ``filed_at`` to its end:
        its calendars list the non-working days of the filing day and of the two months after
        (the longest deadline is a month, plus a pause)."""
        lo, hi = self._covered_instants
        if lo <= filed_at and filed_at + _JUDGED_SPAN < hi:
            return  # (the common case, without a date conversion: a filing checked per command)
        first, last = (instant.astimezone(self.tz).date() for instant in (filed_at, filed_at + _JUDGED_SPAN))
        # (both ends: a filing before the first listed year, or a deadline past the last)
        for calendar in self.calendars.values():
            for day in (first, last):
                if not calendar.holidays.covers(day):
                    raise PolicyError(f"version {self.id!r} lists non-working days for {calendar.holidays.first_year}–"
                                      f"{calendar.holidays.last_year}: it cannot judge a request filed on "
                                      f"{filed_at.astimezone(self.tz).date().isoformat()}")

    @cached_property
    def _covered_instants(self) -> tuple[datetime, datetime]:
        """Filings at or after the first instant, and whose judged span ends before the
        second, are covered by every calendar (``check_covers``)."""
        years = [(c.holidays.first_year, c.holidays.last_year) for c in self.calendars.values()]
        first = max((f for f, _ in years), default=1)
        last = min((ly for _, ly in years), default=9998)
        return (datetime(first, 1, 1, tzinfo=self.tz),
                datetime(min(last + 1, 9999), 1, 1, tzinfo=self.tz))

    def slas_for(self, kind: str, channel: str) -> tuple[SlaDefinition, ...]:
        """The SLAs that apply to a ticket of this kind filed on this channel (memoised)."""
        key = (kind, channel)
        found = self._applicable.get(key)
        if found is None:
            found = self._applicable[key] = tuple(s for s in self.slas if s.applies_to(kind, channel))
        return found


@dataclass(frozen=True)
class Policy:
    versions: tuple[PolicyVersion, ...]  # sorted by effective_from
    # The products a ticket may name (``[products.<slug>]``: name, aliases): a filing or a
    # reclassification names one of them and its event stores the slug (``sla.ticket.decide``).
    # Empty (a policy without the table, as the tests' small policies): any product is taken.
    products: Catalogue = field(default_factory=lambda: Catalogue("product"))

    def version_for(self, filed_at: datetime) -> PolicyVersion:
        """The version in force at ``filed_at`` (the latest one already effective)."""
        chosen = None
        for start, version in self._starts:
            if start <= filed_at:
                chosen = version
        if chosen is None:
            raise PolicyError(
                f"no policy version in force on {filed_at.isoformat()} "
                f"(the first takes effect on {self.versions[0].effective_from.isoformat()})"
            )
        return chosen

    @cached_property
    def _starts(self) -> tuple[tuple[datetime, PolicyVersion], ...]:
        """Each version with its start in UTC: compared with a UTC instant for every command,
        a local start costs a time-zone lookup each time."""
        return tuple((v.effective_from.astimezone(UTC), v) for v in self.versions)

    def version(self, version_id: str) -> PolicyVersion:
        for version in self.versions:
            if version.id == version_id:
                return version
        raise PolicyError(f"unknown policy version {version_id!r}")


def parse_duration(value: object, where: str) -> float:
    if isinstance(value, bool):
        raise PolicyError(f"{where}: {value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    else:
        raise PolicyError(f"{where}: {value!r} is not a duration (seconds, or e.g. '4h', '30m', '2s')")
    if seconds <= 0:
        raise PolicyError(f"{where}: a duration must be positive")
    return seconds


def parse_policy(text: str) -> Policy:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"policy is not valid TOML: {exc}") from None
    _known(doc, {"versions", "products"}, "policy")
    products = _catalogue(_get(doc, "products", "policy", dict, {}))
    raw_versions = doc.get("versions")
    if not isinstance(raw_versions, list) or not raw_versions:
        raise PolicyError("policy: at least one [[versions]] table is required")
    versions = sorted((_parse_version(v, i) for i, v in enumerate(raw_versions)), key=lambda v: v.effective_from)
    for version in versions:
        outside = sorted(p for p in version.excluded_products if products and p not in products)
        if outside:
            raise PolicyError(f"version {version.id!r}.excluded_products: {outside} not in the [products] "
                              f"catalogue (an exclusion names a product's slug)")
    ids = [v.id for v in versions]
    if len(set(ids)) != len(ids):
        raise PolicyError(f"policy: version ids must be unique, got {ids}")
    starts = [v.effective_from for v in versions]
    if len(set(starts)) != len(starts):
        same = [v.id for v in versions if starts.count(v.effective_from) > 1]
        raise PolicyError(f"policy: versions {same} take effect at the same instant (which one judges?)")
    texts = _version_texts(text, ids)
    return Policy(tuple(replace(v, text=texts.get(v.id, text)) for v in versions), products)


def _version_texts(text: str, ids: list[str]) -> dict[str, str]:
    """Each version's own text: the lines from its ``[[versions]]`` header to the next one,
    when each such block reads alone as that one version (else none: the whole file)."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip() == "[[versions]]"]
    if len(starts) != len(ids):
        return {}
    out = {}
    for start, end in zip(starts, [*starts[1:], len(lines)], strict=True):
        block = "".join(lines[start:end])
        try:
            found = tomllib.loads(block)["versions"]
        except (tomllib.TOMLDecodeError, KeyError):
            return {}
        if len(found) != 1 or not isinstance(found[0], dict) or found[0].get("id") not in ids:
            return {}
        out[found[0]["id"]] = block
    return out if len(out) == len(ids) else {}


_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


def _catalogue(raw: Mapping[str, Any]) -> Catalogue:
    """``[products.<slug>]`` with ``name`` and optional ``aliases``: the slug is what events
    store, the name what pages show; the name and aliases are what people may type."""
    entries = []
    for slug, spec in raw.items():
        where = f"products.{slug}"
        if not _SLUG.match(slug) or len(slug) > 128:
            raise PolicyError(f"{where}: a slug is lowercase letters, digits and single hyphens "
                              "(e.g. 'local-trust-mpe')")
        if not isinstance(spec, dict):
            raise PolicyError(f"{where}: must be a table with name and aliases")
        _known(spec, {"name", "aliases"}, where)
        aliases = _get(spec, "aliases", where, list, [])
        if not all(isinstance(a, str) and a.strip() for a in aliases):
            raise PolicyError(f"{where}.aliases: a list of names")
        entries.append(Entry(slug, _get(spec, "name", where, str).strip(), tuple(a.strip() for a in aliases)))
    try:
        return Catalogue.of("product", entries)
    except ValueError as exc:
        raise PolicyError(f"products: {exc}") from None


def coverage_errors(policy: Policy) -> list[str]:
    """What a policy cannot judge, one line each: a version whose calendars list no
    non-working day of the time it is in force (from its start, or from its first listed
    year when it started earlier, to the next version's start plus the longest deadline).
    ``parse_policy`` accepts such a file (the gap may be in the past); ``policy check``
    reports it before a version goes live."""
    out = []
    for version, successor in zip(policy.versions, (*policy.versions[1:], None), strict=True):
        for calendar in version.calendars.values():
            listed = calendar.holidays
            if listed is NO_HOLIDAYS:
                continue
            first = max(version.effective_from.astimezone(version.tz).year, listed.first_year)
            if first > listed.last_year:
                out.append(f"version {version.id!r}, calendar {calendar.name!r}: lists non-working days for "
                           f"{listed.first_year}–{listed.last_year}, before it takes effect "
                           f"({version.effective_from.isoformat()})")
                continue
            if successor is not None:
                until = (successor.effective_from + _JUDGED_SPAN).astimezone(version.tz).year
                if until > listed.last_year:
                    out.append(f"version {version.id!r}, calendar {calendar.name!r}: lists non-working days up to "
                               f"{listed.last_year}, but judges requests filed until "
                               f"{successor.effective_from.isoformat()} (deadlines into {until})")
    return out


def _get(table: Mapping[str, Any], key: str, where: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise PolicyError(f"{where}: missing '{key}'")
        return default
    value = table[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise PolicyError(f"{where}.{key}: unexpected value {value!r}")
    return value


def _known(table: Mapping[str, Any], keys: set[str], where: str) -> None:
    """A key the parser does not read is a typo that would silently change nothing: refused."""
    unknown = sorted(set(table) - keys)
    if unknown:
        raise PolicyError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(keys)}")


def _names(values: list[Any], allowed: frozenset[str] | tuple[str, ...], where: str) -> frozenset[str]:
    bad = [v for v in values if v not in allowed]
    if bad:
        raise PolicyError(f"{where}: unknown value(s) {bad}; allowed: {sorted(allowed)}")
    return frozenset(values)


def _clock_time(value: str, where: str) -> time:
    try:
        return time.fromisoformat(value)
    except ValueError:
        raise PolicyError(f"{where}: {value!r} is not a time of day (HH:MM)") from None


def _parse_version(raw: Any, index: int) -> PolicyVersion:
    where = f"versions[{index}]"
    if not isinstance(raw, dict):
        raise PolicyError(f"{where}: must be a table")
    version_id = _get(raw, "id", where, str)
    where = f"version {version_id!r}"
    _known(raw, {"id", "effective_from", "timezone", "warning_ratio", "dating", "non_working_days",
                 "calendars", "slas", "excluded_products"}, where)
    effective = _get(raw, "effective_from", where, (datetime, str))
    if isinstance(effective, str):
        try:
            effective = datetime.fromisoformat(effective)
        except ValueError:
            raise PolicyError(f"{where}.effective_from: {effective!r} is not a date-time") from None
    if effective.tzinfo is None:
        raise PolicyError(f"{where}.effective_from: needs a UTC offset")
    try:
        tz = ZoneInfo(_get(raw, "timezone", where, str))
    except ZoneInfoNotFoundError:
        raise PolicyError(f"{where}.timezone: unknown time zone") from None
    ratio = float(_get(raw, "warning_ratio", where, (int, float), 0.75))
    if not 0 < ratio < 1:
        raise PolicyError(f"{where}.warning_ratio: must be between 0 and 1 (exclusive)")
    dating = _get(raw, "dating", where, dict, {})
    if set(dating) - {"max_backdate", "connector_max_backdate", "antedated_after"}:
        raise PolicyError(f"{where}.dating: max_backdate, connector_max_backdate and antedated_after only")
    max_backdate = timedelta(seconds=parse_duration(dating.get("max_backdate", 30 * 86400), f"{where}.dating"))
    connector_max_backdate = timedelta(seconds=parse_duration(dating.get("connector_max_backdate", 400 * 86400),
                                                              f"{where}.dating"))
    antedated_after = timedelta(seconds=parse_duration(dating.get("antedated_after", 900), f"{where}.dating"))
    if antedated_after < timedelta(minutes=1):
        raise PolicyError(f"{where}.dating.antedated_after: at least 1 minute (finer gaps are transmission delays)")

    pinned = _non_working_days(raw, where)
    calendars: dict[str, BusinessCalendar] = {}
    for name, cal in _get(raw, "calendars", where, dict, {}).items():
        cwhere = f"{where}.calendars.{name}"
        if not isinstance(cal, dict):
            raise PolicyError(f"{cwhere}: must be a table")
        _known(cal, {"open", "close", "weekdays", "reading", "holidays"}, cwhere)
        days = _get(cal, "weekdays", cwhere, list, ["mon", "tue", "wed", "thu", "fri"])
        weekdays = frozenset(_WEEKDAYS[d] for d in _names(days, tuple(_WEEKDAYS), f"{cwhere}.weekdays"))
        reading = _get(cal, "reading", cwhere, str, "ouvré")
        if reading not in READINGS:
            raise PolicyError(f"{cwhere}.reading: 'ouvré' (the window's weekdays) or 'ouvrable' (Monday to "
                              "Saturday) for « jour ouvrable suivant »")
        if isinstance(cal.get("holidays"), str):
            raise PolicyError(f"{cwhere}.holidays: true or false (the version's non_working_days); a country code "
                              "is no longer read at run time: pin the days with `slaledger policy holidays`")
        uses_holidays = _get(cal, "holidays", cwhere, bool, True)
        if uses_holidays and pinned is None:
            raise PolicyError(f"{cwhere}: excludes public holidays, but the version lists no non_working_days "
                              "(generate them with `slaledger policy holidays`)")
        try:
            calendars[name] = BusinessCalendar(
                name=name,
                tz=tz,
                open_at=_clock_time(_get(cal, "open", cwhere, str), f"{cwhere}.open"),
                close_at=_clock_time(_get(cal, "close", cwhere, str), f"{cwhere}.close"),
                weekdays=weekdays,
                holidays=pinned if uses_holidays and pinned is not None else NO_HOLIDAYS,
                reading=reading,
            )
        except ValueError as exc:
            raise PolicyError(str(exc)) from None

    slas = tuple(_parse_sla(s, f"{where}.slas[{i}]", calendars, tz)
                 for i, s in enumerate(_get(raw, "slas", where, list)))
    names = [s.name for s in slas]
    if len(set(names)) != len(names):
        raise PolicyError(f"{where}: SLA names must be unique, got {names}")
    excluded = _exclusions(_get(raw, "excluded_products", where, dict, {}), f"{where}.excluded_products", names)
    return PolicyVersion(
        id=version_id,
        effective_from=effective,
        tz=tz,
        warning_ratio=ratio,
        max_backdate=max_backdate,
        connector_max_backdate=connector_max_backdate,
        antedated_after=antedated_after,
        excluded_products=excluded,
        calendars=calendars,
        slas=slas,
    )


def _exclusions(raw: Mapping[str, Any], where: str, slas: list[str]) -> dict[str, Exclusion]:
    """``product = "reason"`` (excluded from every SLA) or ``product = { reason = "…", slas =
    [...] }`` (from those clauses only: intake and incident follow-up are the vendor's, an
    administrative request about the product is still the GIP's)."""
    out: dict[str, Exclusion] = {}
    for product, spec in raw.items():
        if isinstance(spec, str):
            out[str(product)] = Exclusion(spec)
            continue
        pwhere = f"{where}.{product}"
        if not isinstance(spec, dict) or set(spec) - {"reason", "slas", "kinds"}:
            raise PolicyError(f"{pwhere}: a reason, or a table with reason, slas and kinds")
        names = _get(spec, "slas", pwhere, list)
        unknown = sorted(set(names) - set(slas))
        if unknown:
            raise PolicyError(f"{pwhere}.slas: unknown SLA(s) {unknown}")
        kinds = _get(spec, "kinds", pwhere, list, None)
        out[str(product)] = Exclusion(_get(spec, "reason", pwhere, str), frozenset(names),
                                      None if kinds is None else _names(kinds, KINDS, f"{pwhere}.kinds"))
    return out


def _non_working_days(raw: Mapping[str, Any], where: str) -> NonWorkingDays | None:
    """The version's pinned public holidays (None when it lists none), checked: covered
    years, names, and the explicit choice about Whit Monday."""
    table = _get(raw, "non_working_days", where, dict, None)
    if table is None:
        return None
    where = f"{where}.non_working_days"
    unknown = sorted(set(table) - {"years", "whit_monday", "dates", "source"})
    if unknown:
        raise PolicyError(f"{where}: unknown key(s) {unknown}")
    years = _get(table, "years", where, list)
    if len(years) != 2 or not all(isinstance(y, int) for y in years) or years[0] > years[1]:
        raise PolicyError(f"{where}.years: [first, last], e.g. [2024, 2035]")
    choice = _get(table, "whit_monday", where, str)
    if choice not in ("holiday", "working"):
        raise PolicyError(f"{where}.whit_monday: 'holiday' (as the law lists it) or 'working' (journée de "
                          "solidarité worked)")
    days: dict[date, str] = {}
    for key, name in _get(table, "dates", where, dict).items():
        try:
            day = date.fromisoformat(str(key))
        except ValueError:
            raise PolicyError(f"{where}.dates: {key!r} is not a date (YYYY-MM-DD)") from None
        if not years[0] <= day.year <= years[1] or not isinstance(name, str) or not name.strip():
            raise PolicyError(f"{where}.dates: {key} must fall in {years[0]}–{years[1]} and have a name")
        days[day] = name
    for year in range(years[0], years[1] + 1):
        listed = whit_monday(year) in days
        if listed != (choice == "holiday"):
            raise PolicyError(f"{where}: whit_monday = {choice!r} but Whit Monday {whit_monday(year)} is "
                              f"{'listed' if listed else 'not listed'}")
    return NonWorkingDays(years[0], years[1], days, whit_monday_worked=choice == "working")


def _parse_sla(raw: Any, where: str, calendars: Mapping[str, BusinessCalendar], tz: ZoneInfo) -> SlaDefinition:
    if not isinstance(raw, dict):
        raise PolicyError(f"{where}: must be a table")
    name = _get(raw, "name", where, str)
    where = f"{where} ({name})"
    rule = _get(raw, "rule", where, str)
    if rule not in RULES:
        raise PolicyError(f"{where}.rule: {rule!r} is not one of {', '.join(RULES)}")
    known = {f.name for f in fields(SlaDefinition)} - {"duration_seconds"} | {"duration"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise PolicyError(f"{where}: unknown key(s) {unknown}")

    def signals(key: str, required: bool = False) -> frozenset[str]:
        values = _get(raw, key, where, list, ... if required else [])
        return _names(values, SIGNALS, f"{where}.{key}")

    calendar = None
    if rule in ("window", "business"):
        cal_name = _get(raw, "calendar", where, str)
        if cal_name not in calendars:
            raise PolicyError(f"{where}.calendar: no calendar named {cal_name!r}")
        calendar = calendars[cal_name]
    duration, days, months = 0.0, 0, 0
    if rule == "calendar":
        days = _get(raw, "days", where, int, 0)
        months = _get(raw, "months", where, int, 0)
        if days < 0 or months < 0 or (days == 0) == (months == 0):
            raise PolicyError(f"{where}: a calendar rule needs exactly one of a positive 'days' or 'months'")
    else:
        duration = parse_duration(_get(raw, "duration", where, (int, float, str)), f"{where}.duration")

    return SlaDefinition(
        name=name,
        title=_get(raw, "title", where, str, name),
        due_label=_get(raw, "due_label", where, str, "échéance"),
        start_label=_get(raw, "start_label", where, str, "Début"),
        stop_label=_get(raw, "stop_label", where, str, "Arrêt"),
        rule=rule,
        contractual=_get(raw, "contractual", where, bool, True),
        kinds=_names(_get(raw, "kinds", where, list, list(KINDS)), KINDS, f"{where}.kinds"),
        channels=_names(_get(raw, "channels", where, list, list(CHANNELS)), CHANNELS, f"{where}.channels"),
        starts_on=signals("starts_on", required=True),
        stops_on=signals("stops_on", required=True),
        restarts_on=signals("restarts_on"),
        **_pauses(signals("pauses_on"), signals("resumes_on"), signals("stops_on", required=True), where),
        duration_seconds=duration,
        tz=tz if rule == "calendar" else None,
        calendar=calendar,
        days=days,
        months=months,
        clause=_get(raw, "clause", where, str, ""),
        objective_percent=_objective(raw, where),
    )


def _pauses(pauses: frozenset[str], resumes: frozenset[str], stops: frozenset[str],
            where: str) -> dict[str, frozenset[str]]:
    """The SLA's pause setting, checked: a clock that pauses must be able to resume (and
    the reverse is meaningless), and a signal cannot both stop and pause it."""
    if bool(pauses) != bool(resumes):
        raise PolicyError(f"{where}: pauses_on and resumes_on go together (both empty: the clock never pauses)")
    if pauses & (stops | resumes):
        raise PolicyError(f"{where}.pauses_on: {sorted(pauses & (stops | resumes))} also stop or resume the clock")
    return {"pauses_on": pauses, "resumes_on": resumes}


def _objective(raw: Mapping[str, Any], where: str) -> float:
    value = float(_get(raw, "objective_percent", where, (int, float), 95.0))
    if not 0 < value < 100:
        raise PolicyError(f"{where}.objective_percent: between 0 and 100 (exclusive), e.g. 95")
    return value

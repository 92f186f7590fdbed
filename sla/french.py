"""French wording for instants, durations and calendars (no locale needed: deterministic)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, time, timedelta
from datetime import date as _date
from zoneinfo import ZoneInfo

from .calendar import BusinessCalendar

_DAYS = ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche")
_DAYS_SHORT = ("lun.", "mar.", "mer.", "jeu.", "ven.", "sam.", "dim.")
_MONTHS = (
    "janvier", "février", "mars", "avril", "mai", "juin",
    "juillet", "août", "septembre", "octobre", "novembre", "décembre",
)


def clock_time(t: time) -> str:
    """« 17:00 », « 16:00:05 », « 16:00:00,5 »: as precise as the instant judged, never less
    (a filing at 16:00:00.5 is outside a window closing at 16:00 and must not read « 16:00 »)."""
    if t.microsecond:
        fraction = f"{t.microsecond:06d}".rstrip("0")
        return f"{t.hour:02d}:{t.minute:02d}:{t.second:02d},{fraction}"
    return f"{t.hour:02d}:{t.minute:02d}:{t.second:02d}" if t.second else f"{t.hour:02d}:{t.minute:02d}"


# How finely a time is written: to the minute, to the second, or to 1–6 decimals of a second.
MINUTE, SECOND, FINEST = -1, 0, 6


def precision(value: datetime, beside: Iterable[datetime | None] = ()) -> int:
    """The coarsest precision (``MINUTE``, ``SECOND``, or decimals) at which ``value`` reads
    apart from every instant of ``beside`` it differs from. A sentence compares an instant
    with the one a verdict judged it against (a filing with the window's edges, an action
    with its deadline): both written at this precision, the reader's comparison of the
    written times agrees with the verdict — truncation never reverses an order, and this
    precision never makes two different instants read the same.

    Compared as whole microseconds since the epoch (UTC minutes and seconds are whole
    multiples of it): the projector explains every clock of every ticket a batch touches,
    and cutting datetimes here was a tenth of its time (#31)."""
    level = MINUTE
    at: int | None = None
    for other in beside:
        if other is None or other == value:
            continue
        at = _micros(value) if at is None else at
        there = _micros(other)
        while level < FINEST and at // _STEP[level] == there // _STEP[level]:
            level += 1
    return level


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STEP = {MINUTE: 60_000_000, **{level: 10 ** (FINEST - level) for level in range(SECOND, FINEST + 1)}}


def _micros(value: datetime) -> int:
    elapsed = (value if value.tzinfo is not None else value.astimezone(UTC)) - _EPOCH
    return (elapsed.days * 86_400 + elapsed.seconds) * 1_000_000 + elapsed.microseconds


def _truncate(value: datetime, level: int) -> datetime:
    """``value`` cut (never rounded: 16:00:59 is still 16:00) to ``level``."""
    value = value.astimezone(UTC)
    if level == MINUTE:
        return value.replace(second=0, microsecond=0)
    step = 10 ** (FINEST - level)
    return value.replace(microsecond=value.microsecond // step * step)


def date(value: _date) -> str:
    """« lundi 6 avril 2026 », « vendredi 1er mai 2026 »."""
    ordinal = "1er" if value.day == 1 else str(value.day)
    return f"{_DAYS[value.weekday()]} {ordinal} {_MONTHS[value.month - 1]} {value.year}"


def month(year: int, number: int) -> str:
    """« novembre 2026 » (the title of a monthly statement)."""
    return f"{_MONTHS[number - 1]} {year}"


def day(instant: datetime, tz: ZoneInfo) -> str:
    return date(instant.astimezone(tz).date())


def instant(value: datetime, tz: ZoneInfo, *, beside: Iterable[datetime | None] = ()) -> str:
    """« vendredi 13 mars 2026 à 17:00 »: to the minute, as a person reads a time; seconds, or
    the decimals needed, only when the minute would read the same as an instant of ``beside``
    it is compared with (see ``precision``). A time of the autumn hour that happens twice
    names its offset: « à 02:30 heure d'hiver »."""
    local = _truncate(value, precision(value, beside)).astimezone(tz)
    text = f"{date(local.date())} à {clock_time(local.time())}"
    if tz.utcoffset(local.replace(fold=1 - local.fold)) != local.utcoffset():  # the same wall time twice
        text += " heure d'été" if local.dst() else " heure d'hiver"
    return text


def stamp(value: datetime, tz: ZoneInfo, *, beside: Iterable[datetime | None] = ()) -> str:
    """« 2026-12-07T01:45+01:00 », « 2026-12-07T00:45Z »: ISO 8601 for a spreadsheet or an
    annex a person reads, at ``instant``'s precision (seconds and decimals only when needed)."""
    level = precision(value, beside)
    local = _truncate(value, level).astimezone(tz)
    spec = "minutes" if level == MINUTE else "seconds" if level == SECOND else "microseconds"
    text = local.isoformat(timespec=spec)
    if level > SECOND:
        head, _, rest = text.partition(".")
        digits, offset = rest[:6][:level], rest[6:]
        text = f"{head}.{digits}{offset}"
    return text.replace("+00:00", "Z")


def duration(seconds: float) -> str:
    """« 2 h 15 min », « 3 j 4 h », « 45 s »."""
    if 0 < abs(seconds) < 1:
        return "moins d'une seconde"
    total = int(abs(seconds) + 0.5)  # half up: 1.5 s late reads « 2 s », 2.5 s « 3 s »
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
    if not parts:
        return "moins d'une seconde" if seconds else "0 s"
    return " ".join(parts)


def count(number: int, noun: str, plural: str | None = None) -> str:
    """« 0 jour », « 1 jour », « 2 jours », « 7 jours calendaires »: French keeps the singular
    below two. The plural adds an s to each word not already ending in s, x or z (« mois »
    stays), unless ``plural`` is given. Every counted noun a reader sees goes through here,
    so no message says « 1 jours »."""
    if abs(number) < 2:
        return f"{number} {noun}"
    return f"{number} {plural or ' '.join(w if w[-1] in 'sxz' else w + 's' for w in noun.split())}"


def span(limit: timedelta) -> str:
    """A limit set in days or in time: « 1 jour », « 30 jours » for whole days, else the
    duration (« 12 h », « 1 j 12 h »)."""
    if limit == timedelta(days=limit.days):
        return count(limit.days, "jour")
    return duration(limit.total_seconds())


def percent(value: float | None) -> str:
    """« 100,0 % », « 66,7 % » (a compliance rate, in percent); « — » when nothing was decided.
    One writing for the statement, the dispute file, the what-if and the e-mail."""
    return "—" if value is None else f"{value:.1f} %".replace(".", ",")


def sla_title(title: str, contractual: bool) -> str:
    """« Prise en compte … (engagement contractuel) »: an SLA's title with its nature, said once
    (a title of the policy may already end with « (objectif interne) »)."""
    nature = "engagement contractuel" if contractual else "objectif interne"
    return title if f"({nature})" in title else f"{title} ({nature})"


def window(calendar: BusinessCalendar) -> str:
    """« lun.–ven. 08:00–16:00 »."""
    days = sorted(calendar.weekdays)
    if days == list(range(days[0], days[-1] + 1)):
        span = f"{_DAYS_SHORT[days[0]]}–{_DAYS_SHORT[days[-1]]}"
    else:
        span = ", ".join(_DAYS_SHORT[d] for d in days)
    return f"{span} {clock_time(calendar.open_at)}–{clock_time(calendar.close_at)}"


# --- labels: what members and agents read, in one place -------------------------------------

# Request classes (sla.events.KINDS).
KIND = {"assistance": "Assistance", "incident": "Incident", "administrative": "Demande administrative",
        "go_live": "Mise en production"}

# Where a request came in.
CHANNEL = {"portal": "Portail", "phone": "Téléphone", "email": "Courriel"}

# Ticket statuses (sla.ticket.Status).
STATUS = {"open": "Ouvert", "in_progress": "En cours de traitement",
          "waiting_for_customer": "En attente du demandeur", "resolved": "Résolu", "closed": "Clos"}

# A clock's state as shown (sla.display): its status, with « at risk » split out of « running ».
STATE = {"breached": "Dépassé", "at_risk": "À risque", "running": "Dans les délais", "paused": "Suspendu",
         "pending": "Non démarré", "met": "Respecté", "retracted": "Manquement retiré",
         "excluded": "Hors engagement"}

# The stretches of a clock's time axis (sla.clock.SegmentKind).
SEGMENT = {"running": "Décompte", "paused": "Suspendu (attente du demandeur)",
           "outside_hours": "Hors plage horaire"}

# Event types (sla.events.EventType), as a timeline names them.
EVENT_TYPE = {
    "ticket_filed": "Demande déposée", "acknowledged": "Prise en compte", "customer_informed": "Demandeur informé",
    "waiting_for_customer": "En attente du demandeur", "customer_responded": "Réponse du demandeur",
    "reclassified": "Reclassement", "resolved": "Résolution", "closed": "Clôture", "reopened": "Réouverture",
    "sla_warning_raised": "Alerte d'échéance", "sla_breached": "Manquement constaté",
    "sla_breach_retracted": "Manquement retiré",
}

# A clock's verdict in a sentence of the dispute file.
VERDICT = {
    "met": "respecté", "breached": "manquement", "retracted": "manquement retiré", "excluded": "hors engagement",
    "running": "en cours", "paused": "suspendu", "pending": "non démarré",
}

# How a calendar reads « jour ouvrable suivant » (Article 4), stated in the dispute file.
READING = {
    "ouvré": "« jour ouvrable suivant » lu comme jour ouvré : un jour de la plage (du lundi au vendredi), hors "
             "jours fériés",
    "ouvrable": "« jour ouvrable suivant » lu au sens du Code du travail : du lundi au samedi, hors jours fériés",
}

# When a clock starts or stops, as an explanation says it (sla.policy.SIGNALS).
SIGNAL = {
    "filed": "au dépôt de la demande",
    "acknowledged": "à la prise en compte",
    "informed": "à la première information du demandeur",
    "informed_with_eta": "à la communication d'un délai probable de rétablissement",
    "answered": "à la réponse apportée à la demande",
    "elements_complete": "à la fourniture complète des éléments nécessaires",
    "customer_responded": "à la réponse du demandeur",
    "waiting_for_customer": "à la mise en attente du demandeur",
    "resolved": "à la résolution",
    "closed": "à la clôture",
    "reopened": "à la réouverture",
}

# The event a calendar delay runs from (« un mois à compter de … »).
SIGNAL_FROM = {
    "filed": "du dépôt de la demande",
    "acknowledged": "de la prise en compte",
    "elements_complete": "de la fourniture complète des éléments nécessaires",
    "informed": "de l'information du demandeur",
    "informed_with_eta": "de la communication d'un délai probable de rétablissement",
    "customer_responded": "de la réponse du demandeur",
    "reopened": "de la réouverture",
}

# The support team's actions, as the ticket page's buttons name them (sla.ticket.CommandType).
ACTION = {
    "acknowledge": "Prendre en compte",
    "inform": "Informer le demandeur",
    "wait_for_customer": "Mettre en attente du demandeur",
    "customer_response": "Enregistrer la réponse du demandeur",
    "reclassify": "Reclasser",
    "resolve": "Résoudre",
    "close": "Clore",
    "reopen": "Rouvrir",
}

# What the ticket page says once an action is recorded.
ACTION_DONE = {
    "file": "Demande déposée.",
    "acknowledge": "Prise en compte enregistrée.",
    "inform": "Information du demandeur enregistrée.",
    "wait_for_customer": "Mise en attente du demandeur enregistrée.",
    "customer_response": "Réponse du demandeur enregistrée.",
    "reclassify": "Reclassement enregistré.",
    "resolve": "Résolution enregistrée.",
    "close": "Clôture enregistrée.",
    "reopen": "Réouverture enregistrée.",
}

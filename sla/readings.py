"""The policy's readings of Article 4 in French: which waits suspend a clock
(``pause_reading``, quoted by the dispute file and the statement) and what a draft policy
changes against the one in force (``changes``, for ``slaledger policy diff`` and the
what-if's negotiation file).

Pure: two parsed policies in, French sentences out. A draft version is compared with the
current version of the same id, or, when it is new, with the current version in force at
its start (the one it would replace).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any

from . import french
from .calendar import NO_HOLIDAYS, BusinessCalendar, whit_monday
from .policy import Exclusion, Policy, PolicyError, PolicyVersion, SlaDefinition

_MAX_DATES = 12  # holidays listed by name in a diff; beyond, counted


def pause_reading(sla: SlaDefinition) -> str:
    """Which waits suspend the SLA's clock (its ``pauses_on``/``resumes_on`` setting): a
    reading the convention leaves open, quoted wherever a verdict is given."""
    if not sla.pauses_on:
        return "délai jamais suspendu (l'attente du demandeur ne l'interrompt pas)"
    return f"délai suspendu {_signals(sla.pauses_on)}, repris {_signals(sla.resumes_on)}"


def changes(current: Policy, draft: Policy) -> list[str]:
    """What ``draft`` changes against ``current``, one French sentence each (empty: nothing
    a verdict depends on)."""
    out: list[str] = []
    mine = {v.id: v for v in current.versions}
    for version in draft.versions:
        before = mine.get(version.id)
        if before is not None:
            lines = _version_changes(before, version)
            if lines:
                out.append(f"Version {version.id} modifiée :")
                out += [f"  - {line}" for line in lines]
            continue
        try:
            replaced = current.version_for(version.effective_from)
        except PolicyError:
            out.append(f"Nouvelle version {version.id}, en vigueur à partir du "
                       f"{french.instant(version.effective_from, version.tz)} (aucune version actuelle à cette date).")
            continue
        lines = _version_changes(replaced, version)
        out.append(f"Nouvelle version {version.id}, en vigueur à partir du "
                   f"{french.instant(version.effective_from, version.tz)}, par rapport à {replaced.id} :"
                   + ("" if lines else " aucun changement de règle."))
        out += [f"  - {line}" for line in lines]
    drafted = {v.id for v in draft.versions}
    out += [f"Version {v.id} retirée." for v in current.versions if v.id not in drafted]
    return out


def _version_changes(a: PolicyVersion, b: PolicyVersion) -> list[str]:
    out: list[str] = []
    if a.effective_from != b.effective_from:
        out.append(f"entrée en vigueur : {french.instant(a.effective_from, a.tz)} → "
                   f"{french.instant(b.effective_from, b.tz)}")
    if a.tz.key != b.tz.key:
        out.append(f"fuseau horaire : {a.tz.key} → {b.tz.key}")
    if a.warning_ratio != b.warning_ratio:
        out.append(f"alerte d'échéance à {_percent(a.warning_ratio)} → {_percent(b.warning_ratio)} du délai")
    for label, x, y in (("antidatage permis (agents)", a.max_backdate, b.max_backdate),
                        ("antidatage permis (connecteur iTop)", a.connector_max_backdate, b.connector_max_backdate),
                        ("signalé « antidaté » au-delà de", a.antedated_after, b.antedated_after)):
        if x != y:
            out.append(f"{label} : {_span(x)} → {_span(y)}")
    out += _keyed(a.calendars, b.calendars, "plage", _calendar_changes, lambda c: french.window(c))
    out += _keyed({s.name: s for s in a.slas}, {s.name: s for s in b.slas}, "engagement", _sla_changes,
                  lambda s: s.title)
    out += _keyed(a.excluded_products, b.excluded_products, "produit exclu", _exclusion_changes,
                  lambda e: e.reason)
    return out


def _keyed(a: Mapping[str, Any], b: Mapping[str, Any], noun: str, compare: Callable[[Any, Any], list[str]],
           describe: Callable[[Any], str]) -> list[str]:
    out = [f"{noun} « {k} » ajouté(e) : {describe(b[k])}" for k in b if k not in a]
    out += [f"{noun} « {k} » supprimé(e)" for k in a if k not in b]
    for k in a:
        if k in b:
            out += [f"{noun} « {k} » : {line}" for line in compare(a[k], b[k])]
    return out


def _calendar_changes(a: BusinessCalendar, b: BusinessCalendar) -> list[str]:
    out = []
    if (a.open_at, a.close_at, a.weekdays) != (b.open_at, b.close_at, b.weekdays):
        out.append(f"horaires {french.window(a)} → {french.window(b)}")
    if a.reading != b.reading:
        out.append(f"{french.READING[a.reading]} → {french.READING[b.reading]}")
    x, y = a.holidays, b.holidays
    if (x is NO_HOLIDAYS) != (y is NO_HOLIDAYS):
        out.append("jours fériés " + ("non comptés → comptés" if x is NO_HOLIDAYS else "comptés → non comptés"))
        return out
    if x.whit_monday_worked != y.whit_monday_worked:
        out.append("lundi de Pentecôte " + ("travaillé → férié" if x.whit_monday_worked else
                                            "férié → travaillé (journée de solidarité)"))
    if (x.first_year, x.last_year) != (y.first_year, y.last_year):
        out.append(f"années couvertes {x.first_year}–{x.last_year} → {y.first_year}–{y.last_year}")
    # A day gained or lost inside both covered spans (not the coverage itself, nor Whit Monday said above).
    common = range(max(x.first_year, y.first_year), min(x.last_year, y.last_year) + 1)
    whit = {whit_monday(year) for year in common}
    added = sorted(d for d in y.days if d not in x.days and d.year in common and d not in whit)
    removed = sorted(d for d in x.days if d not in y.days and d.year in common and d not in whit)
    for verb, days, names in (("ajoutés", added, y.days), ("retirés", removed, x.days)):
        if days:
            shown = ", ".join(f"{french.date(d)} ({names[d]})" for d in days[:_MAX_DATES])
            more = f" et {french.count(len(days) - _MAX_DATES, 'autre')}" if len(days) > _MAX_DATES else ""
            out.append(f"jours fériés {verb} : {shown}{more}")
    return out


def _sla_changes(a: SlaDefinition, b: SlaDefinition) -> list[str]:
    out = []
    if (a.rule, a.duration_seconds, a.days, a.months) != (b.rule, b.duration_seconds, b.days, b.months):
        out.append(f"délai {_measure(a)} → {_measure(b)}")
    if (a.calendar and a.calendar.name) != (b.calendar and b.calendar.name):
        out.append(f"plage {a.calendar.name if a.calendar else '—'} → {b.calendar.name if b.calendar else '—'}")
    if a.contractual != b.contractual:
        out.append("engagement contractuel → objectif interne" if a.contractual else
                   "objectif interne → engagement contractuel")
    if (a.pauses_on, a.resumes_on) != (b.pauses_on, b.resumes_on):
        out.append(f"{pause_reading(a)} → {pause_reading(b)}")
    for label, x, y in (("démarre", a.starts_on, b.starts_on), ("s'arrête", a.stops_on, b.stops_on),
                        ("redémarre", a.restarts_on, b.restarts_on)):
        if x != y:
            out.append(f"le délai {label} {_signals(x) or 'jamais'} → {_signals(y) or 'jamais'}")
    return out + _labelled(("demandes concernées", _kinds, a.kinds, b.kinds),
                           ("canaux", _channels, a.channels, b.channels))


def _exclusion_changes(a: Exclusion, b: Exclusion) -> list[str]:
    return _labelled(("engagements exclus", _names, a.slas, b.slas), ("demandes concernées", _kinds, a.kinds, b.kinds),
                     ("motif", lambda reason: f"« {reason} »", a.reason, b.reason))


def _labelled(*fields: tuple[str, Callable[[Any], str], Any, Any]) -> list[str]:
    """``label : before → after``, for each (label, how shown, before, after) that changed."""
    return [f"{label} : {show(x)} → {show(y)}" for label, show, x, y in fields if x != y]


def _measure(sla: SlaDefinition) -> str:
    if sla.rule == "calendar":
        return f"{sla.months} mois" if sla.months else french.count(sla.days, "jour calendaire")
    kind = {"window": "dans la plage", "elapsed": "écoulées", "business": "ouvrées"}[sla.rule]
    return f"{french.duration(sla.duration_seconds)} {kind}"


def _signals(signals: Iterable[str]) -> str:
    return ", ".join(french.SIGNAL.get(s, s) for s in sorted(signals))


def _kinds(kinds: Iterable[str] | None) -> str:
    return "toutes" if kinds is None else ", ".join(french.KIND.get(k, k) for k in sorted(kinds))


def _channels(channels: Iterable[str]) -> str:
    return ", ".join(french.CHANNEL.get(c, c) for c in sorted(channels))


def _names(slas: Iterable[str] | None) -> str:
    return "tous" if slas is None else ", ".join(sorted(slas))


def _percent(ratio: float) -> str:
    return f"{round(100 * ratio, 1):g} %".replace(".", ",")


def _span(value: timedelta) -> str:
    return french.duration(value.total_seconds())

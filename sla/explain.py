"""The French explanation of an SLA clock, as a member would accept it: the rule, the start,
the deadline, the pauses, the verdict, and the public dictionary view of a clock.

Kept apart from the fold (``sla.clock``): the fold decides, this module only tells.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from . import french
from .clock import Clock, ClockStatus, Cycle, first_deadline
from .events import format_instant
from .policy import PolicyVersion, SlaDefinition


def explanation(clock: Clock, *, live: bool = True) -> str:
    """French explanation; ``live=False`` leaves out what depends on ``now`` (time left,
    overrun so far), for texts stored in events."""
    return _explain(clock, live)


def clock_view(clock: Clock) -> dict[str, Any]:
    """A clock as the API, the web pages and the dispute file show it."""
    d = clock.definition
    remaining = clock.remaining_seconds
    return {
        "sla": clock.sla,
        "title": d.title,
        "contractual": d.contractual,
        "status": str(clock.status),
        "at_risk": clock.at_risk,
        "deadline": format_instant(clock.deadline) if clock.deadline else None,
        "warning_at": format_instant(clock.warning_at) if clock.warning_at else None,
        "started_at": format_instant(clock.cycles[0].start) if clock.cycles else None,
        "stopped_at": format_instant(clock.stopped_at) if clock.stopped_at else None,
        "remaining_seconds": remaining,
        "rule": rule_text(d),
        "policy_version": clock.policy_version.id,
        "segments": [s.to_dict() for s in clock.segments()],
        "breached_deadlines": [format_instant(c.deadline) for c in clock.cycles if c.overdue],
        "retracted_deadlines": [format_instant(at) for at, _ in clock.retracted],
        "explanation": explanation(clock),
    }




def rule_text(d: SlaDefinition) -> str:
    if d.rule == "window" and d.calendar is not None:
        return (
            f"{french.duration(d.duration_seconds)} si déposée dans la plage {french.window(d.calendar)} ; "
            f"sinon {french.duration(d.duration_seconds)} après l'ouverture de la plage du jour ouvrable suivant"
        )
    if d.rule == "business" and d.calendar is not None:
        return f"{french.duration(d.duration_seconds)} ouvrées, {french.window(d.calendar)} hors jours fériés"
    if d.rule == "calendar":
        start = " ou ".join(french.SIGNAL_FROM.get(s, s) for s in sorted(d.starts_on))
        if d.months:
            span = "un mois calendaire" if d.months == 1 else f"{d.months} mois calendaires"
        else:
            span = "une semaine calendaire" if d.days == 7 else french.count(d.days, "jour calendaire")
        return f"{span} à compter {start}"
    return f"{french.duration(d.duration_seconds)} écoulées"


def _explain(clock: Clock, live: bool) -> str:
    d, v = clock.definition, clock.policy_version
    tz = v.tz
    parts: list[str] = []
    if not d.contractual:
        parts.append("Objectif interne (la convention ne fixe pas de durée).")
    if clock.status is ClockStatus.EXCLUDED:
        reason = clock.excluded_reason or ""
        # once: a reason that already says so is not prefixed with it again
        parts.append(f"{reason[:1].upper()}{reason[1:]}." if "hors engagement" in reason.lower()
                     else f"Hors engagements : {reason}.")
        return " ".join(parts)
    if not clock.cycles:
        starts = " ou ".join(french.SIGNAL.get(s, s) for s in sorted(d.starts_on))
        parts.append(f"Délai non démarré : il court {starts} ({rule_text(d)}).")
        return " ".join(parts)

    for index, cycle in enumerate(clock.cycles):
        parts.append(_explain_cycle(d, v, cycle, first=index == 0))
        parts.extend(_explain_pauses(d, v, cycle, tz))
        parts.append(_verdict(d, v, cycle, clock.now, tz, live=live))
    ends = [cycle.end for cycle in clock.cycles]
    for deadline, _ in clock.retracted:
        parts.append(
            f"Le manquement déclaré pour l'échéance du {french.instant(deadline, tz, beside=ends)} est retiré : "
            "les événements enregistrés depuis montrent que cette échéance n'a pas été dépassée."
        )
    return " ".join(p for p in parts if p)


def _deadlines(d: SlaDefinition, v: PolicyVersion, cycle: Cycle) -> list[datetime]:
    """The deadlines a cycle's actions are judged against: as first set, as each pause moved it."""
    if not cycle.moves:  # never moved: the deadline as first set is the cycle's
        return [cycle.deadline]
    return [_initial_deadline(d, v, cycle), *(deadline for _, _, deadline in cycle.moves), cycle.deadline]


def _actions(cycle: Cycle) -> list[datetime | None]:
    """The instants a cycle's verdict compares with a deadline: its end, each suspension."""
    return [cycle.end, *(paused_at for paused_at, _, _, _ in cycle.pauses)]


def _explain_cycle(d: SlaDefinition, v: PolicyVersion, cycle: Cycle, *, first: bool) -> str:
    tz = v.tz
    label = d.start_label if first else "Nouveau cycle"
    initial = _initial_deadline(d, v, cycle) if cycle.pauses else cycle.deadline
    due = f"{d.due_label} le {french.instant(initial, tz, beside=_actions(cycle))}"
    if d.rule == "window" and d.calendar is not None:
        cal = d.calendar
        # « dans la plage » or not is the filing compared with the window's edges that day
        filing_day = cycle.start.astimezone(tz).date()
        edges = [cal.at(filing_day, cal.open_at), cal.at(filing_day, cal.close_at)]
        head = f"{label} le {french.instant(cycle.start, tz, beside=edges)}"
        if cycle.counting_from == cycle.start:
            return f"{head}, dans la plage ({french.window(cal)}) : {due} ({french.duration(d.duration_seconds)})."
        # The filing day itself when it is a holiday: a Friday 10:00 is "hors plage" only then.
        skipped = [filing_day, *cal.skipped_days(filing_day, cycle.counting_from.astimezone(tz).date())]
        holidays = [
            f"{french.date(day)} férié : {cal.holiday_name(day)}"
            for day in skipped
            if cal.is_holiday(day)
        ]
        note = f" ({', '.join(holidays)})" if holidays else ""
        return f"{head}, hors plage ({french.window(cal)}) : {due}{note}."
    head = f"{label} le {french.instant(cycle.start, tz)}"
    note = _gap_note(d, cycle.start.astimezone(tz).replace(tzinfo=None), initial, tz)
    return f"{head} : {due} ({rule_text(d)}{note})."


def _explain_pauses(d: SlaDefinition, v: PolicyVersion, cycle: Cycle, tz: Any) -> list[str]:
    """Each pause, and the deadline it moved the clock to (« échéance reportée au … par la
    suspension »), from the fold's own record of the moves: the last deadline named is the
    one the verdict judges."""
    if not cycle.pauses:
        return []
    moved = {resumed_at: (remaining, deadline) for resumed_at, remaining, deadline in cycle.moves}
    deadlines, actions = _deadlines(d, v, cycle), _actions(cycle)
    parts = []
    for paused_at, resumed_at, _, resume_id in cycle.pauses:
        since = french.instant(paused_at, tz, beside=deadlines)
        if resumed_at is None:
            parts.append(f"Délai suspendu depuis le {since} (attente du demandeur).")
            continue
        parts.append(f"Délai suspendu du {since} au {french.instant(resumed_at, tz)} (attente du demandeur).")
        if resume_id is not None and resume_id == cycle.ended_by:
            continue  # ended while suspended: nothing was moved
        if resumed_at in moved:
            remaining, deadline = moved[resumed_at]
            target = resumed_at.astimezone(tz).replace(tzinfo=None) + timedelta(seconds=remaining)
            parts.append(f"Échéance reportée au {french.instant(deadline, tz, beside=actions)} par la suspension"
                         f"{_gap_note(d, target, deadline, tz)}.")
        else:  # suspended after its deadline had passed
            parts.append("L'échéance était déjà dépassée à la suspension : elle n'est pas reportée.")
    return parts


def _gap_note(d: SlaDefinition, target: datetime, deadline: datetime, tz: Any) -> str:
    """A calendar deadline keeps its wall time (``target``, naive local), unless the spring
    change skips it: then say so (« 02:30 n'existe pas ce jour-là »)."""
    if d.rule != "calendar":
        return ""
    end = deadline.astimezone(tz)
    if (target.hour, target.minute) == (end.hour, end.minute):
        return ""
    return (f" ; {french.clock_time(target.time())} n'existe pas ce jour-là (passage à l'heure d'été) : "
            f"échéance à {french.clock_time(end.time())}")


def _initial_deadline(d: SlaDefinition, v: PolicyVersion, cycle: Cycle) -> datetime:
    """The deadline as the cycle's start set it: only a resumption moves it (``Cycle.moves``),
    so an unmoved cycle's is its own, without computing it again (the projector explains
    every clock it writes: #31)."""
    return first_deadline(d, v, cycle.start)[1] if cycle.moves else cycle.deadline


def _verdict(d: SlaDefinition, v: PolicyVersion, cycle: Cycle, now: datetime, tz: Any, *, live: bool) -> str:
    """The verdict, measured from the deadline judged; when a pause moved it, the sentence
    names it again (the reader compares the overrun or the margin with that one). The
    deadline is written only by the sentences that name it (a met clock's does not: #31)."""
    def deadline() -> str:
        return french.instant(cycle.deadline, tz, beside=_actions(cycle))

    def judged() -> str:
        return f"l'échéance du {deadline()}"

    if cycle.end is not None:
        when = french.instant(cycle.end, tz, beside=_deadlines(d, v, cycle))
        what = d.stop_label if cycle.end_is_stop else "Information transmise, nouveau cycle"
        margin = (cycle.deadline - cycle.end).total_seconds()
        if cycle.overdue:
            late = french.duration(-margin)
            return (f"{what} le {when} : {judged()} est dépassée de {late}." if cycle.moves
                    else f"{what} le {when} : échéance dépassée de {late}.")
        if cycle.paused_at is not None or (cycle.pauses and cycle.pauses[-1][1] == cycle.end):
            return f"{what} le {when} : délai respecté."
        if cycle.moves:
            return f"{what} le {when} : délai respecté ({french.duration(margin)} avant {judged()})."
        return f"{what} le {when} : délai respecté ({french.duration(margin)} d'avance)."
    if cycle.paused_at is not None:
        if cycle.overdue:
            return f"Échéance du {deadline()} dépassée avant la suspension."
        return f"Il restera {french.duration(cycle.remaining)} à la reprise ; {judged()} sera reportée en conséquence."
    if cycle.overdue:
        if not live:
            return f"Rien n'était enregistré à l'échéance du {deadline()} : délai dépassé."
        since = french.duration((now - cycle.deadline).total_seconds())
        return (f"Échéance dépassée depuis {since} ({judged()})." if cycle.moves
                else f"Échéance dépassée depuis {since}.")
    if not live:
        return ""
    left = french.duration((cycle.deadline - now).total_seconds())
    return f"Temps restant : {left} avant {judged()}." if cycle.moves else f"Temps restant : {left}."

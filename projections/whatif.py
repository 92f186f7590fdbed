"""What-if (#29): every ticket of a period judged twice — by the policy versions that judged
it and by a draft policy — with the same ``sla/`` fold, to see which verdicts and deadlines
a renegotiated reading of Article 4 would change before it is adopted.

The comparison (``Comparison``) is pure: it takes each ticket's events and returns counts
per SLA (and per member) and every clock whose verdict or deadline changes, with the two
French explanations. The log is read by ``ticket_histories`` from the sources of the audit
replay (``audit.archive_records`` in ticket order, or ``audit.kafka_records``), one ticket
at a time: memory follows one ticket (the archive) or the tickets still open (the topic),
never the whole log. Nothing is written anywhere.

The breaches the live run declared stay in the log: a clock the draft no longer finds
breached counts as retracted (as the worker would retract it if the draft were adopted),
and stays out of the compliance rate, whose definition is the statement's
(``projections.compliance.rate``). Integrity is not checked here (the tickets are read in ticket
order, not along the hash chain): ``audit replay`` and ``audit verify`` do that.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sla import french
from sla.clock import Clock, ClockStatus, evaluate
from sla.events import Event, EventDecodeError, EventType, decode_event, format_instant
from sla.explain import explanation
from sla.policy import Policy, PolicyError
from sla.readings import changes
from sla.ticket import Ticket, fold

from . import report
from .audit.replay import Filters
from .audit.sources import LogRecord
from .compliance import rate as compliance

SCHEMA = "slaledger.what-if/1"
TITLE = "Simulation d'une politique — engagements de service (Article 4)"
_OPEN = (ClockStatus.RUNNING, ClockStatus.PAUSED, ClockStatus.PENDING)
_EPOCH = datetime(1, 1, 1, tzinfo=UTC)


def judging(draft: Policy, version_id: str | None) -> Policy:
    """The draft as it judges: each ticket by the draft version in force at its filing, or
    by the one ``version_id`` for every ticket (a version drafted to start later)."""
    if version_id is None:
        return draft
    return Policy((replace(draft.version(version_id), effective_from=_EPOCH),))


# --- reading the log, one ticket at a time ------------------------------------------------

def ticket_histories(records: Iterable[LogRecord], filters: Filters) -> Iterator[list[Event]]:
    """Each selected ticket's events (first copy of each), in log order, as soon as they are
    all read: when the next ticket starts (the archive read in ticket order), when the ticket
    is closed (a topic; closed is final), or at the end of the log. Unreadable records are
    skipped: ``audit replay`` is where they are reported."""
    pending: dict[str, list[Event]] = {}
    seen: dict[str, set[int]] = {}
    rejected: set[str] = set()
    ordered: str | None = None  # the ticket being read, when the log comes in ticket order
    for record in records:
        try:
            event = decode_event(record.raw)
        except EventDecodeError:
            continue
        ticket_id = event.ticket_id
        if "archive_seq" in record.source and ticket_id != ordered:
            yield from pending.values()  # the archive in ticket order: the previous ticket is complete
            pending.clear()
            seen.clear()
            rejected.clear()
            ordered = ticket_id
        if ticket_id in rejected:
            continue
        events = pending.get(ticket_id)
        if events is None:
            if event.type is EventType.TICKET_FILED and not filters.selects(event):
                rejected.add(ticket_id)
            if event.type is not EventType.TICKET_FILED or ticket_id in rejected:
                continue
            events = pending[ticket_id] = []
            seen[ticket_id] = set()
        if event.event_id.int in seen[ticket_id]:
            continue  # a later copy (at-least-once re-send)
        seen[ticket_id].add(event.event_id.int)
        events.append(event)
        if event.type is EventType.CLOSED and "archive_seq" not in record.source:
            yield pending.pop(ticket_id)
            del seen[ticket_id]
            rejected.add(ticket_id)  # events after closure change no clock (as in the audit replay)
    yield from pending.values()


# --- the comparison -----------------------------------------------------------------------

@dataclass
class Counts:
    judged: int = 0
    met: int = 0
    breached: int = 0
    retracted: int = 0
    excluded: int = 0
    open: int = 0

    def add(self, clock: Clock | None) -> None:
        if clock is None:
            return
        self.judged += 1
        name = "open" if clock.status in _OPEN else str(clock.status)
        setattr(self, name, getattr(self, name) + 1)

    def to_dict(self) -> dict[str, Any]:
        rate = compliance(self.met, self.breached)
        return {"judged": self.judged, "met": self.met, "breached": self.breached, "retracted": self.retracted,
                "excluded": self.excluded, "open": self.open, "compliance": rate,
                "compliance_percent": None if rate is None else round(100 * rate, 1)}


@dataclass
class Comparison:
    """Accumulates tickets judged under ``current`` and ``draft`` at ``now``."""

    current: Policy
    draft: Policy
    now: datetime
    by_member: bool = False
    tickets: int = 0
    events: int = 0
    counts: dict[tuple[str, str | None], tuple[Counts, Counts]] = field(default_factory=dict)
    changed: list[dict[str, Any]] = field(default_factory=list)
    unjudged: list[dict[str, str]] = field(default_factory=list)

    def add(self, events: list[Event]) -> None:
        ticket = fold(events)
        if not ticket.exists or ticket.filed_at is None:
            return
        self.tickets += 1
        self.events += len(events)
        before = self._judge(ticket, self.current, "actuelle")
        after = self._judge(ticket, self.draft, "projet")
        if before is None or after is None:
            return
        member = ticket.member if self.by_member else None
        for sla in (*before, *(s for s in after if s not in before)):
            old, new = before.get(sla), after.get(sla)
            pair = self.counts.get((sla, member))
            if pair is None:
                pair = self.counts[(sla, member)] = (Counts(), Counts())
            pair[0].add(old)
            pair[1].add(new)
            if _differs(old, new):
                named = new if new is not None else old
                assert named is not None  # ``sla`` is a key of one side at least
                self.changed.append({
                    "ticket_id": ticket.ticket_id, "member": ticket.member, "kind": ticket.kind,
                    "subject": ticket.subject, "filed_at": format_instant(ticket.filed_at), "sla": sla,
                    "title": named.definition.title,
                    "before": _side(old), "after": _side(new)})

    def _judge(self, ticket: Ticket, policy: Policy, which: str) -> dict[str, Clock] | None:
        try:
            return {c.sla: c for c in evaluate(ticket, policy, self.now)}
        except PolicyError as exc:  # filed outside every version, or a day its calendars do not list
            self.unjudged.append({"ticket_id": ticket.ticket_id, "policy": which, "reason": str(exc)})
            return None

    def document(self, *, source: str, filters: Filters, draft_name: str, draft_version: str | None,
                 generated_at: datetime | None = None) -> dict[str, Any]:
        """The machine-readable comparison (schema ``slaledger.what-if/1``)."""
        titles = {s.name: s.title for p in (self.current, self.draft) for v in p.versions for s in v.slas}
        order = {s.name: i for i, s in enumerate(self.current.versions[-1].slas)}
        keys = sorted(self.counts, key=lambda k: (order.get(k[0], len(order)), k[0], k[1] or ""))
        return {
            "schema": SCHEMA,
            "generated_at": format_instant((generated_at or datetime.now(UTC)).replace(microsecond=0)),
            "judged_at": format_instant(self.now),
            "source": source,
            "filters": {"member": filters.member,
                        "from": format_instant(filters.filed_from) if filters.filed_from else None,
                        "to": format_instant(filters.filed_to) if filters.filed_to else None},
            "by_member": self.by_member,
            "timezone": self.current.versions[-1].tz.key,
            "current_versions": [v.id for v in self.current.versions],
            "draft": {"name": draft_name, "version": draft_version, "versions": [v.id for v in self.draft.versions]},
            "policy_changes": changes(self.current, self.draft),
            "tickets": self.tickets,
            "events": self.events,
            "summary": [{"sla": sla, "title": titles.get(sla, sla), "member": member,
                         "before": self.counts[(sla, member)][0].to_dict(),
                         "after": self.counts[(sla, member)][1].to_dict()} for sla, member in keys],
            "changes": sorted(self.changed, key=lambda c: (c["filed_at"], c["ticket_id"], c["sla"])),
            "unjudged": self.unjudged,
        }


def _deadlines(clock: Clock) -> tuple[datetime, ...] | None:
    return None if clock.status is ClockStatus.EXCLUDED else tuple(c.deadline for c in clock.cycles)


def _differs(old: Clock | None, new: Clock | None) -> bool:
    if old is None or new is None:
        return old is not new
    return old.status is not new.status or _deadlines(old) != _deadlines(new)


def _side(clock: Clock | None) -> dict[str, Any] | None:
    if clock is None:
        return None
    status = str(clock.status)
    return {"verdict": status, "verdict_fr": french.VERDICT.get(status, status),
            "deadline": format_instant(clock.deadline) if clock.deadline else None,
            "policy_version": clock.policy_version.id, "explanation": explanation(clock, live=False)}


def compare(histories: Iterable[list[Event]], current: Policy, draft: Policy, now: datetime, *,
            by_member: bool = False) -> Comparison:
    comparison = Comparison(current, draft, now, by_member)
    for events in histories:
        comparison.add(events)
    return comparison


# --- writers: table, CSV, JSON, HTML and PDF -------------------------------------------------

def to_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def _rate(side: dict[str, Any]) -> str:
    return french.percent(side["compliance_percent"])


def _local(value: str | None, tz: ZoneInfo) -> str:
    if not value:
        return "—"
    return french.instant(datetime.fromisoformat(value.replace("Z", "+00:00")), tz)


def to_table(doc: dict[str, Any]) -> str:
    """For a terminal: the counts per SLA, then every change with both explanations."""
    tz = ZoneInfo(doc["timezone"])
    draft = doc["draft"]
    out = [f"Projet {draft['name']}" + (f" (version {draft['version']} pour tous les tickets)" if draft["version"]
                                         else ""),
           f"{doc['tickets']} ticket(s), {doc['events']} événement(s) ; jugés au {_local(doc['judged_at'], tz)}"]
    out += doc["policy_changes"] or ["Le projet ne change aucune règle."]
    out.append("")
    header = ("engagement", "membre", "jugés", "respectés", "manquements", "retirés", "hors eng.", "en cours",
              "conformité")
    rows = [header]
    for s in doc["summary"]:
        b, a = s["before"], s["after"]
        rows.append((s["sla"], s["member"] or "tous", *(f"{b[k]} → {a[k]}" if b[k] != a[k] else str(b[k])
                                                         for k in ("judged", "met", "breached", "retracted",
                                                                   "excluded", "open")),
                     f"{_rate(b)} → {_rate(a)}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    out += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    out.append("")
    out.append(f"{len(doc['changes'])} engagement(s) dont le verdict ou l'échéance change :")
    for c in doc["changes"]:
        b, a = c["before"], c["after"]
        out.append(f"- {c['ticket_id']} ({c['member']}) {c['sla']} : "
                   f"{b['verdict_fr'] if b else 'absent'} (échéance {_local(b and b['deadline'], tz)}) → "
                   f"{a['verdict_fr'] if a else 'absent'} (échéance {_local(a and a['deadline'], tz)})")
        out.append(f"    actuelle : {b['explanation'] if b else '—'}")
        out.append(f"    projet   : {a['explanation'] if a else '—'}")
    for u in doc["unjudged"]:
        out.append(f"! {u['ticket_id']} non jugé par la politique {u['policy']} : {u['reason']}")
    return "\n".join(out) + "\n"


CSV_COLUMNS = ("ticket_id", "member", "kind", "filed_at", "sla", "verdict_before", "verdict_after",
               "deadline_before", "deadline_after", "policy_version_before", "policy_version_after",
               "explanation_before", "explanation_after")


def to_csv(doc: dict[str, Any]) -> str:
    """One row per clock whose verdict or deadline changes (the counts are in the other
    formats), times in UTC ISO 8601."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for c in doc["changes"]:
        b, a = c["before"] or {}, c["after"] or {}
        writer.writerow([c["ticket_id"], c["member"], c["kind"], c["filed_at"], c["sla"],
                         b.get("verdict", ""), a.get("verdict", ""), b.get("deadline") or "", a.get("deadline") or "",
                         b.get("policy_version", ""), a.get("policy_version", ""),
                         b.get("explanation", ""), a.get("explanation", "")])
    return out.getvalue()


def to_html(doc: dict[str, Any], ticket_url: str | None = None) -> str:
    """The comparison as HTML (``templates/whatif.html``); ``ticket_url`` (e.g.
    ``/tickets/{ticket_id}``) links each ticket in the web view."""
    return report.render("whatif.html", doc=doc, title=TITLE, ticket_url=ticket_url)


def to_pdf(doc: dict[str, Any]) -> bytes:
    """That HTML printed by WeasyPrint, as the dispute file and the statement are."""
    return report.print_pdf(to_html(doc))

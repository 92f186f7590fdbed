"""The monthly statement of a member (« Relevé mensuel de conformité »), issue #16.

Computed from the SQL projection: each of the member's tickets filed before the month's end
is read from ``tickets.state`` (the fold the projector continues) and its clocks evaluated
with ``sla/`` — the same fold and the same French explanation as the dispute file
(``explanation(clock, live=False)``). The stored ``sla_clocks`` rows are not enough: they
hold only the current cycle of a periodic clock, while the month rule below needs the
instant each verdict was sealed, which only the fold's cycles carry.

The month rule (stated in the statement itself, in French): a clock counts in the calendar
month, in the policy's time zone (Europe/Paris), in which its verdict was sealed:

- met: when the clock stopped (the acknowledgement, the answer, …);
- breached: when its first missed deadline passed — the moment the breach happened,
  whatever was done afterwards;
- retracted (a declared breach the log later disproved): when the clock stopped;
- excluded (outside the commitments): when the request was filed.

So every decided clock is counted once, in one statement, and a statement issued after its
month ends no longer changes on its own: a clock still running at the month's end is counted
in the month it is decided. Rates are met / (met + breached); retracted and excluded clocks
are listed apart and do not enter the rate. The month rule and the rate are
``projections.compliance``'s, which the dashboards and the recording rules use too.

No SMTP, no files here: the edges (``slaledger.report_cli``, ``slaledger.mail``) render,
send and record.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, exists, func, select

from sla import french
from sla.clock import Clock, ClockStatus, evaluate
from sla.events import format_instant, parse_instant
from sla.explain import explanation, rule_text
from sla.policy import Policy, PolicyError
from sla.readings import pause_reading
from sla.ticket import Ticket, ticket_from_dict

from . import report, tree
from .compliance import VERDICTS, decided_at, rate
from .heads import head_covering
from .models import ARCHIVE, TICKETS

SCHEMA = "slaledger.monthly-statement/1"
_MONTH = re.compile(r"(\d{4})-(\d{2})")

RULE_FR = (
    "Règle de rattachement : un engagement est compté dans le mois civil (heure légale de {tz}) où son verdict "
    "est acquis — respecté : à l'arrêt du délai (prise en compte, réponse, …) ; manquement : à l'instant où la "
    "première échéance manquée a été dépassée, quelle que soit la suite ; manquement retiré (déclaré puis démenti "
    "par le journal) : à l'arrêt du délai ; hors engagement : au dépôt de la demande. Chaque engagement figure "
    "ainsi dans un seul relevé ; un délai encore en cours à la fin du mois sera compté dans le relevé du mois où "
    "il sera tranché. Taux de respect = respectés / (respectés + manquements) ; les manquements retirés et les "
    "engagements hors périmètre sont listés à part et n'entrent pas dans le taux."
)


class MonthError(ValueError):
    """A month that is not YYYY-MM, or one that has not started yet."""


@dataclass(frozen=True)
class Month:
    year: int
    number: int

    @classmethod
    def parse(cls, text: str) -> Month:
        match = _MONTH.fullmatch(text.strip())
        if not match or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 1970:
            raise MonthError(f"month {text!r}: expected YYYY-MM, e.g. 2026-11")
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def containing(cls, instant: datetime, tz: ZoneInfo) -> Month:
        local = instant.astimezone(tz)
        return cls(local.year, local.month)

    def next(self) -> Month:
        return Month(self.year + self.number // 12, self.number % 12 + 1)

    def previous(self) -> Month:
        return Month(self.year - (self.number == 1), (self.number - 2) % 12 + 1)

    def bounds(self, tz: ZoneInfo) -> tuple[datetime, datetime]:
        """[first instant, first instant of the next month) in local time. Midnight is never
        skipped nor repeated in Europe/Paris (the changes happen at 02:00/03:00), so the
        local midnights are unambiguous; a month holding the autumn change lasts one hour
        more than its days, the spring one one hour less."""
        nxt = self.next()
        return (datetime(self.year, self.number, 1, tzinfo=tz).astimezone(UTC),
                datetime(nxt.year, nxt.number, 1, tzinfo=tz).astimezone(UTC))

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.number:02d}"

    def french(self) -> str:
        return french.month(self.year, self.number)


def member_known(engine: Engine, member: str) -> bool:
    """Whether any ticket of the projection names this member."""
    with engine.connect() as conn:
        return bool(conn.scalar(select(exists().where(TICKETS.c.member == member))))


def member_tickets(engine: Engine, member: str, before: datetime) -> list[Ticket]:
    """The member's tickets filed before ``before``, with their folded state. No lower bound:
    a request filed long ago (a go-live waiting for the member's elements) can be decided in
    any later month."""
    query = (select(TICKETS.c.state).where(TICKETS.c.member == member, TICKETS.c.filed_at < before)
             .order_by(TICKETS.c.filed_at, TICKETS.c.ticket_id))
    with engine.connect() as conn:
        return [ticket_from_dict(state) for state in conn.scalars(query)]


def monthly_head(engine: Engine, instant: datetime) -> dict[str, Any] | None:
    """The signed tree head of the month's end (``instant``), as ``SignedHead.to_dict()``: the
    first one signed after it, which covers the whole month (the projector signs at least
    daily), else the last one before it; None when no head was ever signed."""
    head = head_covering(engine, instant)
    return head.to_dict() if head is not None else None


def previous_link(engine: Engine, month: Month, tz: ZoneInfo, head: dict[str, Any] | None) -> dict[str, Any] | None:
    """The link of a statement to the previous month's: that statement's head (the one of
    the month's start, ``monthly_head``) and the RFC 6962 consistency proof (hex) from its
    tree to this statement's. ``slaledger audit check-statements`` checks the chain offline:
    a log rewritten between two statements breaks it. None when either head is missing."""
    start, _ = month.bounds(tz)
    previous = head_covering(engine, start)
    if previous is None or head is None or previous.tree_size > int(head["tree_size"]):
        return None
    proof: list[bytes] = []
    if 0 < previous.tree_size < int(head["tree_size"]):
        with engine.connect() as conn:
            proof = tree.consistency(conn, previous.tree_size, int(head["tree_size"]))
    return {"month": str(month.previous()), "head": previous.to_dict(), "consistency_proof": [p.hex() for p in proof]}


def uncovered_by_head(engine: Engine, head: dict[str, Any] | None, instant: datetime) -> int:
    """How many events recorded before ``instant`` (the month's end) the head does not cover:
    0 when it seals the whole month; said in the statement otherwise, never left implicit."""
    size = int(head["tree_size"]) if head else 0
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(ARCHIVE).where(
            ARCHIVE.c.recorded_at < instant, ARCHIVE.c.leaf_index >= size)) or 0)


def statement(tickets: list[Ticket], policy: Policy, month: Month, *, member: str, member_name: str,
              generated_at: datetime, head: dict[str, Any] | None) -> dict[str, Any]:
    """The machine-readable statement (schema ``slaledger.monthly-statement/1``): every clock
    decided in ``month``, per SLA counts and rates, breaches with their explanations."""
    tz = policy.versions[-1].tz
    start, end = month.bounds(tz)
    if generated_at < start:
        raise MonthError(f"month {month}: it has not started yet")
    counted: list[dict[str, Any]] = []
    still_open = 0
    titles: dict[str, tuple[str, bool]] = {s.name: (s.title, s.contractual)
                                           for v in policy.versions for s in v.slas}
    for ticket in tickets:
        if not ticket.exists or ticket.filed_at is None or ticket.filed_at >= end:
            continue
        try:
            clocks = evaluate(ticket, policy, generated_at)
        except PolicyError:  # filed outside every version: the dispute file shows no clock either
            continue
        for clock in clocks:
            when = decided_at(clock, ticket.filed_at)
            if when is None or when >= end:
                if clock.status is not ClockStatus.EXCLUDED and clock.cycles and clock.cycles[0].start < end:
                    still_open += 1
                continue
            if when < start:
                continue
            counted.append(_clock_entry(ticket, clock, when))
    counted.sort(key=lambda c: (c["decided_at"], c["ticket_id"], c["sla"]))
    order = [s.name for s in policy.versions[-1].slas]
    order += sorted({s for v in policy.versions for s in (d.name for d in v.slas)} - set(order))
    summary = []
    for sla in order:
        mine = [c for c in counted if c["sla"] == sla]
        n = {v: sum(1 for c in mine if c["verdict"] == v) for v in VERDICTS}
        compliance = rate(n["met"], n["breached"])
        title, contractual = titles[sla]
        summary.append({"sla": sla, "title": title, "contractual": contractual, **n, "counted": len(mine),
                        "rate": compliance,
                        "rate_percent": None if compliance is None else round(100 * compliance, 1)})
    return {
        "schema": SCHEMA,
        "member": {"id": member, "name": member_name},
        "month": str(month),
        "month_fr": month.french(),
        "period": {"start": format_instant(start), "end": format_instant(end)},
        "timezone": tz.key,
        "generated_at": format_instant(generated_at.replace(microsecond=0)),
        # issued before the month's end: later verdicts of the month are still to come
        "provisional": generated_at < end,
        "rule": RULE_FR.format(tz=tz.key),
        # which waits suspend which clock, as the versions that judged the month read it
        "pauses": pauses(policy, {c["policy_version"] for c in counted}, start),
        "summary": summary,
        "clocks": counted,
        "breaches": [c for c in counted if c["verdict"] == "breached"],
        "open_at_end": still_open,
        "head": head,
    }


def pauses(policy: Policy, judged: set[str], start: datetime) -> list[dict[str, str]]:
    """The pause setting of every SLA of the versions that judged a clock of the month (the
    version in force at its start when none did), quoted in the statement."""
    if not judged:
        try:
            judged = {policy.version_for(start).id}
        except PolicyError:
            judged = set()
    return [{"policy_version": v.id, "sla": s.name, "title": s.title, "reading": pause_reading(s)}
            for v in policy.versions if v.id in judged for s in v.slas]


def _clock_entry(ticket: Ticket, clock: Clock, when: datetime) -> dict[str, Any]:
    status = str(clock.status)
    overrun = None
    if clock.status is ClockStatus.BREACHED:
        first = min((c for c in clock.cycles if c.overdue), key=lambda c: c.deadline)
        until = first.end if first.end is not None else clock.now
        overrun = (until - first.deadline).total_seconds()
    return {
        "ticket_id": ticket.ticket_id, "subject": ticket.subject, "kind": ticket.kind, "product": ticket.product,
        "filed_at": format_instant(ticket.filed_at) if ticket.filed_at else None,
        "sla": clock.sla, "title": clock.definition.title, "contractual": clock.definition.contractual,
        "verdict": status, "verdict_fr": french.VERDICT.get(status, status),
        "decided_at": format_instant(when),
        "deadline": format_instant(clock.deadline) if clock.deadline else None,
        "stopped_at": format_instant(clock.stopped_at) if clock.stopped_at else None,
        # a breach still unanswered when the statement is issued: the overrun so far
        "overrun_seconds": overrun,
        "rule": rule_text(clock.definition), "policy_version": clock.policy_version.id,
        "explanation": explanation(clock, live=False),
    }


def build(engine: Engine, policy: Policy, month: Month, *, member: str, member_name: str,
          generated_at: datetime | None = None, head: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read the member's tickets from SQL and compute their statement for ``month``."""
    generated_at = generated_at or datetime.now(UTC)
    _, end = month.bounds(policy.versions[-1].tz)
    return statement(member_tickets(engine, member, end), policy, month, member=member, member_name=member_name,
                     generated_at=generated_at, head=head)


# --- writers: JSON, CSV, HTML and PDF -----------------------------------------------------------

# How the fields of a signed tree head are named in the statement (a field not named here is
# shown under its own name; ``schema`` names the format, for programs only).
HEAD_LABELS = {"head_id": "Tête n°", "tree_size": "Taille de l'arbre (événements)",
               "size": "Taille de l'arbre (événements)", "root_hash": "Racine de l'arbre de Merkle (SHA-256)",
               "root": "Racine de l'arbre de Merkle (SHA-256)", "timestamp": "Signée le",
               "policy_versions": "Politiques en vigueur", "key_id": "Empreinte de la clé publique",
               "signature": "Signature Ed25519", "origin": "Journal (origine)",
               "checkpoint": "Point de contrôle signé (C2SP) et contresignatures des témoins"}
TITLE = "Relevé mensuel de conformité"


def head_rows(head: dict[str, Any], tz: ZoneInfo) -> list[tuple[str, str]]:
    """The signed head as the statement prints it: French labels, readable values (a local
    time, policy ids), no format name."""
    rows = []
    for key, value in head.items():
        if key == "schema":
            continue
        if key == "timestamp" and isinstance(value, str):
            value = report.local(value, tz)
        elif isinstance(value, list):
            value = ", ".join(str(v.get("id", v)) if isinstance(v, dict) else str(v) for v in value)
        rows.append((HEAD_LABELS.get(key, key), str(value)))
    return rows


def to_html(doc: dict[str, Any]) -> str:
    """The statement as HTML (``templates/monthly.html``), styled like the dispute file."""
    head = head_rows(doc["head"], ZoneInfo(doc["timezone"])) if doc.get("head") else []
    return report.render("monthly.html", doc=doc, title=TITLE, duration=french.duration, head_rows=head)


def to_pdf(doc: dict[str, Any]) -> bytes:
    """That HTML printed by WeasyPrint, as the dispute file is."""
    return report.print_pdf(to_html(doc))


def to_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, indent=2, sort_keys=True) + "\n"


CSV_COLUMNS = ("member", "month", "sla", "sla_title", "contractual", "ticket_id", "verdict", "verdict_fr",
               "decided_at_local", "deadline_local", "overrun_seconds", "policy_version", "explanation")


def to_csv(doc: dict[str, Any]) -> str:
    """One row per clock counted in the month (a spreadsheet recomputes any rate from it),
    times in local time with their offset."""
    tz = ZoneInfo(doc["timezone"])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for c in doc["clocks"]:
        writer.writerow([
            doc["member"]["id"], doc["month"], c["sla"], c["title"], "yes" if c["contractual"] else "no",
            c["ticket_id"], c["verdict"], c["verdict_fr"], _local_iso(c["decided_at"], tz, c["deadline"]),
            _local_iso(c["deadline"], tz, c["decided_at"]),
            "" if c["overrun_seconds"] is None else round(c["overrun_seconds"]),
            c["policy_version"], c["explanation"],
        ])
    return out.getvalue()


def _local_iso(value: str | None, tz: ZoneInfo, beside: str | None) -> str:
    """« 2026-11-02T13:00+01:00 »: to the minute, finer only where the verdict's two instants
    (decided, deadline) would read the same."""
    if not value:
        return ""
    others = [parse_instant(beside, "time")] if beside else []
    return french.stamp(parse_instant(value, "time"), tz, beside=others)


def month_due(now: datetime, tz: ZoneInfo, hour: int = 6) -> Month:
    """The latest month whose statement is due at ``now``: the previous month from the 1st at
    ``hour`` (local), the one before until then."""
    current = Month.containing(now, tz)
    first = datetime(current.year, current.number, 1, hour, tzinfo=tz)
    due = current.previous()
    return due if now >= first else due.previous()


def next_run(now: datetime, tz: ZoneInfo, hour: int = 6) -> datetime:
    """The next 1st of a month at ``hour`` local time strictly after ``now``."""
    current = Month.containing(now, tz)
    first = datetime(current.year, current.number, 1, hour, tzinfo=tz)
    if now < first:
        return first.astimezone(UTC)
    nxt = current.next()
    return datetime(nxt.year, nxt.number, 1, hour, tzinfo=tz).astimezone(UTC)


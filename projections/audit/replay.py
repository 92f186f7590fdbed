"""The replay: the log folded with the very same ``sla/`` code as the live pipeline,
streaming, checked as it is read (``integrity``); and ``verify_projection``, the live SQL
projection against a fresh replay (``audit verify``).

The log comes from Kafka (every partition from offset 0 to the end captured at start, no
consumer group) or from the SQL archive. One ticket's dispute file from the archive reads
only that ticket's rows and checks them against the Merkle tree and a signed tree head
(``evidence``); the whole-archive walk stays in whole replays and ``audit verify``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from sla.clock import Clock, ClockStatus, evaluate
from sla.events import Event, EventDecodeError, EventType, decode_event, envelope_ids, format_instant
from sla.policy import Policy, PolicyError
from sla.ticket import Ticket

from .. import ticket_map
from ..evidence import Leaf, ticket_evidence, verify_tree
from ..heads import SignedHead
from ..metrics import aware
from ..models import CLOCKS, TICKETS
from .integrity import RESEND_WINDOW, ChainVerifier, Finding, TicketVerifier, TopicVerifier
from .sources import LogRecord


@dataclass
class Filters:
    ticket: str | None = None
    member: str | None = None
    filed_from: datetime | None = None
    filed_to: datetime | None = None
    as_of: datetime | None = None

    def selects(self, event: Event) -> bool:
        """Whether a ticket is in scope, judged on its filing event."""
        p = event.payload
        return (
            (self.ticket is None or event.ticket_id == self.ticket)
            and (self.member is None or p.get("member") == self.member)
            and (self.filed_from is None or event.occurred_at >= self.filed_from)
            and (self.filed_to is None or event.occurred_at < self.filed_to)
        )


@dataclass
class TicketAudit:
    ticket_id: str
    timeline: list[tuple[Event, LogRecord]] = field(default_factory=list)
    known_then: Ticket | None = None  # events recorded up to as_of (or all)
    full_log: Ticket | None = None  # events that occurred up to as_of, whenever recorded
    seen: set[int] = field(default_factory=set)  # event ids read: a later copy is a re-send


@dataclass
class SlaSummary:
    """Verdict counts and breaches of one SLA: what the per-member/period report needs of a
    ticket once it is closed (closed is final: nothing can change its clocks any more)."""

    met: int = 0
    breached: int = 0
    retracted: int = 0
    excluded: int = 0
    open: int = 0
    breaches: list[dict[str, Any]] = field(default_factory=list)

    def add(self, ticket_id: str, member: str, clock: Clock) -> None:
        status = str(clock.status)
        if status in ("met", "breached", "retracted", "excluded"):
            setattr(self, status, getattr(self, status) + 1)
        else:
            self.open += 1
        if clock.status is ClockStatus.BREACHED:
            self.breaches.append({"ticket": ticket_id, "member": member,
                                  "deadline": format_instant(clock.deadline) if clock.deadline else None})


@dataclass
class AuditResult:
    generated_at: datetime
    source: str
    filters: Filters
    events_read: int
    chain_head: str | None
    findings: list[Finding]
    tickets: dict[str, TicketAudit]
    policy: Policy
    resent_records: int = 0  # identical duplicate records in a topic (re-sends)
    # Closed tickets folded into counts and dropped (whole-log replays without timelines).
    closed_summary: dict[str, SlaSummary] = field(default_factory=dict)
    closed_summarized: int = 0
    # Whether the log was checked: the archive's hash chain, or the topic against the
    # archive. A topic replayed without the archive is folded but not verified.
    verified: bool = False
    # One ticket from the archive: the signed head and each event's inclusion proof.
    evidence: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.findings




def replay(records: Iterator[LogRecord], policy: Policy, filters: Filters, *, source: str,
           engine: Engine | None = None, timelines: bool = True, summarize_closed: bool = False,
           head: SignedHead | None = None,
           signer: Callable[[], SignedHead] | None = None, resend_window: int = RESEND_WINDOW) -> AuditResult:
    """Fold the log. ``timelines=False`` keeps only each ticket's folded state, not its
    events. ``summarize_closed`` (without timelines or ``as_of``) also folds each ticket into
    per-SLA counts when it closes and forgets it, so a whole-log replay holds only the open
    tickets: memory follows the open queue, not the history.

    One ticket from the archive with its database (``engine``): its rows are checked against
    the Merkle tree and each event gets an inclusion proof to ``head`` (default: the latest
    signed head; ``signer`` signs a new one when that does not cover the ticket). Pass
    ``archive_records(engine, ticket=…)`` so that only its rows are read. Other files from the
    archive with timelines (a member, a period) walk the whole chain and get the same proofs."""
    by_tree = source == "archive" and filters.ticket is not None and engine is not None
    chain = ChainVerifier() if source == "archive" and not by_tree else None
    ticket_check = TicketVerifier(engine, filters.ticket) if by_tree and engine and filters.ticket else None
    # Without the archive, the topic is still checked for an event id whose copies differ.
    topic_check = TopicVerifier(engine, resend_window) if source == "kafka" else None
    findings: list[Finding] = []
    selected: dict[str, TicketAudit] = {}
    rejected: set[str] = set()
    summarize = summarize_closed and not timelines and filters.as_of is None
    closed_summary: dict[str, SlaSummary] = defaultdict(SlaSummary)
    closed = 0  # tickets summarized and forgotten: their later copies are found by the topic check
    count = 0
    # One ticket's dispute file from the archive: every row's hash and link are still
    # checked, but only that ticket's rows are decoded and folded.
    single = filters.ticket if (chain is not None or ticket_check is not None) and topic_check is None else None
    for record in records:
        count += 1
        if single is not None:
            other = _other_ticket(record.raw, single)
            if other is not None:
                if chain is not None:
                    chain.check(record, other)
                continue
        try:
            event: Event | None = decode_event(record.raw)
        except EventDecodeError as exc:
            event = None
            findings.append(Finding("unreadable", f"Enregistrement illisible ({record.describe()}) : {exc}"))
        if chain is not None:
            chain.check(record, str(event.event_id) if event else None)
        if ticket_check is not None:
            ticket_check.check(record, str(event.event_id) if event else None)
        if topic_check is not None and topic_check.check(record, event):
            continue  # a later copy (at-least-once re-send): every reader keeps the first
        if event is None or event.ticket_id in rejected:
            continue
        audit = selected.get(event.ticket_id)
        if audit is None:
            if event.type is not EventType.TICKET_FILED or not filters.selects(event):
                if event.type is EventType.TICKET_FILED:
                    rejected.add(event.ticket_id)
                continue
            # Without --as-of both views are the same fold: one state, not two.
            audit = selected[event.ticket_id] = TicketAudit(
                event.ticket_id, known_then=Ticket(event.ticket_id),
                full_log=Ticket(event.ticket_id) if filters.as_of else None)
        if event.event_id.int in audit.seen:
            continue  # a later copy (at-least-once re-send): the first one counts, once
        audit.seen.add(event.event_id.int)
        if timelines:
            audit.timeline.append((event, record))
        as_of = filters.as_of
        assert audit.known_then is not None
        if as_of is None or event.recorded_at <= as_of:
            audit.known_then.apply(event)
        if audit.full_log is not None and as_of is not None and event.occurred_at <= as_of:
            audit.full_log.apply(event)
        if summarize and event.type is EventType.CLOSED:
            for clock in clocks(audit.known_then, policy, event.occurred_at):
                closed_summary[clock.sla].add(event.ticket_id, audit.known_then.member, clock)
            del selected[event.ticket_id]
            closed += 1
    chain_head = None
    if chain is not None:
        chain.finish(engine)
        findings = chain.findings + findings
        chain_head = chain.prev if count else None
    if topic_check is not None:
        extra, chain_head = topic_check.finish()
        findings = extra + findings
    evidence = None
    if ticket_check is not None and engine is not None:
        evidence, proof_findings = ticket_evidence(engine, ticket_check.leaves(), head, signer)
        findings = ticket_check.finish() + [Finding(k, m) for k, m in proof_findings] + findings
    elif chain is not None and engine is not None and timelines and selected:
        # a member's or a period's file from the archive: the same proofs for every event shown
        leaves = [Leaf(str(e.event_id), r.leaf_index, r.raw, e.ticket_id) for a in selected.values()
                  for e, r in a.timeline]
        evidence, proof_findings = ticket_evidence(engine, leaves, head, signer)
        findings = findings + [Finding(k, m) for k, m in proof_findings]
    verified = chain is not None or ticket_check is not None or (topic_check is not None and engine is not None)
    return AuditResult(datetime.now(UTC), source, filters, count, chain_head, findings, selected, policy,
                       topic_check.resent if topic_check else 0, dict(closed_summary), closed, verified,
                       evidence)


def _other_ticket(raw: bytes, ticket_id: str) -> str | None:
    """The event id of an archived envelope that belongs to another ticket than
    ``ticket_id``; None when it is that ticket's or unreadable (then it is decoded in full).
    An envelope altered to fool the byte patterns fails its hash."""
    ids = envelope_ids(raw)
    if ids is None or ids[1] == ticket_id:
        return None
    return ids[0]



def clocks(ticket: Ticket | None, policy: Policy, now: datetime) -> list[Clock]:
    """The ticket's clocks at ``now``; none for a ticket never filed or one the policy
    cannot judge (the replay reports what it can, it does not stop on one ticket)."""
    if ticket is None or not ticket.exists:
        return []
    try:
        return evaluate(ticket, policy, now)
    except PolicyError:
        return []


def verify_projection(engine: Engine, records: Iterator[LogRecord], policy: Policy, *, source: str) -> list[str]:
    """Every difference between the live SQL projection and a fresh replay of the log, and
    between the archive and its Merkle tree and signed heads (``evidence.verify_tree``) or
    its map of histories (``ticket_map.verify``), one French line each (``audit verify`` is
    read by an auditor)."""
    # no timelines: only the folded states are compared (and no proofs: verify_tree checks every row)
    result = replay(records, policy, Filters(), source=source, engine=engine, timelines=False)
    out = [f"intégrité : {f.message}" for f in result.findings]
    out += [f"preuves : {line}" for line in verify_tree(engine)]
    with engine.connect() as conn:
        out += [f"preuves : {line}" for line in ticket_map.verify(conn)]
    with engine.connect() as conn:
        live = {r.ticket_id: r for r in conn.execute(select(TICKETS))}
        live_clocks = {(r.ticket_id, r.sla): r for r in conn.execute(select(CLOCKS))}
    for ticket_id in sorted(set(live) | set(result.tickets)):
        audit = result.tickets.get(ticket_id)
        row = live.get(ticket_id)
        if audit is None or audit.known_then is None:
            out.append(f"{ticket_id} : dans la projection, absent du journal")
            continue
        if row is None:
            out.append(f"{ticket_id} : dans le journal, absent de la projection")
            continue
        ticket = audit.known_then
        for name, label, replayed in (("status", "statut", str(ticket.status)), ("version", "version", ticket.version),
                                      ("member", "membre", ticket.member), ("kind", "type", ticket.kind)):
            if getattr(row, name) != replayed:
                out.append(f"{ticket_id} : {label} {getattr(row, name)!r} dans la projection, "
                           f"{replayed!r} dans le journal")
        for clock in clocks(ticket, policy, datetime.now(UTC)):
            stored = live_clocks.get((ticket_id, clock.sla))
            if stored is None:
                out.append(f"{ticket_id}/{clock.sla} : délai absent de la projection")
                continue
            deadline, stored_deadline = clock.deadline, aware(stored.deadline)
            if stored_deadline != deadline:
                out.append(f"{ticket_id}/{clock.sla} : échéance {stored_deadline} dans la projection, "
                           f"{deadline} dans le journal")
            final = {"met", "breached", "retracted", "excluded"}
            if str(clock.status) in final and stored.status != str(clock.status):
                out.append(f"{ticket_id}/{clock.sla} : verdict {stored.status} dans la projection, "
                           f"{clock.status} dans le journal")
    return out

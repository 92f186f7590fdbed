"""Audit replay: rebuild any past moment from the event log to settle a dispute.

Reads the log from Kafka (every partition from offset 0 to the end captured at start, no
consumer group) or from the SQL archive, streaming, and folds it with the very same
``sla/`` code as the live pipeline. ``as_of`` answers "what did you know when you
declared the breach?": events recorded after that moment are ignored, and next to it the
report shows what the full log says about that same moment today (late events,
retractions).

Integrity: the archive's SHA-256 chain is recomputed row by row; a topic is checked
against the archive (same bytes for the same event id, same order per ticket, nothing
missing, nothing unknown). One ticket's dispute file from the archive reads only that
ticket's rows and checks them against the Merkle tree and a signed tree head
(``evidence``): its cost follows the ticket, not the archive (O(events × log N)); the
whole-archive walk stays in whole replays and ``audit verify``. Any finding is reported at
the top and makes the command fail.
"""

from __future__ import annotations

import base64
import json
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import structlog
from sqlalchemy import Engine, func, select

from sla import french
from sla.clock import Clock, ClockStatus, evaluate
from sla.events import (
    Event,
    EventDecodeError,
    EventType,
    decode_event,
    envelope_ids,
    format_instant,
)
from sla.policy import Policy, PolicyError, PolicyVersion
from sla.readings import pause_reading
from sla.ticket import Ticket
from sla.view import antedated
from streams.kafka_tools import read_topic_in_child
from streams.topics import EVENTS, is_tree_head, tree_head_shaped

from . import merkle, ticket_map, tree
from .archive_hash import GENESIS_HASH, chain_hash
from .archive_hash import digest as archive_digest
from .dispute_check import clock_doc
from .evidence import Leaf, ticket_evidence, verify_tree
from .heads import SignedHead
from .metrics import aware
from .models import ARCHIVE, ARCHIVE_HEAD, CHECKPOINTS, TICKETS

SCHEMA = "slaledger.dispute-file/1"
log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class LogRecord:
    """One record of the log as read, with where it came from."""

    raw: bytes
    source: dict[str, Any]  # {"topic", "partition", "offset"} or {"archive_seq"}
    prev_hash: str | None = None  # archive only
    hash: str | None = None
    leaf_index: int | None = None  # archive only: the row's leaf in the Merkle tree


@dataclass
class Finding:
    kind: str  # altered | missing | duplicated | reordered | unknown | unreadable
    message: str  # French, for the report

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message}


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


# --- reading the log --------------------------------------------------------------------

def archive_records(engine: Engine, batch: int = 5000, *, ticket: str | None = None,
                    by_ticket: bool = False) -> Iterator[LogRecord]:
    """The archive in append order; ``ticket``: only that ticket's rows (its index), for a
    one-ticket dispute file checked against the Merkle tree instead of the whole chain;
    ``by_ticket``: ticket after ticket, each in append order (the what-if folds one ticket
    at a time; the chain is not walked then)."""
    query = select(ARCHIVE.c.seq, ARCHIVE.c.envelope, ARCHIVE.c.prev_hash, ARCHIVE.c.hash, ARCHIVE.c.leaf_index)
    if ticket is not None:
        query = query.where(ARCHIVE.c.ticket_id == ticket)
    with engine.connect() as conn:
        order = (ARCHIVE.c.ticket_id, ARCHIVE.c.seq) if by_ticket else (ARCHIVE.c.seq,)
        result = conn.execution_options(yield_per=batch).execute(query.order_by(*order))
        for seq, envelope, prev_hash, digest, leaf in result:
            yield LogRecord(envelope.encode(), {"archive_seq": seq}, prev_hash, digest, leaf)


def kafka_records(bootstrap: str, topic: str = EVENTS) -> Iterator[LogRecord]:
    """The topic's ticket events (read by a child process while this one folds: see
    ``read_topic_in_child``); the signed tree heads published there are not events and
    are skipped (one under the head key that is not a head is reported as unreadable)."""
    for partition, offset, key, value in read_topic_in_child(bootstrap, topic, timeout=3600):
        if is_tree_head(key) and tree_head_shaped(value):
            continue
        yield LogRecord(cast(bytes, value), {"topic": topic, "partition": partition, "offset": offset})


class ChainVerifier:
    """Recomputes the archive's hash chain as rows stream by.

    A row whose own hash does not match its content was altered; a row whose link points
    to a hash never seen follows a deleted row (missing); one pointing to an older row
    was moved (reordered); an event id seen twice was duplicated. Each finding is
    reported once and the check continues from the stored hash, so one tampering does
    not drown the report.
    """

    def __init__(self) -> None:
        self.prev = GENESIS_HASH
        self.findings: list[Finding] = []
        self.seen_ids: set[str] = set()
        self.seen_hashes: set[str] = {GENESIS_HASH}
        self.last_seq: int | None = None

    def check(self, record: LogRecord, event_id: str | None) -> None:
        seq = record.source.get("archive_seq")
        stored_prev = record.prev_hash or ""
        if record.hash != chain_hash(stored_prev, record.raw):
            self.findings.append(Finding("altered", f"Archive, ligne {seq} : le contenu ne correspond plus à "
                                                    "son empreinte (événement modifié)."))
        if stored_prev != self.prev:
            if stored_prev in self.seen_hashes:
                self.findings.append(Finding("reordered", f"Archive, ligne {seq} : l'événement n'est plus à sa "
                                                          "place dans la chaîne (ordre modifié)."))
            else:
                self.findings.append(Finding("missing", f"Archive, ligne {seq} : l'événement qui la précédait "
                                                        "dans la chaîne a disparu (événement supprimé)."))
        if event_id is not None:
            if event_id in self.seen_ids:
                self.findings.append(Finding("duplicated", f"Archive, ligne {seq} : l'événement {event_id} "
                                                           "figure deux fois."))
            self.seen_ids.add(event_id)
        self.prev = record.hash or ""
        self.seen_hashes.add(self.prev)
        self.last_seq = seq

    def finish(self, engine: Engine | None) -> None:
        """The archive must end where the projector last wrote it (its recorded head)."""
        if engine is None:
            return
        with engine.connect() as conn:
            head = conn.scalar(select(CHECKPOINTS.c.offset).where(CHECKPOINTS.c.topic == ARCHIVE_HEAD))
        if head is not None and (self.last_seq or 0) < head:
            self.findings.append(Finding("missing", f"Archive : elle s'arrête à la ligne {self.last_seq or 0} alors "
                                                    f"que la dernière ligne écrite était la {head} (lignes finales "
                                                    "supprimées)."))


class TicketVerifier:
    """One ticket's archive rows against the Merkle tree: each row's envelope against its
    stored leaf (altered), leaves in row order (reordered), an event or a leaf twice
    (duplicated), fewer rows than the projection applied or an archive cut short (missing).
    O(rows × log N): the rows of other tickets are not read."""

    def __init__(self, engine: Engine, ticket_id: str) -> None:
        self.engine, self.ticket_id = engine, ticket_id
        self.rows: list[tuple[LogRecord, str | None]] = []

    def check(self, record: LogRecord, event_id: str | None) -> None:
        self.rows.append((record, event_id))

    def leaves(self) -> list[Leaf]:
        return [Leaf(eid or "?", r.leaf_index, r.raw, self.ticket_id) for r, eid in self.rows]

    def finish(self) -> list[Finding]:
        out: list[Finding] = []
        with self.engine.connect() as conn:
            stored = tree.leaves(conn, [r.leaf_index for r, _ in self.rows if r.leaf_index is not None])
            version = conn.scalar(select(TICKETS.c.version).where(TICKETS.c.ticket_id == self.ticket_id))
            head = conn.scalar(select(CHECKPOINTS.c.offset).where(CHECKPOINTS.c.topic == ARCHIVE_HEAD))
            last = conn.scalar(select(func.max(ARCHIVE.c.seq)))
        ids: set[str] = set()
        previous = -1
        for record, eid in self.rows:
            seq, leaf = record.source.get("archive_seq"), record.leaf_index
            if leaf is None or leaf not in stored:
                out.append(Finding("unknown", f"Archive, ligne {seq} : l'événement n'a pas de feuille dans "
                                              "l'arbre de Merkle (ajouté hors de l'archive)."))
            elif stored[leaf] != merkle.leaf_hash(record.raw):
                out.append(Finding("altered", f"Archive, ligne {seq} : le contenu ne correspond plus à sa feuille "
                                              "de l'arbre de Merkle (événement modifié)."))
            if (eid is not None and eid in ids) or (leaf is not None and leaf == previous):
                out.append(Finding("duplicated", f"Archive, ligne {seq} : l'événement {eid} figure deux fois."))
            elif leaf is not None and leaf < previous:
                out.append(Finding("reordered", f"Archive, ligne {seq} : l'événement n'est plus à sa place "
                                                "(ordre modifié)."))
            if eid is not None:
                ids.add(eid)
            previous = leaf if leaf is not None else previous
        if version is not None and len(ids) < version:
            out.append(Finding("missing", f"Ticket {self.ticket_id} : {len(ids)} événement(s) dans l'archive alors "
                                          f"que {version} ont été appliqués (événement supprimé)."))
        if head is not None and (last or 0) < head:
            out.append(Finding("missing", f"Archive : elle s'arrête à la ligne {last or 0} alors que la dernière "
                                          f"ligne écrite était la {head} (lignes finales supprimées)."))
        return out


# Records of a partition within which a later copy of an event is recognised when the topic
# is replayed without its archive. A copy is written again by a worker that crashed before
# storing what it had decided (the batch since its last stored position, at most 2,000
# commands: measured, a few hundred records after a SIGKILL) or by a producer retry (the
# next records): 20,000 records is ten such batches (about 10 MiB for 4 partitions). With
# the archive, every copy is found, however far: the archive names the first one.
RESEND_WINDOW = 20_000
# Topic records looked up in the archive per round trip.
ARCHIVE_PAGE = 2_000


@dataclass(frozen=True)
class _Pending:
    """A topic record waiting for its archive row (``TopicVerifier.flush``)."""

    event_id: str
    ticket_id: str
    partition: int
    raw: bytes
    content: int
    where: str


class TopicVerifier:
    """Checks a topic against the archive: same bytes per event id, same order, nothing
    missing, nothing the archive does not know; and tells re-sends from tampering.

    Memory does not follow the log (#31): the archive is read in pages of the event ids
    just read (``ARCHIVE_PAGE``), a bit per archive row says it was found (the missing ones
    are named at the end), and the order is checked per partition: a partition is appended
    to the archive in its own order by the one projector, so an event whose archive row
    comes before the last one found in its partition was moved (« reordered », per ticket
    as before; a stricter check than per ticket: two tickets' events swapped in a partition
    are found too). A later copy of an event (same id) is a re-send when it has the same
    bytes or the same content but its times (a command decided again after a crash),
    otherwise an alteration: compared with the last ``window`` records of its partition, and
    beyond them, with the archive's. Without the archive only the window is looked at: a
    copy further back than ``window`` records is not recognised (the report says the topic
    is not verified then), and a ticket summarized at its closure would count a filing
    re-sent that far as another open ticket."""

    def __init__(self, engine: Engine | None, window: int = RESEND_WINDOW) -> None:
        self.engine = engine  # None: only copies that differ are found (no archive to compare)
        self.window = window
        self.findings: list[Finding] = []
        # per partition: event id → hash of its content, for its last `window` records (same
        # bytes give the same content: one hash tells both kinds of re-send)
        self.recent: dict[int, dict[int, int]] = defaultdict(dict)
        self.recent_order: dict[int, deque[int]] = defaultdict(deque)
        self.pending: list[_Pending] = []
        self.found = bytearray()  # bit per archive seq: its event was read
        self.found_count = 0
        self.last_seq: dict[int, int] = {}  # per partition: the greatest archive seq found
        self.reordered: set[str] = set()  # tickets reported (one finding each)
        # Later copies of an event that every reader ignores (the first copy counts): the same
        # bytes, or the same event written again after a worker crash with other times.
        # Reported, not fatal; any other difference is an alteration.
        self.resent = 0

    def check(self, record: LogRecord, event: Event | None) -> bool:
        """Whether the record is a later copy of an event already read (a re-send)."""
        if event is None:
            return False
        eid = event.event_id.int
        partition = record.source.get("partition", 0)
        content = _content_hash(event)
        recent = self.recent[partition]
        first = recent.get(eid)
        if first is not None:
            return self._later_copy(first == content, str(event.event_id), _where(record))
        recent[eid] = content
        order = self.recent_order[partition]
        order.append(eid)
        if len(order) > self.window:
            del recent[order.popleft()]
        if self.engine is not None:
            self.pending.append(_Pending(str(event.event_id), event.ticket_id, partition, record.raw, content,
                                         _where(record)))
            if len(self.pending) >= ARCHIVE_PAGE:
                self.flush()
        return False

    def _later_copy(self, same: bool, eid: str, where: str) -> bool:
        if same:
            self.resent += 1
        else:
            self.findings.append(Finding("altered", f"Topic {where} : l'événement {eid} figure deux "
                                                    "fois avec des contenus différents."))
        return True

    def flush(self) -> None:
        """The pending records against their archive rows, in one round trip."""
        pending, self.pending = self.pending, []
        if not pending or self.engine is None:
            return
        with self.engine.connect() as conn:
            rows = {eid: (seq, envelope) for seq, eid, envelope in conn.execute(
                select(ARCHIVE.c.seq, ARCHIVE.c.event_id, ARCHIVE.c.envelope)
                .where(ARCHIVE.c.event_id.in_({p.event_id for p in pending})))}
        for p in pending:
            row = rows.get(p.event_id)
            if row is None:
                self.findings.append(Finding("unknown", f"Le topic contient l'événement {p.event_id}, absent de "
                                                        "l'archive."))
                continue
            seq, envelope = row
            archived = envelope.encode()
            if self._found(seq):  # a copy further back than the window: the archive has the first
                same = archived == p.raw or _content_hash(decode_event(archived)) == p.content
                self._later_copy(same, p.event_id, p.where)
                continue
            if archived != p.raw:
                self.findings.append(Finding("altered", f"L'événement {p.event_id} du topic diffère de l'archive "
                                                        "(événement modifié)."))
            if seq < self.last_seq.get(p.partition, -1):
                if p.ticket_id not in self.reordered:
                    self.reordered.add(p.ticket_id)
                    self.findings.append(Finding("reordered", f"Ticket {p.ticket_id} : l'ordre des événements du "
                                                              "topic diffère de l'archive."))
            else:
                self.last_seq[p.partition] = seq

    def _found(self, seq: int) -> bool:
        """Mark an archive row as found; whether it already was."""
        byte, bit = divmod(seq, 8)
        if byte >= len(self.found):
            self.found.extend(bytes(max(byte + 1 - len(self.found), len(self.found))))
        if self.found[byte] >> bit & 1:
            return True
        self.found[byte] |= 1 << bit
        self.found_count += 1
        return False

    def finish(self) -> tuple[list[Finding], str | None]:
        if self.engine is None:
            return self.findings, None
        self.flush()
        with self.engine.connect() as conn:
            head = conn.scalar(select(ARCHIVE.c.hash).order_by(ARCHIVE.c.seq.desc()).limit(1))
            rows = conn.scalar(select(func.count()).select_from(ARCHIVE))
            if rows != self.found_count:  # name the rows never read, in pages
                result = conn.execution_options(yield_per=ARCHIVE_PAGE).execute(
                    select(ARCHIVE.c.seq, ARCHIVE.c.event_id).order_by(ARCHIVE.c.seq))
                for seq, eid in result:
                    byte, bit = divmod(seq, 8)
                    if byte >= len(self.found) or not self.found[byte] >> bit & 1:
                        self.findings.append(Finding("missing", f"L'événement {eid} de l'archive manque dans "
                                                                "le topic."))
        return self.findings, head


def _content_hash(event: Event) -> int:
    """The event without its times, hashed: a command decided again after a worker crash
    yields the same event (same id, type, actor, payload) stamped with the time of the
    second decision. Python's hash (SipHash, keyed per process): compared within one run."""
    return hash((event.event_id.int, str(event.type), event.ticket_id, event.actor, event.schema_version,
                 repr(event.payload)))


def _where(record: LogRecord) -> str:
    s = record.source
    return f"{s.get('topic')}[{s.get('partition')}]@{s.get('offset')}"


# --- the replay ---------------------------------------------------------------------------

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
            findings.append(Finding("unreadable", f"Enregistrement illisible ({_describe(record)}) : {exc}"))
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
            for clock in _clocks(audit.known_then, policy, event.occurred_at):
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


def _describe(record: LogRecord) -> str:
    if "archive_seq" in record.source:
        return f"archive, ligne {record.source['archive_seq']}"
    return f"topic {_where(record)}"


# --- the dispute file (data) -----------------------------------------------------------------



def _clocks(ticket: Ticket | None, policy: Policy, now: datetime) -> list[Clock]:
    if ticket is None or not ticket.exists:
        return []
    try:
        return evaluate(ticket, policy, now)
    except PolicyError:
        return []


def dispute_file(result: AuditResult) -> dict[str, Any]:
    """The machine-readable dispute file (stable schema ``slaledger.dispute-file/1``)."""
    # the instant written in the file (to the second): the offline check re-folds at it
    now = result.filters.as_of or result.generated_at.replace(microsecond=0)
    tickets = []
    summary: dict[str, SlaSummary] = defaultdict(SlaSummary)
    for sla, closed in result.closed_summary.items():
        summary[sla] = SlaSummary(closed.met, closed.breached, closed.retracted, closed.excluded, closed.open,
                                  list(closed.breaches))
    for ticket_id in sorted(result.tickets):
        audit = result.tickets[ticket_id]
        then = _clocks(audit.known_then, result.policy, now)
        today = _clocks(audit.full_log, result.policy, now) if result.filters.as_of else []
        known = audit.known_then
        assert known is not None
        # from the whole log: an --as-of view still flags a fact dated back into its past
        flagged = {a["event_id"]: a for a in antedated(audit.full_log or known, result.policy)}
        for clock in then:
            summary[clock.sla].add(ticket_id, known.member, clock)
        tickets.append({
            "ticket_id": ticket_id,
            "member": known.member, "kind": known.kind, "channel": known.channel, "product": known.product,
            "subject": known.subject,
            "filed_at": format_instant(known.filed_at) if known.filed_at else None,
            "timeline": [
                {
                    "event_id": str(e.event_id), "type": str(e.type),
                    "occurred_at": format_instant(e.occurred_at), "recorded_at": format_instant(e.recorded_at),
                    "actor": e.actor, "source": r.source,
                    "hash": r.hash or archive_digest(r.raw),
                    "known_at_as_of": result.filters.as_of is None or e.recorded_at <= result.filters.as_of,
                    # dated by its author more than the policy allows without notice before it
                    # was recorded (« antidaté »): who did it is the actor
                    "antedated": str(e.event_id) in flagged,
                    # an inform marked as the answer to the request (it stops the administrative week)
                    "answer": e.type is EventType.CUSTOMER_INFORMED and bool(e.payload.get("answer")),
                    **_proof(result.evidence, str(e.event_id), r),
                }
                for e, r in audit.timeline
            ],
            "clocks": [clock_doc(c) for c in then],
            "full_log_view": [clock_doc(c) for c in today] if result.filters.as_of else None,
            # the ticket's entry in the head's map of histories: the timeline is its whole history
            "history_proof": (result.evidence or {}).get("histories", {}).get(ticket_id),
        })
    per_sla = {}
    titles = {d.name: d.title for v in result.policy.versions for d in v.slas}
    for sla, b in sorted(summary.items()):
        decided = b.met + b.breached + b.retracted
        per_sla[sla] = {"title": titles.get(sla, sla),
                        "met": b.met, "breached": b.breached, "retracted": b.retracted, "excluded": b.excluded,
                        "open": b.open, "breaches": sorted(b.breaches, key=lambda x: x["ticket"]),
                        "compliance_percent": round(100 * (b.met + b.retracted) / decided, 2) if decided else None}
    f = result.filters
    return {
        "schema": SCHEMA,
        "generated_at": format_instant(result.generated_at.replace(microsecond=0)),
        "source": result.source,
        "filters": {"ticket": f.ticket, "member": f.member,
                    "from": format_instant(f.filed_from) if f.filed_from else None,
                    "to": format_instant(f.filed_to) if f.filed_to else None,
                    "as_of": format_instant(f.as_of) if f.as_of else None},
        # the signed tree head and, per event above, its leaf and audit path (None: no tree read)
        "evidence": ({k: v for k, v in result.evidence.items() if k not in ("proofs", "histories")}
                     if result.evidence else None),
        "integrity": {"ok": result.ok, "verified": result.verified, "chain_head": result.chain_head,
                      "events_read": result.events_read,
                      "resent_records": result.resent_records,
                      "findings": [x.to_dict() for x in result.findings]},
        "summary": per_sla,
        # Closed tickets of a whole-log replay count in the summary only (see ``replay``).
        "closed_tickets_in_summary_only": result.closed_summarized,
        "tickets": tickets,
        # how the policy read Article 4 (quoted in the HTML and PDF), and its time zone
        "timezone": result.policy.versions[-1].tz.key,
        # each version's text, whose SHA-256 the head signs: the verifier re-folds with it
        "policy_versions": [{"id": v.id, "effective_from": format_instant(v.effective_from),
                             "readings": policy_readings(v), "text": v.text} for v in result.policy.versions],
    }


def _proof(evidence: dict[str, Any] | None, event_id: str, record: LogRecord) -> dict[str, Any]:
    """An event's inclusion proof in the file: the exact archived bytes (the leaf is their
    hash), its leaf index and audit path to the file's signed head (None: not covered)."""
    if evidence is None:
        return {}
    proof = evidence["proofs"].get(event_id)
    return {"envelope_base64": base64.b64encode(record.raw).decode(),
            "leaf_index": proof["leaf_index"] if proof else record.leaf_index,
            "inclusion_path": proof["inclusion_path"] if proof else None}


def policy_readings(version: PolicyVersion) -> list[str]:
    """The choices a policy version makes where Article 4 leaves them open, in French."""
    out = []
    for calendar in version.calendars.values():
        holidays = calendar.holidays
        days = (f"jours fériés listés dans la politique pour {holidays.first_year}–{holidays.last_year} "
                f"(lundi de Pentecôte {'travaillé' if holidays.whit_monday_worked else 'férié'})"
                if holidays.days else "sans jours fériés")
        out.append(f"Plage {french.window(calendar)} : {french.READING[calendar.reading]} ; "
                   f"{days}.")
    for sla in version.slas:
        stops = ", ".join(french.SIGNAL.get(s, s) for s in sorted(sla.stops_on))
        out.append(f"{french.sla_title(sla.title, sla.contractual)} : le délai s'arrête {stops} ; "
                   f"{pause_reading(sla)}.")
    titles = {sla.name: sla.title for sla in version.slas}
    for product, exclusion in version.excluded_products.items():
        scope = ("tous" if exclusion.slas is None
                 else ", ".join(f"« {titles.get(name, name)} »" for name in sorted(exclusion.slas)))
        kinds = (" ; demandes concernées : " + ", ".join(french.KIND.get(k, k) for k in sorted(exclusion.kinds))
                 if exclusion.kinds is not None else "")
        out.append(f"Produit {product} : {exclusion.reason.rstrip('.')} — engagements concernés : {scope}{kinds}.")
    out.append(f"Une date d'événement peut précéder son enregistrement de {version.max_backdate.days} jours au plus "
               f"(agents et administrateurs ; {version.connector_max_backdate.days} jours pour le connecteur iTop, "
               "qui reprend les dates d'iTop ; jamais pour un référent) ; au-delà de "
               f"{french.duration(version.antedated_after.total_seconds())}, le fait est signalé « antidaté » avec "
               "son auteur.")
    return out


def stable_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, indent=2, sort_keys=True)


# --- consistency ----------------------------------------------------------------------------

def verify_projection(engine: Engine, records: Iterator[LogRecord], policy: Policy, *, source: str) -> list[str]:
    """Every difference between the live SQL projection and a fresh replay of the log, and
    between the archive and its Merkle tree and signed heads (``evidence.verify_tree``) or
    its map of histories (``ticket_map.verify``), one French line each (``audit verify`` is
    read by an auditor)."""
    from .models import CLOCKS, TICKETS

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
        for clock in _clocks(ticket, policy, datetime.now(UTC)):
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

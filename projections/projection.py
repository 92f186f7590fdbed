"""The SQL projection of events: tickets, SLA clocks, judgments, archive and checkpoints,
written in one transaction per batch, one or two statements per table (``projections.bulk``):
the cost of a batch is a fixed number of round trips, whatever its size (#31). The archive's
statements run in a thread of their own while the batch is folded (``_both``).

An event already in the archive (unique ``event_id``) changes nothing, so at-least-once
delivery, a duplicate record or a replay is harmless. The fold is ``sla/``'s, the very one
the live worker and the audit replay use.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import structlog
from sqlalchemy import Engine, Table, delete, func, insert, select, text
from sqlalchemy.engine import Connection

from sla.clock import ClockStatus, evaluate
from sla.events import Event, EventDecodeError, decode_event
from sla.explain import explanation
from sla.log_names import DEAD_LETTERS, EVENTS, is_tree_head
from sla.policy import Policy, PolicyError
from sla.ticket import Ticket, ticket_from_dict, ticket_to_dict

from . import bulk, merkle, ticket_map, totals, tree
from .archive_hash import GENESIS_HASH, chain_hash
from .compliance import decided_at
from .models import ARCHIVE, ARCHIVE_HEAD, CHECKPOINTS, CLOCKS, DEAD, JUDGMENTS, TICKETS

log = structlog.get_logger(__name__)
A = TypeVar("A")
B = TypeVar("B")
ARCHIVE_LOCK = 0x51A1ED6E  # pg_advisory_xact_lock key of the archive's single writer


@dataclass(frozen=True)
class Incoming:
    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes | None = None


class Projection:
    """Applies event records to a pair of (tickets, clocks) tables, plus archive/checkpoints."""

    def __init__(self, policy: Policy, tickets: Table = TICKETS, clocks: Table = CLOCKS,
                 archive: bool = True) -> None:
        """``archive=False`` (rebuild): neither the archive nor the checkpoints are touched."""
        self.policy = policy
        self.tickets, self.clocks, self.archive = tickets, clocks, archive

    def apply_batch(self, conn: Connection, records: list[Incoming],
                    events: dict[str, tuple[Incoming, Event]] | None = None) -> int:
        """Apply records in one transaction (the caller's); returns how many events were new.
        Set-based: one or two statements per table for the whole batch (``projections.bulk``).
        ``events``: the records' ``decode``, when the caller decoded them already."""
        if not records:
            return 0
        if self.archive and conn.dialect.name == "postgresql":
            # One archive writer at a time (two projectors during a rolling deploy would
            # both chain onto the same last hash and fork the chain).
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ARCHIVE_LOCK})
        letters = [r for r in records if r.topic == DEAD_LETTERS]
        if letters and self.archive:
            self._dead_letters(conn, letters)
        events = self.decode(records) if events is None else events
        known = set()
        if self.archive and events:
            known = set(conn.scalars(select(ARCHIVE.c.event_id).where(bulk.among(conn, ARCHIVE.c.event_id,
                                                                                 list(events)))))
        fresh = [(r, e) for i, (r, e) in events.items() if i not in known]
        stored = self._load(conn, {e.ticket_id for _, e in fresh})
        now = datetime.now(UTC)
        # The archive (rows, chain, tree, map) is written by another thread while this one
        # folds the tickets and renders their rows, which needs no database: the server's
        # part of the archive's statements no longer adds up with the fold's Python (#31).
        # Nothing else uses the connection meanwhile.
        archive_head, (staged, counted) = _both(
            partial(self._archive, conn, fresh) if self.archive and fresh else None,
            partial(self._fold, fresh, stored, now), alongside=conn.dialect.name == "postgresql")
        counted.merge(self._write(conn, staged, stored.keys(), now))
        if self.archive and fresh:
            totals.add(conn, counted)
            totals.at_least(conn, totals.key(totals.LAST_EVENT),
                            max(e.recorded_at for _, e in fresh).timestamp())
        if self.archive:
            self._checkpoint(conn, records, archive_head)
        return len(fresh)

    def _fold(self, fresh: list[tuple[Incoming, Event]], stored: dict[str, dict[str, Any]],
              now: datetime) -> tuple[list[Staged], totals.Deltas]:
        """The batch's events folded into their tickets (from their stored states), each
        changed ticket with its rows (``_store``), and what the archive gained, counted."""
        touched: dict[str, Ticket] = {}
        counted = totals.Deltas()
        for record, event in fresh:
            ticket = touched.get(event.ticket_id) or _ticket(stored.get(event.ticket_id)) or Ticket(event.ticket_id)
            acknowledged, existed = ticket.acknowledged_at, ticket.exists
            if ticket.apply(event):
                touched[event.ticket_id] = ticket
            if self.archive:  # what the archive gained, for the metrics (projections.totals)
                counted[totals.key(totals.EVENTS, str(event.type))] += 1
                sla = totals.outcome_of(str(event.type), record.value)
                if sla is not None:
                    outcome = "breached" if str(event.type) == "sla_breached" else "retracted"
                    counted[totals.key(totals.OUTCOME, sla, outcome, ticket.member or "")] += 1
                if ticket.exists and not existed:
                    counted[totals.key(totals.MEMBER, ticket.member or "")] += 1
                if acknowledged is None and ticket.acknowledged_at is not None:
                    counted.merge(totals.ack_observation(totals.ack_seconds(ticket.filed_at,
                                                                             ticket.acknowledged_at)))
        return [self._store(ticket, now) for ticket in touched.values()], counted

    def set_aside(self, conn: Connection, record: Incoming, reason: str) -> None:
        """A record the database refused: kept in ``dead_letters`` under its own coordinates,
        and checkpointed so the projector goes on."""
        log.error("record set aside by the projector", topic=record.topic, partition=record.partition,
                  offset=record.offset, reason=reason)
        if not _known_letters(conn, [record]):
            conn.execute(insert(DEAD).values(
                topic=record.topic, partition=record.partition, offset=record.offset,
                reason_kind="projection failed", reason=reason, origin_topic=record.topic,
                origin_partition=record.partition, origin_offset=record.offset, dead_lettered_at=datetime.now(UTC)))
            totals.add(conn, {totals.key(totals.DEAD_LETTERS, "projection failed"): 1})
        if self.archive:
            self._checkpoint(conn, [record])

    @staticmethod
    def decode(records: list[Incoming]) -> dict[str, tuple[Incoming, Event]]:
        """The batch's ticket events by event id, in log order (a repeated id: its first record).
        No database: the projector decodes a batch while the previous one is written."""
        events: dict[str, tuple[Incoming, Event]] = {}
        for record in records:
            if record.topic != EVENTS or is_tree_head(record.key):
                continue  # a signed tree head is published on the events topic, not a ticket event
            try:
                event = decode_event(record.value)
            except EventDecodeError as exc:
                log.warning("unreadable event skipped by the projector (the worker dead-letters it)",
                            topic=record.topic, partition=record.partition, offset=record.offset, reason=str(exc))
                continue
            events.setdefault(str(event.event_id), (record, event))
        return events

    def _dead_letters(self, conn: Connection, letters: list[Incoming]) -> None:
        known = _known_letters(conn, letters)
        rows, counted = [], totals.Deltas()
        for record in letters:
            if (record.topic, record.partition, record.offset) in known:
                continue
            known.add((record.topic, record.partition, record.offset))
            try:
                body = json.loads(record.value)
                reason = str(body["reason"])
                origin = body.get("origin") or {}
                at = datetime.fromisoformat(body["dead_lettered_at"]) if body.get("dead_lettered_at") else None
            except (ValueError, KeyError, TypeError):
                body, reason, origin, at = {}, "unreadable dead letter", {}, None
            counted[totals.key(totals.DEAD_LETTERS, reason.split(":", 1)[0][:64])] += 1
            rows.append({"topic": record.topic, "partition": record.partition, "offset": record.offset,
                         "reason_kind": reason.split(":", 1)[0][:64], "reason": reason,
                         "origin_topic": origin.get("topic"), "origin_partition": origin.get("partition"),
                         "origin_offset": origin.get("offset"), "dead_lettered_at": at})
            log.info("dead letter recorded", topic=origin.get("topic"), partition=origin.get("partition"),
                     offset=origin.get("offset"), reason=reason)
        if rows:
            conn.execute(insert(DEAD), rows)
        totals.add(conn, counted)

    def _archive(self, conn: Connection, fresh: list[tuple[Incoming, Event]]) -> int:
        """Append the batch to the archive's hash chain and Merkle tree (under the lock
        above: one writer); returns the last row's ``seq`` (``ARCHIVE_HEAD``)."""
        prev = conn.scalar(select(ARCHIVE.c.hash).order_by(ARCHIVE.c.seq.desc()).limit(1)) or GENESIS_HASH
        leaves = [Leaf(event.ticket_id, 0, merkle.leaf_hash(record.value)) for record, event in fresh]
        first = tree.append_leaves(conn, [leaf.hash for leaf in leaves], tree.check_in_step(conn))
        leaves = [Leaf(leaf.ticket_id, i, leaf.hash) for i, leaf in enumerate(leaves, start=first)]
        rows = []
        for leaf, (record, event) in zip(leaves, fresh, strict=True):
            digest = chain_hash(prev, record.value)
            rows.append({
                "event_id": str(event.event_id), "ticket_id": event.ticket_id, "type": str(event.type),
                "occurred_at": event.occurred_at, "recorded_at": event.recorded_at, "actor": event.actor,
                "topic": record.topic, "partition": record.partition, "offset": record.offset,
                "envelope": record.value.decode(), "prev_hash": prev, "hash": digest, "leaf_index": leaf.index,
            })
            prev = digest
        bulk.append(conn, ARCHIVE, rows)
        # each ticket's count and history hash, for the map the next signed head commits to
        ticket_map.record(conn, [(leaf.ticket_id, leaf.index, leaf.hash) for leaf in leaves])
        return int(conn.scalar(select(func.max(ARCHIVE.c.seq))))

    def _load(self, conn: Connection, ticket_ids: set[str]) -> dict[str, dict[str, Any]]:
        """The stored states of these tickets, in one query."""
        if not ticket_ids:
            return {}
        return {ticket_id: state for ticket_id, state in conn.execute(
            select(self.tickets.c.ticket_id, self.tickets.c.state)
            .where(bulk.among(conn, self.tickets.c.ticket_id, ticket_ids)))}

    def _store(self, ticket: Ticket, now: datetime) -> Staged:
        """The ticket's row and its clocks' rows, written with the whole batch's (``_write``)."""
        row = {
            "ticket_id": ticket.ticket_id, "status": str(ticket.status), "kind": ticket.kind,
            "channel": ticket.channel, "product": ticket.product, "member": ticket.member,
            "subject": ticket.subject, "filed_at": ticket.filed_at, "recorded_at": ticket.filed_recorded_at,
            "acknowledged_at": ticket.acknowledged_at, "resolved_at": ticket.resolved_at,
            "closed_at": ticket.closed_at, "restoration_eta": ticket.restoration_eta, "version": ticket.version,
            "state": ticket_to_dict(ticket),
        }
        if not ticket.exists:
            return row, []
        try:
            found = evaluate(ticket, self.policy, now)
        except PolicyError:
            return row, []
        clocks = []
        for clock in found:
            closed = clock.stopped_at is not None or clock.status is ClockStatus.EXCLUDED
            clocks.append({
                "ticket_id": ticket.ticket_id, "sla": clock.sla, "member": ticket.member, "kind": ticket.kind,
                "contractual": clock.definition.contractual, "status": str(clock.status),
                "deadline": clock.deadline, "warning_at": clock.warning_at,
                "started_at": clock.cycles[0].start if clock.cycles else None, "stopped_at": clock.stopped_at,
                "remaining_at_close_seconds": clock.remaining_seconds if closed else None,
                "policy_version": clock.policy_version.id, "explanation": explanation(clock, live=False),
                "evaluated_at": now, "decided_at": decided_at(clock, ticket.filed_at),
            })
        return row, clocks

    def _write(self, conn: Connection, staged: list[Staged], present: Collection[str],
               now: datetime) -> dict[totals.Key, float]:
        """Add or update the tickets, replace their clocks (a statement or two each for the batch);
        returns the outcomes newly judged (met, excluded)."""
        if not staged:
            return {}
        # a ticket the batch found absent (``_load``, under the archive's lock) is added by
        # COPY, the others updated: an upsert's conflict check cost the server twice as much
        bulk.append(conn, self.tickets, [row for row, _ in staged if row["ticket_id"] not in present])
        bulk.upsert(conn, self.tickets, [row for row, _ in staged if row["ticket_id"] in present])
        conn.execute(delete(self.clocks).where(bulk.among(conn, self.clocks.c.ticket_id,
                                                          [row["ticket_id"] for row, _ in staged])))
        clocks = [clock for _, rows in staged for clock in rows]
        bulk.append(conn, self.clocks, clocks)
        if not self.archive:  # live projection only: judgments, like the archive, are never rebuilt
            return {}
        return self._judge(conn, [c for c in clocks if c["status"] in ("met", "excluded")], now)

    def _judge(self, conn: Connection, judged: list[dict[str, Any]], now: datetime) -> dict[totals.Key, float]:
        """Record the verdicts met/excluded not recorded yet (append-only), and count them."""
        if not judged:
            return {}
        known = {tuple(row) for row in conn.execute(select(JUDGMENTS.c.ticket_id, JUDGMENTS.c.sla, JUDGMENTS.c.outcome)
                                                    .where(bulk.among(conn, JUDGMENTS.c.ticket_id,
                                                                      {r["ticket_id"] for r in judged})))}
        fresh = [{"ticket_id": r["ticket_id"], "sla": r["sla"], "outcome": r["status"], "member": r["member"],
                  "judged_at": now} for r in judged if (r["ticket_id"], r["sla"], r["status"]) not in known]
        bulk.append(conn, JUDGMENTS, fresh)
        counted = totals.Deltas()
        for r in fresh:
            counted[totals.key(totals.OUTCOME, r["sla"], r["outcome"], r["member"])] += 1
        return counted

    def _checkpoint(self, conn: Connection, records: list[Incoming], archive_head: int | None = None) -> None:
        """Each partition's last offset, and the archive's last row if it grew, in one statement."""
        last: dict[tuple[str, int], int] = {}
        for r in records:
            last[(r.topic, r.partition)] = max(r.offset, last.get((r.topic, r.partition), -1))
        if archive_head is not None:
            last[(ARCHIVE_HEAD, 0)] = archive_head
        bulk.upsert(conn, CHECKPOINTS, [{"topic": t, "partition": p, "offset": o} for (t, p), o in last.items()])


Staged = tuple[dict[str, Any], list[dict[str, Any]]]  # a ticket's row, its clocks' rows


@dataclass(frozen=True)
class Leaf:
    """An archived event's leaf in the Merkle tree, with its ticket."""

    ticket_id: str
    index: int
    hash: bytes


def _both(background: Callable[[], A] | None, foreground: Callable[[], B], *, alongside: bool) -> tuple[A | None, B]:
    """``background()`` and ``foreground()``'s results; with ``alongside``, the first runs in
    a thread of its own while this one runs the second (a database client releases the GIL
    while the server works). Both have ended when this returns, whatever failed: the
    background's failure first (it may have left the transaction aborted), then the other's."""
    if background is None or not alongside:
        return (background() if background is not None else None), foreground()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive-writer") as pool:
        archived = pool.submit(background)
        try:
            result = foreground()
        finally:
            value = archived.result()  # waits for it; its failure is raised first
    return value, result


def _ticket(state: dict[str, Any] | None) -> Ticket | None:
    return ticket_from_dict(state) if state else None


def _known_letters(conn: Connection, records: list[Incoming]) -> set[tuple[str, int, int]]:
    """Which of these records' coordinates ``dead_letters`` holds already (one query)."""
    offsets = {r.offset for r in records}
    found = conn.execute(select(DEAD.c.topic, DEAD.c.partition, DEAD.c.offset).where(
        bulk.among(conn, DEAD.c.offset, offsets)))
    wanted = {(r.topic, r.partition, r.offset) for r in records}
    return {(topic, partition, offset) for topic, partition, offset in found} & wanted


def checkpoints(engine: Engine, topic: str = EVENTS) -> dict[int, int]:
    with engine.connect() as conn:
        return {p: o for p, o in conn.execute(select(CHECKPOINTS.c.partition, CHECKPOINTS.c.offset)
                                              .where(CHECKPOINTS.c.topic == topic))}

"""The SQL projection of events: tickets, SLA clocks, judgments, archive and checkpoints,
written in one transaction per batch.

An event already in the archive (unique ``event_id``) changes nothing, so at-least-once
delivery, a duplicate record or a replay is harmless. The fold is ``sla/``'s, the very one
the live worker and the audit replay use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Engine, Table, delete, func, insert, select, text, update
from sqlalchemy.engine import Connection

from sla.clock import ClockStatus, evaluate
from sla.events import Event, EventDecodeError, decode_event
from sla.explain import explanation
from sla.policy import Policy, PolicyError
from sla.ticket import Ticket, ticket_from_dict, ticket_to_dict
from streams.topics import DEAD_LETTERS, EVENTS, is_tree_head

from . import merkle, ticket_map, totals, tree
from .archive_hash import GENESIS_HASH, chain_hash
from .compliance import decided_at
from .models import ARCHIVE, ARCHIVE_HEAD, CHECKPOINTS, CLOCKS, DEAD, JUDGMENTS, TICKETS

log = structlog.get_logger(__name__)
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

    def apply_batch(self, conn: Connection, records: list[Incoming]) -> int:
        """Apply records in one transaction (the caller's); returns how many events were new."""
        if not records:
            return 0
        if self.archive and conn.dialect.name == "postgresql":
            # One archive writer at a time (two projectors during a rolling deploy would
            # both chain onto the same last hash and fork the chain).
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ARCHIVE_LOCK})
        letters = [r for r in records if r.topic == DEAD_LETTERS]
        if letters and self.archive:
            self._dead_letters(conn, letters)
        ids = {}
        events: list[tuple[Incoming, Event]] = []
        for record in records:
            if record.topic != EVENTS or is_tree_head(record.key):
                continue  # a signed tree head is published on the events topic, not a ticket event
            try:
                event = decode_event(record.value)
            except EventDecodeError as exc:
                log.warning("unreadable event skipped by the projector (the worker dead-letters it)",
                            topic=record.topic, partition=record.partition, offset=record.offset, reason=str(exc))
                continue
            if str(event.event_id) in ids:
                continue
            ids[str(event.event_id)] = True
            events.append((record, event))
        known = set()
        if self.archive and ids:
            known = set(conn.scalars(select(ARCHIVE.c.event_id).where(ARCHIVE.c.event_id.in_(list(ids)))))
        fresh = [(r, e) for r, e in events if str(e.event_id) not in known]
        if self.archive and fresh:
            self._archive(conn, fresh)
        touched: dict[str, Ticket] = {}
        counted = totals.Deltas()
        for record, event in fresh:
            ticket = touched.get(event.ticket_id) or self._load(conn, event.ticket_id) or Ticket(event.ticket_id)
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
        now = datetime.now(UTC)
        for ticket in touched.values():
            counted.merge(self._store(conn, ticket, now))
        if self.archive and fresh:
            totals.add(conn, counted)
            totals.at_least(conn, totals.key(totals.LAST_EVENT),
                            max(e.recorded_at for _, e in fresh).timestamp())
        if self.archive:
            self._checkpoint(conn, records)
        return len(fresh)

    def set_aside(self, conn: Connection, record: Incoming, reason: str) -> None:
        """A record the database refused: kept in ``dead_letters`` under its own coordinates,
        and checkpointed so the projector goes on."""
        log.error("record set aside by the projector", topic=record.topic, partition=record.partition,
                  offset=record.offset, reason=reason)
        if not _dead_letter_known(conn, record):
            conn.execute(insert(DEAD).values(
                topic=record.topic, partition=record.partition, offset=record.offset,
                reason_kind="projection failed", reason=reason, origin_topic=record.topic,
                origin_partition=record.partition, origin_offset=record.offset, dead_lettered_at=datetime.now(UTC)))
            totals.add(conn, {totals.key(totals.DEAD_LETTERS, "projection failed"): 1})
        if self.archive:
            self._checkpoint(conn, [record])

    def _dead_letters(self, conn: Connection, letters: list[Incoming]) -> None:
        for record in letters:
            if _dead_letter_known(conn, record):
                continue
            try:
                body = json.loads(record.value)
                reason = str(body["reason"])
                origin = body.get("origin") or {}
                at = datetime.fromisoformat(body["dead_lettered_at"]) if body.get("dead_lettered_at") else None
            except (ValueError, KeyError, TypeError):
                body, reason, origin, at = {}, "unreadable dead letter", {}, None
            totals.add(conn, {totals.key(totals.DEAD_LETTERS, reason.split(":", 1)[0][:64]): 1})
            conn.execute(insert(DEAD).values(
                topic=record.topic, partition=record.partition, offset=record.offset,
                reason_kind=reason.split(":", 1)[0][:64], reason=reason,
                origin_topic=origin.get("topic"), origin_partition=origin.get("partition"),
                origin_offset=origin.get("offset"), dead_lettered_at=at))
            log.info("dead letter recorded", topic=origin.get("topic"), partition=origin.get("partition"),
                     offset=origin.get("offset"), reason=reason)

    def _archive(self, conn: Connection, fresh: list[tuple[Incoming, Event]]) -> None:
        prev = conn.scalar(select(ARCHIVE.c.hash).order_by(ARCHIVE.c.seq.desc()).limit(1)) or GENESIS_HASH
        # The Merkle tree grows with the rows, in this transaction (the lock above: one writer).
        tree.check_in_step(conn)
        first_leaf = tree.append(conn, [record.value for record, _ in fresh])
        rows = []
        for leaf, (record, event) in enumerate(fresh, start=first_leaf):
            digest = chain_hash(prev, record.value)
            rows.append({
                "event_id": str(event.event_id), "ticket_id": event.ticket_id, "type": str(event.type),
                "occurred_at": event.occurred_at, "recorded_at": event.recorded_at, "actor": event.actor,
                "topic": record.topic, "partition": record.partition, "offset": record.offset,
                "envelope": record.value.decode(), "prev_hash": prev, "hash": digest, "leaf_index": leaf,
            })
            prev = digest
        conn.execute(insert(ARCHIVE), rows)
        # each ticket's count and history hash, for the map the next signed head commits to
        ticket_map.record(conn, [(event.ticket_id, leaf, merkle.leaf_hash(record.value))
                                 for leaf, (record, event) in enumerate(fresh, start=first_leaf)])
        _set_checkpoint(conn, ARCHIVE_HEAD, 0, conn.scalar(select(func.max(ARCHIVE.c.seq))))

    def _load(self, conn: Connection, ticket_id: str) -> Ticket | None:
        state = conn.scalar(select(self.tickets.c.state).where(self.tickets.c.ticket_id == ticket_id))
        return ticket_from_dict(state) if state else None

    def _store(self, conn: Connection, ticket: Ticket, now: datetime) -> dict[totals.Key, float]:
        """Write the ticket's row and clocks; returns the outcomes it newly judged (met, excluded)."""
        row = {
            "ticket_id": ticket.ticket_id, "status": str(ticket.status), "kind": ticket.kind,
            "channel": ticket.channel, "product": ticket.product, "member": ticket.member,
            "subject": ticket.subject, "filed_at": ticket.filed_at, "recorded_at": ticket.filed_recorded_at,
            "acknowledged_at": ticket.acknowledged_at, "resolved_at": ticket.resolved_at,
            "closed_at": ticket.closed_at, "restoration_eta": ticket.restoration_eta, "version": ticket.version,
            "state": ticket_to_dict(ticket),
        }
        updated = conn.execute(update(self.tickets).where(self.tickets.c.ticket_id == ticket.ticket_id).values(**row))
        if updated.rowcount == 0:
            conn.execute(insert(self.tickets).values(**row))
        conn.execute(delete(self.clocks).where(self.clocks.c.ticket_id == ticket.ticket_id))
        if not ticket.exists:
            return {}
        try:
            found = evaluate(ticket, self.policy, now)
        except PolicyError:
            return {}
        rows = []
        for clock in found:
            closed = clock.stopped_at is not None or clock.status is ClockStatus.EXCLUDED
            rows.append({
                "ticket_id": ticket.ticket_id, "sla": clock.sla, "member": ticket.member, "kind": ticket.kind,
                "contractual": clock.definition.contractual, "status": str(clock.status),
                "deadline": clock.deadline, "warning_at": clock.warning_at,
                "started_at": clock.cycles[0].start if clock.cycles else None, "stopped_at": clock.stopped_at,
                "remaining_at_close_seconds": clock.remaining_seconds if closed else None,
                "policy_version": clock.policy_version.id, "explanation": explanation(clock, live=False),
                "evaluated_at": now, "decided_at": decided_at(clock, ticket.filed_at),
            })
        if rows:
            conn.execute(insert(self.clocks), rows)
        if not self.archive:  # live projection only: judgments, like the archive, are never rebuilt
            return {}
        return self._judge(conn, ticket, [r for r in rows if r["status"] in ("met", "excluded")], now)

    def _judge(self, conn: Connection, ticket: Ticket, judged: list[dict[str, Any]],
               now: datetime) -> dict[totals.Key, float]:
        if not judged:
            return {}
        known = set(conn.execute(select(JUDGMENTS.c.sla, JUDGMENTS.c.outcome)
                                 .where(JUDGMENTS.c.ticket_id == ticket.ticket_id)).all())
        fresh = [{"ticket_id": ticket.ticket_id, "sla": r["sla"], "outcome": r["status"], "member": r["member"],
                  "judged_at": now} for r in judged if (r["sla"], r["status"]) not in known]
        if fresh:
            conn.execute(insert(JUDGMENTS), fresh)
        counted = totals.Deltas()
        for r in fresh:
            counted[totals.key(totals.OUTCOME, r["sla"], r["outcome"], r["member"])] += 1
        return counted

    def _checkpoint(self, conn: Connection, records: list[Incoming]) -> None:
        last: dict[tuple[str, int], int] = {}
        for r in records:
            last[(r.topic, r.partition)] = max(r.offset, last.get((r.topic, r.partition), -1))
        for (topic, partition), offset in last.items():
            _set_checkpoint(conn, topic, partition, offset)


def _set_checkpoint(conn: Connection, topic: str, partition: int, offset: int) -> None:
    done = conn.execute(update(CHECKPOINTS).where(CHECKPOINTS.c.topic == topic, CHECKPOINTS.c.partition == partition)
                        .values(offset=offset))
    if done.rowcount == 0:
        conn.execute(insert(CHECKPOINTS).values(topic=topic, partition=partition, offset=offset))


def _dead_letter_known(conn: Connection, record: Incoming) -> bool:
    return bool(conn.scalar(select(func.count()).select_from(DEAD).where(
        DEAD.c.topic == record.topic, DEAD.c.partition == record.partition, DEAD.c.offset == record.offset)))


def checkpoints(engine: Engine, topic: str = EVENTS) -> dict[int, int]:
    with engine.connect() as conn:
        return {p: o for p, o in conn.execute(select(CHECKPOINTS.c.partition, CHECKPOINTS.c.offset)
                                              .where(CHECKPOINTS.c.topic == topic))}

"""iTop write-back: the SLA state of each iTop ticket, written back to the ticket in iTop.

Members and agents work in iTop, not in the ledger: a deadline set or moved, a warning, a
breach or a retraction must reach them where they look. After each sync pass, for the
tickets the connector took from iTop (table ``itop_tickets``), the facts are read from the
SQL read side (deadlines from ``sla_clocks``, warnings, breaches and retractions from
``event_archive``) and each becomes one private log entry (``core/update`` with a caselog
``add_item``) carrying the French explanation the fold already wrote.

Never the same entry twice, with two guards: a fact is recorded in ``itop_writebacks``
once iTop confirmed the entry, and every entry carries a marker ``[slaledger:<fact key>]``
that is looked for in the ticket's private log before writing, so a crash between iTop's
answer and the record (or a lost table) does not write it again.

A failure (iTop down, rights refused) is logged and the fact retried at the next pass; it
never stops the sync from publishing commands.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import Engine, delete, insert, select

from sla import french
from sla.events import SLA_FACT_TYPES, EventDecodeError, EventType, decode_event

from .client import ITOP_TIME_FORMAT, ItopClient, ItopError
from .sync import SyncResult

log = structlog.get_logger(__name__)

MARKER = "[slaledger:{key}]"
FIELD_KEY = "field:{code}:"  # the custom field's last written value follows
_FACT_NAMES = {EventType.SLA_WARNING_RAISED: "warning", EventType.SLA_BREACHED: "breach",
               EventType.SLA_BREACH_RETRACTED: "retraction"}


@dataclass(frozen=True, slots=True)
class Fact:
    """One SLA fact to write on one ticket: its key (stable, part of the marker) and the text."""

    ticket_id: str
    key: str
    text: str

    @property
    def message(self) -> str:
        return f"{MARKER.format(key=self.key)} {self.text}"


@dataclass
class WritebackResult:
    written: int = 0
    already: int = 0  # found in iTop by its marker, recorded without writing
    failed: int = 0  # tickets left for the next pass
    fields: int = 0  # custom field updates
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Target:
    itop_class: str
    key: str


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)  # SQLite drops the zone


def _title(sla: str, titles: Mapping[str, str]) -> str:
    return f"« {titles.get(sla, sla)} »"


def collect(engine: Engine, source: str, *, tz: ZoneInfo, titles: Mapping[str, str] | None = None,
            ) -> tuple[dict[str, _Target], dict[str, list[Fact]], dict[str, datetime | None]]:
    """The iTop tickets of this source, their SLA facts not yet recorded as written, and
    each ticket's next contractual deadline (for the optional custom field).

    Closed tickets are left out: nobody works on them in iTop any more, a first deployment
    does not flood years of closed tickets with past warnings, and a pass reads the open
    part of the history only."""
    from projections.models import ARCHIVE, CLOCKS, TICKETS, ItopTicketRow, ItopWritebackRow

    titles = titles or {}
    with engine.connect() as conn:
        targets = {r.ticket_id: _Target(r.itop_class, r.itop_key) for r in conn.execute(
            select(ItopTicketRow.ticket_id, ItopTicketRow.itop_class, ItopTicketRow.itop_key)
            .where(ItopTicketRow.source == source))}
        if not targets:
            return {}, {}, {}
        closed = select(TICKETS.c.ticket_id).where(TICKETS.c.status == "closed")
        ids = select(ItopTicketRow.ticket_id).where(ItopTicketRow.source == source,
                                                    ItopTicketRow.ticket_id.not_in(closed))
        open_ids = set(conn.scalars(ids))
        written: dict[str, set[str]] = {}
        for tid, key in conn.execute(select(ItopWritebackRow.ticket_id, ItopWritebackRow.fact_key)
                                     .where(ItopWritebackRow.ticket_id.in_(ids))):
            written.setdefault(tid, set()).add(key)
        clocks = conn.execute(select(CLOCKS.c.ticket_id, CLOCKS.c.sla, CLOCKS.c.status, CLOCKS.c.deadline,
                                     CLOCKS.c.contractual, CLOCKS.c.explanation)
                              .where(CLOCKS.c.ticket_id.in_(ids))
                              .order_by(CLOCKS.c.ticket_id, CLOCKS.c.deadline, CLOCKS.c.sla)).all()
        archived = conn.execute(select(ARCHIVE.c.ticket_id, ARCHIVE.c.event_id, ARCHIVE.c.type, ARCHIVE.c.envelope)
                                .where(ARCHIVE.c.ticket_id.in_(ids),
                                       ARCHIVE.c.type.in_([str(t) for t in SLA_FACT_TYPES]))
                                .order_by(ARCHIVE.c.seq)).all()
    facts: dict[str, list[Fact]] = {}
    # the custom field only on tickets still open (a closed one keeps what it had)
    next_deadline: dict[str, datetime | None] = {tid: None for tid in targets if tid in open_ids}

    def add(fact: Fact) -> None:
        if fact.key not in written.get(fact.ticket_id, set()):
            facts.setdefault(fact.ticket_id, []).append(fact)

    for row in clocks:
        deadline = _utc(row.deadline)
        if row.status != "running" or deadline is None:
            continue
        if row.contractual:
            current = next_deadline.get(row.ticket_id)
            next_deadline[row.ticket_id] = deadline if current is None else min(current, deadline)
        key = f"deadline:{row.sla}:{deadline.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        add(Fact(row.ticket_id, key, f"Échéance SLA {_title(row.sla, titles)} : {french.instant(deadline, tz)}."
                                     f"\n{row.explanation}".rstrip()))
    seen_events: set[str] = set()
    for fact_row in archived:
        if fact_row.event_id in seen_events:
            continue
        seen_events.add(fact_row.event_id)
        try:
            event = decode_event(fact_row.envelope)
        except EventDecodeError as exc:  # an archive row we cannot read: said, not guessed
            log.warning("itop write-back: archived fact unreadable, skipped", ticket_id=fact_row.ticket_id,
                        event_id=fact_row.event_id, error=str(exc))
            continue
        kind, payload = event.type, event.payload
        sla = str(payload.get("sla") or "?")
        deadline = payload.get("deadline")
        when = french.instant(deadline, tz) if isinstance(deadline, datetime) else "?"
        title = _title(sla, titles)
        text = {EventType.SLA_WARNING_RAISED: f"Alerte SLA {title} : l'échéance du {when} approche.",
                EventType.SLA_BREACHED: f"Dépassement SLA {title} : l'échéance du {when} est dépassée.",
                EventType.SLA_BREACH_RETRACTED: f"Dépassement SLA {title} du {when} retiré "
                                                f"(le calcul corrigé respecte l'échéance)."}[kind]
        explanation = str(payload.get("explanation") or "").strip()
        add(Fact(fact_row.ticket_id, f"{_FACT_NAMES[kind]}:{fact_row.event_id}", f"{text}\n{explanation}".rstrip()))
    return targets, facts, next_deadline


def _markers(private_log: Any) -> str:
    entries = private_log.get("entries") if isinstance(private_log, dict) else None
    return "\n".join(str(e.get("message") or "") + str(e.get("message_html") or "")
                     for e in entries or [] if isinstance(e, dict))


def writeback_once(client: ItopClient, engine: Engine, source: str, *, tz: ZoneInfo, sla_field: str | None = None,
                   titles: Mapping[str, str] | None = None,
                   now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> WritebackResult:
    """Write the SLA facts not yet written to their iTop tickets; see the module docstring.

    Per ticket: read its private log (and the custom field), record what is already there
    by its marker, write the rest one entry per ``core/update``, record each once iTop
    confirmed it. An iTop that cannot be reached ends the pass (the next one retries);
    an error on one ticket (rights, a deleted object) skips that ticket only.
    """
    from projections.models import ItopWritebackRow

    result = WritebackResult()
    targets, facts, next_deadline = collect(engine, source, tz=tz, titles=titles)
    wanted_field: dict[str, str] = {}
    if sla_field:
        with engine.connect() as conn:
            fields_written = {(r.ticket_id, r.fact_key) for r in conn.execute(
                select(ItopWritebackRow.ticket_id, ItopWritebackRow.fact_key)
                .where(ItopWritebackRow.fact_key.like(FIELD_KEY.format(code=sla_field) + "%")))}
        for tid, deadline in next_deadline.items():
            value = deadline.astimezone(tz).strftime(ITOP_TIME_FORMAT) if deadline is not None else ""
            if (tid, FIELD_KEY.format(code=sla_field) + value) not in fields_written:
                wanted_field[tid] = value

    def record(tid: str, keys: Iterable[str], *, replace_prefix: str | None = None) -> None:
        with engine.begin() as conn:
            if replace_prefix is not None:
                conn.execute(delete(ItopWritebackRow).where(ItopWritebackRow.ticket_id == tid,
                                                            ItopWritebackRow.fact_key.like(replace_prefix + "%")))
            for key in keys:
                exists = conn.execute(select(ItopWritebackRow.fact_key).where(
                    ItopWritebackRow.ticket_id == tid, ItopWritebackRow.fact_key == key)).first()
                if exists is None:
                    conn.execute(insert(ItopWritebackRow).values(ticket_id=tid, fact_key=key, written_at=now()))

    for tid in sorted(set(facts) | set(wanted_field)):
        target = targets[tid]
        todo = facts.get(tid, [])
        try:
            output = "private_log" + (f",{sla_field}" if sla_field else "")
            current = client.get_one(target.itop_class, target.key, output)
            if current is None:  # deleted in iTop, or out of this account's scope: nothing to write to
                result.failed += 1
                result.errors.append(f"{tid}: {target.itop_class}::{target.key} introuvable dans iTop")
                log.warning("itop write-back: ticket not found in iTop", ticket_id=tid,
                            itop_class=target.itop_class, itop_key=target.key)
                continue
            present = _markers(current.fields.get("private_log"))
            already = [f for f in todo if MARKER.format(key=f.key) in present]
            if already:
                record(tid, [f.key for f in already])
                result.already += len(already)
            for fact in todo:
                if fact in already:
                    continue
                client.update(target.itop_class, target.key,
                              {"private_log": {"add_item": {"message": fact.message, "format": "text"}}},
                              comment=f"slaledger : SLA {fact.key}")
                record(tid, [fact.key])
                result.written += 1
                log.info("itop write-back: private log entry written", ticket_id=tid, fact=fact.key,
                         itop_class=target.itop_class, itop_key=target.key)
            if sla_field and tid in wanted_field:
                value = wanted_field[tid]
                if str(current.fields.get(sla_field) or "") != value:
                    client.update(target.itop_class, target.key, {sla_field: value},
                                  comment="slaledger : prochaine échéance SLA")
                    result.fields += 1
                prefix = FIELD_KEY.format(code=sla_field)
                record(tid, [prefix + value], replace_prefix=prefix)
        except ItopError as exc:
            result.failed += 1
            result.errors.append(f"{tid}: {exc.message}")
            log.warning("itop write-back failed, retried next pass", ticket_id=tid, itop_class=target.itop_class,
                        itop_key=target.key, code=exc.code, error=exc.message)
            if exc.code is None:  # iTop unreachable: the other tickets would fail the same way
                break
    return result


def check_field_code(code: str | None) -> None:
    """``--sla-field``: an iTop attribute code (letters, digits, underscores), or nothing."""
    if code is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", code):
        raise ValueError(f"--sla-field: {code!r} is not an iTop attribute code")


def writeback_into(result: SyncResult, client: ItopClient, engine: Engine, *, tz: ZoneInfo,
                   sla_field: str | None = None, titles: Mapping[str, str] | None = None) -> None:
    """The write-back after a sync pass, its counts added to the pass's result.

    Whatever goes wrong here is logged and left for the next pass: the commands of the
    pass are already published and the write-back must never stop the next ones (a
    database or programming error included, logged with its traceback).
    """
    try:
        done = writeback_once(client, engine, client.endpoint, tz=tz, sla_field=sla_field, titles=titles)
    except Exception:
        log.exception("itop write-back failed, retried next pass")
        result.writeback_failed += 1
        return
    result.written_back += done.written
    result.already_written += done.already
    result.writeback_failed += done.failed


__all__ = ["Fact", "WritebackResult", "check_field_code", "collect", "writeback_into", "writeback_once"]

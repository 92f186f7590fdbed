"""iTop sync: the checkpoint, the publisher and the polling loop of ``slaledger itop sync``.

Each pass reads what changed in iTop since the checkpoint (``client``) and the status
changes of those objects from iTop's change log, publishes the commands they stand for
(``mapping``) on the commands topic, moves the checkpoint once the broker acknowledged them
and records which iTop object each ticket comes from (for the write-back, ``writeback``);
``run_once`` and ``run_forever`` retry with back-off.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Protocol
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import Engine, select

from sla.ticket import Command, command_event_id
from streams.codec import encode_command
from streams.topics import COMMANDS, DEAD_LETTERS

from .client import (
    ERROR_CODES,
    ITOP_CLASSES,
    ITOP_TIME_FORMAT,
    MAX_PAGE_SIZE,
    ItopClient,
    ItopError,
    ItopObject,
    StatusChange,
    parse_itop_time,
)
from .mapping import Reference, Translation, Unknown, translate

log = structlog.get_logger(__name__)


# --- checkpoint -------------------------------------------------------------------------

@dataclass
class Checkpoint:
    watermark: str | None = None  # highest last_update read (iTop local "Y-m-d H:i:s")
    seen: dict[str, str] = field(default_factory=dict)  # key → last_update#digest, inside the overlap window


class CheckpointStore:
    """Checkpoints in the SQL database (table ``itop_checkpoints``), one per class."""

    def __init__(self, engine: Engine, source: str) -> None:
        self.engine, self.source = engine, source[:255]

    def load(self, itop_class: str) -> Checkpoint:
        from projections.models import ItopCheckpointRow

        with self.engine.connect() as conn:
            row = conn.execute(select(ItopCheckpointRow.watermark, ItopCheckpointRow.seen).where(
                ItopCheckpointRow.source == self.source, ItopCheckpointRow.itop_class == itop_class)).first()
        if row is None:
            return Checkpoint()
        return Checkpoint(row.watermark, {str(k): str(v) for k, v in (row.seen or {}).items()})

    def save(self, itop_class: str, checkpoint: Checkpoint) -> None:
        from sqlalchemy.orm import Session

        from projections.models import ItopCheckpointRow

        with Session(self.engine) as session, session.begin():
            row = session.get(ItopCheckpointRow, (self.source, itop_class))
            if row is None:
                row = ItopCheckpointRow(source=self.source, itop_class=itop_class)
                session.add(row)
            row.watermark = checkpoint.watermark
            row.seen = dict(checkpoint.seen)
            row.updated_at = datetime.now(UTC)

    def map_tickets(self, mapped: dict[str, tuple[str, str, str]]) -> None:
        """Remember which iTop object each ticket comes from (table ``itop_tickets``): the
        write-back must know where to write, and a ticket id cannot be turned back into an
        iTop key (a ref is not a key)."""
        if not mapped:
            return
        from sqlalchemy.orm import Session

        from projections.models import ItopTicketRow

        with Session(self.engine) as session, session.begin():
            for ticket_id, (itop_class, key, ref) in mapped.items():
                row = session.get(ItopTicketRow, ticket_id)
                if row is None:
                    row = ItopTicketRow(ticket_id=ticket_id)
                    session.add(row)
                row.source, row.itop_class, row.itop_key, row.ref = self.source, itop_class, key, ref[:64]
                row.updated_at = datetime.now(UTC)


# --- publishing -------------------------------------------------------------------------

class Publisher(Protocol):
    def send(self, command: Command) -> None: ...

    def dead_letter(self, command: Command, reason: str, ref: str) -> None:
        """Set aside the filing of an object that cannot be taken in (an unknown member or
        product), with the reason, where the worker's refusals go: the dead-letter topic."""

    def flush(self) -> None:
        """Return once everything sent is acknowledged by the broker; raise otherwise."""


class KafkaPublisher:
    """Commands to the commands topic keyed by ticket id (one partition: order kept)."""

    def __init__(self, bootstrap: str, *, embedded: bool, timeout: float = 30.0) -> None:
        from streams.kafka_tools import producer

        # One request in flight: a retried batch cannot overtake the next one (order per ticket).
        self.producer = producer(bootstrap, embedded=embedded, max_in_flight_requests_per_connection=1,
                                 client_id="slaledger-itop")
        self.timeout = timeout
        self.pending: list[Any] = []

    def send(self, command: Command) -> None:
        self.pending.append(self.producer.send(COMMANDS, key=command.ticket_id.encode(),
                                               value=encode_command(command)))

    def dead_letter(self, command: Command, reason: str, ref: str) -> None:
        # the worker's dead-letter shape (``streams.appender``); the record was never on a topic
        origin = {"topic": None, "partition": None, "offset": None, "itop_ref": ref}
        body = {"reason": f"itop record refused: {reason}", "origin": origin,
                "key": base64.b64encode(command.ticket_id.encode()).decode(),
                "value": base64.b64encode(encode_command(command)).decode(),
                "dead_lettered_at": datetime.now(UTC).isoformat()}
        self.pending.append(self.producer.send(DEAD_LETTERS, key=command.ticket_id.encode(),
                                               value=json.dumps(body, ensure_ascii=False).encode()))

    def flush(self) -> None:
        self.producer.flush(timeout=self.timeout)
        pending, self.pending = self.pending, []
        for future in pending:
            future.get(timeout=self.timeout)

    def close(self) -> None:
        self.producer.close(timeout=self.timeout)


# --- one pass ----------------------------------------------------------------------------

@dataclass
class SyncResult:
    source: str
    fetched: int = 0
    unchanged: int = 0
    tickets: int = 0
    commands: int = 0
    unknown: list[Unknown] = field(default_factory=list)
    skipped: int = 0
    watermarks: dict[str, str | None] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)  # "ref: reason" of objects not taken in
    refused: list[str] = field(default_factory=list)  # "ref : reason" of objects dead-lettered (unknown names)
    history: dict[str, str] = field(default_factory=dict)  # class → change log read | unavailable | unused
    written_back: int = 0  # private log entries written to iTop by the write-back after the pass
    already_written: int = 0  # facts found already in iTop (marker) and recorded without writing
    writeback_failed: int = 0  # tickets whose write-back failed (retried next pass)

    def unknown_by_kind(self) -> dict[str, dict[str, list[str]]]:
        """``{"organisation": {"Mairie de X": ["R-000104", …]}, …}``, in a stable order."""
        out: dict[str, dict[str, list[str]]] = {}
        for item in self.unknown:
            refs = out.setdefault(item.what, {}).setdefault(item.value, [])
            if item.ref not in refs:
                refs.append(item.ref)
        return out

    def as_dict(self) -> dict[str, Any]:
        """What ``slaledger itop sync --once --json`` prints, for a script: the summary's
        figures, unknown names grouped as it groups them, the watermarks reached."""
        return {"source": self.source, "fetched": self.fetched, "unchanged": self.unchanged,
                "commands": self.commands, "tickets": self.tickets, "skipped": self.skipped,
                "unknown": self.unknown_by_kind(), "unreadable": list(self.unreadable), "refused": list(self.refused),
                "watermarks": dict(self.watermarks)}

    def summary(self) -> str:
        """For the person running ``slaledger itop sync --once`` (French)."""
        lines = [f"iTop {self.source} : {self.fetched} objet(s) lu(s) dont {self.unchanged} inchangé(s), "
                 f"{self.commands} commande(s) publiée(s) pour {self.tickets} ticket(s)"
                 + (f", {self.skipped} transition(s) non reprise(s) (refusées par le cycle de vie, voir les journaux)"
                    if self.skipped else "")]
        titles = {"organisation": "Organisations inconnues (membre déduit du nom ; à ajouter à --org-map)",
                  "service": "Services inconnus (produit déduit du nom ; à ajouter à --org-map)",
                  "origin": "Origines inconnues (canal e-mail retenu)",
                  "request_type": "Types de demande inconnus (assistance retenue)"}
        for what, values in self.unknown_by_kind().items():
            listed = "; ".join(f"{value or '(vide)'} : {', '.join(refs)}" for value, refs in values.items())
            lines.append(f"{titles.get(what, what)} : {listed}")
        if self.unreadable:
            lines.append(f"Objets illisibles, non repris : {'; '.join(self.unreadable)}")
        if self.refused:
            lines.append("Fiches refusées, mises de côté avec leur motif (lettres mortes ; complétez l'annuaire des "
                         "membres ou le catalogue des produits, puis relancez avec --since) : "
                         + "; ".join(self.refused))
        if "unavailable" in self.history.values():
            lines.append("Historique iTop illisible (droit de lecture sur CMDBChangeOpSetAttributeScalar ?) : "
                         "transitions déduites des dates du ticket")
        if self.written_back or self.already_written or self.writeback_failed:
            lines.append(f"Retour vers iTop : {self.written_back} entrée(s) du journal privé écrite(s)"
                         + (f", {self.already_written} déjà présente(s)" if self.already_written else "")
                         + (f", {self.writeback_failed} ticket(s) en échec (nouvel essai au prochain passage)"
                            if self.writeback_failed else ""))
        return "\n".join(lines)


def _shift(stamp: str, delta: timedelta) -> str:
    return (datetime.strptime(stamp, ITOP_TIME_FORMAT) + delta).strftime(ITOP_TIME_FORMAT)


def sync_once(client: ItopClient, publisher: Publisher, store: CheckpointStore, reference: Reference, *,
              tz: ZoneInfo, page_size: int = 100, overlap: timedelta = timedelta(minutes=65),
              since: str | None = None, classes: tuple[str, ...] = ITOP_CLASSES,
              now: Callable[[], datetime] = lambda: datetime.now(UTC),
              max_backdate: timedelta | None = None) -> SyncResult:
    """Read what changed in iTop since the checkpoint, publish its commands, move the checkpoint.

    The window re-read each time (``overlap``, 65 min by default) covers rows committed
    late with an older ``last_update`` and the autumn DST hour, when iTop's local times go
    back by one hour. Objects already read with the same ``last_update`` are skipped; the
    others are re-sent whole, which is harmless (deterministic ids). The checkpoint moves
    only after the broker acknowledged every command of the pass.
    """
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page size must be between 1 and {MAX_PAGE_SIZE}")
    result = SyncResult(client.endpoint)
    actor = f"itop:{client.account}"[:128]
    tickets: set[str] = set()
    mapped: dict[str, tuple[str, str, str]] = {}  # ticket id → (class, key, ref), for the write-back
    for itop_class in classes:
        checkpoint = store.load(itop_class)
        start = _shift(checkpoint.watermark, -overlap) if checkpoint.watermark else since
        watermark, seen = checkpoint.watermark, dict(checkpoint.seen)
        log.info("itop pass", itop_class=itop_class, since=start, watermark=watermark)
        batch: list[ItopObject] = []
        history = _History(client, itop_class, page_size)
        context = _PassContext(reference, publisher, result, actor, tz, now, max_backdate, tickets, mapped)
        for obj in client.changed_since(itop_class, start, page_size):
            result.fetched += 1
            stamp = obj.last_update
            if stamp and seen.get(obj.key) == obj.version:
                result.unchanged += 1
                continue
            try:
                if stamp:
                    parse_itop_time(stamp, tz)  # a bad stamp must not become the watermark
            except ValueError as exc:  # one odd object must not stop the sync at every pass
                log.warning("itop object skipped: unreadable", itop_class=itop_class, key=obj.key, error=str(exc))
                result.unreadable.append(f"{obj.key}: {exc}")
                continue
            batch.append(obj)
            if len(batch) >= page_size:
                watermark = _publish_batch(batch, history, context, seen, watermark)
        if batch:
            watermark = _publish_batch(batch, history, context, seen, watermark)
        result.history[itop_class] = history.state
        publisher.flush()
        if watermark:
            floor = _shift(watermark, -overlap)
            seen = {k: v for k, v in seen.items() if v >= floor}
        store.map_tickets(mapped)  # before the checkpoint: a ticket sent is always findable for the write-back
        mapped.clear()
        store.save(itop_class, Checkpoint(watermark, seen))
        result.watermarks[itop_class] = watermark
    result.tickets = len(tickets)
    return result


@dataclass
class _PassContext:
    reference: Reference
    publisher: Publisher
    result: SyncResult
    actor: str
    tz: ZoneInfo
    now: Callable[[], datetime]
    max_backdate: timedelta | None
    tickets: set[str]
    mapped: dict[str, tuple[str, str, str]]


def _publish_batch(batch: list[ItopObject], history: _History, ctx: _PassContext, seen: dict[str, str],
                   watermark: str | None) -> str | None:
    """Publish a batch of changed objects with their change log (one read for the batch);
    returns the new watermark and fills ``seen``, then empties the batch."""
    changes = history.read([o.key for o in batch])
    for obj in batch:
        stamp = obj.last_update
        try:
            done = _publish(obj, ctx.reference, ctx.publisher, ctx.result, actor=ctx.actor, tz=ctx.tz, now=ctx.now(),
                            max_backdate=ctx.max_backdate, changes=changes.get(obj.key) if changes else None)
        except ValueError as exc:  # one odd object must not stop the sync at every pass
            log.warning("itop object skipped: unreadable", itop_class=obj.itop_class, key=obj.key, error=str(exc))
            ctx.result.unreadable.append(f"{obj.key}: {exc}")
            continue
        if not done.refused:  # a refused object made no ticket: nothing to write back
            ctx.tickets.add(done.ticket_id)
            ctx.mapped[done.ticket_id] = (obj.itop_class, obj.key, obj.ref)
        if stamp:
            watermark = max(watermark or stamp, stamp)
            if not any(s.retry for s in done.skipped):
                seen[obj.key] = obj.version
    batch.clear()
    return watermark


class _History:
    """Reads the change log of a batch of objects; without it (no right to read
    ``CMDBChangeOpSetAttributeScalar``, an iTop refusing the query) the mapping falls back to
    the snapshot's dates for the rest of the pass, with one warning per process: the sync
    must not stop for a log it can do without. Network failures and INTERNAL_ERROR are
    raised: the pass is retried, not silently degraded."""

    warned: ClassVar[set[tuple[str, str]]] = set()  # (endpoint, class) already warned about, for the process

    def __init__(self, client: ItopClient, itop_class: str, page_size: int) -> None:
        self.client, self.itop_class, self.page_size = client, itop_class, page_size
        self.state = "unused"  # unused | read | unavailable

    def read(self, keys: list[str]) -> dict[str, list[StatusChange]] | None:
        if self.state == "unavailable" or not keys:
            return None
        try:
            changes = self.client.status_changes(self.itop_class, [k for k in keys if k.isdigit()], self.page_size)
        except ItopError as exc:
            if exc.transient:
                raise
            self.state = "unavailable"
            warn_key = (self.client.endpoint, self.itop_class)
            if warn_key not in _History.warned:
                _History.warned.add(warn_key)
                log.warning("itop change log unavailable, transitions inferred from snapshot dates",
                            itop_class=self.itop_class, code=exc.code, error=exc.message)
            return None
        self.state = "read"
        return changes


def _publish(obj: ItopObject, reference: Reference, publisher: Publisher, result: SyncResult, *, actor: str,
             tz: ZoneInfo, now: datetime, max_backdate: timedelta | None = None,
             changes: list[StatusChange] | None = None) -> Translation:
    translation = translate(obj, reference, actor=actor, tz=tz, now=now, max_backdate=max_backdate, changes=changes)
    context = {"ticket_id": translation.ticket_id, "itop_ref": obj.ref, "itop_class": obj.itop_class,
               "itop_key": obj.key}
    for item in translation.unknown:
        log.warning(f"itop {item.what} unknown", value=item.value, **context)
    if translation.refused:
        publisher.dead_letter(translation.commands[0], translation.refused, obj.ref)
        log.warning("itop object dead-lettered", reason=translation.refused, **context)
        result.refused.append(f"{obj.ref} : {translation.refused}")
        return translation
    for skip in translation.skipped:
        log.info("itop transition not mapped", itop_field=skip.field, itop_time=skip.stamp, command=skip.command,
                 reason=skip.reason, **context)
    for command in translation.commands:
        publisher.send(command)
        log.debug("itop command published", command=str(command.type), command_id=str(command.command_id),
                  event_id=str(command_event_id(command.command_id)), occurred_at=command.occurred_at, **context)
    log.info("itop object published", commands=len(translation.commands), last_update=obj.last_update, **context)
    result.commands += len(translation.commands)
    result.unknown.extend(translation.unknown)
    result.skipped += len(translation.skipped)
    return translation


# --- retries and the loop ----------------------------------------------------------------

def backoff(failures: int, base: float, cap: float) -> float:
    """Seconds to wait after ``failures`` consecutive failures: base, 2×base, 4×base… up to cap."""
    return float(min(cap, base * 2 ** min(max(0, failures - 1), 60)))  # days of failures: no overflow


def _failure_fields(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, ItopError):
        return {"code": exc.code, "code_name": ERROR_CODES.get(exc.code or 0), "transient": exc.transient,
                "error": exc.message}
    return {"transient": True, "error": f"{type(exc).__name__}: {exc}"}


def run_once(sync: Callable[[], SyncResult], *, attempts: int = 3, base: float = 1.0, cap: float = 300.0,
             sleep: Callable[[float], Any] = time.sleep) -> SyncResult:
    """One pass, retried with back-off on transient failures; the last failure is raised."""
    for attempt in range(1, max(1, attempts) + 1):
        try:
            return sync()
        except Exception as exc:
            if not is_retryable(exc):
                raise
            fields = _failure_fields(exc)
            if attempt >= attempts or not fields["transient"]:
                log.error("itop sync failed", attempt=attempt, **fields)
                raise
            delay = backoff(attempt, base, cap)
            log.warning("itop sync failed, retrying", attempt=attempt, retry_in=delay, **fields)
            sleep(delay)
    raise AssertionError("unreachable")


def run_forever(sync: Callable[[], SyncResult], *, every: float, stop: threading.Event, base: float = 1.0,
                cap: float = 300.0) -> None:
    """Poll every ``every`` seconds until ``stop`` is set; failures back off exponentially
    (capped), whatever the cause: an account fixed in iTop is picked up without a restart."""
    failures = 0
    while not stop.is_set():
        try:
            result = sync()
        except Exception as exc:
            if not is_retryable(exc):
                raise
            failures += 1
            delay = backoff(failures, base, cap)
            fields = _failure_fields(exc)
            (log.warning if fields["transient"] else log.error)(
                "itop sync failed", failures=failures, retry_in=delay, **fields)
            stop.wait(delay)
            continue
        if failures:
            log.info("itop sync recovered", after_failures=failures)
        failures = 0
        log.info("itop sync done", fetched=result.fetched, unchanged=result.unchanged, commands=result.commands,
                 tickets=result.tickets, unknown=len(result.unknown), skipped=result.skipped,
                 watermarks=result.watermarks, history=result.history, written_back=result.written_back,
                 writeback_failed=result.writeback_failed)
        stop.wait(every)


def is_retryable(exc: Exception) -> bool:
    """iTop, broker and database failures are retried; programming errors are not."""
    from kafka.errors import KafkaError
    from sqlalchemy.exc import OperationalError

    return isinstance(exc, ItopError | KafkaError | OperationalError | TimeoutError | ConnectionError)


def describe_failure(exc: Exception) -> str:
    """One line for the person who ran ``--once`` (French)."""
    if isinstance(exc, ItopError):
        return exc.message
    return f"{type(exc).__name__} : {exc}".splitlines()[0]


def parse_since(value: str | None) -> str | None:
    """``--since``: an iTop local date-time ("2026-11-01 00:00:00" or "2026-11-01")."""
    if not value:
        return None
    for fmt in (ITOP_TIME_FORMAT, "%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(value, fmt).strftime(ITOP_TIME_FORMAT)
        except ValueError:
            continue
    raise ValueError(f"--since: {value!r} is not 'YYYY-MM-DD[ HH:MM:SS]' (iTop local time)")


def parse_duration(value: str) -> float:
    """``60s``, ``5m``, ``1h`` or a number of seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", value or "")
    if not match:
        raise ValueError(f"{value!r} is not a duration (e.g. 60s, 5m, 1h)")
    scale = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[match.group(2)]
    seconds = float(match.group(1)) * scale
    if seconds <= 0:
        raise ValueError(f"{value!r}: a duration must be positive")
    return seconds


__all__ = ["SyncResult", "run_forever", "run_once", "sync_once"]

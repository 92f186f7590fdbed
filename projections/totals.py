"""Running totals of the metrics that grow with history, kept by the projector.

A Prometheus scrape must cost what the open queue costs, not what the archive holds: the
counters (SLA outcomes per member, events projected per type, dead letters per reason), the
time-to-acknowledge histogram and the last event's time are added to ``metric_totals`` in
the transaction that archives the events they count (an event already archived adds
nothing, like the archive itself). A scrape then reads a few dozen rows.

``recount`` computes the same totals from the whole history: the migration that introduced
the table fills it with it, and the tests hold the running totals to it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import overload

from sqlalchemy import case, func, insert, select
from sqlalchemy.engine import Connection

from . import bulk
from .models import ARCHIVE, DEAD, JUDGMENTS, TICKETS, TOTALS

# A bucket boundary exactly at 4 h: "% acknowledged within 4 h" is one bucket over the count.
ACK_BUCKETS = (300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 259200.0)
SEP = "\x1f"  # between label values in a key (never in an SLA, member, type or reason)

OUTCOME, EVENTS, LAST_EVENT, DEAD_LETTERS, ACK_BUCKET, ACK_SUM, ACK_COUNT, MEMBER = (
    "outcome", "events", "last_event", "dead_letters", "ack_bucket", "ack_sum", "ack_count", "member")

Key = tuple[str, str]  # (metric, labels joined by SEP)


def key(metric: str, *labels: str) -> Key:
    return metric, SEP.join(labels)


def labels(k: Key) -> list[str]:
    return k[1].split(SEP) if k[1] else []


class Deltas(defaultdict[Key, float]):
    """What a batch adds to the totals."""

    def __init__(self) -> None:
        super().__init__(float)

    def merge(self, other: Mapping[Key, float]) -> None:
        for k, v in other.items():
            self[k] += v


def ack_observation(seconds: float) -> dict[Key, float]:
    """One time-to-acknowledge, as the histogram's rows (cumulative buckets, sum, count)."""
    out: dict[Key, float] = {k: 1.0 for b, k in _ACK_BUCKET_KEYS if seconds <= b}
    out[key(ACK_SUM)] = seconds
    out[key(ACK_COUNT)] = 1.0
    return out


def add(conn: Connection, deltas: Mapping[Key, float]) -> None:
    """Add ``deltas`` to the totals in one statement (the caller holds the archive's write
    lock: one writer)."""
    bulk.upsert(conn, TOTALS, [{"metric": m, "labels": lab, "value": v} for (m, lab), v in deltas.items() if v],
                set_={"value": lambda new: TOTALS.c.value + new.value})


def at_least(conn: Connection, k: Key, value: float) -> None:
    """A maximum (the last event's time): raised, never lowered."""
    bulk.upsert(conn, TOTALS, [{"metric": k[0], "labels": k[1], "value": value}],
                set_={"value": lambda new: case((new.value > TOTALS.c.value, new.value), else_=TOTALS.c.value)})


def read(conn: Connection) -> dict[Key, float]:
    return {(m, lab): float(v) for m, lab, v in conn.execute(select(TOTALS.c.metric, TOTALS.c.labels,
                                                                    TOTALS.c.value))}


def outcome_of(event_type: str, envelope: str | bytes) -> str | None:
    """The SLA an archived breach or retraction is about (None for any other event)."""
    if event_type not in ("sla_breached", "sla_breach_retracted"):
        return None
    return str(json.loads(envelope)["payload"]["sla"])


def recount(conn: Connection) -> dict[Key, float]:
    """Every total from the whole history (O(history): once, at migration; and in tests)."""
    out = Deltas()
    members = dict(conn.execute(select(TICKETS.c.ticket_id, TICKETS.c.member)).all())
    for sla, outcome, member, n in conn.execute(select(JUDGMENTS.c.sla, JUDGMENTS.c.outcome, JUDGMENTS.c.member,
                                                       func.count()).group_by(JUDGMENTS.c.sla, JUDGMENTS.c.outcome,
                                                                              JUDGMENTS.c.member)):
        out[key(OUTCOME, sla, outcome, member)] += n
    for ticket_id, kind, envelope in conn.execute(select(ARCHIVE.c.ticket_id, ARCHIVE.c.type, ARCHIVE.c.envelope)
                                                  .where(ARCHIVE.c.type.in_(["sla_breached",
                                                                             "sla_breach_retracted"]))):
        sla = outcome_of(kind, envelope)
        outcome = "breached" if kind == "sla_breached" else "retracted"
        out[key(OUTCOME, str(sla), outcome, members.get(ticket_id, ""))] += 1
    for kind, n in conn.execute(select(ARCHIVE.c.type, func.count()).group_by(ARCHIVE.c.type)):
        out[key(EVENTS, kind)] += n
    for reason, n in conn.execute(select(DEAD.c.reason_kind, func.count()).group_by(DEAD.c.reason_kind)):
        out[key(DEAD_LETTERS, reason)] += n
    for member, n in conn.execute(select(TICKETS.c.member, func.count()).group_by(TICKETS.c.member)):
        out[key(MEMBER, member)] += n
    for filed, acked in conn.execute(select(TICKETS.c.filed_at, TICKETS.c.acknowledged_at)
                                     .where(TICKETS.c.acknowledged_at.is_not(None))):
        out.merge(ack_observation(ack_seconds(filed, acked)))
    last = conn.scalar(select(func.max(ARCHIVE.c.recorded_at)))
    result = {k: float(v) for k, v in out.items()}
    if last is not None:
        result[key(LAST_EVENT)] = aware(last).timestamp()
    return result


def fill(conn: Connection, totals: Mapping[Key, float]) -> None:
    conn.execute(TOTALS.delete())
    if totals:
        conn.execute(insert(TOTALS), [{"metric": m, "labels": lab, "value": v} for (m, lab), v in totals.items()])


def ack_seconds(filed: datetime | None, acked: datetime | None) -> float:
    """Filing to acknowledgement (0 when either is missing, as the histogram always read it)."""
    if filed is None or acked is None:
        return 0.0
    return (aware(acked) - aware(filed)).total_seconds()


@overload
def aware(value: datetime) -> datetime: ...
@overload
def aware(value: None) -> None: ...
def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every stored instant is UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _fmt(bound: float) -> str:
    return str(int(bound)) if bound == int(bound) else str(bound)


def bucket_bounds() -> Iterable[str]:
    return (_fmt(b) for b in ACK_BUCKETS)


_ACK_BUCKET_KEYS = [(b, key(ACK_BUCKET, _fmt(b))) for b in ACK_BUCKETS]  # once, not per acknowledgement

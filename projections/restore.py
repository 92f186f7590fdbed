"""Dev-mode durability: put the archived events back into a broker whose log is empty.

The embedded broker keeps nothing, so ``slaledger dev`` starts on an empty log; the SQL
archive is the durable copy. ``dev --kafka`` keeps its log under the data directory, but a
data directory first used by the embedded broker meets an empty Apache Kafka the first time:
the archive goes into it the same way (``restore_into_empty_log``). The events are produced
again in archive order, with the same bytes (same ids, same business times), keyed by
ticket so each ticket's order holds. The archive rows then point at their new
partition/offset, and the projection checkpoints at the new ends, since every restored
event is already projected. The signed tree heads are marked unpublished, so the projector
puts them on the new log again.
"""

from __future__ import annotations

import structlog
from kafka import KafkaConsumer
from sqlalchemy import Engine, delete, func, insert, select, update

from sla.log_names import EVENTS
from streams.kafka_security import client_options
from streams.kafka_tools import partitions_of, producer, true_end_offsets

from .models import ARCHIVE, CHECKPOINTS, HEADS

log = structlog.get_logger(__name__)


class LogNotArchived(RuntimeError):
    """The broker holds an events log, but not the one the archive was projected from."""


def restore_into_empty_log(engine: Engine, bootstrap: str) -> int:
    """The archive into the broker when its events topic is empty (the embedded broker at
    each start, an Apache Kafka on its first start); nothing when the broker holds the log
    itself. Refuses (``LogNotArchived``) a log shorter than what the archive was projected
    from: its tickets would be missing from the worker while the queue lists them."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             **client_options())
    try:
        tps = partitions_of(consumer, EVENTS)
        consumer.assign(tps)
        ends = {tp.partition: end for tp, end in true_end_offsets(consumer, tps).items()}
    finally:
        consumer.close()
    if not any(ends.values()):
        return restore_archive(engine, bootstrap)
    with engine.connect() as conn:
        projected = dict(conn.execute(select(CHECKPOINTS.c.partition, CHECKPOINTS.c.offset)
                                      .where(CHECKPOINTS.c.topic == EVENTS)).all())
    beyond = sorted(p for p, offset in projected.items() if offset >= ends.get(p, 0))
    if beyond:
        raise LogNotArchived(f"the archive was projected from a longer events log than the broker holds "
                             f"(partition(s) {', '.join(map(str, beyond))})")
    return 0


def restore_archive(engine: Engine, bootstrap: str) -> int:
    archive, checkpoints = ARCHIVE, CHECKPOINTS
    with engine.connect() as conn:
        total = conn.scalar(select(func.count()).select_from(archive)) or 0
    if not total:
        return 0
    kafka = producer(bootstrap, embedded=False)
    placed: list[tuple[int, object]] = []
    with engine.connect() as conn:
        for seq, ticket_id, envelope in conn.execute(
            select(archive.c.seq, archive.c.ticket_id, archive.c.envelope).order_by(archive.c.seq)
        ):
            placed.append((seq, kafka.send(EVENTS, key=ticket_id.encode(), value=envelope.encode())))
    kafka.flush()
    ends: dict[int, int] = {}
    with engine.begin() as conn:
        for seq, future in placed:
            meta = future.get(timeout=30)  # type: ignore[attr-defined]
            conn.execute(update(archive).where(archive.c.seq == seq)
                         .values(topic=EVENTS, partition=meta.partition, offset=meta.offset))
            ends[meta.partition] = max(ends.get(meta.partition, -1), meta.offset)
        conn.execute(delete(checkpoints).where(checkpoints.c.topic == EVENTS))
        for partition, offset in ends.items():
            conn.execute(insert(checkpoints).values(topic=EVENTS, partition=partition, offset=offset))
        # the signed tree heads were on the lost log too: the projector publishes them again
        conn.execute(update(HEADS).values(published_at=None))
    kafka.close()
    log.info("archive restored into the broker", events=total)
    return int(total)

"""Dev-mode durability: put the archived events back into an empty embedded broker.

The embedded broker keeps nothing, so ``slaledger dev`` starts on an empty log; the SQL
archive is the durable copy. The events are produced again in archive order, with the
same bytes (same ids, same business times), keyed by ticket so each ticket's order holds.
The archive rows then point at their new partition/offset, and the projection
checkpoints at the new ends, since every restored event is already projected. The signed
tree heads are marked unpublished, so the projector puts them on the new log again.
"""

from __future__ import annotations

import structlog
from sqlalchemy import Engine, delete, func, insert, select, update

from streams.kafka_tools import producer
from streams.topics import EVENTS

from .models import ARCHIVE, CHECKPOINTS, HEADS

log = structlog.get_logger(__name__)


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
    log.info("archive restored into the embedded broker", events=total)
    return int(total)

"""Dev mode's restore (``projections.restore``) on a real broker: the archive goes into a
broker whose events topic is empty, nothing into one that holds the log, and a log shorter
than what the archive was projected from is refused (#32 item 3: ``dev --kafka`` on a data
directory first used by the embedded broker)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from projections.models import ARCHIVE, CHECKPOINTS
from projections.restore import LogNotArchived, restore_into_empty_log
from sla.events import EventType, new_event
from slaledger.brokers.kafka_cluster import running_broker
from streams.kafka_tools import end_offsets_total, producer
from streams.topics import EVENTS
from tests.conftest import at, projected


def test_the_archive_goes_into_an_empty_log_only(tmp_path: Path) -> None:
    t0 = at("2026-03-02T09:00:00+01:00")
    events = [new_event(EventType.TICKET_FILED, f"SL-{i}", occurred_at=t0, recorded_at=t0, actor="agent:dev",
                        payload={"kind": "assistance", "channel": "phone", "member": "commune-de-blois",
                                 "product": "parapheur", "subject": "Compte bloqué"}) for i in range(3)]
    # projected from the embedded broker's log, offsets 0..2 of partition 0
    engine = projected(f"sqlite:///{tmp_path / 'slaledger.db'}", events)
    with running_broker("tansu", tmp_path) as broker:
        assert restore_into_empty_log(engine, broker.bootstrap) == 3  # a fresh broker: as the embedded mode does
        assert end_offsets_total(broker.bootstrap, EVENTS) == 3
        assert restore_into_empty_log(engine, broker.bootstrap) == 0  # it holds the log now
        assert end_offsets_total(broker.bootstrap, EVENTS) == 3
    (tmp_path / "other").mkdir()
    with running_broker("tansu", tmp_path / "other") as broker:  # a log of its own, shorter than the archive's
        kafka = producer(broker.bootstrap, embedded=True)
        for partition in range(4):
            kafka.send(EVENTS, value=b"{}", partition=partition)
        kafka.flush()
        kafka.close()
        with engine.begin() as conn:  # the archive was projected up to offset 5 of partition 0: not this log
            conn.execute(CHECKPOINTS.delete().where(CHECKPOINTS.c.topic == EVENTS))
            conn.execute(CHECKPOINTS.insert().values(topic=EVENTS, partition=0, offset=5))
        with pytest.raises(LogNotArchived, match="longer events log than the broker holds"):
            restore_into_empty_log(engine, broker.bootstrap)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(ARCHIVE)) == 3

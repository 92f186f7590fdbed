"""What a restarted worker indexes (#20): the deadline index takes a million schedules in
one go and still pops in order; each stored wakeup is read without decoding the ticket."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from faust.serializers import codecs

from sla.ticket import Ticket
from streams.deadlines import DeadlineIndex
from streams.table_values import STALE, stored, wakeup_of

BASE = datetime(2027, 1, 4, 9, tzinfo=UTC)


def test_the_index_pops_what_a_plain_model_says() -> None:
    rng = random.Random(20)
    for _ in range(100):
        index, model = DeadlineIndex(), dict[str, tuple[int, datetime]]()
        for _ in range(300):
            roll = rng.random()
            if roll < 0.6:
                tid = f"T-{rng.randrange(40)}"
                partition = int(tid[2:]) % 3
                at = None if rng.random() < 0.1 else BASE + timedelta(minutes=rng.randrange(90))
                index.schedule(partition, tid, at)
                if at is None:
                    model.pop(tid, None)
                else:
                    model[tid] = (partition, at)
            elif roll < 0.9:
                now, partitions = BASE + timedelta(minutes=rng.randrange(90)), rng.sample(range(3), rng.randrange(1, 4))
                due = index.pop_due(now, partitions)
                assert sorted(due) == sorted((p, t) for t, (p, at) in model.items() if p in partitions and at <= now)
                for _, tid in due:
                    del model[tid]
            else:
                keep = set(rng.sample(range(3), rng.randrange(3)))
                index.drop_partitions(keep)
                model = {t: v for t, v in model.items() if v[0] in keep}
            assert len(index) == len(model)


def test_a_bulk_schedule_pops_earliest_first() -> None:
    index = DeadlineIndex()
    instants = [BASE + timedelta(seconds=s) for s in random.Random(1).sample(range(100_000), 20_000)]
    for i, at in enumerate(instants):
        index.schedule(0, f"T-{i}", at)
    index.schedule(0, "T-late", BASE + timedelta(days=9))
    now = BASE + timedelta(seconds=50_000)
    due = index.pop_due(now, [0])
    expected = sorted((at, f"T-{i}") for i, at in enumerate(instants) if at <= now)
    assert [tid for _, tid in due] == [tid for _, tid in expected]
    assert len(index) == 20_001 - len(due)


def value(ticket_id: str, wakeup: datetime | None) -> bytes:
    return codecs.dumps("json", stored(Ticket(ticket_id), wakeup))


def test_the_stored_wakeup_is_read_from_the_first_bytes() -> None:
    at = BASE + timedelta(hours=3)
    assert wakeup_of(value("T-1", at)) == at
    assert wakeup_of(value("T-2", None)) is None
    assert wakeup_of(b'{"status":"new"}') is STALE

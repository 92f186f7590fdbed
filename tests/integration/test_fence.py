"""A worker that lost its partition cannot write to it (#30): on a real, secured Apache
Kafka, the new owner's claim of a partition bumps its transactional id's epoch; the zombie's
next batch is refused (``Fenced``), counted and logged, nothing of it reaches a
``read_committed`` reader, and the zombie writes again once it is given the partition back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.batches import send_batched
from streams.fence import Fence, Fenced
from streams.kafka_acls import WORKER
from streams.kafka_broker import KafkaCluster
from streams.kafka_security import aiokafka_options
from streams.topics import EVENTS, OUTCOMES
from tests.integration.conftest import running_broker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    with running_broker("kafka", tmp_path_factory.mktemp("fence")) as broker:
        assert isinstance(broker, KafkaCluster)
        yield broker


def fence(cluster: KafkaCluster) -> Fence:
    """A fence as the worker builds it: its own principal, no more rights than it has."""
    return Fence({"bootstrap_servers": cluster.bootstrap, **aiokafka_options(cluster.security(WORKER))})


async def write(owner: Fence, partition: int, value: bytes) -> None:
    """One batch: an event and an outcome, committed together."""
    async with owner.transaction(partition) as producer:
        sent = [*await send_batched(producer, EVENTS, [(partition, b"T-1", value)]),
                *await send_batched(producer, OUTCOMES, [(partition, b"c-1", value)])]
        for batch in sent:
            await batch.future


async def committed(cluster: KafkaCluster, topic: str, partition: int) -> list[bytes]:
    """What a read_committed reader (projector, replay, recovery) sees of the partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=cluster.bootstrap, group_id=None, enable_auto_commit=False,
                                isolation_level="read_committed", **aiokafka_options(cluster.security(WORKER)))
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        values: list[bytes] = []
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=500)
            values.extend(r.value for r in batch.get(tp, []) if r.value is not None)
        return values
    finally:
        await consumer.stop()


def test_a_zombie_is_fenced_and_rejoins(cluster: KafkaCluster, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        zombie, owner = fence(cluster), fence(cluster)
        await zombie.claim({0, 1})
        await write(zombie, 0, b"zombie-before")

        await owner.claim({0})  # the group moved partition 0 while the zombie slept
        with pytest.raises(Fenced) as refused:
            await write(zombie, 0, b"zombie-after")
        assert refused.value.partition == 0
        assert zombie.fenced_writes == 1 and zombie.partitions == {1}  # it dropped the partition it lost
        with pytest.raises(Fenced):  # and does not write there again unless it is given it back
            await write(zombie, 0, b"zombie-again")
        await write(zombie, 1, b"zombie-partition-1")  # the partitions it still owns are unaffected
        await write(owner, 0, b"owner")

        await owner.release(0)  # the group gives partition 0 back: the zombie rejoins cleanly
        await zombie.claim({0, 1})
        await write(zombie, 0, b"rejoined")

        for topic in (EVENTS, OUTCOMES):
            assert await committed(cluster, topic, 0) == [b"zombie-before", b"owner", b"rejoined"]
        assert await committed(cluster, EVENTS, 1) == [b"zombie-partition-1"]
        await zombie.stop()
        await owner.stop()

    asyncio.run(scenario())

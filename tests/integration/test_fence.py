"""A worker that lost its partition cannot write to it (#30): on a real, secured Apache
Kafka, the new owner's claim of a partition bumps its transactional id's epoch; the zombie's
next batch is refused (``Fenced``), counted and logged, nothing of it reaches a
``read_committed`` reader, and the zombie writes again once it is given the partition back.
First the fence alone, then a running worker whose partitions another holder takes."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import TransactionalIdAuthorizationFailed

from sla.events import decode_event
from slaledger.brokers.kafka_cluster import KafkaCluster
from streams.batches import send_batched
from streams.fence import Fence, Fenced
from streams.kafka_acls import WORKER
from streams.kafka_security import aiokafka_options
from streams.kafka_tools import read_topic
from streams.table_values import partition_for
from streams.topics import EVENTS, OUTCOMES
from tests.integration.conftest import Worker, api, running_broker, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    with running_broker("kafka", tmp_path_factory.mktemp("fence")) as broker:
        assert isinstance(broker, KafkaCluster)
        asyncio.run(granted(broker))
        yield broker


async def granted(cluster: KafkaCluster, timeout: float = 30) -> None:
    """Wait until the brokers apply the ACLs just created (the authorizer learns them
    asynchronously: a claim right after them was refused TransactionalIdAuthorizationFailed)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        probe = fence(cluster)
        try:
            await probe.claim({0})
            return
        except TransactionalIdAuthorizationFailed:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.5)
        finally:
            await probe.stop()


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


FILE = {"kind": "assistance", "channel": "portal", "member": "m-001", "product": "ent", "subject": "Mot de passe"}


def filings(cluster: KafkaCluster) -> Counter[str]:
    """Ticket filings a read_committed reader (the projector, the replay) finds, by ticket
    (the first test's records, not events, left aside)."""
    found: Counter[str] = Counter()
    for record in read_topic(cluster.bootstrap, EVENTS):
        if record.value.startswith(b"{"):
            event = decode_event(record.value)
            found[event.ticket_id] += event.type.value == "ticket_filed"
    return found


def partitions(worker: Worker) -> set[int]:
    _, body = api("GET", f"{worker.url}/readyz")
    return set(body.get("partitions", [])) if isinstance(body, dict) else set()


def test_a_running_worker_whose_partitions_are_taken_writes_nothing_then_rejoins(
        cluster: KafkaCluster, tmp_path: Path) -> None:
    """The zombie is a running worker; the new holder takes every partition's transactional
    id under it (what the group's next owner does when it is assigned them). The filing the
    zombie then decides is refused at commit: its caller is answered 503 at once, the log has
    nothing of it, the zombie says so once and stops reading the partition. When the group
    next assigns partitions (another worker joins), it claims its share again and the
    caller's retry with its key files the ticket once. (Every partition the zombie then
    writes is fenced: the holder took them all.)"""
    fenced = {"SLALEDGER_TRANSACTIONS": "true"}  # the fence is off by default (#30)
    a = Worker(cluster, tmp_path, name="a", extra_env={"SLALEDGER_COMMAND_TIMEOUT": "20", **fenced}).start()
    b = Worker(cluster, tmp_path, name="b", extra_env=fenced)
    loop = asyncio.new_event_loop()
    holder = fence(cluster)
    try:
        status, before = api("POST", f"{a.url}/api/tickets", FILE)
        assert status == 201, before
        assert partitions(a) == {0, 1, 2, 3}
        loop.run_until_complete(holder.claim({0, 1, 2, 3}))

        key = {"Idempotency-Key": "fenced-filing-1"}
        status, refused = api("POST", f"{a.url}/api/tickets", FILE, headers=key)
        # its batch refused, the zombie turns its caller away at once: 503, retry with the key
        assert status == 503 and "même Idempotency-Key" in refused["error"], refused  # it may be applied
        wait_for(lambda: len(partitions(a)) < 4, timeout=10, what="the fenced partition dropped")
        assert filings(cluster) == {before["ticket"]["id"]: 1}  # nothing the zombie decided

        b.start()  # the group assigns again: each worker claims its partitions, fencing the holder
        wait_for(lambda: partitions(a) and partitions(b) and partitions(a) | partitions(b) == {0, 1, 2, 3},
                 timeout=60, what="partitions shared again")
        status, again = api("POST", f"{a.url}/api/tickets", FILE, headers=key)
        assert status == 201, again
        tid = again["ticket"]["id"]
        fenced = [json.loads(line)["partition"] for line in a.log_path.read_text().splitlines()
                  if "writes fenced" in line]
        # the filing's partition among them (and those whose events end the aborted
        # batches moved, which the zombie then tried to read): each said once
        assert partition_for(tid, 4) in fenced and len(fenced) == len(set(fenced)), fenced
        with urllib.request.urlopen(f"{a.url}/metrics", timeout=10) as response:  # auth is off here
            exposed = re.search(r"^slaledger_fenced_writes_total (\S+)$", response.read().decode(), re.M)
        assert exposed and float(exposed.group(1)) >= len(fenced), exposed  # every refused transaction
        assert filings(cluster) == {before["ticket"]["id"]: 1, tid: 1}
        for worker in (a, b):  # the owner's state is the log's
            status, body = api("GET", f"{worker.url}/api/tickets/{tid}")
            assert status == 200 and body["status"] == "open" and body["version"] == 1, body
    finally:
        for worker in (a, b):
            worker.stop(signal.SIGKILL)
        loop.run_until_complete(holder.stop())
        loop.close()

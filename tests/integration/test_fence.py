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
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import TransactionalIdAuthorizationFailed

from sla.events import decode_event
from slaledger.brokers.kafka_cluster import KafkaCluster
from streams.batches import send_batched
from streams.changelog_markers import PROBE_SECONDS, CommittedProbe
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



def test_the_changelog_probe_tells_an_unapplied_record_from_an_end_marker(cluster: KafkaCluster) -> None:
    """Faust's table recovery is moved past a changelog's end only when what it has not
    applied is markers only (``streams.changelog_markers``): a committed record still to
    apply is seen, whatever Faust's own reader has fetched."""
    async def scenario() -> None:
        owner = fence(cluster)
        await owner.claim({2})
        await write(owner, 2, b"last-record")  # the partition ends: the record, then its commit marker
        probe = CommittedProbe({"bootstrap_servers": cluster.bootstrap, "isolation_level": "read_committed",
                                **aiokafka_options(cluster.security(WORKER))})
        tp = TopicPartition(EVENTS, 2)
        readers = [AIOKafkaConsumer(bootstrap_servers=cluster.bootstrap, group_id=None, isolation_level=isolation,
                                    **aiokafka_options(cluster.security(WORKER)))
                   for isolation in ("read_uncommitted", "read_committed")]
        for reader in readers:
            await reader.start()
        try:  # the commit is answered before its markers are written: wait until they are
            for _ in range(100):
                ends = [(await reader.end_offsets([tp]))[tp] for reader in readers]
                if ends[0] == ends[1]:
                    break
                await asyncio.sleep(0.1)
            end = ends[1]
        finally:
            for reader in readers:
                await reader.stop()
        try:
            started = asyncio.get_running_loop().time()
            assert await probe.holding_records({tp: (end - 2, end)}) == {tp}  # the record is still to apply
            assert asyncio.get_running_loop().time() - started < PROBE_SECONDS  # found, not timed out
            assert await probe.holding_records({tp: (end - 1, end)}) == set()  # its marker only
        finally:
            await probe.stop()
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


FENCED = {"SLALEDGER_TRANSACTIONS": "true", "SLALEDGER_COMMAND_TIMEOUT": "20"}


def fenced_partitions(worker: Worker) -> list[int]:
    return [json.loads(line)["partition"] for line in worker.log_path.read_text().splitlines()
            if "writes fenced" in line]


def file_with_retries(worker: Worker, key: str, attempts: int = 6) -> dict[str, Any]:
    """File a ticket as a client does: a 503/504 is retried with the same key."""
    for _ in range(attempts):
        status, body = api("POST", f"{worker.url}/api/tickets", FILE, headers={"Idempotency-Key": key})
        if status == 201:
            return dict(body["ticket"])
        assert status in (503, 504), body
        time.sleep(1)
    raise AssertionError(f"{key}: not filed after {attempts} attempts")


def test_a_worker_whose_partitions_another_claims_after_it_claims_them_back_and_serves(
        cluster: KafkaCluster, tmp_path: Path) -> None:
    """The other holder's claim lands after the worker's own (a worker that was given the
    partitions and lost them again claimed late), while the group still assigns the worker
    every partition. The filing the worker then decides is refused at commit: its caller is
    answered 503 at once, the log has nothing of it, the worker says so once per partition.
    Then, with no other worker joining, it asks the group for its partitions again, claims
    them anew, recovers the dropped partitions' tables from the changelog (the tickets filed
    before are there again) and the caller's retry with its key files the ticket once."""
    a = Worker(cluster, tmp_path, name="a", extra_env=FENCED).start()
    loop = asyncio.new_event_loop()
    holder = fence(cluster)
    try:
        earlier = [file_with_retries(a, f"earlier-{n}") for n in range(12)]
        assert partitions(a) == {0, 1, 2, 3}
        loop.run_until_complete(holder.claim({0, 1, 2, 3}))

        key = {"Idempotency-Key": "fenced-filing-1"}
        status, refused = api("POST", f"{a.url}/api/tickets", FILE, headers=key)
        # its batch refused, the worker turns its caller away at once: 503, retry with the key
        assert status == 503 and "même Idempotency-Key" in refused["error"], refused  # it may be applied
        assert Counter(filings(cluster)) == Counter({t["id"]: 1 for t in earlier})  # nothing of it in the log
        for ticket in earlier:  # a partition being taken back: unavailable for a moment, never "not found"
            status, body = api("GET", f"{a.url}/api/tickets/{ticket['id']}")
            assert status in (200, 503), body

        status, again = api("POST", f"{a.url}/api/tickets", FILE, headers=key)
        if status != 201:  # still rejoining
            again = {"ticket": file_with_retries(a, "fenced-filing-1")}
        tid = again["ticket"]["id"]
        assert partitions(a) == {0, 1, 2, 3}
        fenced = fenced_partitions(a)
        assert partition_for(tid, 4) in fenced and len(fenced) == len(set(fenced)), fenced  # each said once
        with urllib.request.urlopen(f"{a.url}/metrics", timeout=10) as response:  # auth is off here
            exposed = re.search(r"^slaledger_fenced_writes_total (\S+)$", response.read().decode(), re.M)
        assert exposed and float(exposed.group(1)) >= len(fenced), exposed  # every refused transaction
        assert filings(cluster) == Counter({**{t["id"]: 1 for t in earlier}, tid: 1})
        for ticket in [*earlier, {"id": tid}]:  # the dropped partitions' tables recovered from the changelog
            status, body = api("GET", f"{a.url}/api/tickets/{ticket['id']}")
            assert status == 200 and body["status"] == "open" and body["version"] == 1, body
    finally:
        a.stop(signal.SIGKILL)
        loop.run_until_complete(holder.stop())
        loop.close()


def test_a_partition_that_moves_from_a_to_b_and_back_to_a_is_served(cluster: KafkaCluster, tmp_path: Path) -> None:
    """Worker a paused past its session timeout (SIGSTOP): the group gives its partitions to
    b, which claims them; a resumes, rejoins and is given partitions back without having
    seen the generation in between. It claims every assigned partition anew (not only those
    new to it), so it serves them: every filing on every partition is answered, once."""
    a = Worker(cluster, tmp_path, name="a", extra_env=FENCED).start()
    b = Worker(cluster, tmp_path, name="b", extra_env=FENCED).start()
    try:
        wait_for(lambda: partitions(a) and partitions(b) and partitions(a) | partitions(b) == {0, 1, 2, 3},
                 timeout=60, what="partitions shared")
        before = partitions(a)
        assert a.process is not None
        a.process.send_signal(signal.SIGSTOP)
        wait_for(lambda: partitions(b) == {0, 1, 2, 3}, timeout=60, what="b given a's partitions")
        a.process.send_signal(signal.SIGCONT)
        wait_for(lambda: partitions(a) and partitions(b) and partitions(a) | partitions(b) == {0, 1, 2, 3},
                 timeout=60, what="partitions shared again")
        back = partitions(a)
        filed = [file_with_retries(a, f"after-{n}") for n in range(32)]
        assert back & {partition_for(t["id"], 4) for t in filed} == back, (back, filed)  # a's own partitions too
        found = filings(cluster)
        assert all(found[t["id"]] == 1 for t in filed), found
        for ticket in filed:
            status, body = api("GET", f"{a.url}/api/tickets/{ticket['id']}")
            assert status == 200 and body["version"] == 1, body
        # a may be fenced as it wakes (a zombie's write, before it learns it lost its partitions);
        # once it has claimed the partitions given back, none of its writes is refused
        lines = a.log_path.read_text().splitlines()
        last_claim = max(i for i, line in enumerate(lines) if "partitions claimed" in line)
        assert not [line for line in lines[last_claim:] if "writes fenced" in line], (before, back)
    finally:
        for worker in (a, b):
            if worker.process is not None:
                worker.process.send_signal(signal.SIGCONT)
            worker.stop(signal.SIGKILL)


def test_a_worker_outlives_a_broker_silent_past_its_request_timeout(cluster: KafkaCluster, tmp_path: Path) -> None:
    """Every broker silent for longer than the clients' 40 s request timeout (the node
    SIGSTOPped: its connections hang, as behind a cut link or during a whole cluster's
    restart): the worker keeps running — a timer tick whose broker calls time out is tried
    again at the next tick instead of stopping the worker — and once the broker answers
    again it serves its tickets and files new ones, each once."""
    a = Worker(cluster, tmp_path, name="a", extra_env=FENCED).start()
    node = cluster.node(1).process
    assert node is not None
    try:
        before = file_with_retries(a, "before-silence")
        node.send_signal(signal.SIGSTOP)
        try:
            time.sleep(50)
            assert a.process is not None and a.process.poll() is None, a.log_path.read_text()[-3000:]
        finally:
            node.send_signal(signal.SIGCONT)
        a.wait_ready(timeout=90)
        after = file_with_retries(a, "after-silence", attempts=30)
        assert a.process is not None and a.process.poll() is None, a.log_path.read_text()[-3000:]
        found = filings(cluster)
        assert found[before["id"]] == 1 and found[after["id"]] == 1, found
        for ticket in (before, after):
            _, body = wait_for(lambda t=ticket: (r := api("GET", f"{a.url}/api/tickets/{t['id']}"))[0] == 200 and r,
                               timeout=60, what=f"{ticket['id']} served")
            assert body["version"] == 1, body
    finally:
        a.stop(signal.SIGKILL)

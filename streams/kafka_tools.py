"""kafka-python helpers: read a topic to its *true* end, and produce raw records.

"The end" is taken from a fetch response's high watermark, never from ListOffsets:
Tansu (the embedded broker) answers ListOffsets(LATEST) with the last batch's base
offset + 1, which would silently stop a reader early. On Apache Kafka both agree.
Every client carries the process's TLS/SASL options (``streams.kafka_security``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaTimeoutError

from .kafka_security import client_options


class TopicMissing(RuntimeError):
    """The broker answers but has no such topic (``slaledger topics create`` not run)."""


def partitions_of(consumer: KafkaConsumer, topic: str) -> list[TopicPartition]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = consumer.partitions_for_topic(topic)
        if found:
            return [TopicPartition(topic, p) for p in sorted(found)]
        time.sleep(0.1)
    raise TopicMissing(f"topic {topic} not found")


def true_end_offsets(
    consumer: KafkaConsumer, tps: list[TopicPartition], timeout: float = 10.0
) -> dict[TopicPartition, int]:
    """End offsets as fetch responses report them (high watermarks), for assigned ``tps``.

    Seeks each partition to its start and polls once so a fetch returns the high
    watermark; positions are restored to the beginning afterwards.
    """
    consumer.seek_to_beginning(*tps)
    ends: dict[TopicPartition, int] = {}
    deadline = time.monotonic() + timeout
    while len(ends) < len(tps) and time.monotonic() < deadline:
        consumer.poll(timeout_ms=100, max_records=1, update_offsets=False)
        for tp in tps:
            high = consumer.highwater(tp)
            if high is not None:
                ends[tp] = high
    missing = [tp for tp in tps if tp not in ends]
    if missing:
        # a partition without a leader (a broker down): the broker's failure, said in one line by the CLI
        raise KafkaTimeoutError(f"no high watermark for {missing} within {timeout}s")
    consumer.seek_to_beginning(*tps)
    return ends


def wait_for_broker(bootstrap: str, timeout: float) -> None:
    """Return once a broker at ``bootstrap`` answers; raise KafkaTimeoutError after ``timeout``
    seconds. Commands call it first so that a broker that is not there fails them at start,
    within a bound they choose, rather than after each client's own 30 s. kafka-python's log
    of each refused attempt is held back: the caller reports the outcome once."""
    import logging

    from kafka.admin import KafkaAdminClient

    kafka_log = logging.getLogger("kafka")
    level = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)
    try:
        KafkaAdminClient(bootstrap_servers=bootstrap, client_id="slaledger-probe",
                         bootstrap_timeout_ms=max(1, int(timeout * 1000)), **client_options()).close()
    except KafkaTimeoutError:
        raise KafkaTimeoutError(f"no answer from {bootstrap} within {timeout:g} s") from None
    finally:
        kafka_log.setLevel(level)


def end_offsets_total(bootstrap: str, topic: str) -> int:
    """The number of records ever written to ``topic`` (sum of true end offsets)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, **client_options())
    try:
        tps = partitions_of(consumer, topic)
        consumer.assign(tps)
        return sum(true_end_offsets(consumer, tps).values())
    finally:
        consumer.close()


def read_topic(bootstrap: str, topic: str, *, timeout: float = 30.0, **options: Any) -> Iterator[ConsumerRecord]:
    """Every record of ``topic`` from offset 0 to the end captured at start (no group, no
    commits), partition by partition interleaved as fetched."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             isolation_level="read_committed", **{**client_options(), **options})
    try:
        tps = partitions_of(consumer, topic)
        consumer.assign(tps)
        ends = true_end_offsets(consumer, tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + timeout
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: still missing {sorted(str(t) for t in remaining)}")
            for tp, records in consumer.poll(timeout_ms=200, max_records=5000).items():
                for record in records:
                    if record.offset < ends[tp]:
                        yield record
            # a partition is read once its position passes the end, including one whose last
            # fetch held only a transaction's marker or aborted records (no record returned)
            for tp in [tp for tp in remaining if consumer.position(tp) >= ends[tp]]:
                remaining.discard(tp)
                consumer.pause(tp)
    finally:
        consumer.close()


def producer(bootstrap: str, *, embedded: bool, **options: Any) -> KafkaProducer:
    """A durable producer: ``acks=all`` and idempotence (a retried batch is never written
    twice). In embedded mode each batch holds one record (the Tansu ListOffsets workaround);
    on Apache Kafka batches are the client's defaults."""
    if embedded:
        options.setdefault("batch_size", 1)
        options.setdefault("linger_ms", 0)
    return KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                         **{**client_options(), **options})

"""The Tansu workarounds the worker and our Kafka tools apply in embedded mode (``Settings.embedded``).

Tansu 0.6 (the embedded broker of ``slaledger dev`` and the tests, launched by
``slaledger.brokers.embedded``) has two defects a client must work around:

- ListOffsets(LATEST) answers the last *batch's* base offset + 1 instead of the end offset.
  Everything that reads "to the end" would stop early, so Faust's table recovery asks a fetch
  for the high watermark instead (``patch_faust_highwaters``), and so do our own tools
  (``streams.kafka_tools.true_end_offsets``). (Sending one record per batch would also work,
  but measured here it capped a worker at ~1,000 commands/s.)
- A fetch with no data is answered only after about half of its wait (``patch_faust_fetch_wait``).

They live here, not beside the launcher, because the worker applies them at runtime against
any Tansu it is pointed at, while the launcher is a dev and test tool.
"""

from __future__ import annotations


async def fetch_high_watermarks(bootstrap: str, partitions: list[tuple[str, int]],
                                timeout: float = 10.0) -> dict[tuple[str, int], int]:
    """True end offsets, from fetch responses' high watermarks (not ListOffsets)."""
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, partition) for topic, partition in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends: dict[tuple[str, int], int] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(ends) < len(tps):
            if loop.time() > deadline:
                missing = [tp for tp in tps if (tp.topic, tp.partition) not in ends]
                raise TimeoutError(f"no high watermark for {missing}")
            await consumer.getmany(timeout_ms=200, max_records=1)
            for tp in tps:
                high = consumer.highwater(tp)
                if high is not None:
                    ends[(tp.topic, tp.partition)] = high
        return ends
    finally:
        await consumer.stop()


def patch_faust_highwaters(bootstrap: str) -> None:
    """Make Faust's table recovery ask for end offsets through a fetch (Tansu only).

    Faust recovers a table by reading its changelog up to ``highwaters()``, which aiokafka
    answers with ListOffsets(LATEST): on Tansu that stops at the last *batch's* base
    offset + 1 and silently drops the rest of the changelog.
    """
    from faust.transport.drivers import aiokafka as driver
    from faust.types import TP

    async def _highwaters(self: object, partitions: list[TP]) -> dict[TP, int]:
        ends = await fetch_high_watermarks(bootstrap, [(tp.topic, tp.partition) for tp in partitions])
        return {TP(topic, partition): end for (topic, partition), end in ends.items()}

    driver.AIOKafkaConsumerThread._highwaters = _highwaters  # type: ignore[method-assign]


def patch_faust_fetch_wait(max_wait_ms: int = 100) -> None:
    """Shorten Faust's fetch wait (Tansu only).

    Faust hard-codes ``fetch_max_wait_ms=1500``; Tansu 0.6 answers a fetch with no data only
    after about half of that wait, even when records arrive in the meantime, so every
    command would take ~0.75 s in the embedded mode (measured: 0.755 s sequentially;
    0.25 s with 100 ms).
    """
    import aiokafka

    original = aiokafka.AIOKafkaConsumer
    if getattr(original, "slaledger_fetch_wait", None) is not None:
        return

    class Consumer(original):  # type: ignore[misc, valid-type]
        slaledger_fetch_wait = max_wait_ms

        def __init__(self, *args: object, **kwargs: object) -> None:
            if kwargs.get("fetch_max_wait_ms") == 1500:
                kwargs["fetch_max_wait_ms"] = max_wait_ms
            super().__init__(*args, **kwargs)

    aiokafka.AIOKafkaConsumer = Consumer

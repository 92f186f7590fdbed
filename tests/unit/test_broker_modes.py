"""Nothing Tansu-specific runs against Apache Kafka: the embedded broker's workarounds (fetch
high watermarks instead of ListOffsets, short fetch waits, one record per producer batch)
are applied in embedded mode only, and the worker's producer is idempotent on Kafka only
(Tansu refuses aiokafka's InitProducerId)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = r"""
import json, sys, tempfile
import aiokafka
from faust.transport.drivers import aiokafka as driver
original_highwaters = driver.AIOKafkaConsumerThread._highwaters
from slaledger.settings import Settings, load_policy
from streams.app import Pipeline
from streams.kafka_tools import producer

embedded = sys.argv[1] == "embedded"
settings = Settings(broker_url="kafka://127.0.0.1:1", embedded=embedded, auth=False, data_dir=tempfile.mkdtemp())
pipeline = Pipeline(settings, load_policy())
transport = pipeline.app.transport
kafka_producer = producer("127.0.0.1:1", embedded=embedded, api_version=(3, 0))
print(json.dumps({
    "highwaters_patched": driver.AIOKafkaConsumerThread._highwaters is not original_highwaters,
    "fetch_wait_patched": getattr(aiokafka.AIOKafkaConsumer, "slaledger_fetch_wait", None) is not None,
    "producer_batch_size": kafka_producer.config["batch_size"],
    "producer_acks": kafka_producer.config["acks"],
    "producer_idempotent": kafka_producer.config["enable_idempotence"],
    "faust_transport": type(transport).__name__,
    "faust_producer_extra": dict(transport.Producer._settings_extra(pipeline.app.producer)),
}))
"""


def probe(mode: str) -> dict[str, object]:
    result = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(("mode", "patched", "batch", "transport", "idempotent"), [
    ("kafka", False, 16384, "IdempotentTransport", True),
    ("embedded", True, 1, "Transport", False),
])
def test_tansu_workarounds_only_in_embedded_mode(mode: str, patched: bool, batch: int, transport: str,
                                                 idempotent: bool) -> None:
    found = probe(mode)
    assert found["highwaters_patched"] is patched
    assert found["fetch_wait_patched"] is patched
    assert found["producer_batch_size"] == batch
    assert found["producer_acks"] == -1 and found["producer_idempotent"] is True  # kafka-python: both brokers
    assert found["faust_transport"] == transport
    assert found["faust_producer_extra"] == {"acks": "all", **({"enable_idempotence": True} if idempotent else {})}

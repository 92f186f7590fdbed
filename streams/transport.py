"""Faust's Kafka transport as the worker needs it: durable writes, metadata known up front.

- ``acks=all`` on every broker, and idempotence on Apache Kafka: Faust's own producer
  enables aiokafka's idempotence only inside transactions, so a send retried after a
  leader change could write a record twice; with a producer id and sequence numbers the
  broker drops a retried batch it already has. Tansu 0.6 refuses aiokafka's
  InitProducerId, so the embedded mode writes ``acks=all`` without idempotence (its one
  in-memory node has no leader to change).
- The tables' changelog topics are in the producer's metadata before anything is written:
  the tables pick a write's partition with the producer's partitioner (``use_partitioner``),
  and so do forwarded reads (``table_route``). An Apache Kafka broker answers metadata only
  for the topics a client asked about, and aiokafka's partitioner does not ask (measured: the
  agent crashed on its first table write, "'NoneType' object is not iterable").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from faust.transport.drivers import aiokafka as driver

SCHEMES = {"embedded": "slaledger-tansu", "kafka": "slaledger-kafka"}


class Producer(driver.Producer):
    idempotent: ClassVar[bool] = False

    def _settings_extra(self) -> Mapping[str, Any]:
        extra = {**super()._settings_extra(), "acks": "all"}
        return {**extra, "enable_idempotence": True} if self.idempotent else extra

    async def on_start(self) -> None:
        await super().on_start()
        producer = self._ensure_producer()
        for table in self.app.tables.values():
            await producer.partitions_for(table.changelog_topic.get_topic_name())


class IdempotentProducer(Producer):
    idempotent = True


class Transport(driver.Transport):
    Producer = Producer


class IdempotentTransport(driver.Transport):
    Producer = IdempotentProducer


def register() -> None:
    """Make the two schemes Faust broker URLs (idempotent)."""
    from faust.transport.drivers import TRANSPORTS

    TRANSPORTS.aliases.setdefault(SCHEMES["embedded"], f"{__name__}:Transport")
    TRANSPORTS.aliases.setdefault(SCHEMES["kafka"], f"{__name__}:IdempotentTransport")


def broker_urls(bootstrap: str, *, embedded: bool) -> list[str]:
    """Faust's broker list: the idempotent transport on Apache Kafka, the other on Tansu."""
    scheme = SCHEMES["embedded" if embedded else "kafka"]
    return [f"{scheme}://{host}" for host in bootstrap.split(",")]

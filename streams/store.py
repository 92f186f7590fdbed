"""The persistent table store of production workers: Faust's RocksDB store (rocksdict),
partitioned by key.

Faust's RocksDB store picks the database of a write from the *current event*'s partition.
The ticket agent processes a batch of records from several partitions and writes each
touched ticket once at the end, so "the current event" is the batch's last one and most
writes would land in another partition's database (Faust asserts, or worse, recovers the
wrong keys after a rebalance). Our tables are keyed like the topics (ticket id, murmur2,
``use_partitioner=True``), so the partition of a key is a function of the key: this store
uses exactly that, for writes, reads and deletes.

Selected with ``SLALEDGER_STORE_URL=slaledger-rocksdb://`` (the default outside tests and
the embedded dev mode): a restarted worker reads only the changelog written since its
last persisted offset instead of replaying the whole table.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from faust.stores.rocksdb import Store as RocksDBStore
from kafka.partitioner.default import murmur2

SCHEME = "slaledger-rocksdb"


class KeyPartitionedRocksDBStore(RocksDBStore):
    def _partition(self, key: bytes) -> int:
        return (murmur2(key) & 0x7FFFFFFF) % self.table.partitions

    def _set(self, key: bytes, value: bytes | None) -> None:
        partition = self._partition(key)
        self._key_index[key] = partition
        self._db_for_partition(partition).put(key, value)

    def _get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._db_for_partition(self._partition(key)).get(key)
        return value

    def _contains(self, key: bytes) -> bool:
        return self._get(key) is not None

    def _del(self, key: bytes) -> None:
        self._db_for_partition(self._partition(key)).delete(key)


    def raw_items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, serialized value) of one partition, straight from its database."""
        yield from self._visible_items(self._db_for_partition(partition))


def register() -> None:
    """Make ``slaledger-rocksdb://`` a Faust store URL (idempotent)."""
    from faust.stores import STORES

    STORES.aliases.setdefault(SCHEME, f"{__name__}:KeyPartitionedRocksDBStore")


def store_options() -> dict[str, Any]:
    """rocksdict, whatever python-rocksdb may also be installed."""
    return {"driver": "rocksdict"}

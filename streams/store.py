"""The persistent table store of production workers: Faust's RocksDB store (rocksdict),
partitioned by key, with the ticket table's deadline index persisted next to the tickets.

Faust's RocksDB store picks the database of a write from the *current event*'s partition.
The ticket agent processes a batch of records from several partitions and writes each
touched ticket once at the end, so "the current event" is the batch's last one and most
writes would land in another partition's database (Faust asserts, or worse, recovers the
wrong keys after a rebalance). Our tables are keyed like the topics (ticket id, murmur2,
``use_partitioner=True``), so the partition of a key is a function of the key: this store
uses exactly that, for writes, reads and deletes.

Deadline index (#31): a restart at a million open tickets spent 5.4–5.7 s reading every
stored ticket to rebuild the timer's index. So each partition's database of the ticket
table also holds one key per ticket with a wakeup, ``#due\\0`` + the wakeup (big-endian
microseconds) + the ticket id: RocksDB keeps keys sorted, so what is due next is a seek
away. The key moves in the same write batch as the ticket's value (the wakeup leads the
stored bytes), whether the agent writes it or the changelog recovery does, so a crash
cannot separate them. These keys are local (not changelogged): a database recovered from
the changelog gets them from the recovery itself. One written before the index existed has
no ``#due-index`` marker and is indexed once by a full scan (``index_due``).

Selected with ``SLALEDGER_STORE_URL=slaledger-rocksdb://`` (the default outside tests and
the embedded dev mode): a restarted worker reads only the changelog written since its
last persisted offset instead of replaying the whole table.
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from faust.stores.rocksdb import Store as RocksDBStore
from kafka.partitioner.default import murmur2
from rocksdict import Rdict, WriteBatch

from .table_values import STALE, is_ticket_key, wakeup_of
from .topics import TICKET_TABLE

SCHEME = "slaledger-rocksdb"

_DUE = b"#due\x00"  # '#' is in no ticket id: never a ticket's key
_DUE_COMPLETE = b"#due-index"  # every ticket of this database has its due key
_HIDDEN = b"#due"  # neither is a table item
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def _micros(at: datetime) -> int:
    return max(0, (at - _EPOCH) // _MICRO)


def _due_key(micros: int, key: bytes) -> bytes:
    return _DUE + struct.pack(">Q", micros) + key


def _due_of(value: bytes | None) -> int | None:
    """The stored wakeup of a serialized ticket, in microseconds (None: none, or not stored)."""
    if value is None:
        return None
    at = wakeup_of(value)
    return _micros(at) if isinstance(at, datetime) else None


class KeyPartitionedRocksDBStore(RocksDBStore):
    def _partition(self, key: bytes) -> int:
        return (murmur2(key) & 0x7FFFFFFF) % self.table.partitions

    @property
    def _indexes_due(self) -> bool:
        return bool(self.table.name == TICKET_TABLE)

    def _move_due(self, batch: WriteBatch, key: bytes, old: bytes | None, new: bytes | None) -> None:
        if not is_ticket_key(key):
            return
        before, after = _due_of(old), _due_of(new)
        if before != after:
            if before is not None:
                batch.delete(_due_key(before, key))
            if after is not None:
                batch.put(_due_key(after, key), b"")

    def _write(self, key: bytes, value: bytes | None) -> None:
        partition = self._partition(key)
        db = self._db_for_partition(partition)
        batch = WriteBatch(raw_mode=True)
        if self._indexes_due:
            self._move_due(batch, key, db.get(key), value)
        if value is None:
            batch.delete(key)
        else:
            self._key_index[key] = partition
            batch.put(key, value)
        db.write(batch)

    def _set(self, key: bytes, value: bytes | None) -> None:
        self._write(key, value)

    def _get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._db_for_partition(self._partition(key)).get(key)
        return value

    def _contains(self, key: bytes) -> bool:
        return self._get(key) is not None

    def _del(self, key: bytes) -> None:
        self._write(key, None)

    def apply_changelog_batch(self, batch: Iterable[Any], to_key: Callable[[Any], Any],
                              to_value: Callable[[Any], Any]) -> None:
        """Faust's recovery write, with each ticket's due key moved in the same batch."""
        if not self._indexes_due:
            super().apply_changelog_batch(batch, to_key, to_value)
            return
        batches: dict[int, WriteBatch] = {}
        latest: dict[tuple[int, bytes], bytes | None] = {}  # a key written twice in this batch
        offsets: dict[Any, int] = {}
        for event in batch:
            msg = event.message
            offsets[msg.tp] = max(msg.offset, offsets.get(msg.tp, msg.offset))
            out = batches.get(msg.partition)
            if out is None:
                out = batches[msg.partition] = WriteBatch(raw_mode=True)
            where = (msg.partition, msg.key)
            old = latest[where] if where in latest else self._db_for_partition(msg.partition).get(msg.key)
            self._move_due(out, msg.key, old, msg.value)
            latest[where] = msg.value
            if msg.value is None:
                out.delete(msg.key)
            else:
                out.put(msg.key, msg.value)
        for partition, out in batches.items():
            self._db_for_partition(partition).write(out)
        for tp, offset in offsets.items():
            self.set_persisted_offset(tp, offset)

    def _open_for_partition(self, partition: int) -> Rdict:
        """A new, empty database is complete as it is: its due keys come with its writes."""
        db: Rdict = super()._open_for_partition(partition)
        if self._indexes_due and db.get(_DUE_COMPLETE) is None:
            it = db.iter()
            it.seek_to_first()
            if not it.valid():
                db.put(_DUE_COMPLETE, b"1")
        return db

    def _visible_keys(self, db: Rdict) -> Iterator[bytes]:
        return (key for key in super()._visible_keys(db) if not key.startswith(_HIDDEN))

    def _visible_items(self, db: Rdict) -> Iterator[tuple[bytes, bytes]]:
        return ((key, value) for key, value in super()._visible_items(db) if not key.startswith(_HIDDEN))

    def revoke_partitions(self, table: Any, tps: set[Any]) -> None:
        """Faust's, only when a database of this store is dropped: Faust ends it with a full
        ``gc.collect()`` (to release the dropped databases' locks) even when nothing is
        revoked, as at every start (measured: 0.2–0.35 s per table on a loaded machine)."""
        if any(tp.topic in table.changelog_topic.topics and tp.partition in self._dbs for tp in tps):
            super().revoke_partitions(table, tps)

    def forget_partition(self, partition: int) -> None:
        """Drop a partition's local database: it holds writes a fence refused (``streams.fence``),
        which the log never got. The next assignment recovers it from the changelog."""
        db = self._dbs.pop(partition, None)
        if db is not None:
            db.close()
        for key in [k for k, p in self._key_index.items() if p == partition]:
            del self._key_index[key]
        shutil.rmtree(self.partition_path(partition), ignore_errors=True)

    def raw_items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, serialized value) of one partition, straight from its database."""
        yield from self._visible_items(self._db_for_partition(partition))

    # --- the deadline index ---------------------------------------------------------------
    def due_indexed(self, partition: int) -> bool:
        return self._db_for_partition(partition).get(_DUE_COMPLETE) is not None

    def index_due(self, partition: int, wakeup: Callable[[bytes, bytes], datetime | None]) -> int:
        """Give every ticket of a database written before the index existed its due key
        (once: O(tickets)). ``wakeup(key, value)`` folds a ticket stored without one."""
        db = self._db_for_partition(partition)
        batch, count = WriteBatch(raw_mode=True), 0
        for key, value in self.raw_items(partition):
            if not is_ticket_key(key):
                continue
            at = wakeup_of(value)
            if at is STALE:
                at = wakeup(key, value)
            if isinstance(at, datetime):
                batch.put(_due_key(_micros(at), key), b"")
                count += 1
        batch.put(_DUE_COMPLETE, b"1")
        db.write(batch)
        return count

    def due(self, partition: int, after: datetime | None, until: datetime) -> Iterator[tuple[datetime, str]]:
        """(wakeup, ticket id) of the partition's tickets due in (after, until], earliest first."""
        start = _DUE if after is None else _due_key(_micros(after) + 1, b"")
        last = _micros(until)
        it = self._db_for_partition(partition).iter()
        it.seek(start)
        while it.valid():
            key = it.key()
            if not key.startswith(_DUE):
                return
            (micros,) = struct.unpack_from(">Q", key, len(_DUE))
            if micros > last:
                return
            yield _EPOCH + micros * _MICRO, key[len(_DUE) + 8:].decode()
            it.next()


def register() -> None:
    """Make ``slaledger-rocksdb://`` a Faust store URL (idempotent)."""
    from faust.stores import STORES

    STORES.aliases.setdefault(SCHEME, f"{__name__}:KeyPartitionedRocksDBStore")


def store_options() -> dict[str, Any]:
    """rocksdict, whatever python-rocksdb may also be installed."""
    return {"driver": "rocksdict"}

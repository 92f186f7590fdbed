"""The audit's records read from the events topic: the one module of the audit that
reaches Kafka (a runner, see the contracts in pyproject.toml).

The topic is fetched and parsed by a forked child process while this one decodes and
folds (#31): kafka-python parses records in Python (with a pure-Python CRC-32C check, two
thirds of its time here), about as long as the replay takes per event, so the two run
side by side on two cores. The child never waits for the fold: a thread of its own hands
the parsed records over the pipe, ``CHUNKS_AHEAD`` chunks at most ahead of the fold, so a
slow moment on one side (the cores are shared) does not stall the other.
"""

from __future__ import annotations

import multiprocessing
import pickle
import queue
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any, cast

from sla.log_names import EVENTS, is_tree_head, tree_head_shaped
from streams.kafka_tools import read_topic

from .sources import LogRecord

Fetched = tuple[int, int, bytes | None, bytes | None]  # partition, offset, key, value
CHUNK = 1_000  # records per message across the pipe
CHUNKS_AHEAD = 8  # chunks the child may hold unread by the fold: about 5 MiB of records
TIMEOUT = 3600.0  # seconds to read the whole topic


def kafka_records(bootstrap: str, topic: str = EVENTS) -> Iterator[LogRecord]:
    """The topic's ticket events, every partition from offset 0 to the end captured at
    start, ``read_committed`` (no group, no commits); the signed tree heads published there
    are not events and are skipped (one under the head key that is not a head is reported
    as unreadable)."""
    for partition, offset, key, value in _read_in_child(bootstrap, topic):
        if is_tree_head(key) and tree_head_shaped(value):
            continue
        yield LogRecord(cast(bytes, value), {"topic": topic, "partition": partition, "offset": offset})


def _read_in_child(bootstrap: str, topic: str) -> Iterator[Fetched]:
    """``read_topic``'s records from a forked child (it keeps this process's client
    options); a failure in the child (broker, timeout) is raised here."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_send_topic, args=(sender, bootstrap, topic), daemon=True)
    child.start()
    sender.close()
    try:
        while True:
            try:
                chunk = receiver.recv()
            except EOFError:
                raise RuntimeError(f"reading {topic}: the reader process ended without a word") from None
            if chunk is None:
                return
            if isinstance(chunk, BaseException):
                raise chunk
            yield from chunk
    finally:
        receiver.close()
        if child.is_alive():
            child.terminate()
        child.join()


def _send_topic(sender: Connection, bootstrap: str, topic: str) -> None:
    """In the child: read the topic into chunks; a thread sends them (``None`` at the end,
    or the exception). A parent gone (broken pipe) ends the thread, then the reading."""
    chunks: queue.Queue[Any] = queue.Queue(maxsize=CHUNKS_AHEAD)

    def send_all() -> None:
        while True:
            item = chunks.get()
            try:
                sender.send(item)
            except OSError:  # the parent is gone
                return
            if item is None or isinstance(item, BaseException):
                return

    thread = threading.Thread(target=send_all, name="audit-topic-sender", daemon=True)
    thread.start()

    def put(item: Any) -> None:
        while thread.is_alive():
            try:
                chunks.put(item, timeout=1.0)
                return
            except queue.Full:
                continue
        raise SystemExit(1)  # the sender died: the parent is gone

    try:
        chunk: list[Fetched] = []
        for record in read_topic(bootstrap, topic, timeout=TIMEOUT):
            chunk.append((record.partition, record.offset, record.key, record.value))
            if len(chunk) >= CHUNK:
                put(chunk)
                chunk = []
        put(chunk)
        put(None)
    except Exception as exc:  # told to the parent, which raises it
        try:
            pickle.dumps(exc)
        except Exception:
            exc = RuntimeError(f"{type(exc).__name__}: {exc}")
        put(exc)
    thread.join()
    sender.close()

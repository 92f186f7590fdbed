"""The audit's records read from the events topic: the one module of the audit that
reaches Kafka (a runner, see the contracts in pyproject.toml)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

from sla.log_names import EVENTS, is_tree_head, tree_head_shaped
from streams.kafka_tools import read_topic_in_child

from .sources import LogRecord


def kafka_records(bootstrap: str, topic: str = EVENTS) -> Iterator[LogRecord]:
    """The topic's ticket events (read by a child process while this one folds: see
    ``read_topic_in_child``); the signed tree heads published there are not events and
    are skipped (one under the head key that is not a head is reported as unreadable)."""
    for partition, offset, key, value in read_topic_in_child(bootstrap, topic, timeout=3600):
        if is_tree_head(key) and tree_head_shaped(value):
            continue
        yield LogRecord(cast(bytes, value), {"topic": topic, "partition": partition, "offset": offset})

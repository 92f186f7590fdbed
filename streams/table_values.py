"""What the worker keeps in its tables, and where: the stored ticket value (its next wakeup,
its state, the refusals kept with it) and the keys that land on a ticket's own partition."""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache
from typing import Any

from kafka.partitioner.default import murmur2

from sla.ticket import Ticket, ticket_to_dict, upcast_snapshot


def _key_on(base: str, partition: int, partitions: int) -> bytes:
    """A key that Kafka's partitioner maps to ``partition`` itself."""
    for salt in range(100_000):
        key = f"{base}:{partition}:{salt}"
        if partition_for(key, partitions) == partition:
            return key.encode()
    raise RuntimeError("no position key found")  # pragma: no cover


@lru_cache(maxsize=256)
def position_key(topic: str, partition: int, partitions: int) -> bytes:
    """A positions-table key on ``partition``, so the position is changelogged on the
    partition number of the records it describes (whoever writes it)."""
    return _key_on(topic, partition, partitions)


# '#' is in no ticket id (sla.events.validate_ticket_id): such a key is never a ticket's.
_NOT_A_TICKET = b"#"


@lru_cache(maxsize=256)
def events_position_key(partition: int, partitions: int) -> bytes:
    """The ticket-table key of a partition's events position, on that partition's changelog,
    written after the tickets it covers: Kafka keeps one partition's records in order, so
    the position never survives a crash that lost a state it covers."""
    return _key_on("#events-position", partition, partitions)


def is_ticket_key(key: bytes) -> bool:
    return not key.startswith(_NOT_A_TICKET)


STALE = object()  # a stored ticket without its wakeup: fold it to find out
_WAKEUP = re.compile(rb'^\{"wakeup":\s*(?:null|"([^"]+)")')
_WAKEUP_AT = b'{"wakeup":"'  # how the table's JSON serializer writes it (no spaces)


# Refused commands remembered per ticket (the newest): enough for any redelivery, which
# reaches back to the last offset commit or the last stored position.
REFUSALS_KEPT = 20
Refusals = dict[str, tuple[str, dict[str, Any]]]  # command id → (result code, answer)


def stored(ticket: Ticket, wakeup: datetime | None, refused: Refusals | None = None) -> dict[str, Any]:
    """The table value: the ticket's state, led by when the timer must look at it next, so
    a restart indexes deadlines from the stored bytes without folding every ticket; then
    the commands refused on it, so a redelivered refusal is answered, not decided again.
    Refusals are not events: a ticket rebuilt from the events topic has none."""
    value = {"wakeup": wakeup.isoformat() if wakeup else None, **ticket_to_dict(ticket)}
    if refused:
        value["refused"] = {cid: [result, body] for cid, (result, body) in list(refused.items())[-REFUSALS_KEPT:]}
    return value


def refusals_of(value: dict[str, Any] | None) -> Refusals:
    current = upcast_snapshot(value) if value else {}
    return {cid: (str(result), body) for cid, (result, body) in current.get("refused", {}).items()}


def wakeup_of(value: bytes | dict[str, Any]) -> datetime | object | None:
    """The stored wakeup, read from the first bytes of a serialized value (a restart reads
    it for every ticket: no JSON decode), or STALE."""
    if isinstance(value, dict):
        if "wakeup" not in value:
            return STALE
        return datetime.fromisoformat(value["wakeup"]) if value["wakeup"] else None
    if value[:11] == _WAKEUP_AT:
        end = value.find(b'"', 11)
        if end > 11:
            return datetime.fromisoformat(value[11:end].decode("ascii"))
    match = _WAKEUP.match(value)
    if match is None:
        return STALE
    return datetime.fromisoformat(match.group(1).decode()) if match.group(1) else None


def partition_for(ticket_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a ticket id (murmur2 of the key)."""
    return (murmur2(ticket_id.encode()) & 0x7FFFFFFF) % partitions

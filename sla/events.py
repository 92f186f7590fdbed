"""Event envelope, event types, payload schemas, and the wire encoding.

Every fact about a ticket is one immutable ``Event``. The log is never rewritten: an
older ``schema_version`` is *upcast* when it is decoded (``Upcasters``), and a wrong
SLA verdict is corrected by a new event (``sla_breach_retracted``), never by deletion.

Wire format (stable, so hashes of encoded events are reproducible): UTF-8 JSON with
sorted keys and no insignificant whitespace; instants in UTC as ISO 8601 with a ``Z``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    TICKET_FILED = "ticket_filed"
    ACKNOWLEDGED = "acknowledged"
    CUSTOMER_INFORMED = "customer_informed"
    WAITING_FOR_CUSTOMER = "waiting_for_customer"
    CUSTOMER_RESPONDED = "customer_responded"
    RECLASSIFIED = "reclassified"
    RESOLVED = "resolved"
    CLOSED = "closed"
    REOPENED = "reopened"
    SLA_WARNING_RAISED = "sla_warning_raised"
    SLA_BREACHED = "sla_breached"
    SLA_BREACH_RETRACTED = "sla_breach_retracted"


SLA_FACT_TYPES = frozenset(
    {EventType.SLA_WARNING_RAISED, EventType.SLA_BREACHED, EventType.SLA_BREACH_RETRACTED}
)

KINDS = ("assistance", "incident", "administrative", "go_live")
CHANNELS = ("portal", "phone", "email")


class EventDecodeError(ValueError):
    """A record that cannot be read as an event; the message names the field and why."""


# --- payload schemas ------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Field:
    kind: type | tuple[str, ...]  # a Python type, or the tuple of allowed strings
    required: bool = True
    max_length: int = 10_000


_TEXT = Field(str, required=False)
_SLA_FACT = {
    "sla": Field(str, max_length=64),
    "deadline": Field(datetime),
    "policy_version": Field(str, max_length=64),
    "explanation": Field(str),
}

PAYLOAD_SCHEMAS: dict[EventType, dict[str, Field]] = {
    EventType.TICKET_FILED: {
        "kind": Field(KINDS),
        "channel": Field(CHANNELS),
        "product": Field(str, max_length=128),
        "member": Field(str, max_length=128),
        "subject": Field(str, max_length=500),
        "description": _TEXT,
        "elements_complete": Field(bool, required=False),
    },
    EventType.ACKNOWLEDGED: {"note": _TEXT},
    EventType.CUSTOMER_INFORMED: {"message": Field(str), "restoration_eta": Field(datetime, required=False),
                                  # the message answers the request (administrative_answer stops on it)
                                  "answer": Field(bool, required=False)},
    EventType.WAITING_FOR_CUSTOMER: {"reason": _TEXT},
    EventType.CUSTOMER_RESPONDED: {"elements_complete": Field(bool), "message": _TEXT},
    EventType.RECLASSIFIED: {
        "kind": Field(KINDS, required=False),
        "product": Field(str, required=False, max_length=128),
        "reason": _TEXT,
    },
    EventType.RESOLVED: {"resolution": _TEXT},
    EventType.CLOSED: {"note": _TEXT},
    EventType.REOPENED: {"reason": _TEXT},
    EventType.SLA_WARNING_RAISED: _SLA_FACT,
    EventType.SLA_BREACHED: _SLA_FACT,
    EventType.SLA_BREACH_RETRACTED: {**_SLA_FACT, "breach_event_id": Field(str, max_length=36)},
}

# The schema version every type is written with today. Bump it together with an upcaster.
CURRENT_SCHEMA_VERSION: dict[EventType, int] = {t: 1 for t in EventType}

_TICKET_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def parse_instant(value: str, what: str) -> datetime:
    """An ISO 8601 instant that must carry its offset (a naive time is ambiguous)."""
    if not isinstance(value, str):
        raise EventDecodeError(f"{what}: must be an ISO 8601 date-time string")
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        raise EventDecodeError(f"{what}: {value!r} is not an ISO 8601 date-time") from None
    if instant.tzinfo is None:
        raise EventDecodeError(f"{what}: {value!r} has no UTC offset")
    try:
        instant = instant.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00: before year 1 in UTC
        instant = datetime.min.replace(tzinfo=UTC)
    if not EARLIEST <= instant < LATEST:
        # Calendars and time zones overflow near years 1 and 9999: keep far from both.
        raise EventDecodeError(f"{what}: {value!r} is outside {EARLIEST.year}–{LATEST.year - 1}")
    return instant


def format_instant(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def format_optional_instant(instant: datetime | None) -> str | None:
    return format_instant(instant) if instant is not None else None


def validate_ticket_id(value: object) -> str:
    if not isinstance(value, str) or not _TICKET_ID.match(value):
        raise EventDecodeError(
            f"ticket_id: {value!r} must be 1–64 characters: letters, digits, '.', '_', ':' or '-'"
        )
    return value


# Control characters a database or a terminal would choke on (PostgreSQL refuses NUL in text);
# tab, line feed and carriage return are text.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
MAX_ACTOR = 128  # the archive's column


def validate_actor(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ACTOR:
        raise EventDecodeError(f"actor: must be a non-empty string of at most {MAX_ACTOR} characters")
    if CONTROL_CHARACTERS.search(value):
        raise EventDecodeError("actor: contains a control character")
    return value


def validate_payload(event_type: EventType, payload: Mapping[str, Any], *, wire: bool) -> dict[str, Any]:
    """Check a payload against its schema; with ``wire=True`` instants arrive as strings."""
    if not isinstance(payload, Mapping):
        raise EventDecodeError("payload: must be an object")
    schema = PAYLOAD_SCHEMAS[event_type]
    if not payload.keys() <= schema.keys():
        unknown = sorted(set(payload) - set(schema))
        raise EventDecodeError(f"payload: unknown field(s) for {event_type}: {', '.join(unknown)}")
    out: dict[str, Any] = {}
    for name, spec in schema.items():
        value = payload.get(name)
        if value is None:
            if spec.required:
                raise EventDecodeError(f"payload.{name}: required for {event_type}")
            continue
        where = f"payload.{name}"
        if isinstance(spec.kind, tuple):
            if value not in spec.kind:
                raise EventDecodeError(f"{where}: {value!r} is not one of {', '.join(spec.kind)}")
        elif spec.kind is datetime:
            if isinstance(value, str):
                value = parse_instant(value, where)
            elif wire or not isinstance(value, datetime) or value.tzinfo is None:
                raise EventDecodeError(f"{where}: must be a timezone-aware ISO 8601 date-time")
        elif spec.kind is bool:
            if not isinstance(value, bool):
                raise EventDecodeError(f"{where}: must be true or false")
        elif spec.kind is str:
            if not isinstance(value, str):
                raise EventDecodeError(f"{where}: must be a string")
            if not value.strip() and spec.required:
                raise EventDecodeError(f"{where}: must not be empty")
            if len(value) > spec.max_length:
                raise EventDecodeError(f"{where}: longer than {spec.max_length} characters")
            if CONTROL_CHARACTERS.search(value):
                raise EventDecodeError(f"{where}: contains a control character (only tab and line breaks "
                                       "are allowed)")
        out[name] = value
    return out


# --- the envelope ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Event:
    """The one envelope for every event.

    ``occurred_at`` is business time (when it happened: a phone call taken at 09:12 and
    typed in at 09:40 occurred at 09:12); ``recorded_at`` is when the system learnt it.
    Deadlines are computed from ``occurred_at`` only.
    """

    event_id: uuid.UUID
    type: EventType
    ticket_id: str
    occurred_at: datetime
    recorded_at: datetime
    actor: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    schema_version: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": str(self.event_id),
            "type": str(self.type),
            "schema_version": self.schema_version,
            "ticket_id": self.ticket_id,
            "occurred_at": format_instant(self.occurred_at),
            "recorded_at": format_instant(self.recorded_at),
            "actor": self.actor,
            "payload": {
                k: format_instant(v) if isinstance(v, datetime) else v for k, v in self.payload.items()
            },
        }


def new_event(
    event_type: EventType,
    ticket_id: str,
    *,
    occurred_at: datetime,
    recorded_at: datetime,
    actor: str,
    payload: Mapping[str, Any] | None = None,
    event_id: uuid.UUID | None = None,
) -> Event:
    """Build a validated event at the current schema version (instants normalised to UTC)."""
    if occurred_at.tzinfo is None or recorded_at.tzinfo is None:
        raise EventDecodeError("occurred_at and recorded_at must be timezone-aware")
    clean = validate_payload(event_type, payload or {}, wire=False)
    clean = {k: v.astimezone(UTC) if isinstance(v, datetime) else v for k, v in clean.items()}
    return Event(
        event_id=event_id or uuid.uuid4(),
        type=event_type,
        ticket_id=validate_ticket_id(ticket_id),
        occurred_at=occurred_at.astimezone(UTC),
        recorded_at=recorded_at.astimezone(UTC),
        actor=validate_actor(actor),
        payload=clean,
        schema_version=CURRENT_SCHEMA_VERSION[event_type],
    )


# --- upcasting ------------------------------------------------------------------------

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class Upcasters:
    """Functions reading a version-N payload as version N+1, chained at decode time."""

    def __init__(self) -> None:
        self._steps: dict[tuple[EventType, int], Upcaster] = {}

    def register(self, event_type: EventType, from_version: int) -> Callable[[Upcaster], Upcaster]:
        def wrap(fn: Upcaster) -> Upcaster:
            self._steps[(event_type, from_version)] = fn
            return fn

        return wrap

    def upcast(self, event_type: EventType, version: int, payload: dict[str, Any], target: int) -> dict[str, Any]:
        while version < target:
            step = self._steps.get((event_type, version))
            if step is None:
                raise EventDecodeError(f"schema_version: no upcaster for {event_type} v{version} → v{version + 1}")
            payload = step(dict(payload))
            version += 1
        return payload


UPCASTERS = Upcasters()


_ENVELOPE_FIELDS = frozenset({"event_id", "type", "schema_version", "ticket_id", "occurred_at", "recorded_at",
                              "actor", "payload"})
_EVENT_TYPES: dict[str, EventType] = {str(t): t for t in EventType}


def event_from_dict(
    raw: Mapping[str, Any],
    *,
    upcasters: Upcasters = UPCASTERS,
    current_versions: Mapping[EventType, int] = CURRENT_SCHEMA_VERSION,
) -> Event:
    if not isinstance(raw, Mapping):
        raise EventDecodeError("event: must be a JSON object")
    if raw.keys() != _ENVELOPE_FIELDS:  # the sets' differences only to say what is wrong
        missing = sorted(_ENVELOPE_FIELDS - set(raw))
        if missing:
            raise EventDecodeError(f"event: missing field(s): {', '.join(missing)}")
        unknown = sorted(set(raw) - _ENVELOPE_FIELDS)
        raise EventDecodeError(f"event: unknown field(s): {', '.join(unknown)}")
    event_type = _EVENT_TYPES.get(raw["type"]) if isinstance(raw["type"], str) else None  # the enum's call is slow
    if event_type is None:
        try:
            event_type = EventType(raw["type"])
        except ValueError:
            raise EventDecodeError(f"type: unknown event type {raw['type']!r}") from None
    version = raw["schema_version"]
    target = current_versions[event_type]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise EventDecodeError(f"schema_version: {version!r} is not a positive integer")
    if version > target:
        raise EventDecodeError(f"schema_version: {event_type} v{version} is newer than this reader (v{target})")
    try:
        event_id = uuid.UUID(str(raw["event_id"]))
    except ValueError:
        raise EventDecodeError(f"event_id: {raw['event_id']!r} is not a UUID") from None
    validate_actor(raw["actor"])
    if not isinstance(raw["payload"], Mapping):
        raise EventDecodeError("payload: must be an object")
    payload = raw["payload"] if version == target else upcasters.upcast(event_type, version, dict(raw["payload"]),
                                                                         target)
    return Event(
        event_id=event_id,
        type=event_type,
        ticket_id=validate_ticket_id(raw["ticket_id"]),
        occurred_at=parse_instant(raw["occurred_at"], "occurred_at"),
        recorded_at=parse_instant(raw["recorded_at"], "recorded_at"),
        actor=raw["actor"],
        payload=validate_payload(event_type, payload, wire=True),
        schema_version=target,
    )


def encode_event(event: Event) -> bytes:
    return json.dumps(event.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


_ENVELOPE_EVENT_ID = re.compile(rb'"event_id":"([0-9a-f-]{36})"')
_ENVELOPE_TICKET_ID = re.compile(rb'"ticket_id":"([^"\\]*)"')


def envelope_ids(data: bytes) -> tuple[str, str] | None:
    """(event id, ticket id) of an encoded event, read without decoding it (None if either
    is not found): for hot paths that only need to route or skip a record. Inside a JSON
    string a quote is escaped, so these patterns only match the envelope's own keys."""
    event = _ENVELOPE_EVENT_ID.search(data)
    ticket = _ENVELOPE_TICKET_ID.search(data)
    if event is None or ticket is None:
        return None
    return event.group(1).decode(), ticket.group(1).decode("utf-8", "replace")


def decode_event(data: bytes | str | None, *, upcasters: Upcasters = UPCASTERS) -> Event:
    if not isinstance(data, bytes | bytearray | str):
        raise EventDecodeError("empty record: no value")
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventDecodeError(f"not valid JSON: {exc}") from None
    return event_from_dict(raw, upcasters=upcasters)


# --- deterministic ids ----------------------------------------------------------------

_FACT_NAMESPACE = uuid.UUID("6f1c2b0e-8d4a-5c3e-9a71-2f5e0b6d4c10")


def sla_fact_id(event_type: EventType, ticket_id: str, sla: str, deadline: datetime, policy_version: str) -> uuid.UUID:
    """The same SLA fact always gets the same id, so a second timer, a rebalance or a
    restart produces a duplicate that consumers drop instead of a second breach."""
    key = f"{ticket_id}:{sla}:{format_instant(deadline)}:{policy_version}:{event_type}"
    return uuid.uuid5(_FACT_NAMESPACE, key)

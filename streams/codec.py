"""The records of the commands topic: a command's wire form, and a fact the timer sends.

A fact travels as the event's own bytes, wrapped so that one prefix test tells it from a
command (whose sorted keys start with "actor"). Events themselves are encoded by the
domain (``sla.events``): the events topic, the archive and the dispute files share it.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from sla.events import Event, EventDecodeError, decode_event, encode_event, parse_instant, validate_ticket_id
from sla.ticket import Command, CommandType

FACT_PREFIX, FACT_SUFFIX = b'{"fact":', b"}"
_FIELDS = frozenset({"command_id", "type", "ticket_id", "actor", "payload", "occurred_at", "reply", "scope_member",
                     "received_at"})
_OPTIONAL = frozenset({"reply", "scope_member", "received_at"})


class CommandDecodeError(ValueError):
    pass


def encode_fact(event: Event) -> bytes:
    return FACT_PREFIX + encode_event(event) + FACT_SUFFIX


def is_fact(data: bytes) -> bool:
    return data.startswith(FACT_PREFIX)


def decode_fact(data: bytes) -> Event:
    """Raises EventDecodeError."""
    return decode_event(data[len(FACT_PREFIX):-len(FACT_SUFFIX)])


def encode_command(command: Command) -> bytes:
    body: dict[str, Any] = {
        "command_id": str(command.command_id),
        "type": str(command.type),
        "ticket_id": command.ticket_id,
        "actor": command.actor,
        "payload": dict(command.payload),
        "occurred_at": command.occurred_at.isoformat() if command.occurred_at else None,
        "reply": command.reply,
        "scope_member": command.scope_member,
    }
    if command.received_at is not None:
        body["received_at"] = command.received_at.isoformat()
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def decode_command(data: bytes) -> Command:
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CommandDecodeError(f"not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise CommandDecodeError("command: must be a JSON object")
    if not _FIELDS - _OPTIONAL <= set(raw) <= _FIELDS:
        raise CommandDecodeError(f"command: fields must be {sorted(_FIELDS)} ({', '.join(sorted(_OPTIONAL))} optional)")
    try:
        command_type = CommandType(raw["type"])
        command_id = uuid.UUID(str(raw["command_id"]))
        ticket_id = validate_ticket_id(raw["ticket_id"])
        occurred = parse_instant(raw["occurred_at"], "occurred_at") if raw["occurred_at"] is not None else None
        received = parse_instant(raw["received_at"], "received_at") if raw.get("received_at") is not None else None
    except (ValueError, EventDecodeError) as exc:
        raise CommandDecodeError(str(exc)) from None
    if not isinstance(raw["payload"], dict) or not isinstance(raw["actor"], str):
        raise CommandDecodeError("command: payload must be an object and actor a string")
    scope = raw.get("scope_member")
    if scope is not None and not isinstance(scope, str):
        raise CommandDecodeError("command: scope_member must be a string")
    return Command(command_type, ticket_id, raw["actor"], raw["payload"], occurred, command_id,
                   reply=bool(raw.get("reply", False)), scope_member=scope, received_at=received)


def command_id_of(data: bytes) -> str | None:
    """Best effort: the command id of an unreadable command, to answer its caller."""
    try:
        raw = json.loads(data)
        return str(uuid.UUID(str(raw["command_id"])))
    except Exception:
        return None

"""The ticket state machine: commands decided against the current state."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sla.events import EventType
from sla.ticket import Command, CommandType, DomainError, Status, Ticket, decide, fold
from tests.conftest import at

NOW = at("2026-03-16T10:00:00+01:00")
FILE = {"kind": "incident", "channel": "phone", "product": "solaere", "member": "m-001", "subject": "Panne"}


def run(*commands: tuple[CommandType, dict], ticket: Ticket | None = None) -> Ticket:
    for command_type, payload in commands:
        events = decide(ticket, Command(command_type, "T-1", "agent:alice", payload), NOW)
        for event in events:
            if ticket is None:
                ticket = Ticket(event.ticket_id)
            ticket.apply(event)
    assert ticket is not None
    return ticket


def test_happy_path() -> None:
    t = run(
        (CommandType.FILE, FILE),
        (CommandType.ACKNOWLEDGE, {}),
        (CommandType.INFORM, {"message": "Analyse", "restoration_eta": at("2026-03-16T14:00:00+01:00")}),
        (CommandType.WAIT_FOR_CUSTOMER, {"reason": "capture d'écran"}),
        (CommandType.CUSTOMER_RESPONSE, {"elements_complete": True}),
        (CommandType.RECLASSIFY, {"kind": "assistance"}),
        (CommandType.RESOLVE, {}),
        (CommandType.REOPEN, {"reason": "toujours en panne"}),
        (CommandType.RESOLVE, {}),
        (CommandType.CLOSE, {}),
    )
    assert t.status is Status.CLOSED
    assert t.kind == "assistance"
    assert t.restoration_eta == at("2026-03-16T13:00:00Z")
    assert t.version == 10


@pytest.mark.parametrize(
    ("history", "command", "code", "fragment"),
    [
        ([CommandType.FILE, CommandType.ACKNOWLEDGE, CommandType.RESOLVE, CommandType.CLOSE],
         CommandType.ACKNOWLEDGE, "conflict", "il est clos"),
        ([CommandType.FILE, CommandType.ACKNOWLEDGE], CommandType.ACKNOWLEDGE, "conflict", "en cours de traitement"),
        ([CommandType.FILE], CommandType.RESOLVE, "conflict", "Prenez-le d'abord en compte"),
        ([CommandType.FILE], CommandType.INFORM, "conflict", "Prenez-le d'abord en compte"),
        ([CommandType.FILE, CommandType.ACKNOWLEDGE], CommandType.CLOSE, "conflict", "Résolvez-le d'abord"),
        ([CommandType.FILE, CommandType.ACKNOWLEDGE], CommandType.REOPEN, "conflict", "Impossible de rouvrir"),
        ([CommandType.FILE], CommandType.FILE, "conflict", "existe déjà"),
        ([], CommandType.ACKNOWLEDGE, "not_found", "n'existe pas"),
    ],
)
def test_refused_commands_say_why(history: list[CommandType], command: CommandType, code: str, fragment: str) -> None:
    payloads = {CommandType.FILE: FILE, CommandType.INFORM: {"message": "x"}}
    ticket = run(*[(c, payloads.get(c, {})) for c in history]) if history else None
    with pytest.raises(DomainError) as err:
        decide(ticket, Command(command, "T-1", "agent:alice", payloads.get(command, {})), NOW)
    assert err.value.code == code
    assert fragment in err.value.message


def test_invalid_payload_and_times_are_invalid_not_conflict() -> None:
    with pytest.raises(DomainError) as err:
        decide(None, Command(CommandType.FILE, "T-1", "a", {**FILE, "kind": "urgent"}), NOW)
    assert err.value.code == "invalid" and "payload.kind" in err.value.message
    ticket = run((CommandType.FILE, FILE))
    with pytest.raises(DomainError, match="futur"):
        decide(ticket, Command(CommandType.ACKNOWLEDGE, "T-1", "a", occurred_at=NOW + timedelta(hours=1)), NOW)
    with pytest.raises(DomainError, match="précède le dépôt"):
        decide(ticket, Command(CommandType.ACKNOWLEDGE, "T-1", "a", occurred_at=NOW - timedelta(days=1)), NOW)
    with pytest.raises(DomainError, match="ne change ni"):
        decide(ticket, Command(CommandType.RECLASSIFY, "T-1", "a", {"kind": "incident"}), NOW)


def test_phone_filing_keeps_reception_time() -> None:
    received = NOW - timedelta(minutes=25)
    (event,) = decide(None, Command(CommandType.FILE, "T-1", "agent:alice", FILE, occurred_at=received), NOW)
    assert event.occurred_at == received and event.recorded_at == NOW
    assert event.type is EventType.TICKET_FILED and event.actor == "agent:alice"


def test_redelivered_command_yields_same_event_and_applies_once() -> None:
    command = Command(CommandType.FILE, "T-1", "agent:alice", FILE)
    (first,) = decide(None, command, NOW)
    (second,) = decide(None, command, NOW)
    assert first.event_id == second.event_id
    ticket = fold([first, second])
    assert ticket.version == 1


def test_storage_form_round_trips() -> None:
    from sla.ticket import ticket_from_dict, ticket_to_dict

    t = run(
        (CommandType.FILE, FILE),
        (CommandType.ACKNOWLEDGE, {}),
        (CommandType.INFORM, {"message": "Analyse", "restoration_eta": at("2026-03-16T14:00:00+01:00")}),
    )
    data = ticket_to_dict(t)
    again = ticket_from_dict(data)
    assert again == t
    assert ticket_to_dict(again) == data

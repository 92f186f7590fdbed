"""The application service (``service.handler``): typed commands in, a ``Step`` out, no
Kafka, no SQL. A command is decided once; delivered again it gets the same answer."""

from __future__ import annotations

import uuid

from service.handler import CommandHandler
from service.outcomes import CREATED, Outcome
from sla.policy import Policy
from sla.ticket import Command, CommandType
from tests.conftest import at

NOW = at("2026-12-07T10:00:00+01:00")
FILE = {"kind": "incident", "channel": "portal", "member": "m-001", "product": "parapheur", "subject": "Panne"}


def filing(reply: bool = True) -> Command:
    return Command(CommandType.FILE, "SL-1", "agent:alice", FILE, command_id=uuid.UUID(int=1), reply=reply)


def test_a_filing_is_applied_and_answered_with_the_event_that_records_it(policy: Policy) -> None:
    step = CommandHandler(policy).handle(None, filing(), NOW)
    assert step.ticket is not None and step.ticket.exists and not step.dead_letter
    (event,) = step.emit
    assert step.outcome is not None and step.outcome.result == CREATED
    assert step.outcome.body["events"] == [str(event.event_id)] and step.outcome.body["replayed"] is False


def test_a_command_delivered_again_is_answered_as_a_replay_and_not_applied_twice(policy: Policy) -> None:
    handler = CommandHandler(policy)
    first = handler.handle(None, filing(), NOW)
    again = handler.handle(first.ticket, filing(), NOW)
    assert again.ticket is None and again.emit == []
    assert again.outcome is not None and again.outcome.body["replayed"] is True
    assert first.outcome is not None and again.outcome.body["events"] == first.outcome.body["events"]


def test_a_refused_command_delivered_again_gets_its_first_answer(policy: Policy) -> None:
    handler = CommandHandler(policy)
    ticket = handler.handle(None, filing(), NOW).ticket
    close = Command(CommandType.CLOSE, "SL-1", "agent:alice", command_id=uuid.UUID(int=2), reply=True)
    refused = handler.handle(ticket, close, NOW)
    assert refused.refusal is not None and refused.outcome is not None and refused.outcome.result == "conflict"
    cid, result, body = refused.refusal
    assert handler.handle(ticket, close, NOW, {cid: (result, body)}).outcome == Outcome(cid, result, body)


def test_a_filing_no_policy_version_can_judge_is_refused_as_invalid(policy: Policy) -> None:
    """The domain's rule (``sla.ticket.decide`` under the policy), answered as any refusal."""
    long_ago = at("2019-06-03T10:00:00+02:00")  # before the first version takes effect
    step = CommandHandler(policy).handle(None, filing(), long_ago)
    assert step.ticket is None and step.emit == []
    assert step.outcome is not None and step.outcome.result == "invalid"
    assert "no policy version in force" in step.outcome.body["error"]
    unheard = CommandHandler(policy).handle(None, filing(reply=False), long_ago)
    assert unheard.outcome is None and unheard.dead_letter is not None
    assert unheard.dead_letter.startswith("command refused: no policy version in force")

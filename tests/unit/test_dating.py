"""Who may put a date on a fact (sla/): the recording time is the server's, a business time
may precede it only within the policy's limit, and a fact dated well before its recording
is shown « antidaté » with who dated it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sla.events import EventType
from sla.policy import Policy
from sla.ticket import Command, CommandType, DomainError, decide, fold, ticket_from_dict, ticket_to_dict
from sla.view import ticket_view
from tests.conftest import at, ev, filed

NOW = at("2026-11-23T15:00:00+01:00")
FILE = {"kind": "incident", "channel": "phone", "member": "m-001", "product": "ent", "subject": "Panne"}


def test_a_fact_dated_beyond_the_policy_limit_is_refused(policy: Policy) -> None:
    limit = policy.versions[0].max_backdate
    assert limit == timedelta(days=30)
    old = Command(CommandType.FILE, "T-1", "agent:alice", FILE, NOW - limit - timedelta(minutes=1))
    with pytest.raises(DomainError, match="30 jours") as refused:
        decide(None, old, NOW, max_backdate=limit)
    assert refused.value.code == "invalid"
    (event,) = decide(None, Command(CommandType.FILE, "T-1", "agent:alice", FILE, NOW - limit), NOW, max_backdate=limit)
    assert event.recorded_at == NOW and event.occurred_at == NOW - limit  # both times are kept


def test_antedated_facts_are_flagged_with_who_dated_them(policy: Policy) -> None:
    events = [filed("2026-11-23T09:00:00+01:00", recorded="2026-11-23T09:00:30+01:00"),  # 30 s: transmission
              ev(EventType.ACKNOWLEDGED, "2026-11-23T10:00:00+01:00", recorded=NOW)]
    ticket = fold(events)
    view = ticket_view(ticket, policy, NOW)
    assert [(a["type"], a["by"], a["seconds_before_recording"]) for a in view["antedated"]] == [
        ("acknowledged", "test", 5 * 3600)]
    # the list survives the snapshot
    assert ticket_view(ticket_from_dict(ticket_to_dict(ticket)), policy, NOW)["antedated"] == view["antedated"]


def test_within_the_flag_threshold_nothing_is_flagged(policy: Policy) -> None:
    events = [filed("2026-11-23T09:00:00+01:00", recorded="2026-11-23T09:10:00+01:00")]  # 10 min < 15 min
    assert ticket_view(fold(events), policy, NOW)["antedated"] == []


def test_the_itop_connector_may_date_its_history_further_back(policy: Policy) -> None:
    """It relays iTop's own dates (a first sync reads months of history); a person may not."""
    version = policy.versions[0]
    assert version.backdate_limit("itop:sync") == timedelta(days=400)
    assert version.backdate_limit("agent:alice") == version.backdate_limit("admin:root") == timedelta(days=30)

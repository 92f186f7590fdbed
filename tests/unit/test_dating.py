"""Who may put a date on a fact (sla/): the recording time is the server's, a business time
may precede it only within the policy's limit, and a fact dated well before its recording
is shown « antidaté » with who dated it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sla.events import EventType
from sla.policy import Policy, PolicyError
from sla.ticket import Command, CommandType, DomainError, Ticket, decide, fold, ticket_from_dict, ticket_to_dict
from sla.view import ticket_view
from tests.conftest import at, ev, filed

NOW = at("2026-11-23T15:00:00+01:00")
FILE = {"kind": "incident", "channel": "phone", "member": "m-001", "product": "ent-netocentre", "subject": "Panne"}


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


# --- the policy's rules, checked by ``decide`` itself (they were the worker's until #27) ----

ACTORS = st.sampled_from(["agent:alice", "admin:root", "referent:blois", "itop:sync"])


@settings(max_examples=200, deadline=None)
@given(actor=ACTORS, back=st.integers(min_value=0, max_value=500 * 86400))
def test_under_a_policy_a_date_is_refused_exactly_beyond_the_actors_limit(policy: Policy, actor: str,
                                                                          back: int) -> None:
    """Whoever dates a filing (who may date at all is the edge's question), the limit is the
    one of the version in force at the filing's date, for that actor: refused beyond it,
    never within it (a filing before any calendar is refused, but for another reason)."""
    occurred = NOW - timedelta(seconds=back)
    try:
        decide(None, Command(CommandType.FILE, "T-1", actor, FILE, occurred), NOW, policy=policy)
        backdated = False
    except DomainError as refused:
        assert refused.code == "invalid"
        backdated = "remonte à plus de" in refused.message
    assert backdated == (timedelta(seconds=back) > policy.version_for(occurred).backdate_limit(actor))


@settings(max_examples=200, deadline=None)
@given(filed_at=st.datetimes(min_value=datetime(2015, 1, 1), max_value=datetime(2040, 12, 31),
                             timezones=st.just(UTC)))
def test_under_a_policy_a_filing_is_taken_exactly_when_a_version_can_judge_it(policy: Policy,
                                                                              filed_at: datetime) -> None:
    """A filing no version can judge to its end (no calendar lists its non-working days) would
    never get a clock: refused as invalid with the policy's reason, and only that one."""
    try:
        policy.version_for(filed_at).check_covers(filed_at)
        reason = None
    except PolicyError as exc:
        reason = str(exc)
    command = Command(CommandType.FILE, "T-1", "agent:alice", FILE)  # dated now: no backdating
    if reason is None:
        (event,) = decide(None, command, filed_at, policy=policy)
        assert event.occurred_at == filed_at
    else:
        with pytest.raises(DomainError) as refused:
            decide(None, command, filed_at, policy=policy)
        assert (refused.value.code, refused.value.message) == ("invalid", reason)


def test_a_later_fact_is_dated_within_the_limit_of_the_version_judging_the_ticket(policy: Policy) -> None:
    """Not the version in force when the fact is recorded: a ticket keeps its rules."""
    first, second = policy.versions
    strict = Policy((replace(first, max_backdate=timedelta(days=30)), replace(second, max_backdate=timedelta(days=1))),
                    policy.products)

    def filed_on(ticket_id: str, when: str) -> Ticket:
        return fold(decide(None, Command(CommandType.FILE, ticket_id, "agent:alice", FILE), at(when), policy=strict))

    def acknowledged(ticket: Ticket, days_back: int) -> Command:
        return Command(CommandType.ACKNOWLEDGE, ticket.ticket_id, "agent:alice", {}, later - timedelta(days_back))

    later = at("2026-12-10T10:00:00+01:00")  # the second version is in force by then
    old_ticket = filed_on("T-1", "2026-11-20T10:00:00+01:00")
    (event,) = decide(old_ticket, acknowledged(old_ticket, 5), later, policy=strict)  # within the first's 30 days
    assert event.occurred_at == later - timedelta(days=5)
    new_ticket = filed_on("T-2", "2026-12-05T10:00:00+01:00")
    with pytest.raises(DomainError, match="remonte à plus de 1 jour avant"):
        decide(new_ticket, acknowledged(new_ticket, 2), later, policy=strict)

"""Whole-log replays summarize closed tickets (flat memory) without changing any figure."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from projections.audit.dispute_file import dispute_file
from projections.audit.replay import Filters, replay
from projections.audit.sources import LogRecord
from projections.report import to_markdown
from sla.events import EventType, encode_event
from sla.policy import Policy
from tests.conftest import at, ev, filed

START = at("2026-03-02T09:00:00+01:00")
# (acknowledged after n hours or never, resolved, closed) for each ticket
TICKET = st.tuples(st.one_of(st.none(), st.integers(1, 30)), st.booleans(), st.booleans())


def log_of(tickets: list[tuple[int | None, bool, bool]]) -> list[LogRecord]:
    events = []
    for i, (ack_hours, resolved, closed) in enumerate(tickets):
        tid = f"T-{i:03d}"
        t0 = START + timedelta(hours=i)
        events.append(filed(t0, ticket_id=tid, member=f"m-{i % 3}", kind="administrative" if i % 2 else "assistance"))
        if ack_hours is not None:
            events.append(ev(EventType.ACKNOWLEDGED, t0 + timedelta(hours=ack_hours), tid))
            if resolved:
                events.append(ev(EventType.RESOLVED, t0 + timedelta(hours=ack_hours + 1), tid))
                if closed:
                    events.append(ev(EventType.CLOSED, t0 + timedelta(hours=ack_hours + 2), tid))
    events.sort(key=lambda e: e.occurred_at)
    return [LogRecord(encode_event(e), {"topic": "t", "partition": 0, "offset": n}) for n, e in enumerate(events)]


@settings(max_examples=40, deadline=None)
@given(st.lists(TICKET, min_size=1, max_size=12))
def test_summarizing_closed_tickets_changes_no_figure(policy: Policy,
                                                      tickets: list[tuple[int | None, bool, bool]]) -> None:
    records = log_of(tickets)
    full = replay(iter(records), policy, Filters(), source="kafka", timelines=False)
    flat = replay(iter(records), policy, Filters(), source="kafka", timelines=False, summarize_closed=True)
    closed = {f"T-{i:03d}" for i, (ack, resolved, shut) in enumerate(tickets) if ack is not None and resolved and shut}
    assert set(flat.tickets) == set(full.tickets) - closed  # only open tickets are held
    assert flat.closed_summarized == len(closed)
    full_doc, flat_doc = dispute_file(full), dispute_file(flat)
    assert flat_doc["summary"] == full_doc["summary"]
    assert flat_doc["tickets"] == [t for t in full_doc["tickets"] if t["ticket_id"] not in closed]


def test_timelines_and_as_of_keep_every_ticket(policy: Policy) -> None:
    records = log_of([(1, True, True), (2, False, False)])
    with_timelines = replay(iter(records), policy, Filters(), source="kafka", summarize_closed=True)
    as_of = replay(iter(records), policy, Filters(as_of=START + timedelta(days=30)), source="kafka",
                   timelines=False, summarize_closed=True)
    assert set(with_timelines.tickets) == set(as_of.tickets) == {"T-000", "T-001"}


def test_a_re_sent_event_is_listed_once_and_a_topic_without_archive_is_not_called_verified(policy: Policy) -> None:
    records = log_of([(1, True, False)])
    copy = LogRecord(records[1].raw, {"topic": "t", "partition": 0, "offset": 99})  # at-least-once re-send
    result = replay(iter([*records, copy]), policy, Filters(ticket="T-000"), source="kafka")
    assert [e.event_id for e, _ in result.tickets["T-000"].timeline] == \
        [e.event_id for e, _ in replay(iter(records), policy, Filters(ticket="T-000"), source="kafka")
         .tickets["T-000"].timeline]
    assert result.resent_records == 1 and result.ok and not result.verified
    integrity = dispute_file(result)["integrity"]
    assert integrity["verified"] is False
    assert "INTÉGRITÉ NON VÉRIFIÉE" in to_markdown(dispute_file(result))

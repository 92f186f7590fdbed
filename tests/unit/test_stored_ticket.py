"""The worker's table value leads with the ticket's next wakeup, read back from the raw
bytes at restart without folding the ticket (streams.recovery, streams.timer)."""

from __future__ import annotations

from faust.serializers import codecs

from sla.events import EventType
from sla.ticket import Ticket, ticket_from_dict
from streams.table_values import STALE, stored, wakeup_of
from tests.conftest import at, ev, filed


def ticket() -> Ticket:
    state = Ticket("T-1")
    for event in (filed("2026-03-02T09:00:00+01:00"), ev(EventType.ACKNOWLEDGED, "2026-03-02T10:00:00+01:00")):
        state.apply(event)
    return state


def test_wakeup_is_read_from_the_serialized_value_and_the_ticket_round_trips() -> None:
    when = at("2026-03-02T13:00:00+01:00")
    value = stored(ticket(), when)
    raw = codecs.dumps("json", value)
    assert raw.startswith(b'{"wakeup":')
    assert wakeup_of(raw) == when and wakeup_of(value) == when
    assert ticket_from_dict(codecs.loads("json", raw)).version == ticket().version


def test_no_wakeup_and_old_values() -> None:
    assert wakeup_of(codecs.dumps("json", stored(ticket(), None))) is None
    old = codecs.dumps("json", {"ticket_id": "T-1"})  # written before the wakeup was stored
    assert wakeup_of(old) is STALE and wakeup_of({"ticket_id": "T-1"}) is STALE

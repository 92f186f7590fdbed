"""The topic check without its archive keeps a bounded window per partition (#31): a later
copy within it is a re-send (same bytes, or the same event with other times) or an
alteration (another event under the same id); memory does not follow the log."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from projections.audit.replay import Filters, replay
from projections.audit.sources import LogRecord
from sla.events import decode_event, encode_event
from sla.policy import Policy
from tests.conftest import at, filed

START = at("2026-03-02T09:00:00+01:00")


def records(partition: int = 0) -> list[LogRecord]:
    events = [filed(START + timedelta(minutes=i), ticket_id=f"T-{i:03d}") for i in range(10)]
    return [LogRecord(encode_event(e), {"topic": "t", "partition": partition, "offset": n})
            for n, e in enumerate(events)]


def copy(record: LogRecord, offset: int, **changes: object) -> LogRecord:
    raw = record.raw
    if changes:
        raw = encode_event(dataclasses.replace(decode_event(raw), **changes))  # type: ignore[arg-type]
    return LogRecord(raw, {**record.source, "offset": offset})


def test_copies_within_the_window_are_told_apart(policy: Policy) -> None:
    log = records()
    first = decode_event(log[2].raw)
    resent = copy(log[2], 10)
    redecided = copy(log[3], 11, recorded_at=first.recorded_at + timedelta(seconds=7))
    forged = copy(log[4], 12, actor="agent:mallory")
    result = replay(iter([*log, resent, redecided, forged]), policy, Filters(), source="kafka", timelines=False,
                    resend_window=10)
    assert result.resent_records == 2
    assert [f.kind for f in result.findings] == ["altered"]
    assert len(result.tickets) == 10  # each event folded once


def test_a_copy_further_back_than_the_window_is_not_recognised(policy: Policy) -> None:
    log = records()
    far = copy(log[0], 10, actor="agent:mallory")
    assert replay(iter([*log, far]), policy, Filters(), source="kafka", resend_window=20).findings
    narrow = replay(iter([*log, far]), policy, Filters(), source="kafka", resend_window=5)
    assert narrow.findings == [] and not narrow.verified  # the report says « non vérifiée »


def test_the_window_is_per_partition(policy: Policy) -> None:
    log, other = records(0), records(1)
    again = copy(log[0], 10)
    result = replay(iter([log[0], *other, again]), policy, Filters(), source="kafka", resend_window=2)
    assert result.resent_records == 1

"""Envelope encoding, validation and upcasting."""

from __future__ import annotations

import json
import uuid
from datetime import UTC

import pytest

from sla.events import (
    CURRENT_SCHEMA_VERSION,
    EventDecodeError,
    EventType,
    Upcasters,
    decode_event,
    encode_event,
    event_from_dict,
    sla_fact_id,
)
from tests.conftest import at, ev, filed


def test_round_trip_is_stable_and_utc_on_the_wire() -> None:
    event = filed("2026-03-13T17:00:00+01:00", description="Écran noir")
    data = encode_event(event)
    raw = json.loads(data)
    assert raw["occurred_at"] == "2026-03-13T16:00:00Z"
    assert list(raw) == sorted(raw)
    again = decode_event(data)
    assert again == event
    assert encode_event(again) == data
    assert again.occurred_at.tzinfo is UTC


def test_payload_instants_round_trip() -> None:
    event = ev(EventType.CUSTOMER_INFORMED, "2026-03-13T10:00:00+01:00", message="En cours",
               restoration_eta=at("2026-03-13T15:00:00+01:00"))
    again = decode_event(encode_event(event))
    assert again.payload["restoration_eta"] == at("2026-03-13T14:00:00Z")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("actor"), "missing field(s): actor"),
        (lambda d: d.update(extra=1), "unknown field(s): extra"),
        (lambda d: d.update(type="ticket_burnt"), "unknown event type"),
        (lambda d: d.update(schema_version=99), "newer than this reader"),
        (lambda d: d.update(schema_version="1"), "not a positive integer"),
        (lambda d: d.update(event_id="nope"), "not a UUID"),
        (lambda d: d.update(ticket_id=""), "ticket_id"),
        (lambda d: d.update(ticket_id="a b"), "ticket_id"),
        (lambda d: d.update(occurred_at="2026-03-13T10:00:00"), "occurred_at: '2026-03-13T10:00:00' has no UTC offset"),
        (lambda d: d.update(recorded_at=12), "recorded_at: must be an ISO 8601"),
        (lambda d: d["payload"].update(kind="urgent"), "payload.kind: 'urgent' is not one of"),
        (lambda d: d["payload"].pop("member"), "payload.member: required"),
        (lambda d: d["payload"].update(subject=3), "payload.subject: must be a string"),
        (lambda d: d["payload"].update(colour="red"), "payload: unknown field(s) for ticket_filed: colour"),
        (lambda d: d.update(payload=[]), "payload: must be an object"),
    ],
)
def test_decode_errors_name_the_field(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    raw = json.loads(encode_event(filed("2026-03-13T17:00:00+01:00")))
    mutate(raw)
    with pytest.raises(EventDecodeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        event_from_dict(raw)


@pytest.mark.parametrize("data", [b"", b"{", b"\xff\xfe", b"[]", b"null", b'"x"'])
def test_garbage_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(EventDecodeError):
        decode_event(data)


def test_upcaster_reads_version_n_as_n_plus_1() -> None:
    upcasters = Upcasters()

    @upcasters.register(EventType.ACKNOWLEDGED, 1)
    def v1_to_v2(payload: dict) -> dict:
        payload["note"] = payload.pop("comment", None)
        return payload

    raw = json.loads(encode_event(ev(EventType.ACKNOWLEDGED, "2026-03-13T10:00:00+01:00")))
    raw["payload"] = {"comment": "vu"}
    versions = {**CURRENT_SCHEMA_VERSION, EventType.ACKNOWLEDGED: 2}
    event = event_from_dict(raw, upcasters=upcasters, current_versions=versions)
    assert event.schema_version == 2
    assert event.payload == {"note": "vu"}
    # without a registered step, an old version is refused with a reason
    with pytest.raises(EventDecodeError, match="no upcaster"):
        event_from_dict(raw, upcasters=Upcasters(), current_versions=versions)


def test_fact_ids_are_deterministic() -> None:
    deadline = at("2026-03-16T12:00:00+01:00")
    a = sla_fact_id(EventType.SLA_BREACHED, "T-1", "intake", deadline, "v1")
    assert a == sla_fact_id(EventType.SLA_BREACHED, "T-1", "intake", deadline.astimezone(UTC), "v1")
    assert a != sla_fact_id(EventType.SLA_WARNING_RAISED, "T-1", "intake", deadline, "v1")
    assert a != sla_fact_id(EventType.SLA_BREACHED, "T-2", "intake", deadline, "v1")
    assert a != sla_fact_id(EventType.SLA_BREACHED, "T-1", "intake", deadline, "v2")
    assert isinstance(a, uuid.UUID)

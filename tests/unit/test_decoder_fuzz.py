"""The event and command decoders never crash on hostile input: a clear error or an event."""

from __future__ import annotations

import contextlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from sla.events import EventDecodeError, decode_event, encode_event
from streams.codec import CommandDecodeError, decode_command
from tests.conftest import filed

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=15), children, max_size=6),
    max_leaves=25,
)
VALID = json.loads(encode_event(filed("2026-03-13T17:00:00+01:00")))


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_bytes(data: bytes) -> None:
    for decoder, error in ((decode_event, EventDecodeError), (decode_command, CommandDecodeError)):
        with contextlib.suppress(error):
            decoder(data)


@settings(max_examples=300)
@given(json_values)
def test_any_json(value: object) -> None:
    with contextlib.suppress(EventDecodeError):
        decode_event(json.dumps(value))


@settings(max_examples=300)
@given(st.sampled_from(sorted(VALID)), json_values)
def test_one_field_replaced(field: str, value: object) -> None:
    mutated = {**VALID, field: value}
    try:
        event = decode_event(json.dumps(mutated))
    except EventDecodeError:
        return
    assert event.ticket_id and event.occurred_at.tzinfo is not None


@settings(max_examples=200)
@given(st.sampled_from(sorted(VALID["payload"])), json_values)
def test_one_payload_field_replaced(field: str, value: object) -> None:
    mutated = {**VALID, "payload": {**VALID["payload"], field: value}}
    with contextlib.suppress(EventDecodeError):
        decode_event(json.dumps(mutated))

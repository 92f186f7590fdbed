"""Idempotency keys: a retried request maps to the same command (and, for a filing, the
same ticket); anything else maps elsewhere."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from service.principal import Principal
from sla.events import validate_ticket_id
from sla.ticket import CommandType
from slaledger.web.commands import key_scope, keyed_command_id, new_ticket_id

keys = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=128)
AGENT = Principal("t1", "agent", None, "alice")
OTHER = Principal("t2", "agent", None, "bob")
SAME_LABEL = Principal("t3", "agent", None, "alice")  # labels are not unique: tokens are


@given(keys)
def test_a_keyed_filing_names_one_valid_ticket(key: str) -> None:
    seed = key_scope(AGENT, key)
    assert new_ticket_id(seed) == new_ticket_id(key_scope(AGENT, key))
    assert validate_ticket_id(new_ticket_id(seed)) == new_ticket_id(seed)
    assert new_ticket_id(seed) != new_ticket_id(key_scope(OTHER, key))
    assert new_ticket_id(seed) != new_ticket_id(key_scope(SAME_LABEL, key))


@given(keys, keys, st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3))
def test_a_command_id_is_the_same_only_for_the_same_request(key: str, other_key: str, body: dict[str, str]) -> None:
    same = keyed_command_id(key, AGENT, CommandType.INFORM, "SL-1", body)
    assert same == keyed_command_id(key, AGENT, CommandType.INFORM, "SL-1", dict(reversed(body.items())))
    assert same != keyed_command_id(key, OTHER, CommandType.INFORM, "SL-1", body)
    assert same != keyed_command_id(key, SAME_LABEL, CommandType.INFORM, "SL-1", body)
    assert same != keyed_command_id(key, AGENT, CommandType.RESOLVE, "SL-1", body)
    assert same != keyed_command_id(key, AGENT, CommandType.INFORM, "SL-2", body)
    assert same != keyed_command_id(key, AGENT, CommandType.INFORM, "SL-1", {**body, "message": "autre"})
    if other_key != key:
        assert same != keyed_command_id(other_key, AGENT, CommandType.INFORM, "SL-1", body)

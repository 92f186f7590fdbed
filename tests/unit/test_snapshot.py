"""The stored ticket snapshot outlives the code that wrote it (RocksDB, changelog topics,
the SQL read model): it carries a schema version and is upcast before it is read."""

from __future__ import annotations

import json

import pytest

from sla.ticket import SNAPSHOT_SCHEMA, Ticket, ticket_from_dict, ticket_to_dict, upcast_snapshot
from streams.table_values import refusals_of, stored
from tests.conftest import filed

# A table value as workers wrote it until 2026-11 (schema 1: no version, refusals with their
# HTTP status), copied from a running worker's RocksDB store.
SCHEMA_1 = json.loads("""{"wakeup": "2026-03-02T11:00:00+00:00", "ticket_id": "SL-SNAPSHOT1",
 "status": "open", "kind": "assistance", "channel": "portal", "product": "solaere", "member": "m-001",
 "subject": "Demande", "filed_at": "2026-03-02T08:00:00+00:00", "filed_recorded_at": "2026-03-02T08:00:00+00:00",
 "acknowledged_at": null, "resolved_at": null, "closed_at": null, "restoration_eta": null,
 "last_event_at": "2026-03-02T08:00:00+00:00", "version": 1,
 "marks": [["2026-03-02T08:00:00+00:00", 1, "0f1e2d3c4b5a69788796a5b4c3d2e1f0", ["filed"]]], "facts": [],
 "event_ids": ["0f1e2d3c4b5a69788796a5b4c3d2e1f0"],
 "refused": {"6a1d0a4e-4f5e-4a43-9e0c-3c1b2a190807": [409, {"error": "Le ticket est ouvert.", "code": "conflict"}],
             "7b2e1b5f-5a6f-4b54-8f1d-4d2c3b2a1908": [422, {"error": "Motif manquant.", "code": "invalid"}]}}""")


def test_a_schema_1_snapshot_reads_as_today() -> None:
    ticket = ticket_from_dict(SCHEMA_1)
    assert ticket.ticket_id == "SL-SNAPSHOT1" and ticket.status.value == "open" and ticket.version == 1
    assert [m.signals for m in ticket.marks] == [frozenset({"filed"})]
    refusals = refusals_of(SCHEMA_1)
    assert {cid: result for cid, (result, _) in refusals.items()} == {
        "6a1d0a4e-4f5e-4a43-9e0c-3c1b2a190807": "conflict", "7b2e1b5f-5a6f-4b54-8f1d-4d2c3b2a1908": "invalid"}
    assert upcast_snapshot(SCHEMA_1)["schema"] == SNAPSHOT_SCHEMA


def test_todays_snapshot_round_trips_with_its_version() -> None:
    ticket = Ticket("SL-SNAPSHOT2")
    ticket.apply(filed("2026-03-02T09:00:00+01:00", ticket_id="SL-SNAPSHOT2"))
    value = json.loads(json.dumps(stored(ticket, None, {"c1": ("conflict", {"error": "x"})})))
    assert value["schema"] == SNAPSHOT_SCHEMA
    assert ticket_to_dict(ticket_from_dict(value)) == ticket_to_dict(ticket)
    assert refusals_of(value) == {"c1": ("conflict", {"error": "x"})}


def test_a_snapshot_from_newer_code_is_refused_not_misread() -> None:
    with pytest.raises(ValueError, match="newer"):
        ticket_from_dict({**SCHEMA_1, "schema": SNAPSHOT_SCHEMA + 1})

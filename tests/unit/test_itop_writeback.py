"""The SLA write-back against the fake iTop: one private log entry per fact, never twice."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, create_engine, delete, insert, select
from structlog.testing import capture_logs

from projections.migrate import create_schema
from projections.models import ARCHIVE, CLOCKS, ItopTicketRow, ItopWritebackRow
from sla.events import EventType, encode_event, new_event, sla_fact_id
from slaledger.itop.client import ItopClient
from slaledger.itop.mapping import Reference
from slaledger.itop.sync import CheckpointStore, SyncResult, sync_once
from slaledger.itop.writeback import check_field_code, collect, writeback_into, writeback_once
from tests.itop_fake import FakeItop, ListPublisher

PARIS = ZoneInfo("Europe/Paris")
ALL = ("userrequest_core_get.json", "incident_core_get.json")
DEADLINE = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
TITLES = {"resolution": "Délai de résolution"}




@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    create_schema(engine)
    return engine


@pytest.fixture
def fake() -> Iterator[FakeItop]:
    with FakeItop(extra_fields=frozenset({"sla_deadline"})).load(*ALL) as server:
        yield server


def client(fake: FakeItop) -> ItopClient:
    return ItopClient(fake.url, user="sync", password="s3cret", timeout=5)


def synced(fake: FakeItop, engine: Engine) -> ItopClient:
    itop = client(fake)
    sync_once(itop, ListPublisher(), CheckpointStore(engine, itop.endpoint), Reference(), tz=PARIS)
    return itop


def add_clock(engine: Engine, ticket_id: str, deadline: datetime, *, status: str = "running",
              contractual: bool = True, sla: str = "resolution") -> None:
    with engine.begin() as conn:
        conn.execute(delete(CLOCKS).where(CLOCKS.c.ticket_id == ticket_id, CLOCKS.c.sla == sla))
        conn.execute(insert(CLOCKS).values(
            ticket_id=ticket_id, sla=sla, member="m", kind="assistance", contractual=contractual, status=status,
            deadline=deadline, warning_at=None, started_at=None, stopped_at=None, remaining_at_close_seconds=None,
            policy_version="2026-01", explanation="Résolution en 2 jours ouvrés à compter du dépôt.",
            evaluated_at=datetime(2026, 11, 28, tzinfo=UTC)))


def add_fact(engine: Engine, ticket_id: str, kind: EventType, deadline: datetime = DEADLINE) -> str:
    payload: dict[str, Any] = {"sla": "resolution", "deadline": deadline, "policy_version": "2026-01",
                               "explanation": "Échéance dépassée de 2 h."}
    if kind is EventType.SLA_BREACH_RETRACTED:
        payload["breach_event_id"] = str(sla_fact_id(EventType.SLA_BREACHED, ticket_id, "resolution", deadline,
                                                     "2026-01"))
    event = new_event(kind, ticket_id, occurred_at=deadline, recorded_at=deadline, actor="slaledger/sla-clock",
                      payload=payload, event_id=sla_fact_id(kind, ticket_id, "resolution", deadline, "2026-01"))
    with engine.begin() as conn:
        conn.execute(insert(ARCHIVE).values(
            event_id=str(event.event_id), ticket_id=ticket_id, type=str(kind), occurred_at=deadline,
            recorded_at=deadline, actor=event.actor, topic="events", partition=0, offset=0,
            envelope=encode_event(event).decode(), prev_hash="0" * 64, hash="1" * 64))
    return str(event.event_id)


def entries(fake: FakeItop, key: int) -> list[str]:
    return [e["message"] for e in fake.private_log("UserRequest", key)]


def updates(fake: FakeItop) -> list[dict[str, Any]]:
    return [r for r in (json.loads(p["json_data"]) for p in fake.requests if "json_data" in p)
            if r["operation"] == "core/update"]


def test_the_sync_records_where_each_ticket_comes_from(fake: FakeItop, engine: Engine) -> None:
    itop = synced(fake, engine)
    with engine.connect() as conn:
        rows = {r.ticket_id: (r.source, r.itop_class, r.itop_key, r.ref) for r in conn.execute(select(ItopTicketRow))}
    assert rows["IT-R-000102"] == (itop.endpoint, "UserRequest", "102", "R-000102")
    assert rows["IT-I-000201"] == (itop.endpoint, "Incident", "201", "I-000201")
    assert len(rows) == 6


def test_each_sla_fact_is_written_once_even_when_run_twice(fake: FakeItop, engine: Engine) -> None:
    itop = synced(fake, engine)
    add_clock(engine, "IT-R-000102", DEADLINE)
    breach = add_fact(engine, "IT-R-000102", EventType.SLA_BREACHED)
    first = writeback_once(itop, engine, itop.endpoint, tz=PARIS, titles=TITLES)
    assert (first.written, first.already, first.failed) == (2, 0, 0)
    log = entries(fake, 102)
    assert log == [
        "[slaledger:deadline:resolution:2026-11-30T09:00:00Z] Échéance SLA « Délai de résolution » : "
        "lundi 30 novembre 2026 à 10:00.\nRésolution en 2 jours ouvrés à compter du dépôt.",
        f"[slaledger:breach:{breach}] Dépassement SLA « Délai de résolution » : l'échéance du "
        "lundi 30 novembre 2026 à 10:00 est dépassée.\nÉchéance dépassée de 2 h.",
    ]
    sent = updates(fake)
    assert [u["fields"]["private_log"]["add_item"]["format"] for u in sent] == ["text", "text"]
    assert all(u["class"] == "UserRequest" and u["key"] == 102 and u["comment"].startswith("slaledger") for u in sent)

    second = writeback_once(itop, engine, itop.endpoint, tz=PARIS, titles=TITLES)
    assert (second.written, second.already, second.failed) == (0, 0, 0)
    assert entries(fake, 102) == log and len(updates(fake)) == 2

    # the deadline moves (a pause): one more entry; a retraction: one more
    add_clock(engine, "IT-R-000102", datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    add_fact(engine, "IT-R-000102", EventType.SLA_BREACH_RETRACTED)
    third = writeback_once(itop, engine, itop.endpoint, tz=PARIS, titles=TITLES)
    assert third.written == 2
    assert [e.split("]")[0].split(":")[1] for e in entries(fake, 102)] == [
        "deadline", "breach", "deadline", "retraction"]
    assert "retiré" in entries(fake, 102)[-1]


def test_a_lost_record_does_not_write_again(fake: FakeItop, engine: Engine) -> None:
    """A crash between iTop's answer and the SQL record (here: the table emptied): the
    marker in the ticket's private log stops a second entry."""
    itop = synced(fake, engine)
    add_fact(engine, "IT-R-000103", EventType.SLA_WARNING_RAISED)
    assert writeback_once(itop, engine, itop.endpoint, tz=PARIS).written == 1
    with engine.begin() as conn:
        conn.execute(delete(ItopWritebackRow))
    again = writeback_once(itop, engine, itop.endpoint, tz=PARIS)
    assert (again.written, again.already) == (0, 1)
    assert len(entries(fake, 103)) == 1 and "Alerte SLA « resolution »" in entries(fake, 103)[0]
    with engine.connect() as conn:
        assert conn.execute(select(ItopWritebackRow.fact_key)).scalars().all() != []
    _targets, pending, _deadlines = collect(engine, itop.endpoint, tz=PARIS)
    assert pending == {}


def test_failures_are_logged_and_retried_next_pass(engine: Engine) -> None:
    with FakeItop(read_only=True).load(*ALL) as refused:
        itop = synced(refused, engine)
        add_fact(engine, "IT-R-000102", EventType.SLA_BREACHED)
        add_fact(engine, "IT-R-000103", EventType.SLA_BREACHED)
        with capture_logs() as logs:
            failed = writeback_once(itop, engine, itop.endpoint, tz=PARIS)
        assert (failed.written, failed.failed) == (0, 2)  # rights refused on each ticket, the next still tried
        assert [e["code"] for e in logs if e["event"].startswith("itop write-back failed")] == [1, 1]
        refused.read_only = False
        assert writeback_once(itop, engine, itop.endpoint, tz=PARIS).written == 2
        refused.stop()
        result = SyncResult(itop.endpoint)
        add_fact(engine, "IT-R-000104", EventType.SLA_BREACHED)
        writeback_into(result, itop, engine, tz=PARIS)  # iTop down: counted, not raised
        assert (result.written_back, result.writeback_failed) == (0, 1)
        assert "1 ticket(s) en échec" in result.summary()


def test_the_optional_field_holds_the_next_contractual_deadline(fake: FakeItop, engine: Engine) -> None:
    itop = synced(fake, engine)
    add_clock(engine, "IT-R-000105", DEADLINE)
    add_clock(engine, "IT-R-000105", datetime(2026, 11, 29, 15, 0, tzinfo=UTC), contractual=False, sla="intake")
    result = writeback_once(itop, engine, itop.endpoint, tz=PARIS, sla_field="sla_deadline")
    assert result.fields == 1 and fake.objects["UserRequest"]["105"]["sla_deadline"] == "2026-11-30 10:00:00"
    fake.requests.clear()
    assert writeback_once(itop, engine, itop.endpoint, tz=PARIS, sla_field="sla_deadline").fields == 0
    assert updates(fake) == []
    add_clock(engine, "IT-R-000105", DEADLINE, status="met")  # nothing running any more: the field is emptied
    assert writeback_once(itop, engine, itop.endpoint, tz=PARIS, sla_field="sla_deadline").fields == 1
    assert fake.objects["UserRequest"]["105"]["sla_deadline"] == ""
    # without the option, no field is touched
    add_clock(engine, "IT-R-000101", DEADLINE)
    fake.requests.clear()
    writeback_once(itop, engine, itop.endpoint, tz=PARIS)
    assert all(set(u["fields"]) == {"private_log"} for u in updates(fake))
    with pytest.raises(ValueError, match="--sla-field"):
        check_field_code("sla deadline; DROP")


def test_the_fake_checks_core_update_as_itop_does(fake: FakeItop) -> None:
    base = {"auth_user": "sync", "auth_pwd": "s3cret", "version": "1.3"}
    for request, code in [
        ({"class": "UserRequest", "key": 102, "fields": {"no_such": "x"}, "comment": "c"}, 100),
        ({"class": "UserRequest", "key": 102, "fields": {"private_log": "plain text"}, "comment": "c"}, 100),
        ({"class": "UserRequest", "key": 999, "fields": {"private_log": {"add_item": {"message": "m"}}}}, 100),
        ({"class": "Nope", "key": 1, "fields": {"title": "x"}}, 100),
    ]:
        _status, answer = fake.handle({**base, "json_data": json.dumps({"operation": "core/update", **request})})
        assert answer is not None and answer["code"] == code and answer["message"].startswith("Error: ")
    assert fake.private_log("UserRequest", 102) == []


def test_a_closed_ticket_gets_no_write_back(fake: FakeItop, engine: Engine) -> None:
    """A first deployment does not post years of past facts on closed tickets."""
    from projections.models import TICKETS

    itop = synced(fake, engine)
    add_fact(engine, "IT-R-000102", EventType.SLA_BREACHED)
    with engine.begin() as conn:
        conn.execute(insert(TICKETS).values(
            ticket_id="IT-R-000102", status="closed", kind="assistance", channel="portal", product="p", member="m",
            subject="s", version=1, state={}))
    result = writeback_once(itop, engine, itop.endpoint, tz=PARIS, titles=TITLES)
    assert result.written == 0 and entries(fake, 102) == [] and updates(fake) == []


def test_the_optional_field_leaves_closed_tickets_alone(fake: FakeItop, engine: Engine) -> None:
    from projections.models import TICKETS

    itop = synced(fake, engine)
    with engine.begin() as conn:
        conn.execute(insert(TICKETS).values(
            ticket_id="IT-R-000102", status="closed", kind="assistance", channel="portal", product="p", member="m",
            subject="s", version=1, state={}))
    fake.update("UserRequest", 102, sla_deadline="2026-11-30 10:00:00")  # written while it was open
    add_clock(engine, "IT-R-000105", DEADLINE)
    result = writeback_once(itop, engine, itop.endpoint, tz=PARIS, titles=TITLES, sla_field="sla_deadline")
    assert result.fields == 1 and fake.objects["UserRequest"]["105"]["sla_deadline"] == "2026-11-30 10:00:00"
    assert fake.objects["UserRequest"]["102"]["sla_deadline"] == "2026-11-30 10:00:00"
    assert all(u["key"] != 102 for u in updates(fake))

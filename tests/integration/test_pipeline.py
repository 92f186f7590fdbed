"""The live pipeline against a real broker: HTTP → commands → agent → events → timer."""

from __future__ import annotations

import base64
import json
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sla.events import decode_event
from streams.kafka_tools import producer, read_topic
from streams.topics import DEAD_LETTERS, EVENTS
from tests.integration.conftest import Broker, Worker, api, tiny_policy, wait_for

pytestmark = pytest.mark.integration

FILE = {"kind": "assistance", "channel": "portal", "member": "m-001", "product": "ent", "subject": "Mot de passe"}


def events_of(broker: Broker, ticket_id: str | None = None) -> list:
    out = []
    for record in read_topic(broker.bootstrap, EVENTS):
        try:
            event = decode_event(record.value)
        except ValueError:
            continue
        if ticket_id is None or event.ticket_id == ticket_id:
            out.append(event)
    return out


def test_file_acknowledge_resolve_over_http(broker: Broker, workers: list[Worker], tmp_path: Path) -> None:
    worker = Worker(broker, tmp_path)
    workers.append(worker.start())
    status, body = api("POST", f"{worker.url}/api/tickets", FILE)
    assert status == 201, body
    ticket = body["ticket"]
    tid = ticket["id"]
    assert ticket["status"] == "open"
    assert [c["sla"] for c in ticket["clocks"]] == ["intake"]
    assert ticket["clocks"][0]["status"] == "running"
    assert ticket["clocks"][0]["explanation"].startswith("Demande déposée le ")

    status, body = api("POST", f"{worker.url}/api/tickets/{tid}/acknowledge", {})
    assert status == 200, body
    assert body["ticket"]["status"] == "in_progress"
    assert body["ticket"]["clocks"][0]["status"] == "met"
    # the state machine says no, in French, with 409
    status, body = api("POST", f"{worker.url}/api/tickets/{tid}/acknowledge", {})
    assert status == 409 and "en cours de traitement" in body["error"]
    status, body = api("POST", f"{worker.url}/api/tickets/{tid}/resolve", {"resolution": "Mot de passe réinitialisé"})
    assert status == 200 and body["ticket"]["status"] == "resolved"

    status, body = api("GET", f"{worker.url}/api/tickets/{tid}")
    assert status == 200 and body["status"] == "resolved" and body["version"] == 3
    status, body = api("GET", f"{worker.url}/api/tickets?status=resolved")
    assert status == 200 and tid in [t["id"] for t in body["items"]]
    types = [e.type.value for e in events_of(broker, tid)]
    assert types == ["ticket_filed", "acknowledged", "resolved"]
    assert all(e.actor == "admin:anonymous" for e in events_of(broker, tid))  # authentication is off here


def test_bad_input_is_4xx_and_writes_nothing(broker: Broker, workers: list[Worker], tmp_path: Path) -> None:
    worker = Worker(broker, tmp_path)
    workers.append(worker.start())
    before = len(events_of(broker))
    cases = [
        (f"{worker.url}/api/tickets", None, b"{not json", 422, None),
        (f"{worker.url}/api/tickets", {**FILE, "priority": "P1"}, None, 422, "priority"),
        (f"{worker.url}/api/tickets", {**FILE, "kind": "urgent"}, None, 422, "kind"),
        (f"{worker.url}/api/tickets", {**FILE, "subject": 42}, None, 422, "subject"),
        (f"{worker.url}/api/tickets", {k: v for k, v in FILE.items() if k != "member"}, None, 422, "member"),
        (f"{worker.url}/api/tickets", {**FILE, "received_at": "2026-01-01T10:00:00"}, None, 422, "received_at"),
        (f"{worker.url}/api/tickets", [1, 2], None, 422, None),
        (f"{worker.url}/api/tickets", None, b"x" * (70 * 1024), 413, None),
        (f"{worker.url}/api/tickets/SL-NOPE/acknowledge", {}, None, 404, None),
        (f"{worker.url}/api/tickets/SL-NOPE/teleport", {}, None, 404, None),
        (f"{worker.url}/api/tickets/SL-NOPE/acknowledge", {"colour": 1}, None, 422, "colour"),
    ]
    for url, body, raw, expected, field in cases:
        status, answer = api("POST", url, body, raw=raw)
        assert status == expected, (url, body, answer)
        assert isinstance(answer, dict) and answer["error"], answer
        if field:
            assert answer.get("field") == field, answer
    status, answer = api("GET", f"{worker.url}/api/tickets/SL-NOPE")
    assert status == 404
    status, answer = api("GET", f"{worker.url}/api/tickets?sla_status=bogus")
    assert status == 422
    assert len(events_of(broker)) == before
    status, doc = api("GET", f"{worker.url}/api/openapi.json")
    assert status == 200 and "/api/tickets/{ticket_id}/acknowledge" in doc["paths"]


def test_breach_exactly_once_then_late_ack_retracts(broker: Broker, workers: list[Worker],
                                                    tmp_path: Path) -> None:
    worker = Worker(broker, tmp_path, policy_file=tiny_policy(tmp_path, 2))
    workers.append(worker.start())
    status, body = api("POST", f"{worker.url}/api/tickets", FILE)
    assert status == 201
    tid, filed_at = body["ticket"]["id"], datetime.fromisoformat(body["ticket"]["filed_at"])

    def breached() -> list:
        return [e for e in events_of(broker, tid) if e.type.value == "sla_breached"]

    wait_for(breached, timeout=15, what="breach")
    time.sleep(2)  # several more timer ticks: still one breach
    facts = Counter(e.type.value for e in events_of(broker, tid))
    assert facts["sla_breached"] == 1 and facts["sla_warning_raised"] == 1
    (breach,) = breached()
    assert breach.occurred_at == filed_at + timedelta(seconds=2)
    assert breach.payload["policy_version"] == "tiny-1"
    assert "délai dépassé" in breach.payload["explanation"]
    status, body = api("GET", f"{worker.url}/api/tickets/{tid}")
    assert body["clocks"][0]["status"] == "breached"

    # the acknowledgement was made at +1 s (phone) and is typed in now: the breach is retracted
    status, body = api("POST", f"{worker.url}/api/tickets/{tid}/acknowledge",
                       {"occurred_at": (filed_at + timedelta(seconds=1)).isoformat()})
    assert status == 200, body
    assert body["ticket"]["clocks"][0]["status"] == "retracted"
    retractions = wait_for(lambda: [e for e in events_of(broker, tid) if e.type.value == "sla_breach_retracted"],
                           timeout=10, what="retraction")
    time.sleep(1)
    assert len([e for e in events_of(broker, tid) if e.type.value == "sla_breach_retracted"]) == 1
    assert retractions[0].payload["breach_event_id"] == str(breach.event_id)
    assert len(breached()) == 1  # the breach stays in the log


def test_malformed_records_go_to_dead_letters(broker: Broker, workers: list[Worker], tmp_path: Path) -> None:
    worker = Worker(broker, tmp_path)
    workers.append(worker.start())
    kafka = producer(broker.bootstrap, embedded=broker.embedded)
    bad = [
        (b"SL-BAD1", b"\xff\xfe not json"),
        (b"SL-BAD2", json.dumps({"type": "ticket_filed"}).encode()),
        (b"SL-BAD3", json.dumps({"event_id": "x"}).encode()),
    ]
    for key, value in bad:
        kafka.send(EVENTS, key=key, value=value).get(timeout=10)
    kafka.close()
    # the worker keeps processing
    status, _body = api("POST", f"{worker.url}/api/tickets", FILE)
    assert status == 201

    def letters() -> list[dict]:
        return [json.loads(r.value) for r in read_topic(broker.bootstrap, DEAD_LETTERS)]

    keys = {base64.b64encode(key).decode() for key, _ in bad}

    def ours() -> list[dict]:
        found = [d for d in letters() if d["origin"]["topic"] == EVENTS and d["key"] in keys]
        return found if len(found) == len(bad) else []

    found = wait_for(ours, timeout=15, what="dead letters")
    reasons = " | ".join(d["reason"] for d in found)
    assert "not valid JSON" in reasons and "missing field(s)" in reasons
    assert all(isinstance(d["origin"]["offset"], int) for d in found)
    assert worker.process is not None and worker.process.poll() is None
    assert datetime.fromisoformat(found[0]["dead_lettered_at"]) <= datetime.now(UTC)


def test_a_request_retried_with_its_idempotency_key_is_applied_once(
        broker: Broker, workers: list[Worker], tmp_path: Path) -> None:
    """A client whose answer was lost (cut connection, 504, crash) sends the same request
    again with the same ``Idempotency-Key``: the same ticket, the same event, answered
    again as a replay; concurrent retries included; a worker restart in between too."""
    worker = Worker(broker, tmp_path)
    workers.append(worker.start())
    key = {"Idempotency-Key": "portal-form-4f2a91"}
    status, first = api("POST", f"{worker.url}/api/tickets", FILE, headers=key)
    assert status == 201 and first["replayed"] is False, first
    tid = first["ticket"]["id"]
    time.sleep(0.05)
    status, again = api("POST", f"{worker.url}/api/tickets", FILE, headers=key)
    assert status == 201 and again["replayed"] is True, again
    assert again["ticket"]["id"] == tid and again["events"] == first["events"]
    assert again["ticket"]["filed_at"] == first["ticket"]["filed_at"]  # the first request's time is kept
    # Another body under the same key is another request: here, a second filing of that ticket.
    status, other_body = api("POST", f"{worker.url}/api/tickets", {**FILE, "subject": "Autre"}, headers=key)
    assert status == 409, other_body

    # Three copies of one acknowledgement at once (a client retrying while the first waits).
    ack = {"Idempotency-Key": "ack-1"}
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: api("POST", f"{worker.url}/api/tickets/{tid}/acknowledge", {},
                                               headers=ack), range(3)))
    assert [s for s, _ in answers] == [200, 200, 200], answers
    assert len({tuple(a["events"]) for _, a in answers}) == 1, answers

    # The same key on another action or another ticket is another request.
    status, other = api("POST", f"{worker.url}/api/tickets", FILE, headers={"Idempotency-Key": "ack-1"})
    assert status == 201 and other["ticket"]["id"] != tid and other["replayed"] is False

    worker.stop(signal.SIGKILL)
    worker.start()
    status, after = api("POST", f"{worker.url}/api/tickets/{tid}/acknowledge", {}, headers=ack)
    assert status == 200 and after["replayed"] is True and after["events"] == answers[0][1]["events"], after
    types = Counter(e.type.value for e in events_of(broker, tid))
    assert types == {"ticket_filed": 1, "acknowledged": 1}, types

    # A malformed key, or a ticket id no ticket can have, is refused before anything is sent.
    before = len(events_of(broker))
    for bad in ("", "a b", "x" * 129, "clé"):
        status, answer = api("POST", f"{worker.url}/api/tickets", FILE,
                             headers={"Idempotency-Key": bad.encode().decode("latin-1")})
        assert status == 422 and answer["field"] == "Idempotency-Key", (bad, answer)
    status, answer = api("POST", f"{worker.url}/api/tickets/bad%20id/acknowledge", {})
    assert status == 404 and answer["field"] == "ticket_id", answer
    status, answer = api("POST", f"{worker.url}/api/tickets", {**FILE, "received_at": "0001-01-01T00:00:00+05:00"})
    assert status == 422 and answer["field"] == "received_at", answer
    assert len(events_of(broker)) == before


def test_one_record_per_command_and_events_from_another_writer_are_applied(
        broker: Broker, workers: list[Worker], tmp_path: Path) -> None:
    """The agent reads only the commands topic: each command is one record read and its
    events are never read back; an event another writer appends to the events topic (a
    restore) is applied by the worker all the same, and the ticket then takes commands."""
    from sla.events import EventType, encode_event, new_event

    worker = Worker(broker, tmp_path)
    workers.append(worker.start())
    status, body = api("POST", f"{worker.url}/api/tickets", FILE)
    assert status == 201, body
    filed_at = datetime.now(UTC) - timedelta(minutes=5)
    restored = new_event(EventType.TICKET_FILED, "SL-RESTORED-1", occurred_at=filed_at, recorded_at=filed_at,
                         actor="restore", payload={**FILE, "subject": "Restauré"})
    kafka = producer(broker.bootstrap, embedded=broker.embedded)
    kafka.send(EVENTS, key=b"SL-RESTORED-1", value=encode_event(restored)).get(timeout=10)
    kafka.close()

    def seen() -> bool:
        status, _ = api("GET", f"{worker.url}/api/tickets/SL-RESTORED-1")
        return status == 200

    wait_for(seen, timeout=20, what="the restored ticket in the worker")
    status, body = api("POST", f"{worker.url}/api/tickets/SL-RESTORED-1/acknowledge", {})
    assert status == 200 and body["ticket"]["status"] == "in_progress", body
    assert [e.type.value for e in events_of(broker, "SL-RESTORED-1")] == ["ticket_filed", "acknowledged"]

"""``slaledger itop sync`` against the fake iTop and a real worker on the embedded broker.

Tickets filed in iTop appear in the ledger with iTop's business times; re-syncing, losing
the checkpoint and restarting the connector add no event; an error code or an iTop that
is down is retried with back-off and reported on one line; an unknown organisation is
reported and its ticket still ingested; every status change read from iTop's change log
becomes its fact; an SLA breach is written back to the iTop ticket once.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from sla.events import SLA_FACT_TYPES, decode_event
from sla.ticket import Command, CommandType
from slaledger.brokers.process import free_port
from slaledger.members import EXAMPLE_FILE
from streams.codec import decode_command, encode_command
from streams.kafka_acls import ITOP
from streams.kafka_tools import end_offsets_total, producer, read_topic
from streams.topics import COMMANDS, DEAD_LETTERS, EVENTS
from tests.integration.conftest import Broker, Worker, api, wait_for
from tests.itop_fake import FIXTURES, FakeItop

pytestmark = pytest.mark.integration

ALL = ("userrequest_core_get.json", "incident_core_get.json")
ORG_MAP = str(FIXTURES / "org-map.toml")
# ticket → (status, command events) once the fixtures are synced
EXPECTED = {"IT-R-000101": ("closed", 8), "IT-R-000102": ("in_progress", 2), "IT-R-000103": ("waiting_for_customer", 4),
            "IT-R-000104": ("open", 1), "IT-R-000105": ("in_progress", 6), "IT-I-000201": ("resolved", 4)}


@pytest.fixture
def fake() -> Iterator[FakeItop]:
    with FakeItop().load(*ALL) as server:
        yield server


PROBE = {"kind": "assistance", "channel": "phone", "member": "probe", "product": "probe", "subject": "probe"}


def sync_env(broker: Broker, database: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "SLALEDGER_BROKER_URL": broker.url, "SLALEDGER_EMBEDDED": "1" if broker.embedded else "0",
            "SLALEDGER_DATABASE_URL": database, "SLALEDGER_ITOP_USER": "sync", "SLALEDGER_ITOP_PASSWORD": "s3cret",
            "SLALEDGER_LOG_LEVEL": "info", **broker.client_env(ITOP), **extra}


def itop_sync(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "slaledger.cli", "itop", "sync", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def logs_of(stderr: str) -> list[dict[str, Any]]:
    out = []
    for line in stderr.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


def one_liners(stderr: str) -> list[str]:
    """What the person sees besides the JSON logs."""
    return [line for line in stderr.splitlines() if line.startswith("slaledger:")]


def ticket(worker: Worker, tid: str) -> dict[str, Any] | None:
    status, body = api("GET", f"{worker.url}/api/tickets/{tid}")
    return body if status == 200 else None


def command_events(broker: Broker) -> list:
    events = [decode_event(r.value) for r in read_topic(broker.bootstrap, EVENTS)]
    return [e for e in events if e.type not in SLA_FACT_TYPES and e.ticket_id.startswith("IT-")]


def processed_up_to_now(broker: Broker, tickets: list[str]) -> None:
    """A barrier: a refused probe per ticket comes back as a dead letter once the agent has
    handled everything sent before it to that ticket's partition."""
    kafka = producer(broker.bootstrap, embedded=broker.embedded)
    probes = set()
    for tid in tickets:
        probe = Command(CommandType.FILE, tid, "test", PROBE, command_id=uuid.uuid4())
        sent = kafka.send(COMMANDS, key=tid.encode(), value=encode_command(probe)).get(timeout=30)
        probes.add((sent.partition, sent.offset))
    kafka.close()

    def answered() -> bool:
        origins = {(d["origin"]["partition"], d["origin"]["offset"])
                   for d in (json.loads(r.value) for r in read_topic(broker.bootstrap, DEAD_LETTERS))
                   if d["origin"]["topic"] == COMMANDS}
        return probes <= origins

    wait_for(answered, timeout=60, what="probes dead-lettered")


def test_itop_tickets_reach_the_ledger_once(broker: Broker, workers: list[Worker], database: str,
                                            fake: FakeItop, tmp_path: Path) -> None:
    worker = Worker(broker, tmp_path)
    workers.append(worker.start())
    env = sync_env(broker, database)

    run = itop_sync(env, "--url", fake.url, "--once", "--page-size", "2", "--org-map", ORG_MAP)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "6 objet(s) lu(s) dont 0 inchangé(s), 25 commande(s) publiée(s) pour 6 ticket(s)" in run.stdout
    # the unknown organisation is reported (output and a warning), its ticket still ingested
    assert "Organisations inconnues" in run.stdout and "Mairie de Nulle-Part : R-000103" in run.stdout
    assert "Gestion financière : R-000103" in run.stdout
    warnings = [e for e in logs_of(run.stderr) if e["event"] == "itop organisation unknown"]
    assert [(e["level"], e["ticket_id"], e["itop_ref"], e["value"]) for e in warnings] == [
        ("warning", "IT-R-000103", "R-000103", "Mairie de Nulle-Part")]
    pages = [json.loads(r["json_data"])["page"] for r in fake.requests]
    assert pages.count(3) == 1 and max(pages) == 3  # 5 UserRequests, 2 per page

    for tid, (status, _count) in EXPECTED.items():
        wait_for(lambda tid=tid, status=status: (ticket(worker, tid) or {}).get("status") == status,
                 timeout=60, what=f"{tid} {status}")
    r101 = ticket(worker, "IT-R-000101")
    assert r101 is not None
    assert (r101["filed_at"], r101["acknowledged_at"], r101["resolved_at"], r101["closed_at"]) == (
        "2026-11-02T08:12:00Z", "2026-11-02T09:05:00Z", "2026-11-04T10:00:00Z", "2026-11-12T10:00:00Z")
    assert (r101["member"], r101["product"], r101["channel"], r101["kind"]) == (
        "commune-de-blois", "parapheur", "portal", "assistance")
    assert r101["clocks"][0]["sla"] == "intake" and r101["clocks"][0]["status"] == "met"
    r102 = ticket(worker, "IT-R-000102")
    assert r102 is not None and r102["filed_at"] == "2026-10-23T15:40:00Z"  # summer time in iTop
    assert r102["acknowledged_at"] == "2026-10-26T08:00:00Z" and r102["channel"] == "phone"
    r103 = ticket(worker, "IT-R-000103")
    assert r103 is not None and (r103["member"], r103["product"]) == ("mairie-de-nulle-part", "gestion-financiere")
    i201 = ticket(worker, "IT-I-000201")
    assert i201 is not None and (i201["kind"], i201["channel"]) == ("incident", "email")

    def counts() -> dict[str, int]:
        return dict(Counter(e.ticket_id for e in command_events(broker)))

    expected_counts = {tid: n for tid, (_s, n) in EXPECTED.items()}
    wait_for(lambda: counts() == expected_counts, timeout=30, what="command events")
    first = command_events(broker)
    assert all(e.actor == "itop:sync" for e in first)
    assert len({e.event_id for e in first}) == len(first) == 25

    # re-sync: nothing changed in iTop, nothing is sent
    commands_before = end_offsets_total(broker.bootstrap, COMMANDS)
    again = itop_sync(env, "--url", fake.url, "--once", "--org-map", ORG_MAP)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 commande(s) publiée(s)" in again.stdout
    assert end_offsets_total(broker.bootstrap, COMMANDS) == commands_before

    # the checkpoint is lost: everything is sent again, and the ledger gets no new event
    with create_engine(database).begin() as conn:
        assert conn.execute(text("DELETE FROM itop_checkpoints")).rowcount == 2
    lost = itop_sync(env, "--url", fake.url, "--once")
    assert lost.returncode == 0 and "25 commande(s) publiée(s)" in lost.stdout, lost.stderr[-3000:]
    assert end_offsets_total(broker.bootstrap, COMMANDS) == commands_before + 25
    processed_up_to_now(broker, list(EXPECTED))
    assert counts() == expected_counts
    assert {e.event_id for e in command_events(broker)} == {e.event_id for e in first}

    # the connector as a service: a change in iTop arrives, a restart re-reads and adds nothing
    service = subprocess.Popen([sys.executable, "-m", "slaledger.cli", "itop", "sync", "--url", fake.url,
                                "--every", "1s"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        fake.update("UserRequest", 103, status="assigned")
        fake.add_log_entry("UserRequest", 103, "2026-11-28 08:45:00", "Jeanne Martin", "44", "C'est le poste 214.")
        wait_for(lambda: (ticket(worker, "IT-R-000103") or {}).get("status") == "in_progress", timeout=60,
                 what="the caller's reply")
    finally:
        service.send_signal(signal.SIGTERM)
        _out, err = service.communicate(timeout=60)
    assert service.returncode == 0, err[-3000:]
    done = [e for e in logs_of(err) if e["event"] == "itop sync done"]
    assert done and sum(e["commands"] for e in done) == 5  # the changed object, once
    restarted = itop_sync(env, "--url", fake.url, "--once")
    assert restarted.returncode == 0 and "0 commande(s) publiée(s)" in restarted.stdout
    processed_up_to_now(broker, ["IT-R-000103"])
    new = [e for e in command_events(broker) if e.event_id not in {f.event_id for f in first}]
    assert [(e.ticket_id, e.type.value, e.payload.get("message")) for e in new] == [
        ("IT-R-000103", "customer_responded", "C'est le poste 214.")]
    assert new[0].occurred_at.isoformat() == "2026-11-28T07:45:00+00:00"


def test_an_unknown_member_is_dead_lettered_with_its_reason(broker: Broker, fake: FakeItop, tmp_path: Path) -> None:
    """With the members directory (#32, item 4), an organisation that names no member is not sent:
    the connector (its own principal) puts its filing on the dead-letter topic with the reason."""
    env = sync_env(broker, f"sqlite:///{tmp_path / 'checkpoint.db'}", SLALEDGER_MEMBERS_FILE=str(EXAMPLE_FILE))
    run = itop_sync(env, "--url", fake.url, "--once", "--org-map", ORG_MAP)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "21 commande(s) publiée(s) pour 5 ticket(s)" in run.stdout, run.stdout
    assert "Fiches refusées" in run.stdout and "R-000103 : Membre inconnu : « Mairie de Nulle-Part »" in run.stdout
    letters = [json.loads(r.value) for r in read_topic(broker.bootstrap, DEAD_LETTERS)]
    (letter,) = [d for d in letters if d["origin"].get("itop_ref") == "R-000103"]
    assert letter["reason"].startswith("itop record refused: Membre inconnu : « Mairie de Nulle-Part » (aucun membre "
                                       "proche ; membres connus : Commune de Blois,"), letter["reason"]
    filing = decode_command(base64.b64decode(letter["value"]))
    assert (filing.type, filing.ticket_id, filing.actor) == (CommandType.FILE, "IT-R-000103", "itop:sync")
    assert base64.b64decode(letter["key"]) == b"IT-R-000103"


def test_itop_errors_back_off_and_are_reported_on_one_line(broker: Broker, fake: FakeItop,
                                                           tmp_path: Path) -> None:
    env = sync_env(broker, f"sqlite:///{tmp_path / 'checkpoint.db'}")

    # a configuration error: no retry, exit 1, one line saying what iTop answered
    wrong = itop_sync({**env, "SLALEDGER_ITOP_PASSWORD": "wrong"}, "--url", fake.url, "--once")
    assert wrong.returncode == 1
    assert one_liners(wrong.stderr) == ["slaledger: error: itop sync failed: iTop a répondu le code 1 (UNAUTHORIZED) "
                                        "pour core/get : Error: Invalid login"]
    failed = [e for e in logs_of(wrong.stderr) if e["event"].startswith("itop sync failed")]
    assert [(e["event"], e["level"], e["code"]) for e in failed] == [("itop sync failed", "error", 1)]

    # iTop down: retried with back-off, then exit 1
    down = itop_sync(env, "--url", f"http://127.0.0.1:{free_port()}/itop", "--once", "--retries", "3")
    assert down.returncode == 1
    (message,) = one_liners(down.stderr)
    assert message.startswith("slaledger: error: itop sync failed: iTop injoignable")
    retries = [e for e in logs_of(down.stderr) if e["event"] == "itop sync failed, retrying"]
    assert [(e["retry_in"], e["level"], e["transient"]) for e in retries] == [
        (1.0, "warning", True), (2.0, "warning", True)]

    # an INTERNAL_ERROR that goes away: one back-off, then the pass completes
    fake.fail_next(100)
    flaky = itop_sync(env, "--url", fake.url, "--once")
    assert flaky.returncode == 0, flaky.stderr[-3000:]
    assert "25 commande(s) publiée(s)" in flaky.stdout
    retries = [e for e in logs_of(flaky.stderr) if e["event"] == "itop sync failed, retrying"]
    assert [(e["code"], e["code_name"], e["retry_in"]) for e in retries] == [(100, "INTERNAL_ERROR", 1.0)]


def test_a_breach_on_an_itop_ticket_is_written_back_once(broker: Broker, workers: list[Worker], database: str,
                                                         tmp_path: Path) -> None:
    """The worker's timer breaches an iTop ticket, the projector archives it, and the sync
    writes it to the ticket's private log in iTop: one entry, however many passes. Then three
    status changes between two polls reach the ledger as three facts with iTop's times."""
    from projections.migrate import create_schema
    from projections.projector import run_projector
    from slaledger.settings import load_policy
    from tests.integration.conftest import tiny_policy

    policy_file = tiny_policy(tmp_path, 2)
    worker = Worker(broker, tmp_path, policy_file=policy_file)
    workers.append(worker.start())
    env = sync_env(broker, database, SLALEDGER_POLICY_FILE=str(policy_file))
    with FakeItop() as fake:
        item = json.loads((FIXTURES / "userrequest_core_get.json").read_text())["objects"]["UserRequest::104"]
        fake.put("UserRequest", 104, dict(item["fields"]))  # new, never taken into account: intake overdue

        first = itop_sync(env, "--url", fake.url, "--once")
        assert first.returncode == 0, first.stderr[-3000:]
        assert "1 commande(s) publiée(s)" in first.stdout and "Retour vers iTop" not in first.stdout

        def breach() -> list:
            events = [decode_event(r.value) for r in read_topic(broker.bootstrap, EVENTS)]
            return [e for e in events if e.ticket_id == "IT-R-000104" and e.type.value == "sla_breached"]

        (breached,) = wait_for(breach, timeout=60, what="the timer's breach")
        engine = create_engine(database)
        create_schema(engine)
        run_projector(engine, broker.bootstrap, load_policy(policy_file), follow=False)

        outputs = []
        for _ in range(2):
            run = itop_sync(env, "--url", fake.url, "--once")
            assert run.returncode == 0, run.stderr[-3000:]
            outputs.append(run.stdout)
        log = [e["message"] for e in fake.private_log("UserRequest", 104)]
        breaches = [m for m in log if m.startswith(f"[slaledger:breach:{breached.event_id}]")]
        assert len(breaches) == 1, log
        assert "Dépassement SLA « Prise en compte (test) »" in breaches[0]
        assert "délai dépassé" in breaches[0]  # the fold's own French explanation
        markers = [m.split("]")[0] for m in log]
        assert len(markers) == len(set(markers))  # no fact twice (the warning comes once too)
        assert f"Retour vers iTop : {len(log)} entrée(s)" in outputs[0]
        assert "Retour vers iTop" not in outputs[1]
        # --no-writeback: nothing is read or written back
        fake.requests.clear()
        quiet = itop_sync(env, "--url", fake.url, "--once", "--no-writeback")
        assert quiet.returncode == 0, quiet.stderr[-3000:]
        assert all(json.loads(r["json_data"])["operation"] == "core/get" for r in fake.requests)
        assert all(json.loads(r["json_data"])["key"] != 104 for r in fake.requests)

        # three status changes between two polls: three facts in the ledger, at iTop's times
        fake.transition("UserRequest", 104, "assigned", "2026-11-28 09:00:00")
        fake.transition("UserRequest", 104, "pending", "2026-11-28 09:30:00")
        fake.transition("UserRequest", 104, "assigned", "2026-11-28 11:00:00")
        changed = itop_sync(env, "--url", fake.url, "--once")
        assert changed.returncode == 0, changed.stderr[-3000:]
        wait_for(lambda: (ticket(worker, "IT-R-000104") or {}).get("status") == "in_progress", timeout=60,
                 what="the end of the pause")
        processed_up_to_now(broker, ["IT-R-000104"])
        steps = [(e.type.value, e.occurred_at.isoformat()) for e in command_events(broker)
                 if e.ticket_id == "IT-R-000104"]
        assert steps == [("ticket_filed", "2026-11-27T14:00:00+00:00"), ("acknowledged", "2026-11-28T08:00:00+00:00"),
                         ("waiting_for_customer", "2026-11-28T08:30:00+00:00"),
                         ("customer_responded", "2026-11-28T10:00:00+00:00")]

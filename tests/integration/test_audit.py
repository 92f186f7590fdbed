"""Audit replay: the dispute file, as-of reconstruction, tamper detection, verify."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient, NewTopic
from sqlalchemy import create_engine, select, text, update

from projections.audit.dispute_file import dispute_file
from projections.audit.kafka_source import kafka_records
from projections.audit.replay import Filters, replay, verify_projection
from projections.audit.sources import archive_records
from projections.migrate import create_schema
from projections.models import ARCHIVE, TICKETS
from projections.projector import run_projector
from projections.report import to_html, to_markdown, to_pdf
from sla.events import Event, EventType, decode_event, encode_event, new_event, sla_fact_id
from slaledger.cli import main
from slaledger.settings import load_policy
from streams.kafka_acls import AUDITOR
from streams.kafka_security import client_options
from streams.kafka_tools import producer, read_topic
from streams.topics import EVENTS
from tests.integration.conftest import BROKERS, Broker, running_as, running_broker
from tests.integration.test_projector import publish

pytestmark = pytest.mark.integration
PARIS_FRIDAY = datetime(2026, 3, 13, 16, 0, tzinfo=UTC)  # 17:00 Paris: due Monday 16 March 12:00


def dispute_log() -> list[Event]:
    """A-1: filed Friday 17:00, breach declared Monday 12:00:01, then an acknowledgement
    made by phone at 11:30 but typed in at 14:00 retracts it. A-2: acknowledged in time."""
    policy = load_policy()
    version = policy.versions[0].id
    deadline = datetime(2026, 3, 16, 11, 0, tzinfo=UTC)

    def ev(event_type: EventType, tid: str, at: datetime, recorded: datetime | None = None, **payload: object) -> Event:
        eid = sla_fact_id(event_type, tid, "intake", deadline, version) if event_type.value.startswith("sla_") else None
        return new_event(event_type, tid, occurred_at=at, recorded_at=recorded or at, actor="agent:alice",
                         payload=payload, event_id=eid)

    filed = {"kind": "assistance", "channel": "portal", "product": "ent", "subject": "Compte bloqué"}
    return [
        ev(EventType.TICKET_FILED, "A-1", PARIS_FRIDAY, member="commune-de-blois", **filed),
        ev(EventType.TICKET_FILED, "A-2", PARIS_FRIDAY, member="commune-de-tours", **filed),
        ev(EventType.ACKNOWLEDGED, "A-2", deadline - timedelta(hours=2)),
        ev(EventType.SLA_BREACHED, "A-1", deadline, deadline + timedelta(seconds=1), sla="intake", deadline=deadline,
           policy_version=version, explanation="Rien n'était enregistré à l'échéance."),
        ev(EventType.ACKNOWLEDGED, "A-1", deadline - timedelta(minutes=30), deadline + timedelta(hours=2)),
    ]


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    """A broker per test (each of both kinds): each test writes the same dispute log."""
    with running_broker(request.param, tmp_path) as b:
        yield b


@pytest.fixture
def audited(broker: Broker, database: str) -> tuple[Broker, str]:
    engine = create_engine(database)
    create_schema(engine)
    publish(broker, dispute_log())
    run_projector(engine, broker.bootstrap, load_policy(), follow=False)
    return broker, database


def test_dispute_file_from_archive_and_kafka(audited: tuple[Broker, str], tmp_path: Path) -> None:
    broker, database = audited
    engine = create_engine(database)
    policy = load_policy()
    from_archive = replay(archive_records(engine), policy, Filters(ticket="A-1"), source="archive")
    from_kafka = replay(kafka_records(broker.bootstrap), policy, Filters(ticket="A-1"), source="kafka", engine=engine)
    assert from_archive.ok and from_kafka.ok, (from_archive.findings, from_kafka.findings)
    assert from_archive.chain_head == from_kafka.chain_head  # both parties can compare this digest
    doc = dispute_file(from_archive)
    assert doc["schema"] == "slaledger.dispute-file/1" and doc["integrity"]["ok"]
    (ticket,) = doc["tickets"]
    assert [e["type"] for e in ticket["timeline"]] == ["ticket_filed", "sla_breached", "acknowledged"]
    (intake,) = ticket["clocks"]
    assert intake["verdict"] == "retracted" and intake["policy_version"] == "convention-2026.1"
    assert "prise en compte due le lundi 16 mars 2026 à 12:00" in intake["explanation"]
    assert "est retiré" in intake["explanation"]
    kafka_doc = dispute_file(from_kafka)
    assert kafka_doc["tickets"][0]["clocks"] == ticket["clocks"]  # the same fold, whatever the source
    assert "Dossier de contestation" in to_markdown(doc) and "<html lang=\"fr\">" in to_html(doc)
    assert to_pdf(doc).startswith(b"%PDF")


def test_as_of_shows_what_was_known_then_and_what_the_log_says_now(audited: tuple[Broker, str]) -> None:
    _, database = audited
    engine = create_engine(database)
    as_of = datetime(2026, 3, 16, 12, 30, tzinfo=UTC)  # after the breach, before the late acknowledgement was typed
    doc = dispute_file(replay(archive_records(engine), load_policy(), Filters(ticket="A-1", as_of=as_of),
                              source="archive"))
    (ticket,) = doc["tickets"]
    assert ticket["clocks"][0]["verdict"] == "breached"
    assert ticket["full_log_view"][0]["verdict"] == "retracted"
    assert [e["known_at_as_of"] for e in ticket["timeline"]] == [True, True, False]


def test_member_and_period_summary(audited: tuple[Broker, str]) -> None:
    _, database = audited
    engine = create_engine(database)
    doc = dispute_file(replay(archive_records(engine), load_policy(),
                              Filters(member="commune-de-tours", filed_from=PARIS_FRIDAY - timedelta(days=1),
                                      filed_to=PARIS_FRIDAY + timedelta(days=1)), source="archive"))
    assert [t["ticket_id"] for t in doc["tickets"]] == ["A-2"]
    assert doc["summary"]["intake"]["met"] == 1 and doc["summary"]["intake"]["compliance_percent"] == 100.0


@pytest.mark.parametrize("tamper", ["altered", "missing", "duplicated", "reordered", "truncated"])
def test_archive_tampering_is_caught(audited: tuple[Broker, str], tamper: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    _broker, database = audited
    engine = create_engine(database)
    with engine.begin() as conn:
        rows = conn.execute(select(ARCHIVE).order_by(ARCHIVE.c.seq)).all()
        target = rows[2]
        if tamper == "altered":
            conn.execute(update(ARCHIVE).where(ARCHIVE.c.seq == target.seq)
                         .values(envelope=target.envelope.replace("agent:alice", "agent:mallory")))
        elif tamper == "missing":
            conn.execute(ARCHIVE.delete().where(ARCHIVE.c.seq == target.seq))
        elif tamper == "truncated":  # the last rows deleted: the chain itself is intact
            conn.execute(ARCHIVE.delete().where(ARCHIVE.c.seq >= rows[-2].seq))
        elif tamper == "duplicated":
            conn.execute(text("ALTER TABLE event_archive DROP CONSTRAINT uq_event_archive_event_id"))
            copy = {k: v for k, v in target._mapping.items() if k != "seq"}
            conn.execute(ARCHIVE.insert().values(**copy))
        else:
            conn.execute(update(ARCHIVE).where(ARCHIVE.c.seq == rows[1].seq).values(seq=-1))
            conn.execute(update(ARCHIVE).where(ARCHIVE.c.seq == rows[2].seq).values(seq=rows[1].seq))
            conn.execute(update(ARCHIVE).where(ARCHIVE.c.seq == -1).values(seq=rows[2].seq))
    result = replay(archive_records(engine), load_policy(), Filters(), source="archive", engine=engine)
    assert not result.ok
    assert {"truncated": "missing"}.get(tamper, tamper) in {f.kind for f in result.findings}, result.findings
    # One ticket's dispute file reads only its own rows (its cost follows the ticket, #16) and
    # checks them against the Merkle tree: the tampered row's ticket reports the same kind.
    owner = target.ticket_id if tamper != "truncated" else rows[-1].ticket_id
    expected = {"truncated": "missing"}.get(tamper, tamper)
    for records in (archive_records(engine, ticket=owner), archive_records(engine)):
        one = replay(records, load_policy(), Filters(ticket=owner), source="archive", engine=engine)
        assert expected in {f.kind for f in one.findings}, (owner, one.findings)
    code = main(["audit", "replay", "--source", "archive", "--database", database, "--ticket", owner,
                 "--output", str(tmp_path / "one.json")])
    assert code == 1
    out = tmp_path / "report.md"
    code = main(["audit", "replay", "--source", "archive", "--database", database, "--format", "md",
                 "--output", str(out)])
    assert code == 1
    assert "INTÉGRITÉ NON VÉRIFIÉE" in out.read_text().split("\n", 3)[2]
    assert "integrity check failed" in capsys.readouterr().err


def _copy_topic(broker: Broker, name: str, edit: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, **client_options())  # the test is the admin
    admin.create_topics([NewTopic(name, 4, 1)], wait_for_metadata=True)
    admin.close()
    records = [(r.partition, r.key, r.value) for r in read_topic(broker.bootstrap, EVENTS)]
    a1 = [i for i, (_, key, _) in enumerate(records) if key == b"A-1"]
    if edit == "altered":
        p, k, v = records[a1[0]]
        records[a1[0]] = (p, k, v.replace(b"Compte", b"Compta"))
    elif edit == "missing":
        del records[a1[1]]
    elif edit == "reordered":
        records[a1[0]], records[a1[1]] = records[a1[1]], records[a1[0]]
    elif edit == "resent":
        records.insert(a1[1] + 1, records[a1[1]])
    elif edit == "reencoded":  # the same event decided again after a crash: another recording time
        p, k, v = records[a1[1]]
        event = decode_event(v)
        again = dataclasses.replace(event, recorded_at=event.recorded_at + timedelta(seconds=7))
        records.insert(a1[1] + 1, (p, k, encode_event(again)))
    elif edit == "unknown":
        forged = new_event(EventType.ACKNOWLEDGED, "A-1", occurred_at=PARIS_FRIDAY, recorded_at=PARIS_FRIDAY,
                           actor="agent:mallory")
        records.append((records[a1[0]][0], b"A-1", encode_event(forged)))
    kafka = producer(broker.bootstrap, embedded=False)
    for partition, key, value in records:
        kafka.send(name, key=key, value=value, partition=partition)
    kafka.flush()
    kafka.close()


@pytest.mark.parametrize("tamper", ["altered", "missing", "reordered", "unknown"])
def test_copied_topic_tampering_is_caught(audited: tuple[Broker, str], tamper: str) -> None:
    broker, database = audited
    engine = create_engine(database)
    name = f"audit-copy-{tamper}"
    _copy_topic(broker, name, tamper)
    result = replay(kafka_records(broker.bootstrap, name), load_policy(), Filters(), source="kafka", engine=engine)
    assert not result.ok
    assert tamper in {f.kind for f in result.findings}, result.findings
    untouched = f"audit-copy-clean-{tamper}"
    _copy_topic(broker, untouched, "none")
    assert replay(kafka_records(broker.bootstrap, untouched), load_policy(), Filters(), source="kafka",
                  engine=engine).ok


@pytest.mark.parametrize("copy", ["resent", "reencoded"])
def test_identical_copy_of_a_record_is_a_resend_reported_not_a_tampering(audited: tuple[Broker, str],
                                                                          copy: str) -> None:
    broker, database = audited
    _copy_topic(broker, f"audit-copy-{copy}", copy)
    result = replay(kafka_records(broker.bootstrap, f"audit-copy-{copy}"), load_policy(), Filters(), source="kafka",
                    engine=create_engine(database))
    assert result.ok and result.resent_records == 1
    doc = dispute_file(result)
    assert doc["integrity"]["resent_records"] == 1
    assert "1 enregistrement(s) du topic sont des copies identiques" in to_markdown(doc)


def test_verify_compares_projection_with_replay(audited: tuple[Broker, str],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    _, database = audited
    engine = create_engine(database)
    assert verify_projection(engine, archive_records(engine), load_policy(), source="archive") == []
    assert main(["audit", "verify", "--database", database]) == 0
    with engine.begin() as conn:
        conn.execute(update(TICKETS).where(TICKETS.c.ticket_id == "A-2").values(status="closed"))
    assert main(["audit", "verify", "--database", database]) == 1
    assert "A-2 : statut 'closed' dans la projection, 'in_progress' dans le journal" in capsys.readouterr().out
    assert main(["audit", "verify", "--database", database, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["agree"] is False and any("A-2 : statut 'closed'" in d for d in report["differences"])


def test_cli_json_is_stable(audited: tuple[Broker, str], tmp_path: Path) -> None:
    broker, database = audited
    out = tmp_path / "a.json"
    with running_as(broker, AUDITOR):  # what an auditor's principal may read is enough
        assert main(["audit", "replay", "--source", "kafka", "--broker", broker.url, "--database", database,
                     "--ticket", "A-2", "--output", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["tickets"][0]["clocks"][0]["verdict"] == "met"
    assert main(["audit", "replay", "--source", "archive", "--database", database, "--format", "pdf"]) == 2

"""What-if (#29) on real components: a PostgreSQL archive filled by the projector from a real
broker, a signed tree head, then ``audit what-if`` from the archive and from the topic —
the same tickets change, and nothing was written: topics, archive, projection and heads are
byte for byte what they were."""

from __future__ import annotations

import hashlib
import http.client
import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import Engine, create_engine, select

from projections.heads import sign_head
from projections.migrate import create_schema
from projections.models import Base
from projections.projector import run_projector
from slaledger.cli import main
from slaledger.settings import load_policy
from streams.topics import EVENTS
from tests.integration.conftest import Broker, Worker, running_broker
from tests.integration.test_access import token
from tests.integration.test_monthly import november
from tests.integration.test_projector import publish

pytestmark = pytest.mark.integration
DRAFT = Path(__file__).resolve().parents[2] / "docs" / "drafts" / "saturday-ouvrable.toml"
PERIOD = ("--from", "2026-10-01T00:00:00+02:00", "--to", "2026-12-01T00:00:00+01:00")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with running_broker("tansu", tmp_path) as b:  # the embedded broker: the topic is only read here
        yield b


def topics_state(bootstrap: str) -> dict[str, int]:
    """Every topic's partitions and their end offsets."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = [TopicPartition(t, p) for t in consumer.topics() for p in consumer.partitions_for_topic(t) or ()]
        return {f"{tp.topic}[{tp.partition}]": offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def database_state(engine: Engine) -> dict[str, str]:
    """A digest of every table's rows (archive, tree, heads, projection, checkpoints…)."""
    out = {}
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            rows = conn.execute(select(table)).all()
            out[table.name] = hashlib.sha256(repr(sorted(map(repr, rows))).encode()).hexdigest()
    return out


def test_what_if_reads_archive_and_topic_and_writes_nothing(broker: Broker, database: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    engine = create_engine(database)
    create_schema(engine)
    publish(broker, november())
    policy = load_policy()
    run_projector(engine, broker.bootstrap, policy, follow=False)
    sign_head(engine, Ed25519PrivateKey.generate(), policy)
    before = (topics_state(broker.bootstrap), database_state(engine))
    assert before[1]["event_archive"] and any(k.startswith(f"{EVENTS}[") for k in before[0])

    capsys.readouterr()  # the projector's own log lines
    found = {}
    for source in ("archive", "topic"):
        code = main(["audit", "what-if", "--policy", str(DRAFT), "--source", source, "--database", database,
                     "--broker", f"kafka://{broker.bootstrap}", "--format", "json", *PERIOD])
        out = capsys.readouterr()
        assert code == 0, out.err
        doc = json.loads(out.out)
        found[source] = [(c["ticket_id"], c["sla"], c["before"]["verdict"], c["after"]["verdict"],
                          c["before"]["deadline"], c["after"]["deadline"]) for c in doc["changes"]]
        assert doc["tickets"] == 10  # filed in October and November, both members
    # filed on Friday 30 October at 17:00: due Monday 12:00, or Saturday 31 at 12:00 (breached either way)
    assert found["archive"] == found["topic"] == [
        ("B-LATE", "intake", "breached", "breached", "2026-11-02T11:00:00Z", "2026-10-31T11:00:00Z")]
    assert (topics_state(broker.bootstrap), database_state(engine)) == before
    engine.dispose()


def page(url: str, token: str | None = None) -> tuple[int, str, str]:
    """(status, Location, body) of a GET, redirects not followed."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", f"{parts.path}?{parts.query}", headers=headers)
        response = conn.getresponse()
        return response.status, response.getheader("Location") or "", response.read().decode()
    finally:
        conn.close()


def test_the_admins_page_compares_a_draft_of_the_directory(broker: Broker, database: str, workers: list[Worker],
                                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    engine = create_engine(database)
    create_schema(engine)
    publish(broker, november())
    run_projector(engine, broker.bootstrap, load_policy(), follow=False)
    engine.dispose()
    admin = token(capsys, database, "--role", "admin", "--label", "direction")
    agent = token(capsys, database, "--role", "agent", "--label", "alice")
    worker = Worker(broker, tmp_path, extra_env={"SLALEDGER_AUTH": "on", "SLALEDGER_DATABASE_URL": database,
                                                 "SLALEDGER_POLICY_DRAFTS_DIR": str(DRAFT.parent)})
    workers.append(worker.start())
    query = urllib.parse.urlencode({"draft": DRAFT.name, "from": "2026-10-01", "to": "2026-11-30"})
    url = f"{worker.url}/admin/what-if?{query}"

    status, _, body = page(url, admin)
    assert status == 200, body
    assert 'href="/tickets/B-LATE"' in body and "1 engagement(s) dont le verdict" in body
    assert "saturday-ouvrable.toml" in body and "no-admin-pause.toml" in body  # the directory's drafts offered
    status, _, body = page(f"{worker.url}/admin/what-if?" + urllib.parse.urlencode(
        {"draft": DRAFT.name, "from": "2026-10-01", "to": "2026-11-30", "member": "lycee-descartes"}), admin)
    assert status == 200 and "0 engagement(s) dont le verdict" in body
    assert page(url, agent)[0] == 403  # admins only
    status, location, _ = page(url)
    assert status == 303 and location.startswith("/login?")  # sign in first
    for bad in ({"draft": "../../sla/default_policy.toml", "from": "2026-10-01", "to": "2026-11-30"},
                {"draft": DRAFT.name, "from": "2026-11-30", "to": "2026-10-01"},
                {"draft": DRAFT.name, "from": "hier", "to": "2026-10-01"}):
        status, _, body = page(f"{worker.url}/admin/what-if?{urllib.parse.urlencode(bad)}", admin)
        assert status == 400 and 'role="alert"' in body, bad

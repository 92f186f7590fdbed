"""The archive's evidence (#16): the Merkle tree, signed tree heads published on the events
topic, inclusion proofs in the dispute file, the offline checks (the product's and the
standalone script), and a rewrite of the whole archive caught against an older head."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, delete, func, select, update

from projections import merkle, ticket_map, tree
from projections.archive_hash import GENESIS_HASH, chain_hash
from projections.audit.kafka_source import kafka_records
from projections.audit.replay import Filters, replay, verify_projection
from projections.head_signer import HeadSigner
from projections.heads import head_at, latest_head, read_key_file
from projections.migrate import create_schema
from projections.models import ARCHIVE, DEAD, MAP_COMMITS, MAP_NODES, MAP_TICKETS, NODES
from projections.projector import run_projector
from projections.report import to_html, to_markdown, to_pdf
from slaledger.cli import main
from slaledger.settings import load_policy
from streams.kafka_tools import read_topic
from streams.processor import TicketProcessor
from streams.topics import EVENTS, TREE_HEAD_KEY, TREE_HEADS
from tests.integration.conftest import BROKERS, Broker, running_broker
from tests.integration.test_audit import dispute_log
from tests.integration.test_projector import publish

pytestmark = pytest.mark.integration
VERIFIER = Path(__file__).resolve().parents[2] / "docs" / "verify_dispute_file.py"


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    with running_broker(request.param, tmp_path) as b:
        yield b


@pytest.fixture
def signed(broker: Broker, database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Broker, str, Path]:
    """The dispute log projected by a projector that holds the operator's key."""
    keys = tmp_path / "keys"
    assert main(["keys", "create", "--out", str(keys)]) == 0
    assert (keys / "signing-key").stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("SLALEDGER_SIGNING_KEY_FILE", str(keys / "signing-key"))
    engine = create_engine(database)
    create_schema(engine)
    publish(broker, dispute_log())
    signer = HeadSigner(read_key_file(keys / "signing-key"), load_policy(), bootstrap=broker.bootstrap,
                        embedded=broker.embedded)
    run_projector(engine, broker.bootstrap, load_policy(), follow=False, heads=signer)
    return broker, database, keys


def test_heads_are_signed_published_and_skipped_by_every_reader(signed: tuple[Broker, str, Path]) -> None:
    broker, database, keys = signed
    engine = create_engine(database)
    head = latest_head(engine)
    assert head is not None and head.tree_size == 5 and head.head_id == 1
    public = read_key_file(keys / "signing-key.pub", public=True)
    assert head.verify(public)
    assert head.policy_versions[0]["id"] == "convention-2026.1"
    assert head_at(engine, head.timestamp) == head and head_at(engine, head.timestamp - timedelta(seconds=1)) is None
    published = [r for r in read_topic(broker.bootstrap, TREE_HEADS) if r.key == TREE_HEAD_KEY]
    assert not [r for r in read_topic(broker.bootstrap, EVENTS) if r.key == TREE_HEAD_KEY]  # the agent's alone
    assert len(published) == 1 and json.loads(published[0].value) == head.to_dict()
    # the projector reads its own head back: not archived, not dead-lettered, checkpointed
    run_projector(engine, broker.bootstrap, load_policy(), follow=False)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(ARCHIVE)) == 5
        assert conn.scalar(select(func.count()).select_from(DEAD)) == 0
        assert tree.tree_size(conn) == 5
    # the worker skips it, and dead-letters a record under that key that is no head
    processor = TicketProcessor(load_policy())
    now = datetime.now(UTC)
    assert processor.on_event(None, TREE_HEAD_KEY, published[0].value, now).dead_letter is None
    assert processor.on_event(None, TREE_HEAD_KEY, b"{}", now).dead_letter == "unreadable tree head"
    # the topic replay and the projection check ignore it; ticket events stay strictly decoded
    from_kafka = replay(kafka_records(broker.bootstrap), load_policy(), Filters(), source="kafka", engine=engine)
    assert from_kafka.ok and from_kafka.events_read == 5, from_kafka.findings
    assert verify_projection(engine, kafka_records(broker.bootstrap), load_policy(), source="kafka") == []
    assert main(["audit", "verify", "--database", database]) == 0


def _dispute(database: str, path: Path, *extra: str) -> int:
    return main(["audit", "replay", "--source", "archive", "--database", database, "--ticket", "A-1",
                 "--output", str(path), *extra])


def _script(file: Path, public: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(VERIFIER), str(file), str(public)], capture_output=True, text=True)


def _rewrite_archive(database: str) -> None:
    """What the database's administrator can do: alter an event, re-hash the chain and rebuild
    the whole Merkle tree and the map of histories, so that every check inside the database
    agrees again."""
    engine = create_engine(database)
    with engine.begin() as conn:
        rows = conn.execute(select(ARCHIVE.c.seq, ARCHIVE.c.envelope).order_by(ARCHIVE.c.seq)).all()
        conn.execute(delete(NODES))
        prev, envelopes = GENESIS_HASH, []
        for seq, envelope in rows:
            if '"type":"acknowledged"' in envelope and '"ticket_id":"A-1"' in envelope:
                envelope = envelope.replace("agent:alice", "agent:mallory")
            digest = chain_hash(prev, envelope.encode())
            conn.execute(update(ARCHIVE).where(ARCHIVE.c.seq == seq)
                         .values(envelope=envelope, prev_hash=prev, hash=digest,
                                 actor="agent:mallory" if "mallory" in envelope else "agent:alice"))
            prev = digest
            envelopes.append(envelope.encode())
        tree.append(conn, envelopes)
        # and the map of histories, from the rewritten rows (the next head commits it)
        for table in (MAP_TICKETS, MAP_NODES, MAP_COMMITS):
            conn.execute(delete(table))
        tickets = conn.execute(select(ARCHIVE.c.ticket_id).order_by(ARCHIVE.c.seq)).scalars().all()
        ticket_map.record(conn, [(t, i, merkle.leaf_hash(e)) for i, (t, e) in enumerate(zip(tickets, envelopes,
                                                                                           strict=True))])


def test_dispute_file_proofs_checked_offline_and_a_rewrite_caught(signed: tuple[Broker, str, Path],
                                                                  tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _, database, keys = signed
    public = keys / "signing-key.pub"
    first = tmp_path / "d1.json"
    assert _dispute(database, first) == 0
    doc = json.loads(first.read_text())
    assert doc["evidence"]["head"]["head_id"] == 1 and doc["evidence"]["public_key_id"]
    timeline = doc["tickets"][0]["timeline"]
    assert [e["leaf_index"] for e in timeline] == [0, 3, 4] and all(e["inclusion_path"] for e in timeline)
    assert main(["audit", "check-file", str(first), "--public-key", str(public)]) == 0
    assert "OK : signature valide, 3 événement(s)" in capsys.readouterr().out
    html, markdown = to_html(doc), to_markdown(doc)
    for text in (html, markdown):
        assert "Preuves d'inclusion" in text and "Tête d'arbre signée" in text
        assert doc["evidence"]["head"]["signature"] in text
    assert timeline[1]["inclusion_path"][0] in html  # the annex gives every audit path in full
    assert to_pdf(doc).startswith(b"%PDF")
    script = _script(first, public)
    assert script.returncode == 0 and "OK" in script.stdout, script.stdout + script.stderr
    member = tmp_path / "member.json"  # a member's file (whole chain walked) carries the same proofs
    assert main(["audit", "replay", "--source", "archive", "--database", database, "--member", "commune-de-blois",
                 "--output", str(member)]) == 0
    assert json.loads(member.read_text())["tickets"][0]["timeline"] == timeline
    assert main(["audit", "check-file", str(member), "--public-key", str(public)]) == 0
    capsys.readouterr()

    def altered(edit: str) -> Path:
        bad = json.loads(first.read_text())
        event = bad["tickets"][0]["timeline"][2]
        if edit == "event":  # the acknowledgement now says mallory, bytes and fields alike
            raw = base64.b64decode(event["envelope_base64"]).replace(b"agent:alice", b"agent:mallory")
            event["envelope_base64"], event["actor"] = base64.b64encode(raw).decode(), "agent:mallory"
        elif edit == "signature":  # one bit of the checkpoint's signature line
            head = bad["evidence"]["head"]
            sig = bytearray(base64.b64decode(head["signature"]))
            sig[-1] ^= 1
            flipped = base64.b64encode(bytes(sig)).decode()
            head["checkpoint"] = head["checkpoint"].replace(head["signature"], flipped)
            head["signature"] = flipped
        elif edit == "head":  # another root, same signature: a forged checkpoint
            head = bad["evidence"]["head"]
            root = base64.b64encode(bytes.fromhex(head["root_hash"])).decode()
            head["checkpoint"] = head["checkpoint"].replace(f"\n{root}\n", f"\n{'A' * 43}=\n", 1)
            head["root_hash"] = "00" * 32
        elif edit == "readable":  # the readable copy beside the checkpoint, which is not what is signed
            bad["evidence"]["head"]["root_hash"] = "00" * 32
        else:  # the proof of another leaf
            event["inclusion_path"] = bad["tickets"][0]["timeline"][1]["inclusion_path"]
        out = tmp_path / f"{edit}.json"
        out.write_text(json.dumps(bad))
        return out

    ack = timeline[2]["event_id"]
    for edit, says in (("event", ack), ("signature", "signature"), ("head", "signature"), ("wrong-leaf", ack)):
        bad = altered(edit)
        assert main(["audit", "check-file", str(bad), "--public-key", str(public)]) == 1
        assert says in capsys.readouterr().out, edit
        script = _script(bad, public)
        assert script.returncode == 1 and says in script.stdout, (edit, script.stdout, script.stderr)
    assert main(["audit", "check-file", str(altered("readable")), "--public-key", str(public)]) == 1
    assert "root_hash : la copie lisible" in (out := capsys.readouterr().out) and "valeur signée" in out
    assert main(["audit", "check-file", str(first), "--public-key", str(tmp_path / "none.pub")]) == 2
    assert "fichier de clé publique" in capsys.readouterr().err

    # The administrator rewrites and re-hashes the whole archive: the chain agrees again, the
    # tree too, but not with the head signed before (which left the database)...
    _rewrite_archive(database)
    assert main(["audit", "verify", "--database", database]) == 1
    out = capsys.readouterr().out
    assert "integrity:" not in out  # the chain alone is fooled
    assert "preuves : head 1 (5 events, signed" in out and "rewritten since" in out
    # ...and signs a new head with the operator's key: it does not extend the older one.
    assert main(["audit", "sign-head", "--database", database]) == 0
    assert json.loads(capsys.readouterr().out)["head_id"] == 2
    assert main(["audit", "consistency", "--database", database, "--from", "1", "--to", "2",
                 "--public-key", str(public)]) == 1
    assert "does not extend" in capsys.readouterr().err
    # the member's earlier file holds head 1: the consistency check works from it too
    assert main(["audit", "consistency", "--database", database, "--from", str(first), "--to", "2"]) == 1
    # a file proven against head 1 now fails, in the product and offline
    against_old = tmp_path / "d1-again.json"
    assert _dispute(database, against_old, "--head", "1") == 1
    assert "réécrite" in against_old.read_text()
    assert main(["audit", "check-file", str(against_old), "--public-key", str(public)]) == 1
    assert ack in capsys.readouterr().out
    # a new file against the new head verifies alone (the key is the operator's), not next to the earlier one
    second = tmp_path / "d2.json"
    assert _dispute(database, second) == 0
    assert main(["audit", "check-file", str(second), "--public-key", str(public)]) == 0
    assert main(["audit", "check-file", str(second), "--public-key", str(public), "--earlier", str(first)]) == 1
    assert f"événement {ack} : la feuille 4 diffère" in capsys.readouterr().out

    # A truncated archive (its last row and leaf gone) is reported against the signed head.
    engine = create_engine(database)
    with engine.begin() as conn:
        conn.execute(delete(ARCHIVE).where(ARCHIVE.c.leaf_index == 4))
        conn.execute(delete(NODES).where(NODES.c.level == 0, NODES.c.idx == 4))
    truncated = tmp_path / "truncated.json"
    assert _dispute(database, truncated, "--head", "2") == 1
    kinds = {f["kind"] for f in json.loads(truncated.read_text())["integrity"]["findings"]}
    assert "missing" in kinds, kinds
    capsys.readouterr()
    assert main(["audit", "verify", "--database", database]) == 1
    assert "preuves : head 2 signs 5 events, the archive has 4" in capsys.readouterr().out
    assert main(["audit", "consistency", "--database", database, "--from", "1", "--to", "9"]) == 2

"""What the CLI writes besides its failure lines: ``itop sync --once --json`` (against the fake
iTop), ``audit replay -o`` (checked before the replay, written after it) and the tqdm
progress bars (on a terminal only)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from projections.migrate import create_schema
from projections.projection import Incoming, Projection
from sla.events import EventType, encode_event
from sla.policy import Policy
from slaledger import itop, itop_cli
from slaledger.cli import main
from slaledger.cli_common import counted, progress_bar
from streams.topics import EVENTS
from tests.conftest import ev, filed
from tests.itop_fake import FakeItop, ListPublisher

ALL = ("userrequest_core_get.json", "incident_core_get.json")




def test_itop_sync_once_json_is_one_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(itop, "KafkaPublisher", ListPublisher)
    monkeypatch.setattr(itop_cli, "reach_broker", lambda settings: None)
    with FakeItop().load(*ALL) as fake:
        url = fake.url
        argv = ["itop", "sync", "--url", fake.url, "--user", "sync", "--password", "s3cret",
                "--data-dir", str(tmp_path)]
        assert main([*argv, "--once", "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert main([*argv, "--once"]) == 0
        again = capsys.readouterr().out
        assert main([*argv, "--every", "60s", "--json"]) == 2
        assert capsys.readouterr().err.strip() == "slaledger: error: --json goes with --once"
    assert doc["source"].startswith(url)
    assert (doc["fetched"], doc["unchanged"], doc["commands"]) == (6, 0, 25)
    assert doc["tickets"] == 6 and doc["skipped"] == 0 and doc["unreadable"] == [] and doc["refused"] == []
    assert set(doc["watermarks"]) == {"UserRequest", "Incident"} and all(doc["watermarks"].values())
    assert isinstance(doc["unknown"], dict)
    # without --json, the second pass (the overlap window re-read, nothing new) is told in French
    assert again.startswith(f"iTop {doc['source']} : ") and "0 commande(s) publiée(s)" in again


def archive_of(tmp_path: Path, policy: Policy, tickets: int) -> str:
    """A SQLite database whose archive holds ``tickets`` filed-and-acknowledged tickets."""
    url = f"sqlite:///{tmp_path / 'archive.db'}"
    engine = create_engine(url)
    create_schema(engine)
    events = []
    for i in range(tickets):
        tid = f"T-{i:03d}"
        events += [filed("2026-03-02T09:00:00+01:00", ticket_id=tid),
                   ev(EventType.ACKNOWLEDGED, "2026-03-02T10:00:00+01:00", tid)]
    with engine.begin() as conn:
        Projection(policy).apply_batch(conn, [Incoming(EVENTS, 0, n, encode_event(e)) for n, e in enumerate(events)])
    return url


def test_audit_replay_output_file_and_no_progress_off_a_terminal(tmp_path: Path, policy: Policy,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    url = archive_of(tmp_path, policy, 3)
    out = tmp_path / "dispute.json"
    assert main(["audit", "replay", "--source", "archive", "--database", url, "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""  # no bar, no log: stderr is not a terminal
    assert {t["ticket_id"] for t in json.loads(out.read_text())["tickets"]} == {"T-000", "T-001", "T-002"}
    assert main(["audit", "verify", "--database", url]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == "la projection et la relecture du journal concordent" and captured.err == ""


def test_a_bad_output_file_fails_before_the_replay_and_keeps_the_existing_file(
        tmp_path: Path, policy: Policy, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    url = archive_of(tmp_path, policy, 1)
    replays: list[object] = []
    monkeypatch.setattr("projections.audit.replay.replay", lambda *a, **k: replays.append(a))
    assert main(["audit", "replay", "--source", "archive", "--database", url, "-o", str(tmp_path / "no" / "f")]) == 2
    assert "directory" in capsys.readouterr().err and replays == []


def test_the_bar_advances_when_forced_on_and_is_silent_otherwise() -> None:
    shown = io.StringIO()
    bar = progress_bar("Relecture", "événements", 3, file=shown, disable=False)
    assert list(counted(bar, iter("abc"))) == ["a", "b", "c"]
    bar.close()
    text = shown.getvalue()
    assert "Relecture" in text and "3/3" in text and "événements" in text and "100%" in text

    silent = io.StringIO()  # not a terminal: tqdm is disabled and writes nothing
    bar = progress_bar("Relecture", "événements", 3, file=silent)
    assert list(counted(bar, iter("abc"))) == ["a", "b", "c"]
    bar.close()
    assert silent.getvalue() == ""


def test_a_rebuild_reports_each_batch_to_its_bar(tmp_path: Path, policy: Policy,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from projections import rebuild as rebuild_module

    url = archive_of(tmp_path, policy, 2)
    batches = [[Incoming(EVENTS, 0, 0, encode_event(filed("2026-03-02T09:00:00+01:00", ticket_id="R-1")))],
               [Incoming(EVENTS, 0, 1, encode_event(filed("2026-03-02T09:00:00+01:00", ticket_id="R-2")))]]
    monkeypatch.setattr(rebuild_module, "consume", lambda *a, **k: iter(batches))
    shown = io.StringIO()
    bar = progress_bar("Reconstruction", "événements", 2, file=shown, disable=False)
    assert rebuild_module.rebuild(create_engine(url), "unused:9092", policy, progress=bar.update) == 2
    bar.close()
    assert "2/2" in shown.getvalue()

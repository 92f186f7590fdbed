"""A split view refused by a witness and detected by the verifier (#26 item 4).

The operator shows member 1 (Blois) log A and member 2 (Tours) a forked log B of the same
size, then larger, both signed with its key. A real witness process (``slaledger witness
serve``) cosigns A through the projector's own submission code, and refuses B (409 for the
same size with another root, 422 for a larger B without a consistency proof from A). Both
dispute files verify with the operator's key alone: only the witness's cosignature, required
by the member's verifier, tells B apart."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from projections.audit.dispute_file import dispute_file
from projections.audit.replay import Filters, replay
from projections.audit.sources import archive_records
from projections.heads import VKEY_FILE, create_key_pair, get_head, read_key_file, sign_head
from projections.projection import Incoming, Projection
from projections.witnessing import WitnessClient, WitnessCollector, parse_witnesses
from sla.events import Event, encode_event
from slaledger.cli import main
from slaledger.settings import load_policy
from streams.topics import EVENTS
from tests.conftest import projected
from tests.integration.conftest import wait_for
from tests.integration.test_audit import dispute_log

ORIGIN = "suivi.gip.example/slaledger"
WITNESS = "witness.blois.example/w1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def witness(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """A witness process trusting the operator's log key: (its URL, its vkey, the keys' dir)."""
    create_key_pair(tmp_path / "operator", ORIGIN)
    assert main(["keys", "create", "--out", str(tmp_path / "witness")]) == 0
    vkey = subprocess.run([sys.executable, "-m", "slaledger", "witness", "vkey", "--key",
                           str(tmp_path / "witness" / "signing-key"), "--name", WITNESS],
                          capture_output=True, text=True, check=True).stdout.strip()
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "slaledger", "witness", "serve", "--key",
                                str(tmp_path / "witness" / "signing-key"), "--name", WITNESS, "--log-key",
                                str(tmp_path / "operator" / VKEY_FILE), "--state", str(tmp_path / "witness.sqlite"),
                                "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: _listening(port) or process.poll() is not None, what="the witness to listen")
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        yield f"http://127.0.0.1:{port}", vkey, tmp_path / "operator"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _archive(path: Path, events: list[Event]) -> Any:
    return projected(f"sqlite:///{path}", events)


def _file(engine: Any, member: str, head_id: int, path: Path) -> Path:
    head = get_head(engine, head_id)
    doc = dispute_file(replay(archive_records(engine), load_policy(), Filters(member=member), source="archive",
                              engine=engine, head=head))
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_a_split_view_is_refused_by_the_witness_and_caught_by_the_verifier(
        witness: tuple[str, str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url, vkey, keys = witness
    key = read_key_file(keys / "signing-key")
    [client_a] = parse_witnesses(f"{url} {vkey}")
    events = dispute_log()
    log_a = _archive(tmp_path / "a.sqlite", events)
    head_a = sign_head(log_a, key, load_policy(), origin=ORIGIN)
    client_a.feed(log_a)  # the projector's submission: old 0, then cosigned
    assert client_a.cosigned_size == head_a.tree_size == len(events) and client_a.failures == 0
    stored = get_head(log_a, head_a.head_id or 0)
    assert stored is not None and len(stored.cosignatures) == 1 and stored.cosignatures[0].startswith(f"— {WITNESS} ")

    # log B: the same size, but Tours's acknowledgement moved two hours later
    forked = [replace(e, occurred_at=e.occurred_at + timedelta(hours=2)) if i == 2 else e
              for i, e in enumerate(events)]
    log_b = _archive(tmp_path / "b.sqlite", forked)
    head_b = sign_head(log_b, key, load_policy(), origin=ORIGIN)
    assert head_b.tree_size == head_a.tree_size and head_b.root_hash != head_a.root_hash
    client_b = WitnessClient(url, client_a.key)  # what a second projector instance would hold
    client_b.feed(log_b)
    assert client_b.failures == 1 and client_b.cosigned_size is None
    with log_b.begin() as conn:  # B grows: no consistency proof from A exists
        Projection(load_policy()).apply_batch(conn, [Incoming(EVENTS, 0, len(events), encode_event(
            replace(events[0], event_id=uuid.uuid4(), ticket_id="A-3")))])
    later_b = sign_head(log_b, key, load_policy(), origin=ORIGIN)
    assert later_b.tree_size == head_a.tree_size + 1
    client_b.feed(log_b)
    assert client_b.failures == 2 and not get_head(log_b, later_b.head_id or 0).cosignatures  # type: ignore[union-attr]
    def metrics(client: WitnessClient) -> dict[str, float]:
        return {s.name: s.value for m in WitnessCollector([client]).collect() for s in m.samples
                if s.labels == {"witness": WITNESS}}

    assert metrics(client_a)["slaledger_witness_last_cosigned_size"] == head_a.tree_size
    assert metrics(client_b) == {"slaledger_witness_failures_total": 2}

    file_a = _file(log_a, "commune-de-blois", head_a.head_id or 0, tmp_path / "blois.json")
    file_b = _file(log_b, "commune-de-tours", head_b.head_id or 0, tmp_path / "tours.json")
    public = str(keys / "signing-key.pub")
    (tmp_path / "witness.vkey").write_text(vkey + "\n", encoding="ascii")
    required = ["--witness-key", str(tmp_path / "witness.vkey"), "--witnesses-required", "1"]
    capsys.readouterr()
    assert main(["audit", "check-file", str(file_b), "--public-key", public]) == 0  # the key alone: fooled
    assert main(["audit", "check-file", str(file_a), "--public-key", public, *required]) == 0
    capsys.readouterr()
    assert main(["audit", "check-file", str(file_b), "--public-key", str(keys / VKEY_FILE), *required]) == 1
    assert "contresignée par 0 des témoins donnés (aucun), 1 requis" in capsys.readouterr().out
    assert main(["audit", "check-file", str(file_a), "--public-key", public, "--witness-key", vkey,
                 "--witnesses-required", "2"]) == 2
    assert capsys.readouterr().err.startswith("slaledger: error: --witnesses-required 2 : entre 0 et")

"""The README's run command, driven as a newcomer would: start, file, watch, stop."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from slaledger.brokers.process import free_port
from tests.integration.conftest import api, wait_for

pytestmark = pytest.mark.e2e


TOKEN = "slt_e2e_" + "x" * 24


def start_dev(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    log = tmp_path / "dev.log"
    proc = subprocess.Popen([sys.executable, "-m", "slaledger.cli", "dev", "--port", str(port),
                             "--data-dir", str(tmp_path / "data"), *extra],
                            env={**os.environ, "SLALEDGER_DEV_TOKEN": TOKEN},
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    return proc, port, log


def call(method: str, url: str, body: object = None) -> tuple[int, Any]:
    """The API as the dev agent (the token dev mode prints)."""
    return api(method, url, body, token=TOKEN)


def wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 60) -> None:
    def ready() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            status, _ = api("GET", f"http://127.0.0.1:{port}/readyz", timeout=2)
            return status == 200
        except OSError:
            return False

    wait_for(ready, timeout=timeout, what="dev mode ready")


def broker_port(log: Path) -> int:
    match = re.search(r"broker 127\.0\.0\.1:(\d+)", log.read_text())
    assert match, log.read_text()
    return int(match.group(1))


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_dev_mode_files_tickets_and_stops_cleanly(tmp_path: Path, stop_signal: int) -> None:
    proc, port, log = start_dev(tmp_path, "--demo")
    try:
        wait_ready(proc, port, log)
        assert f"http://127.0.0.1:{port}/" in log.read_text() and f"agent token: {TOKEN}" in log.read_text()
        assert api("GET", f"http://127.0.0.1:{port}/api/tickets")[0] == 401
        base = f"http://127.0.0.1:{port}"
        status, body = call("POST", f"{base}/api/tickets", {
            "kind": "incident", "channel": "phone", "member": "commune-de-chartres", "product": "parapheur",
            "subject": "Parapheur inaccessible",
            # a phone call taken three days ago, typed in now by the agent (within the policy's 30 days)
            "received_at": (datetime.now(UTC) - timedelta(days=3)).isoformat()})
        assert status == 201, body
        tid = body["ticket"]["id"]
        status, body = call("POST", f"{base}/api/tickets/{tid}/acknowledge", {})
        assert status == 200 and body["ticket"]["status"] == "in_progress"
        # the demo feeder files tickets of its own
        wait_for(lambda: any(t["id"].startswith("DEMO-")
                             for t in call("GET", f"{base}/api/tickets?page_size=500")[1]["items"]),
                 timeout=30, what="demo tickets")
        status, metrics = call("GET", f"{base}/metrics")
        assert status == 200 and "python_info" in metrics
        embedded = broker_port(log)
        assert port_open(embedded)
    finally:
        proc.send_signal(stop_signal)
        code = proc.wait(timeout=60)
    assert code == 0, log.read_text()[-3000:]
    assert not port_open(port)
    assert not port_open(embedded), "the embedded broker must stop with dev mode"
    assert "embedded broker stopped" in log.read_text()
    time.sleep(0.1)


def test_dev_mode_is_durable_across_restarts(tmp_path: Path) -> None:
    from collections import Counter

    from sqlalchemy import create_engine, select

    from projections.models import ARCHIVE
    from tests.integration.conftest import tiny_policy

    policy = tiny_policy(tmp_path, 2)
    filed = {"kind": "assistance", "channel": "portal", "member": "commune-de-blois", "product": "ent",
             "subject": "Compte bloqué"}
    proc, port, log = start_dev(tmp_path, "--policy", str(policy))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, port, log)
        # the first ticket is taken into account at once (within its 2-second SLA), the two
        # others never are
        first = call("POST", f"{base}/api/tickets", filed)[1]["ticket"]
        acked_at = (datetime.fromisoformat(first["filed_at"]) + timedelta(seconds=0.5)).isoformat()
        assert call("POST", f"{base}/api/tickets/{first['id']}/acknowledge", {"occurred_at": acked_at})[0] == 200
        ids = [first["id"]] + [call("POST", f"{base}/api/tickets", filed)[1]["ticket"]["id"] for _ in range(2)]
        engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'slaledger.db'}")

        def facts() -> Counter[tuple[str, str]]:
            with engine.connect() as conn:
                return Counter((t, k) for t, k in conn.execute(select(ARCHIVE.c.ticket_id, ARCHIVE.c.type)))

        wait_for(lambda: facts()[(ids[1], "sla_breached")] and facts()[(ids[2], "sla_breached")],
                 timeout=30, what="breaches archived")
        status, listed = call("GET", f"{base}/api/tickets?sla_status=breached")
        assert status == 200 and {ids[1], ids[2]} <= {t["id"] for t in listed["items"]}
        before = {tid: call("GET", f"{base}/api/tickets/{tid}")[1] for tid in ids}
        assert "slaledger_open_tickets" in call("GET", f"{base}/metrics")[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0

    proc, port, log = start_dev(tmp_path, "--policy", str(policy))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, port, log)
        assert re.search(r"[1-9]\d* archived events restored", log.read_text())
        archived = facts()
        for tid in ids:
            # every archived event of the ticket is back in the worker's state
            in_archive = sum(n for (t, _), n in archived.items() if t == tid)
            after = wait_for(lambda tid=tid, n=in_archive: (lambda r: r[1] if r[0] == 200 and r[1]["version"] == n
                                                            else None)(call("GET", f"{base}/api/tickets/{tid}")),
                             timeout=30, what=f"{tid} restored")
            assert [c["status"] for c in after["clocks"]] == [c["status"] for c in before[tid]["clocks"]]
        time.sleep(3)  # several timer ticks after the restart
        counts = facts()
        assert counts[(ids[1], "sla_breached")] == 1 and counts[(ids[2], "sla_breached")] == 1
        assert counts[(ids[0], "sla_breached")] == 0
        # the restored tickets can still be worked on
        status, body = call("POST", f"{base}/api/tickets/{ids[1]}/acknowledge", {})
        assert status == 200 and body["ticket"]["status"] == "in_progress"
        # dev made a key pair in its data directory: a newcomer's dispute files are signed and checkable
        from projections.dispute_check import check_dispute_file
        from projections.heads import read_key_file

        # the worker signs nothing: the projector's next head (seconds later) covers the new event
        public = read_key_file(tmp_path / "data" / "signing-key.pub", public=True)

        def covered() -> dict[str, Any] | None:
            status, dossier = call("GET", f"{base}/api/tickets/{ids[1]}/dispute-file?format=json")
            assert status == 200 and dossier["evidence"]["head"] is not None, dossier
            # a head signed before the acknowledgement proves the earlier events only (« pas encore signés »)
            problems, proven = check_dispute_file(dossier, public)
            return dossier if problems == [] and proven == len(dossier["tickets"][0]["timeline"]) else None

        dossier = wait_for(covered, timeout=30, interval=1, what="a signed head covering the acknowledgement")
        problems, checked = check_dispute_file(dossier, public)
        assert problems == [] and checked == len(dossier["tickets"][0]["timeline"]) > 0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def test_dev_kafka_keeps_its_log_across_a_kill(tmp_path: Path) -> None:
    """``slaledger dev --kafka``: a local Apache Kafka under the data directory holds the log;
    after the dev process is SIGKILLed (its broker stops with it), a restart finds every
    ticket in the broker itself: nothing is restored from the archive."""
    from tests.conftest import system_tool

    system_tool("java", package="openjdk-17-jre-headless")
    filed = {"kind": "incident", "channel": "portal", "member": "commune-de-blois", "product": "parapheur",
             "subject": "Parapheur inaccessible"}
    proc, port, log = start_dev(tmp_path, "--kafka")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, port, log, timeout=180)  # a JVM's start on 2 shared cores took 60 s
        kafka = broker_port(log)
        status, body = call("POST", f"{base}/api/tickets", filed)
        assert status == 201, body
        tid = body["ticket"]["id"]
        assert call("POST", f"{base}/api/tickets/{tid}/acknowledge", {})[0] == 200
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    wait_for(lambda: not port_open(kafka), timeout=60, what="the dev mode's Kafka stopped with it")
    assert (tmp_path / "data" / "kafka" / "node1" / "broker.log").exists()

    proc, port, log = start_dev(tmp_path, "--kafka")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, port, log, timeout=180)  # a JVM's start on 2 shared cores took 60 s
        assert broker_port(log) == kafka  # the same broker, on the same port, with its data
        assert ", 0 archived events restored" in log.read_text()
        status, ticket = call("GET", f"{base}/api/tickets/{tid}")
        assert status == 200 and ticket["status"] == "in_progress" and ticket["version"] == 2, ticket
        assert call("POST", f"{base}/api/tickets/{tid}/resolve", {"resolution": "Corrigé"})[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    assert not port_open(kafka)

"""The persistent RocksDB table store (streams.store): a restarted worker — cleanly or after
SIGKILL — comes back with every table update, and reads only the changelog written since
its last persisted offset rather than the whole table."""

from __future__ import annotations

import signal
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from sla.events import decode_event
from streams.kafka_tools import end_offsets_total, read_topic
from streams.topics import EVENTS
from tests.integration.conftest import Broker, Worker, api, tiny_policy, wait_for
from tests.integration.test_faults import file_and_acknowledge, send_commands

pytestmark = pytest.mark.integration
ROCKSDB = {"SLALEDGER_STORE_URL": "slaledger-rocksdb://"}


def test_rocksdb_store_survives_sigterm_and_sigkill(broker: Broker, workers: list[Worker],
                                                    tmp_path: Path) -> None:
    expected: set[uuid.UUID] = set()

    def distinct() -> int:
        return len({decode_event(r.value).event_id for r in read_topic(broker.bootstrap, EVENTS)} & expected)

    send_commands(broker, file_and_acknowledge("R", 3_000, expected))
    worker = Worker(broker, tmp_path, name="rocks", extra_env=ROCKSDB)
    workers.append(worker.start(wait=False))
    wait_for(lambda: distinct() == len(expected), timeout=180, interval=1, what="first batch applied")
    worker.wait_ready()
    assert worker.stop(signal.SIGTERM) == 0
    store_files = list((tmp_path / "rocks").rglob("*.sst")) + list((tmp_path / "rocks").rglob("CURRENT"))
    assert store_files, "the table lives on disk"

    # More work, and a SIGKILL in the middle of it; the same data directory is reused.
    written = end_offsets_total(broker.bootstrap, EVENTS)
    send_commands(broker, file_and_acknowledge("S", 10_000, expected))
    again = Worker(broker, tmp_path, name="rocks", extra_env=ROCKSDB)
    workers.append(again.start(wait=False))
    wait_for(lambda: end_offsets_total(broker.bootstrap, EVENTS) >= written + 300, timeout=120, interval=0.05,
             what="second batch under way")
    assert again.stop(signal.SIGKILL) == -signal.SIGKILL

    last = Worker(broker, tmp_path, name="rocks", extra_env=ROCKSDB)
    workers.append(last.start(wait=False))
    wait_for(lambda: distinct() == len(expected), timeout=240, interval=2, what="every event after SIGKILL")
    last.wait_ready()
    for tid in ["R-0000", "R-1500", "R-2999", "S-0000", "S-5000", "S-9999"]:
        status, body = api("GET", f"{last.url}/api/tickets/{tid}")
        assert status == 200, body
        assert body["status"] == "in_progress" and body["version"] == 2, body
    log = last.log_path.read_text()
    assert "Traceback" not in log, log[-3000:]


def test_deadline_due_across_a_restart_fires_once_from_the_stored_index(broker: Broker, workers: list[Worker],
                                                                         tmp_path: Path) -> None:
    """The deadline index lives with the tickets in RocksDB (#31): a restart reads no ticket
    to rebuild it, yet a deadline that falls while the worker is down, or during its start,
    fires at the first tick, once; restarting after the breach sends none again."""
    policy = tiny_policy(tmp_path, 6)
    first = Worker(broker, tmp_path, name="rocks", policy_file=policy, extra_env=ROCKSDB)
    workers.append(first.start())
    filed: dict[str, datetime] = {}
    for _ in range(3):
        status, body = api("POST", f"{first.url}/api/tickets", {
            "kind": "assistance", "channel": "portal", "member": "m-001", "product": "ent", "subject": "Accès"})
        assert status == 201, body
        filed[body["ticket"]["id"]] = datetime.fromisoformat(body["ticket"]["filed_at"])
    assert first.stop(signal.SIGTERM) == 0  # before any deadline

    def breaches() -> dict[str, list]:
        out: dict[str, list] = {tid: [] for tid in filed}
        for record in read_topic(broker.bootstrap, EVENTS):
            event = decode_event(record.value)
            if event.ticket_id in out and event.type.value == "sla_breached":
                out[event.ticket_id].append(event)
        return out

    second = Worker(broker, tmp_path, name="rocks", policy_file=policy, extra_env=ROCKSDB)
    workers.append(second.start())
    wait_for(lambda: all(breaches().values()), timeout=60, what="a breach per ticket after the restart")
    assert "deadline index restored" in second.log_path.read_text()
    assert second.stop(signal.SIGTERM) == 0
    third = Worker(broker, tmp_path, name="rocks", policy_file=policy, extra_env=ROCKSDB)
    workers.append(third.start())
    time.sleep(3)  # several timer ticks after the restart
    found = breaches()
    assert all(len(found[tid]) == 1 for tid in filed), found
    assert all(found[tid][0].occurred_at == at + timedelta(seconds=6)
               for tid, at in filed.items()), found

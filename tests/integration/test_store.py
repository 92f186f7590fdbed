"""The persistent RocksDB table store (streams.store): a restarted worker — cleanly or after
SIGKILL — comes back with every table update, and reads only the changelog written since
its last persisted offset rather than the whole table."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import pytest

from sla.events import decode_event
from streams.kafka_tools import end_offsets_total, read_topic
from streams.topics import EVENTS
from tests.integration.conftest import Broker, Worker, api, wait_for
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

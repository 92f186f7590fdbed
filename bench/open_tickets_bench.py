"""One worker holding N open tickets (issue 3): RSS and restart-to-ready time, memory table
store vs the persistent RocksDB store, in the same run. Prints its figures; no assertions.

    .venv/bin/python bench/open_tickets_bench.py [--tickets 1000000]

N filing events are written to the events topic (as an import or a restore would), one
worker with the memory store folds them into its table (and its changelog); then:
- memory store: SIGTERM and restart; the table is rebuilt from the whole changelog;
- RocksDB store: a first start recovers the changelog into RocksDB, then SIGTERM and
  restart: only what was written since the last persisted offset is read.
"Ready" is the worker's /readyz: tables recovered, caught up, deadline index rebuilt.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sla.events import EventType, encode_event, new_event
from streams.embedded import EmbeddedBroker, free_port
from streams.kafka_tools import end_offsets_total, producer
from streams.topics import EVENTS, TICKET_TABLE, create_topics

CHANGELOG = f"slaledger-{TICKET_TABLE}-changelog"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Worker:
    def __init__(self, broker: EmbeddedBroker, datadir: Path, store: str) -> None:
        self.port = free_port()
        env = {**os.environ, "SLALEDGER_BROKER_URL": broker.url, "SLALEDGER_WEB_PORT": str(self.port),
               "SLALEDGER_DATA_DIR": str(datadir), "SLALEDGER_EMBEDDED": "1", "SLALEDGER_SESSION_TIMEOUT": "4",
               "SLALEDGER_HEARTBEAT_INTERVAL": "0.5", "SLALEDGER_REBALANCE_TIMEOUT": "2",
               "SLALEDGER_LOG_LEVEL": "warning", "SLALEDGER_AUTH": "off", "SLALEDGER_STORE_URL": store}
        datadir.mkdir(parents=True, exist_ok=True)
        log = open(datadir / "worker.log", "ab")  # noqa: SIM115
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "slaledger.cli", "worker"], env=env, stdout=log,
                                     stderr=log)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def wait_ready(self, timeout: float = 900) -> float:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}")
            if self.ready():
                return time.perf_counter() - self.started
            time.sleep(0.25)
        raise TimeoutError("worker not ready")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tickets", type=int, default=1_000_000)
    args = parser.parse_args()
    n = args.tickets
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(log_path=Path(tmp) / "tansu.log") as broker:
        create_topics(broker.bootstrap, 4)
        kafka = producer(broker.bootstrap, embedded=False, linger_ms=5, batch_size=256 * 1024)
        base = datetime.now(UTC) + timedelta(days=30)  # filed "in the future": open, nothing due
        t0 = time.perf_counter()
        for i in range(n):
            tid = f"O-{i:08d}"
            event = new_event(EventType.TICKET_FILED, tid, occurred_at=base, recorded_at=base, actor="bench",
                              payload={"kind": "assistance", "channel": "portal", "member": f"m-{i % 300}",
                                       "product": "ent", "subject": "ouvert"}, event_id=uuid.uuid4())
            kafka.send(EVENTS, key=tid.encode(), value=encode_event(event))
        kafka.flush()
        kafka.close()
        print(f"{n:,} filing events written in {time.perf_counter() - t0:.0f} s")

        memory = Worker(broker, Path(tmp) / "memory", "memory://")
        t0 = time.perf_counter()
        while end_offsets_total(broker.bootstrap, CHANGELOG) < n:
            time.sleep(1)
        folded = time.perf_counter() - t0
        print(f"memory store: {n:,} tickets folded in {folded:.0f} s ({n / folded:,.0f}/s); "
              f"RSS {rss_mib(memory.proc.pid):,.0f} MiB")
        memory.wait_ready()
        memory.stop()
        memory = Worker(broker, Path(tmp) / "memory", "memory://")
        ready = memory.wait_ready()
        print(f"memory store: restart to ready {ready:.1f} s (whole changelog replayed); "
              f"RSS {rss_mib(memory.proc.pid):,.0f} MiB")
        memory.stop()

        rocks = Worker(broker, Path(tmp) / "rocks", "slaledger-rocksdb://")
        first = rocks.wait_ready()
        print(f"rocksdb store: first start (changelog → RocksDB) ready in {first:.1f} s; "
              f"RSS {rss_mib(rocks.proc.pid):,.0f} MiB")
        rocks.stop()
        rocks = Worker(broker, Path(tmp) / "rocks", "slaledger-rocksdb://")
        ready = rocks.wait_ready()
        print(f"rocksdb store: restart to ready {ready:.1f} s; RSS {rss_mib(rocks.proc.pid):,.0f} MiB "
              f"(targets: RSS <= 1,536 MiB, restart <= 30 s)")
        rocks.stop()


if __name__ == "__main__":
    main()

"""One worker holding N open tickets (issues 3 and 20): RSS and restart-to-ready time, memory
table store vs the persistent RocksDB store, in the same run. Prints its figures; no assertions.

    .venv/bin/python bench/open_tickets_bench.py [--tickets 1000000] [--restarts 3] [--memory]

N filing events are written to the events topic (as an import or a restore would); then:
- memory store (``--memory``): one worker folds them into its table (and its changelog),
  SIGTERM and restart: the table is rebuilt from the whole changelog;
- RocksDB store: a first start folds the events (or, after the memory worker, recovers the
  changelog) into RocksDB, then ``--restarts`` times: SIGTERM, start again on the same data
  directory, time to ready. Only what was written since the last persisted offset is read.
"Ready" is the worker's /readyz: tables recovered, caught up, deadline index rebuilt.

Each restart prints where its time went, from the worker's log (``SLALEDGER_LOG_LEVEL``, info
unless set: timestamped JSON lines; the worker is started through a launcher that also lets through, in
the same UTC timestamps, the INFO lines of the Kafka group coordinator and of Faust's table
recovery, which the worker's own logging keeps at WARNING): process start → "worker
starting" (imports, broker reached) → JoinGroup sent → consumer group joined → partitions
assigned → table recovery done ("Worker ready") → events partitions recovered → deadline
index restored (RocksDB: the due keys stored with the tickets, nothing rebuilt) → caught up →
/readyz 200.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sla.events import EventType, encode_event, new_event
from slaledger.brokers.embedded import EmbeddedBroker
from slaledger.brokers.process import free_port
from streams.kafka_tools import end_offsets_total, producer
from streams.topics import EVENTS, TICKET_TABLE, create_topics

CHANGELOG = f"slaledger-{TICKET_TABLE}-changelog"

# Starts the worker as ``slaledger worker`` does, with the standard library's INFO lines of
# the group coordinator and of Faust's recovery let through (UTC, milliseconds): configured
# before the worker's own logging, whose ``basicConfig`` then leaves it in place.
LAUNCHER = """
import logging, sys, time
handler = logging.StreamHandler(sys.stderr)
formatter = logging.Formatter("%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S")
formatter.converter = time.gmtime
handler.setFormatter(formatter)
logging.getLogger().addHandler(handler)
logging.getLogger().setLevel(logging.WARNING)
for name in ("aiokafka.consumer.group_coordinator", "faust.tables.recovery"):
    logging.getLogger(name).setLevel(logging.INFO)
from slaledger.cli import main
sys.exit(main(["worker"]))
"""

# (label, how the line is recognised): the first line matching after the start counts.
MILESTONES = [
    ("worker starting", re.compile(r'"event": "worker starting"')),
    ("join sent", re.compile(r"\(Re-\)joining group ")),
    ("group joined", re.compile(r"Joined group ")),
    ("assigned", re.compile(r"Setting newly assigned partitions ")),
    ("recovered", re.compile(r"Worker ready")),
    ("events recovered", re.compile(r'"event": "events partition recovered"')),
    ("index restored", re.compile(r'"event": "deadline index (rebuilt|restored)"')),
    ("caught up", re.compile(r'"event": "worker caught up"')),
]
_STDLIB_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z ")


def line_time(line: str) -> float | None:
    """The UTC instant of a worker log line (a structlog JSON line or a launcher line)."""
    if "{" in line[:16]:  # a JSON line (after the terminal escapes Faust may leave before it)
        try:
            stamp = json.loads(line[line.index("{"):]).get("timestamp")
        except ValueError:
            return None
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else None
    match = _STDLIB_TIME.match(line)
    if match is None:
        return None
    return datetime.fromisoformat(match.group(1)).replace(tzinfo=UTC).timestamp()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Start:
    ready: float  # seconds from spawn to the first /readyz 200
    steps: list[tuple[str, float]]  # milestone, seconds from spawn
    tickets: int | None  # in the deadline index once rebuilt, as logged

    def breakdown(self) -> str:
        parts, previous = [], 0.0
        for label, at in self.steps:
            parts.append(f"{label} +{at - previous:.1f}")
            previous = at
        parts.append(f"/readyz +{self.ready - previous:.1f}")
        return " → ".join(parts)


class Worker:
    def __init__(self, broker: EmbeddedBroker, datadir: Path, store: str) -> None:
        self.port = free_port()
        env = {**os.environ, "SLALEDGER_BROKER_URL": broker.url, "SLALEDGER_WEB_PORT": str(self.port),
               "SLALEDGER_DATA_DIR": str(datadir), "SLALEDGER_EMBEDDED": "1", "SLALEDGER_SESSION_TIMEOUT": "4",
               "SLALEDGER_HEARTBEAT_INTERVAL": "0.5", "SLALEDGER_REBALANCE_TIMEOUT": "2",
               "SLALEDGER_LOG_LEVEL": os.environ.get("SLALEDGER_LOG_LEVEL", "info"), "SLALEDGER_AUTH": "off",
               "SLALEDGER_STORE_URL": store}
        datadir.mkdir(parents=True, exist_ok=True)
        self.log_path = datadir / "worker.log"
        self.log_from = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.started = time.perf_counter()
        self.started_wall = time.time()
        self.proc = subprocess.Popen([sys.executable, "-c", LAUNCHER], env=env, stdout=log, stderr=log)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def wait_ready(self, timeout: float = 900) -> Start:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}; see {self.log_path}")
            if self.ready():
                ready = time.perf_counter() - self.started
                time.sleep(0.3)  # let the log lines reach the file
                return self.timeline(ready)
            time.sleep(0.1)
        raise TimeoutError("worker not ready")

    def timeline(self, ready: float) -> Start:
        with open(self.log_path, "rb") as log:
            log.seek(self.log_from)
            lines = log.read().decode("utf-8", "replace").splitlines()
        steps: list[tuple[str, float]] = []
        tickets = None
        for label, pattern in MILESTONES:
            for line in lines:
                if pattern.search(line):
                    at = line_time(line)
                    if at is not None:
                        steps.append((label, at - self.started_wall))
                    if label == "index restored":
                        found = re.search(r'"scheduled": (\d+)', line)
                        tickets = int(found.group(1)) if found else None
                    break
        steps.sort(key=lambda step: step[1])
        return Start(ready, steps, tickets)

    def stop(self) -> float:
        t0 = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--restarts", type=int, default=3, help="RocksDB restarts in the run")
    parser.add_argument("--memory", action="store_true", help="also the memory store (it folds the events first)")
    parser.add_argument("--keep", type=Path, help="work (data directories, logs) in this directory and keep it")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        run(args, args.keep or Path(scratch))


def run(args: argparse.Namespace, tmp: Path) -> None:
    n = args.tickets
    with EmbeddedBroker(log_path=tmp / "tansu.log") as broker:
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

        def folded(worker: Worker, label: str) -> None:
            t0 = time.perf_counter()
            while end_offsets_total(broker.bootstrap, CHANGELOG) < n:
                if worker.proc.poll() is not None:
                    raise RuntimeError(f"worker exited with {worker.proc.returncode}; see {worker.log_path}")
                time.sleep(1)
            took = time.perf_counter() - t0
            print(f"{label}: {n:,} tickets folded in {took:.0f} s ({n / took:,.0f}/s); "
                  f"RSS {rss_mib(worker.proc.pid):,.0f} MiB")

        if args.memory:
            memory = Worker(broker, tmp / "memory", "memory://")
            folded(memory, "memory store")
            memory.wait_ready()
            memory.stop()
            memory = Worker(broker, tmp / "memory", "memory://")
            ready = memory.wait_ready().ready
            print(f"memory store: restart to ready {ready:.1f} s (whole changelog replayed); "
                  f"RSS {rss_mib(memory.proc.pid):,.0f} MiB")
            memory.stop()

        rocks = Worker(broker, tmp / "rocks", "slaledger-rocksdb://")
        if not args.memory:
            folded(rocks, "rocksdb store")
        first = rocks.wait_ready()
        how = "changelog → RocksDB" if args.memory else "events folded into RocksDB"
        print(f"rocksdb store: first start ({how}) ready in {first.ready:.1f} s; "
              f"RSS {rss_mib(rocks.proc.pid):,.0f} MiB")
        times = []
        for i in range(1, args.restarts + 1):
            stopped = rocks.stop()
            rocks = Worker(broker, tmp / "rocks", "slaledger-rocksdb://")
            start = rocks.wait_ready()
            times.append(start.ready)
            indexed = "?" if start.tickets is None else f"{start.tickets:,}"
            print(f"rocksdb store: restart {i}: SIGTERM exit {stopped:.1f} s, ready {start.ready:.1f} s; "
                  f"RSS {rss_mib(rocks.proc.pid):,.0f} MiB; {indexed} tickets loaded into the index\n"
                  f"  spawn → {start.breakdown()}")
        rocks.stop()
        if times:
            print(f"rocksdb store: restart to ready min {min(times):.1f} s, max {max(times):.1f} s over "
                  f"{len(times)} restarts (targets: RSS <= 1,536 MiB, restart <= 5 s)")


if __name__ == "__main__":
    main()

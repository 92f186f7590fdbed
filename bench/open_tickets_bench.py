"""One worker holding N open tickets (issues 3, 20 and 31): RSS and restart-to-ready time with
the persistent RocksDB store (and, ``--memory``, the memory store). Prints its figures and one
``SUMMARY`` line (the slowest restart against the 5 s target); no assertions.

    .venv/bin/python bench/open_tickets_bench.py [--tickets 1000000] [--restarts 3] [--broker kafka|tansu]
        [--memory] [--keep DIR]

On Apache Kafka (production's broker; ``--broker tansu``: the embedded one), N open tickets are
written as a worker would have left them (``seed``: each filing event and the stored ticket on
the table's changelog, with each partition's events position), in minutes; then:
- memory store (``--memory``): a first start replays the changelog into memory, then a
  restart replays it whole again;
- RocksDB store: a first start recovers the changelog into RocksDB, then ``--restarts``
  times: SIGTERM, start again on the same data directory, time to ready. Only what was
  written since the last persisted offset is read.
``--keep DIR`` keeps the broker's and workers' directories; given again (Apache Kafka), the
tickets are not written again and the first start only resumes what is left to recover.
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
import asyncio
import compileall
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

from aiokafka import AIOKafkaProducer
from faust.serializers.codecs import codecs

from sla.events import EventType, decode_event, encode_event, new_event
from slaledger.brokers.embedded import EmbeddedBroker
from slaledger.brokers.kafka_cluster import KafkaCluster, running_broker
from slaledger.brokers.process import free_port
from slaledger.settings import load_policy
from streams.batches import send_batched
from streams.kafka_acls import ADMIN, WORKER
from streams.kafka_security import ClientSecurity, aiokafka_options
from streams.processor import TicketProcessor
from streams.table_values import events_position_key, partition_for, stored
from streams.topics import EVENTS, TICKET_TABLE

CHANGELOG = f"slaledger-{TICKET_TABLE}-changelog"
ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 4  # running_broker's topics
TARGET = 5.0  # seconds from spawn to /readyz 200, at every restart (#31)

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
    def __init__(self, broker: EmbeddedBroker | KafkaCluster, datadir: Path, store: str) -> None:
        self.port = free_port()
        env = {**os.environ, "SLALEDGER_BROKER_URL": broker.url, "SLALEDGER_WEB_PORT": str(self.port),
               "SLALEDGER_DATA_DIR": str(datadir), "SLALEDGER_EMBEDDED": "1" if broker.embedded else "0",
               **broker.client_env(WORKER), "SLALEDGER_SESSION_TIMEOUT": "4",
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
    parser.add_argument("--memory", action="store_true", help="also the memory store (whole changelog at each start)")
    parser.add_argument("--broker", choices=("kafka", "tansu"), default="kafka",
                        help="Apache Kafka (production's broker, default) or the embedded Tansu")
    parser.add_argument("--keep", type=Path, help="work (data directories, logs) in this directory and keep it; "
                        "given again (Apache Kafka), its tickets are not written again")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        run(args, args.keep or Path(scratch))


SHAPES = 1000  # distinct filings (instant, member), each folded by the worker's own code
_TEMPLATE_ID = "O-99999999"  # the ticket id a shape is folded under: as long as every bench id
_TEMPLATE_EVENT = uuid.UUID(int=0xB0B)


def shapes(processor: TicketProcessor, base: datetime) -> list[tuple[bytes, bytes]]:
    """(filing event, stored ticket) bytes of each shape, under ``_TEMPLATE_ID``: filed in
    the next 30 days, 43 min apart (open, nothing due, a thousand distinct wakeups), folded
    as the agent folds an event read back (``recover``), stored with its wakeup."""
    out = []
    for j in range(SHAPES):
        at = base + timedelta(minutes=43 * j)
        event = new_event(EventType.TICKET_FILED, _TEMPLATE_ID, occurred_at=at, recorded_at=at, actor="bench",
                          payload={"kind": "assistance", "channel": "portal", "member": f"m-{j % 300}",
                                   "product": "ent", "subject": "ouvert"}, event_id=_TEMPLATE_EVENT)
        ticket = processor.recover(None, event).ticket
        assert ticket is not None
        out.append((encode_event(event), codecs["json"].dumps(stored(ticket, processor.wakeup(ticket, at)))))
    return out


def instance(shape: tuple[bytes, bytes], tid: str, event_id: uuid.UUID) -> tuple[bytes, bytes]:
    """A shape's bytes for another ticket id and event id: both are opaque to the fold, so
    these are the bytes the worker would have written (``seed`` checks it on a sample)."""
    ids = ((_TEMPLATE_ID.encode(), tid.encode()), (str(_TEMPLATE_EVENT).encode(), str(event_id).encode()),
           (_TEMPLATE_EVENT.hex.encode(), event_id.hex.encode()))
    event, value = shape
    for old, new in ids:
        event, value = event.replace(old, new), value.replace(old, new)
    return event, value


def seed(broker: EmbeddedBroker | KafkaCluster, n: int) -> None:
    """Write N open tickets as a worker that had decided their filings would have left them:
    each filing event on the events topic and, on the table's changelog, the ticket as the
    worker stores it (folded by ``TicketProcessor``, with its wakeup), then each partition's
    events position past its filings. Through aiokafka's batch API (``send_batched``, as the
    worker writes): minutes, where deciding a million filings through the worker took 45 min.
    The first start then recovers the changelog into RocksDB (Faust's table recovery) and
    has no event left to apply."""
    processor = TicketProcessor(load_policy())
    encode = codecs["json"].dumps
    folded = shapes(processor, datetime.now(UTC) + timedelta(days=1))
    counts = [0] * PARTITIONS
    security = broker.security(ADMIN) if isinstance(broker, KafkaCluster) else ClientSecurity()

    async def write() -> None:
        kafka = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", enable_idempotence=True,
                                 max_batch_size=1024 * 1024, **aiokafka_options(security))
        await kafka.start()
        try:
            for chunk in range(0, n, 20_000):
                events, tickets = [], []
                for i in range(chunk, min(n, chunk + 20_000)):
                    tid, event_id = f"O-{i:08d}", uuid.uuid4()
                    data, value = instance(folded[i % SHAPES], tid, event_id)
                    if i % 50_000 == 0:  # the same bytes as the fold of this very ticket
                        event = decode_event(data)
                        ticket = processor.recover(None, event).ticket
                        assert ticket is not None and event.event_id == event_id and event.ticket_id == tid
                        assert value == encode(stored(ticket, processor.wakeup(ticket, event.occurred_at))), tid
                    partition = partition_for(tid, PARTITIONS)
                    counts[partition] += 1
                    events.append((partition, tid.encode(), data))
                    tickets.append((partition, tid.encode(), value))
                sent = [*await send_batched(kafka, EVENTS, events), *await send_batched(kafka, CHANGELOG, tickets)]
                for batch in sent:
                    await batch.future
            # after the tickets it covers, on their partition (fresh topics: the end is the count)
            positions = [(p, events_position_key(p, PARTITIONS), encode({"events_position": counts[p]}))
                         for p in range(PARTITIONS)]
            for batch in await send_batched(kafka, CHANGELOG, positions):
                await batch.future
        finally:
            await kafka.stop()

    t0 = time.perf_counter()
    asyncio.run(write())
    took = time.perf_counter() - t0
    print(f"{n:,} open tickets written (filing events + stored tickets) in {took:.0f} s ({n / took:,.0f}/s)")


def compile_checkout() -> None:
    """Byte-compile the project's packages, as installing the image does (``pip install .``
    compiles; this checkout is installed editable and PYTHONDONTWRITEBYTECODE may be set):
    otherwise every worker start compiles them from source (measured: ~0.5 s of a start)."""
    for package in ("sla", "service", "streams", "projections", "slaledger"):
        compileall.compile_dir(str(ROOT / package), quiet=1)


def run(args: argparse.Namespace, tmp: Path) -> None:
    n = args.tickets
    compile_checkout()
    seeded = tmp / "seeded"  # --keep DIR given again: its broker and data directories are reused
    if seeded.exists() and (args.broker == "tansu" or args.memory):
        raise SystemExit(f"{tmp} is seeded: a run on Tansu (memory only) or with --memory needs a fresh directory")
    with running_broker(args.broker, tmp) as broker:
        if seeded.exists():
            n = int(seeded.read_text())
            print(f"{n:,} open tickets already written in {tmp}")
        else:
            seed(broker, n)
            seeded.write_text(str(n))

        if args.memory:
            memory = Worker(broker, tmp / "memory", "memory://")
            ready = memory.wait_ready().ready
            print(f"memory store: first start (changelog → memory) ready in {ready:.1f} s; "
                  f"RSS {rss_mib(memory.proc.pid):,.0f} MiB")
            memory.stop()
            memory = Worker(broker, tmp / "memory", "memory://")
            ready = memory.wait_ready().ready
            print(f"memory store: restart to ready {ready:.1f} s (whole changelog replayed); "
                  f"RSS {rss_mib(memory.proc.pid):,.0f} MiB")
            memory.stop()

        rocks = Worker(broker, tmp / "rocks", "slaledger-rocksdb://")
        first = rocks.wait_ready(timeout=4 * 3600)  # Faust's recovery of a million: ~850/s under load
        print(f"rocksdb store: first start (changelog → RocksDB) ready in {first.ready:.1f} s; "
              f"RSS {rss_mib(rocks.proc.pid):,.0f} MiB\n  spawn → {first.breakdown()}")
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
            met = "met" if max(times) <= TARGET else "NOT MET"
            print(f"SUMMARY open_tickets_bench {args.broker}: {n:,} open tickets, restart to ready max "
                  f"{max(times):.1f} s (min {min(times):.1f}) over {len(times)} restarts; target <= {TARGET:.0f} s: "
                  f"{met}; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

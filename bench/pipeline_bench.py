"""Pipeline benchmarks on both brokers, in one run: the embedded Tansu and a single-node
Apache Kafka (KRaft, from infra/kafka/pom.xml). Prints its figures; no assertions.

1. Throughput of the worker through the full path (decode, state machine, fold, events,
   table), next to a raw aiokafka consumer reading the same commands and to a Faust agent
   that does nothing with the same records (``faust_floor.py``: Faust's own ceiling), in
   the same run. The worker reads one record per command (it never reads back the events
   it appends). ``--workers 1,2``: the same load on one worker, then on two sharing the
   four partitions (each on a fresh broker).
2. Breach delay after the deadline over N tickets with staggered tiny SLAs: p50/p99.
3. ``--transactions on,off``: on Apache Kafka, the throughput with each partition's batches
   in transactions (the fence, ``streams.fence``: the default) and without (idempotent
   writes, what dev mode does), each on a fresh broker, in the same run: the fence's cost.

    .venv/bin/python bench/pipeline_bench.py [--tickets 20000] [--breach-tickets 1000] [--brokers tansu,kafka]
                                             [--workers 1,2] [--transactions on,off]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from sla.events import decode_event
from sla.ticket import Command, CommandType
from slaledger.brokers.embedded import EmbeddedBroker
from slaledger.brokers.kafka_cluster import KafkaCluster, running_broker
from slaledger.brokers.process import free_port
from slaledger.fixtures import short_intake_policy
from streams.codec import encode_command
from streams.kafka_acls import WORKER
from streams.kafka_tools import end_offsets_total, producer, read_topic
from streams.topics import COMMANDS, EVENTS

FILE = {"kind": "assistance", "channel": "portal", "member": "m-001", "product": "ent", "subject": "bench"}


Broker = EmbeddedBroker | KafkaCluster


def start_worker(
    broker: Broker, workdir: Path, policy: Path | None = None, transactions: bool = True
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {**os.environ, "SLALEDGER_BROKER_URL": broker.url, "SLALEDGER_WEB_PORT": str(port),
           "SLALEDGER_DATA_DIR": str(workdir), "SLALEDGER_EMBEDDED": "1" if broker.embedded else "0",
           "SLALEDGER_SESSION_TIMEOUT": "4",
           "SLALEDGER_HEARTBEAT_INTERVAL": "0.5", "SLALEDGER_REBALANCE_TIMEOUT": "2",
           "SLALEDGER_LOG_LEVEL": "warning", "SLALEDGER_TIMER_INTERVAL": "0.2", "SLALEDGER_AUTH": "off",
           "SLALEDGER_TRANSACTIONS": "1" if transactions else "0",
           **broker.client_env(WORKER)}
    if policy:
        env["SLALEDGER_POLICY_FILE"] = str(policy)
    log = open(workdir / "worker.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "slaledger.cli", "worker"], env=env, stdout=log, stderr=log)
    return proc, port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def raw_read(bootstrap: str, topic: str, total: int) -> float:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(4)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen, t0 = 0, time.perf_counter()
        while seen < total:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            seen += sum(len(v) for v in batches.values())
        return seen / (time.perf_counter() - t0)
    finally:
        await consumer.stop()


def produce_commands(broker: Broker, n: int) -> float:
    """A filing and an acknowledgement for each of n tickets; the rate they were produced."""
    kafka = producer(broker.bootstrap, embedded=broker.embedded)
    t0 = time.perf_counter()
    for i in range(n):
        tid = f"B-{i:07d}"
        for command_type, payload in ((CommandType.FILE, FILE), (CommandType.ACKNOWLEDGE, {})):
            command = Command(command_type, tid, "bench", payload, command_id=uuid.uuid4())
            kafka.send(COMMANDS, key=tid.encode(), value=encode_command(command))
    kafka.flush()
    return 2 * n / (time.perf_counter() - t0)


def run_workers(broker: Broker, workdir: Path, count: int, total: int,
                transactions: bool = True) -> tuple[float, float]:
    """Start ``count`` workers on a backlog of ``total`` commands; (elapsed seconds from the
    first event to the last, CPU of all workers in cores). The end offsets count the
    transactions' markers too: the last event is the last move of the end, once it holds
    ``total`` offsets and stays still for a second."""
    procs = [start_worker(broker, workdir / f"w{i}", transactions=transactions)[0] for i in range(count)]
    try:
        started, cpu_started, last, moved, cpu_moved = None, 0.0, 0, 0.0, 0.0
        while True:
            for proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited with {proc.returncode}: see {workdir}/w*/worker.log")
            done = end_offsets_total(broker.bootstrap, EVENTS)
            now = time.perf_counter()
            if done and started is None:
                started, cpu_started = now, sum(cpu_seconds(p.pid) for p in procs)
            if done != last:
                last, moved, cpu_moved = done, now, sum(cpu_seconds(p.pid) for p in procs)
            elif done >= total and now - moved >= 1.0:
                break
            time.sleep(0.2)
        assert started is not None
        elapsed = moved - started
        return elapsed, (cpu_moved - cpu_started) / elapsed
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)


def fence_cost(n: int, modes: list[bool]) -> list[tuple[bool, float]]:
    """One worker on Apache Kafka, with and without transactions, each on a fresh broker, in
    the order given (``on,off,off,on``: both orders); the ratio of each pair."""
    rates = []
    for transactions in modes:
        with tempfile.TemporaryDirectory() as tmp, running_broker("kafka", Path(tmp)) as broker:
            label = "transactions (fenced)" if transactions else "idempotent (no fence)"
            print(f"== kafka: throughput, 1 worker, {label}", flush=True)
            produce_commands(broker, n)
            (Path(tmp) / "w0").mkdir()
            elapsed, cpu = run_workers(broker, Path(tmp), 1, 2 * n, transactions)
            rates.append((transactions, 2 * n / elapsed))
            print(f"{label}: {2 * n / elapsed:,.0f} commands/s in {elapsed:.1f} s; CPU {cpu:.0%} of one core",
                  flush=True)
    for (first, a), (second, b) in zip(rates[::2], rates[1::2], strict=False):
        if first != second:
            on, off = (a, b) if first else (b, a)
            print(f"fence cost ({'fenced' if first else 'idempotent'} first): transactions / idempotent = "
                  f"{on / off:.2f}", flush=True)
    return rates


def throughput(n: int, kind: str, workers: list[int]) -> dict[str, float]:
    figures: dict[str, float] = {}
    for count in workers:
        with tempfile.TemporaryDirectory() as tmp, running_broker(kind, Path(tmp)) as broker:
            print(f"== {kind}: throughput, {count} worker(s)", flush=True)
            produce_rate = produce_commands(broker, n)
            for i in range(count):
                (Path(tmp) / f"w{i}").mkdir()
            elapsed, cpu = run_workers(broker, Path(tmp), count, 2 * n)
            rate = 2 * n / elapsed
            print(f"{count} worker(s), full path: {rate:,.0f} commands/s ({2 * n:,} commands -> {2 * n:,} events, "
                  f"one record read per command) in {elapsed:.1f} s; CPU {cpu:.0%} of one core", flush=True)
            figures[f"worker{count}"], figures[f"cpu{count}"] = rate, cpu
            if count != workers[0]:
                continue
            raw_rate = asyncio.run(raw_read(broker.bootstrap, COMMANDS, 2 * n))
            floor_dir = Path(tmp) / "floor"
            floor = subprocess.run([sys.executable, str(Path(__file__).with_name("faust_floor.py")), broker.bootstrap,
                                    str(2 * n), str(floor_dir), "embedded" if broker.embedded else "kafka"],
                                   capture_output=True, text=True, timeout=600)
            if not (floor_dir / "figure").exists():
                raise RuntimeError(f"faust_floor.py gave no figure: {floor.stderr[-2000:]}")
            floor_rate, floor_cpu = (float(x) for x in (floor_dir / "figure").read_text().split())
            batching = "one record per batch (Tansu workaround)" if broker.embedded else "default batching"
            print(f"commands produced (kafka-python, acks=all, idempotent, {batching}): {produce_rate:,.0f}/s")
            print(f"raw aiokafka consumer, same {2 * n:,} commands: {raw_rate:,.0f} records/s")
            print(f"Faust agent doing nothing, same {2 * n:,} records: {floor_rate:,.0f} records/s "
                  f"(CPU {floor_cpu:.0%})")
            print(f"ratio worker / raw consumer: {rate / raw_rate:.3f}; worker / Faust floor: "
                  f"{rate / floor_rate:.3f}", flush=True)
            figures.update(produced=produce_rate, raw=raw_rate, floor=floor_rate, floor_ratio=rate / floor_rate)
    if len(workers) > 1:
        one, more = workers[0], workers[-1]
        print(f"{more} workers / {one}: {figures[f'worker{more}'] / figures[f'worker{one}']:.2f} "
              f"(this machine has {os.cpu_count()} cores, shared with the broker)", flush=True)
    return figures


def breach_delay(n: int, kind: str, sla_seconds: float = 5.0) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, running_broker(kind, Path(tmp)) as broker:
        print(f"== {kind}: breach delay", flush=True)
        policy = Path(tmp) / "policy.toml"
        policy.write_text(short_intake_policy(sla_seconds, policy_id="bench-1"))
        proc, _port = start_worker(broker, Path(tmp), policy)
        try:
            kafka = producer(broker.bootstrap, embedded=broker.embedded)
            # staggered over ~5 s: deadlines spread, not all at once
            for i in range(n):
                tid = f"D-{i:05d}"
                kafka.send(COMMANDS, key=tid.encode(),
                           value=encode_command(Command(CommandType.FILE, tid, "bench", FILE)))
                if i % max(1, n // 50) == 0:
                    kafka.flush()
                    time.sleep(0.1)
            kafka.flush()
            deadline = time.monotonic() + 120
            delays: list[float] = []
            while time.monotonic() < deadline:
                time.sleep(2)
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited with {proc.returncode}: see {tmp}/worker.log")
                delays = []
                for record in read_topic(broker.bootstrap, EVENTS):
                    event = decode_event(record.value)
                    if event.type.value == "sla_breached":
                        delays.append((event.recorded_at - event.payload["deadline"]).total_seconds())
                if len(delays) >= n:
                    break
            delays.sort()
            print(f"breaches: {len(delays)} of {n} tickets (tiny SLA {sla_seconds:g} s, timer every 0.2 s)")
            print(f"breach delay after deadline: p50 {statistics.median(delays):.3f} s, "
                  f"p99 {delays[int(0.99 * (len(delays) - 1))]:.3f} s, max {delays[-1]:.3f} s (target p99 <= 1.5 s)",
                  flush=True)
            return {"p50": statistics.median(delays), "p99": delays[int(0.99 * (len(delays) - 1))]}
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tickets", type=int, default=20_000)
    parser.add_argument("--breach-tickets", type=int, default=1_000)
    parser.add_argument("--brokers", default="tansu,kafka", help="comma-separated: tansu, kafka")
    parser.add_argument("--workers", default="1", help="comma-separated worker counts, e.g. 1,2")
    parser.add_argument("--transactions", default="",
                        help="on,off: the fence's cost on Apache Kafka, alone (the other figures are skipped)")
    args = parser.parse_args()
    if args.transactions:
        fence_cost(args.tickets, [mode == "on" for mode in args.transactions.split(",")])
        return
    kinds = args.brokers.split(",")
    workers = [int(w) for w in args.workers.split(",")]
    figures = {kind: {**throughput(args.tickets, kind, workers), **breach_delay(args.breach_tickets, kind)}
               for kind in kinds}
    print("\n| broker | produced cmd/s | raw aiokafka rec/s | Faust no-op floor rec/s | "
          + " | ".join(f"{w} worker(s) cmd/s (CPU)" for w in workers) + " | worker / floor | breach p50 / p99 |")
    print("|---" * (6 + len(workers)) + "|")
    for kind, f in figures.items():
        counts = " | ".join(f"{f[f'worker{w}']:,.0f} ({f[f'cpu{w}']:.0%})" for w in workers)
        print(f"| {kind} | {f['produced']:,.0f} | {f['raw']:,.0f} | {f['floor']:,.0f} | {counts} "
              f"| {f['floor_ratio']:.3f} | {f['p50']:.3f} s / {f['p99']:.3f} s |")
    if len(kinds) == 2:
        a, b = (figures[k] for k in kinds)
        w = workers[0]
        print(f"ratios {kinds[1]} / {kinds[0]}: worker {b[f'worker{w}'] / a[f'worker{w}']:.2f}, raw consumer "
              f"{b['raw'] / a['raw']:.2f}, Faust floor {b['floor'] / a['floor']:.2f}")


if __name__ == "__main__":
    main()

"""The SQL projector on both brokers, in one run (#20): the embedded Tansu and a single-node
Apache Kafka (KRaft, from infra/kafka/pom.xml). Prints its figures; no assertions.

1. Throughput: N events (tickets filed then acknowledged, envelopes decided by
   ``sla.ticket.decide`` as the worker decides them) already on the events topic, drained
   into a fresh PostgreSQL database by ``run_projector`` exactly as ``slaledger project``
   calls it (archive, hash chain, Merkle tree, signed tree heads with an operator key made
   for the run; ``follow=False``: it stops at the end of the topic). Next to it, in the same
   run, a raw kafka-python consumer (the projector's client, same batch size) reads the same
   records: the ratio is what projecting costs over reading.
2. Freshness: a worker (``slaledger worker``, store memory://, auth off) and a projector
   (``slaledger project`` with its /metrics) running on the topic; M tickets are filed
   through the worker's HTTP API, one at a time at a steady pace, in two phases of M: the
   time from the HTTP answer (201: the command accepted, its event written) until its row is
   in the ``tickets`` table (polled every 5 ms), then, for M more, until a /metrics scrape
   counts it among ``slaledger_open_tickets`` (scraped every 5 ms, timed at the scrape's
   answer): p50/p99. The two are not watched at once: a scrape every 5 ms keeps the
   projector's process busy and delayed the SQL figure it was not part of. A ticket is sent
   at its slot, or once the previous one is seen if that is later, after 5 unmeasured ones.

Reading the figures: 2 cores shared with whatever else runs, so they are noisy (ratios are
taken within one run). On Tansu a record arriving while the projector's fetch is parked
waits for it: kafka-python waits up to 500 ms, Tansu 0.6 answers an empty fetch after about
half of it (``streams.tansu.patch_faust_fetch_wait``), up to ~0.25 s more.

    .venv/bin/python bench/projector_bench.py [--events 50000] [--commands 300] [--rate 2] [--brokers tansu,kafka]
    .venv/bin/python bench/projector_bench.py --commands 0 --brokers kafka   # throughput only
    .venv/bin/python bench/projector_bench.py --rebuild 1000000 --brokers kafka

The events are produced straight onto the topic (``produce``: decided by the domain, sent in
large batches as the worker's principal), not through a worker, so 1,000,000 take minutes.
Each target gets one ``SUMMARY`` line: value, target, met or not.

3. ``--rebuild N``: N events on the topic, ``slaledger project --rebuild``'s code
   (``projections.rebuild``: shadow tables, the same ``Projection``, then the swap), timed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, create_engine, func, select, text

from projections import tree
from projections.migrate import create_schema
from projections.models import ARCHIVE
from projections.projector import run_projector
from projections.rebuild import rebuild
from sla.events import encode_event  # as the worker writes them
from sla.ticket import Command, CommandType, decide, fold
from slaledger.bootstrap import engine_for, head_signer
from slaledger.brokers.kafka_cluster import KafkaCluster, running_broker
from slaledger.brokers.process import free_port
from slaledger.devdb import fresh_database
from slaledger.logs import configure_logging
from slaledger.settings import Settings
from streams.kafka_acls import PROJECTOR, WORKER
from streams.kafka_security import ClientSecurity, client_options, configure
from streams.kafka_tools import partitions_of, producer
from streams.topics import EVENTS

FILE = {"kind": "assistance", "channel": "portal", "member": "m-001", "product": "ent", "subject": "bench"}


def envelopes(n: int) -> Iterator[tuple[bytes, bytes]]:
    """n event records (key, value): tickets filed, then acknowledged an hour later. The
    domain decides one ticket's two events (``sla.ticket.decide``, as the worker does); every
    ticket is a copy of those envelopes with its own ticket id, member and event ids (deciding
    each one took 1 ms per event on this loaded machine: 1,000,000 took longer than the run).
    A generator: 1,000,000 of them do not sit in memory."""
    proto, at = "P-00000000", datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    filed = decide(None, Command(CommandType.FILE, proto, "bench", {**FILE, "member": "m-000"}), at)
    acked = decide(fold(filed, proto), Command(CommandType.ACKNOWLEDGE, proto, "bench"), at + timedelta(hours=1))
    template = [encode_event(e) for e in filed + acked]
    ids = [str(e.event_id).encode() for e in filed + acked]
    for i in range(0, n, 2):
        tid = f"P-{i // 2:08d}".encode()
        fresh = [str(uuid.uuid4()).encode() for _ in ids]
        for value in template[:n - i]:
            value = value.replace(proto.encode(), tid).replace(b'"m-000"', f'"m-{i // 2 % 300:03d}"'.encode())
            for old, new in zip(ids, fresh, strict=True):
                value = value.replace(old, new)
            yield tid, value


def produce(broker: Any, n: int) -> None:
    """n events straight onto the events topic as the worker's principal, in large batches
    (not through a worker: 1,000,000 filings through the API took longer than the run)."""
    as_principal(broker, WORKER)
    t0 = time.perf_counter()
    kafka = producer(broker.bootstrap, embedded=False, linger_ms=20, batch_size=512 * 1024)
    for key, value in envelopes(n):
        kafka.send(EVENTS, key=key, value=value)
    kafka.flush()
    kafka.close()
    print(f"produced {n:,} events in {time.perf_counter() - t0:.1f} s", flush=True)


def verdict(what: str, value: str, target: str, met: bool) -> None:
    """The one summary line per target the lead reads."""
    print(f"SUMMARY {what}: {value} (target {target}): {'met' if met else 'NOT met'}", flush=True)


def as_principal(broker: Any, principal: str) -> None:
    """This process's kafka-python clients connect as ``principal`` from now on (Apache
    Kafka runs SASL_SSL with ACLs: only the worker writes events); plaintext on Tansu."""
    configure(broker.security(principal) if isinstance(broker, KafkaCluster) else ClientSecurity())


def raw_read(bootstrap: str, n: int) -> float:
    """records/s of a bare kafka-python consumer reading the first n records of the topic."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             max_poll_records=2000, **client_options())
    tps = partitions_of(consumer, EVENTS)
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    seen, t0 = 0, time.perf_counter()
    while seen < n:
        seen += sum(len(v) for v in consumer.poll(timeout_ms=200, max_records=2000).values())
    elapsed = time.perf_counter() - t0
    consumer.close()
    return seen / elapsed


def signing_key(workdir: Path) -> Path:
    subprocess.run([sys.executable, "-m", "slaledger.cli", "keys", "create", "--out", str(workdir / "keys")],
                   check=True, capture_output=True)
    return workdir / "keys" / "signing-key"


def throughput(kind: str, n: int, server: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, running_broker(kind, Path(tmp)) as broker, \
            fresh_database(server, "projector_bench_") as url:
        print(f"== {kind}: projector throughput", flush=True)
        produce(broker, n)
        as_principal(broker, PROJECTOR)
        raw = raw_read(broker.bootstrap, n)
        settings = Settings.from_env({}, broker_url=broker.url, database_url=url, embedded=broker.embedded,
                                     signing_key_file=str(signing_key(Path(tmp))))
        policy, engine = settings.policy(), engine_for(settings)
        create_schema(engine)
        t0 = time.perf_counter()
        applied = run_projector(engine, settings.bootstrap, policy, follow=False, heads=head_signer(settings, policy))
        elapsed = time.perf_counter() - t0
        with engine.connect() as conn:
            archived, leaves = conn.scalar(select(func.count()).select_from(ARCHIVE)), tree.tree_size(conn)
        engine.dispose()
        rate = applied / elapsed
        print(f"raw kafka-python consumer, same {n:,} records: {raw:,.0f} records/s")
        print(f"projector (archive, hash chain, Merkle tree, signed heads): {applied:,} events in {elapsed:.1f} s = "
              f"{rate:,.0f} events/s; archive {archived:,} rows, tree {leaves:,} leaves")
        print(f"ratio projector / raw consumer: {rate / raw:.3f}", flush=True)
        verdict(f"projector / raw reader, {kind}, {n:,} events", f"{rate / raw:.3f}", ">= 0.3", rate / raw >= 0.3)
        return {"raw": raw, "projector": rate}


def rebuild_time(kind: str, n: int, server: str) -> float:
    """``slaledger project --rebuild`` of n events (what ``rebuild`` does: shadow tables,
    then the swap), timed from its start to the swap's commit."""
    with tempfile.TemporaryDirectory() as tmp, running_broker(kind, Path(tmp)) as broker, \
            fresh_database(server, "projector_bench_") as url:
        print(f"== {kind}: --rebuild of {n:,} events", flush=True)
        produce(broker, n)
        as_principal(broker, PROJECTOR)  # the migration job's in production; reading the topic is the same
        settings = Settings.from_env({}, broker_url=broker.url, database_url=url, embedded=broker.embedded)
        engine = engine_for(settings)
        create_schema(engine)
        t0 = time.perf_counter()
        rebuilt = rebuild(engine, settings.bootstrap, settings.policy())
        elapsed = time.perf_counter() - t0
        with engine.connect() as conn:
            tickets = conn.scalar(text("SELECT count(*) FROM tickets"))
        engine.dispose()
        print(f"--rebuild: {rebuilt:,} events in {elapsed:.1f} s ({rebuilt / elapsed:,.0f} events/s), "
              f"{tickets:,} tickets (target <= 300 s for 1,000,000)", flush=True)
        scaled = "" if n == 1_000_000 else f", {elapsed * 1_000_000 / n:.0f} s scaled to 1,000,000"
        verdict(f"--rebuild of {n:,} events, {kind}", f"{elapsed:.1f} s{scaled}",
                "<= 300 s for 1,000,000", elapsed * 1_000_000 / n <= 300)
        return elapsed


def post(url: str, body: Any) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read())


def open_tickets(metrics_url: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        scrape = response.read().decode()
    return sum(s.value for family in text_string_to_metric_families(scrape)
               if family.name == "slaledger_open_tickets" for s in family.samples)


def wait_until(seen: Callable[[], bool], since: float, what: str, timeout: float = 30.0) -> float:
    """Seconds from ``since`` until ``seen()`` is true (checked every 5 ms)."""
    while not seen():
        if time.perf_counter() - since > timeout:
            raise TimeoutError(f"{what} not seen after {timeout:.0f} s")
        time.sleep(0.005)
    return time.perf_counter() - since


def in_sql(engine: Engine, tid: str) -> bool:
    with engine.connect() as conn:
        return conn.execute(text("SELECT 1 FROM tickets WHERE ticket_id = :t"), {"t": tid}).first() is not None


def start(name: str, args: list[str], env: dict[str, str], workdir: Path) -> subprocess.Popen[bytes]:
    log = open(workdir / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
    return subprocess.Popen([sys.executable, "-m", "slaledger.cli", *args], env={**os.environ, **env},
                            stdout=log, stderr=log)


def percentiles(xs: list[float]) -> tuple[float, float, float]:
    xs = sorted(xs)
    return statistics.median(xs), xs[int(0.99 * (len(xs) - 1))], xs[-1]


def freshness(kind: str, m: int, rate: float, server: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, running_broker(kind, Path(tmp)) as broker, \
            fresh_database(server, "projector_bench_") as url:
        print(f"== {kind}: freshness", flush=True)
        workdir, web, metrics = Path(tmp), free_port(), free_port()
        common = {"SLALEDGER_BROKER_URL": broker.url, "SLALEDGER_EMBEDDED": "1" if broker.embedded else "0",
                  "SLALEDGER_LOG_LEVEL": "warning"}
        procs = {"worker": start("worker", ["worker"], {  # as tests/integration/conftest.py's Worker
            **common, "SLALEDGER_WEB_PORT": str(web), "SLALEDGER_DATA_DIR": str(workdir / "w1"),
            "SLALEDGER_SESSION_TIMEOUT": "4", "SLALEDGER_HEARTBEAT_INTERVAL": "0.5",
            "SLALEDGER_REBALANCE_TIMEOUT": "2", "SLALEDGER_COMMIT_INTERVAL": "1", "SLALEDGER_TIMER_INTERVAL": "0.2",
            "SLALEDGER_STORE_URL": "memory://", "SLALEDGER_AUTH": "off", **broker.client_env(WORKER)}, workdir),
                 "projector": start("projector", ["project"], {
            **common, "SLALEDGER_DATABASE_URL": url, "SLALEDGER_METRICS_PORT": str(metrics),
            "SLALEDGER_AUTH": "off",  # its /metrics, like the worker's API, open on loopback for the bench
            "SLALEDGER_SIGNING_KEY_FILE": str(signing_key(workdir)), **broker.client_env(PROJECTOR)}, workdir)}
        engine = create_engine(url)
        api, metrics_url = f"http://127.0.0.1:{web}/api/tickets", f"http://127.0.0.1:{metrics}/metrics"

        def ready() -> bool:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}: see {workdir}/{name}.log")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{web}/readyz", timeout=2) as answer:
                    return bool(json.loads(answer.read())["partitions"]) and open_tickets(metrics_url) >= 0
            except OSError:
                return False

        try:
            wait_until(ready, time.perf_counter(), "worker and projector ready", timeout=120)
            # Two phases, m tickets each: the row in SQL watched alone, then the /metrics
            # count. Scraping every 5 ms keeps the projector's process busy answering scrapes
            # (each one reads the open queue), which is no part of the way to SQL (Prometheus
            # scrapes every 15 s): watched together, the SQL figure measured the bench itself.
            to_sql, to_metrics, shown = [], [], open_tickets(metrics_url)
            warmup = 5
            for phase, figures in (("sql", to_sql), ("metrics", to_metrics)):
                began = time.perf_counter()
                for i in range(-warmup, m):
                    time.sleep(max(0.0, began + max(0, i) / rate - time.perf_counter()) if i >= 0 else 0.2)
                    began = time.perf_counter() if i == 0 else began
                    status, body = post(api, FILE)
                    answered, shown, tid = time.perf_counter(), shown + 1, body["ticket"]["id"]
                    if status != 201:
                        raise RuntimeError(f"filing answered {status}: {body}")
                    if phase == "sql":
                        seen = wait_until(lambda tid=tid: in_sql(engine, tid), answered, f"{tid} in SQL")
                    else:
                        seen = wait_until(lambda shown=shown: open_tickets(metrics_url) >= shown, answered,
                                          f"{tid} in /metrics")
                    if i >= 0:
                        figures.append(seen)
                pace = m / (time.perf_counter() - began)
        finally:
            engine.dispose()
            for proc in procs.values():
                proc.send_signal(signal.SIGTERM)
            for proc in procs.values():
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
        (s50, s99, smax), (m50, m99, mmax) = percentiles(to_sql), percentiles(to_metrics)
        print(f"{m} tickets filed through the API, one at a time (asked {rate:g}/s, held {pace:.2f}/s)")
        print(f"HTTP answer -> row in SQL:       p50 {s50:.3f} s, p99 {s99:.3f} s, max {smax:.3f} s")
        print(f"HTTP answer -> counted /metrics: p50 {m50:.3f} s, p99 {m99:.3f} s, max {mmax:.3f} s", flush=True)
        verdict(f"freshness, answer -> row in SQL p99, {kind}, {m} tickets at {rate:g}/s", f"{s99:.3f} s",
                "<= 0.5 s", s99 <= 0.5)
        return {"sql50": s50, "sql99": s99, "m50": m50, "m99": m99}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--commands", type=int, default=300, help="tickets filed to time freshness (0: skip it)")
    parser.add_argument("--rate", type=float, default=2.0, help="tickets filed per second (at most)")
    parser.add_argument("--brokers", default="tansu,kafka", help="comma-separated: tansu, kafka")
    parser.add_argument("--rebuild", type=int, default=0, metavar="EVENTS",
                        help="instead: time --rebuild of this many events (on the first broker listed)")
    parser.add_argument("--server", default="postgresql+psycopg://postgres@127.0.0.1:5432/")
    args = parser.parse_args()
    configure_logging("console", "warning")
    logging.getLogger("kafka").setLevel(logging.ERROR)  # kafka-python's "blocking the event loop" notes
    kinds = args.brokers.split(",")
    if args.rebuild:
        rebuild_time(kinds[0], args.rebuild, args.server)
        return
    if not args.commands:  # throughput only
        figures = {kind: throughput(kind, args.events, args.server) for kind in kinds}
        for kind, f in figures.items():
            print(f"| {kind} | {f['raw']:,.0f} | {f['projector']:,.0f} | {f['projector'] / f['raw']:.3f} |")
        return
    figures = {kind: {**throughput(kind, args.events, args.server),
                      **freshness(kind, args.commands, args.rate, args.server)} for kind in kinds}
    print(f"\n| broker | raw kafka-python rec/s | projector events/s ({args.events:,}) | ratio "
          "| answer -> SQL p50 / p99 | answer -> /metrics p50 / p99 |")
    print("|---|---|---|---|---|---|")
    for kind, f in figures.items():
        print(f"| {kind} | {f['raw']:,.0f} | {f['projector']:,.0f} | {f['projector'] / f['raw']:.3f} "
              f"| {f['sql50']:.3f} s / {f['sql99']:.3f} s | {f['m50']:.3f} s / {f['m99']:.3f} s |")


if __name__ == "__main__":
    main()

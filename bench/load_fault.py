"""Load and fault suite (issue 7): N concurrent HTTP clients file and work tickets for M
seconds while processes are killed with SIGKILL and restarted; afterwards every accepted
command is looked up in the log, the archive and the projection. Prints its figures and
exits 1 when an accepted command was lost or an event applied twice, when the projection
differs from a replay, or when an SLA deadline got no breach or more than one.

    .venv/bin/python bench/load_fault.py --clients 8 --seconds 60 --mode two-workers
    .venv/bin/python bench/load_fault.py --clients 8 --seconds 60 --mode dev

Modes (everything on 127.0.0.1, free ports, a temporary directory; stops by itself).
``--broker tansu|kafka`` picks the engine of ``two-workers`` and ``dev`` (Tansu, or a
single-node Apache Kafka):

- ``two-workers``: a Tansu broker, two ``slaledger worker`` processes and one
  ``slaledger project``; at M/3 one worker is SIGKILLed, at 2M/3 the projector; each is
  restarted after ``--restart-delay`` seconds. Clients spread over both workers and fail
  over to the other one when theirs refuses connections.
- ``dev``: ``slaledger dev --broker …`` (worker, API and projector in one process) against a
  broker process of its own, so the log survives; the dev process is SIGKILLed at M/3 and
  at 2M/3 and restarted.
- ``kafka-ha``: a three-node Apache Kafka cluster (KRaft, replication 3,
  ``min.insync.replicas=2``, unclean leader election off), two workers and the projector.
  At M/5 and 2M/5 the node leading most partitions of the commands and events topics is
  SIGKILLed and restarted after ``--broker-restart-delay`` seconds; at 3M/5 the whole cluster
  is stopped and started again on its data (each fault at least 3 s after the previous one
  recovered; the verdict fails if a fault did not start while the clients were working).
  Reports the p99 latency of commands answered within 30 s of a fault and the longest
  time without an accepted answer.
- ``dev-embedded``: plain ``slaledger dev`` with its in-memory embedded broker; each fault
  kills the dev process *and* its broker (a machine crash). The restart restores the SQL
  archive into a new broker, so what the projector had not archived yet is gone: this
  mode measures that window (nothing guarantees it is empty: it may report losses).

The accounting. Every command carries an ``Idempotency-Key`` of its own: a request whose
answer never came (connection cut by a kill, 504 after the command timeout) is sent again
with the same key until it is answered, as a client of the API should; the retry is the
same command, answered again (``replayed``) if it was applied. Only a request still without
an answer when the client gives up (30 s after the run) counts as *not answered*: it may
or may not have been applied, and the check allows either (but never counts it as
accepted). Requests that provably sent nothing (connection refused, 503 "service
starting") are sent again too. *Accepted* means a 2xx answer, which names the
event recording the command. Checks:

- lost: an accepted command whose event is missing from the events topic or the archive;
- duplicates: an event archived twice, an event id answered for two commands, a command
  answered with other than one event, an SLA deadline with more than one breach event
  (records re-sent with an event id already in the log are counted apart: at-least-once
  delivery, dropped by every consumer);
- the SQL projection equals a replay of the archive and of the topic
  (``projections.audit.replay.verify_projection``); the worker's own state (``GET`` of every
  ticket) has the version the log gives; no SLA fact is due but missing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from decisions import check_decisions  # bench/ (this script's directory)
from partition_faults import FAULTS, PartitionNet, inject_partitions
from sqlalchemy import Engine, create_engine, func, select, text

from projections.audit.kafka_source import kafka_records
from projections.audit.replay import verify_projection
from projections.audit.sources import archive_records
from projections.migrate import create_schema
from projections.models import ARCHIVE
from projections.projection import checkpoints
from projections.tokens import ensure_token
from sla.clock import evaluate
from sla.events import CHANNELS, KINDS, Event, EventType, decode_event
from sla.facts import due_facts
from sla.policy import PolicyError
from sla.ticket import Ticket
from slaledger.brokers.embedded import EmbeddedBroker
from slaledger.brokers.kafka_cluster import KafkaCluster, provision
from slaledger.brokers.process import die_with_parent, free_port
from slaledger.fixtures import short_intake_policy
from slaledger.members import EXAMPLE_FILE, load_members
from slaledger.settings import load_policy
from streams.kafka_acls import ADMIN, PROJECTOR, WORKER
from streams.kafka_tools import partitions_of, read_topic, true_end_offsets
from streams.topics import COMMANDS, EVENTS, is_tree_head

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
FACT_TYPES = {EventType.SLA_WARNING_RAISED, EventType.SLA_BREACHED, EventType.SLA_BREACH_RETRACTED}
# members `slaledger dev` knows (it checks filings against the example directory); a worker
# without a directory accepts them as any other
MEMBERS = sorted(load_members(str(EXAMPLE_FILE)))
# Next action by ticket status, with weights: a realistic mix that visits every state.
ACTIONS: dict[str, list[tuple[str, float, dict[str, Any]]]] = {
    "open": [("acknowledge", 1.0, {"note": "Pris en compte"})],
    "in_progress": [("inform", 0.3, {"message": "Point d'étape"}),
                    ("wait-for-customer", 0.2, {"reason": "Précisions demandées"}),
                    ("resolve", 0.5, {"resolution": "Corrigé"})],
    "waiting_for_customer": [("customer-response", 0.6, {"elements_complete": True, "message": "Voici"}),
                             ("inform", 0.2, {"message": "Relance"}),
                             ("resolve", 0.2, {"resolution": "Sans réponse"})],
    "resolved": [("close", 0.8, {}), ("reopen", 0.2, {"reason": "Le problème revient"})],
}
PARK_RATIO = 0.15  # filed tickets left unacknowledged past their deadline: the breaches


# --- processes ------------------------------------------------------------------------------

class Proc:
    """One slaledger process (or its replacement after a kill), logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], workdir: Path,
                 url: str | None = None, prefix: list[str] | None = None) -> None:
        self.name, self.argv, self.env, self.url = name, argv, env, url
        self.prefix = prefix or []  # `ip netns exec NS` for the partition suite
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen([*self.prefix, sys.executable, "-m", "slaledger.cli", *self.argv],
                                            env=self.env, stdout=out, stderr=out, start_new_session=True,
                                            # a driver killed (a test's timeout) leaves no worker running
                                            preexec_fn=die_with_parent)

    def children(self) -> list[int]:
        """Processes this one started (the embedded broker of ``slaledger dev``)."""
        if self.process is None:
            return []
        out = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields_ = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields_[1]) == self.process.pid:
                out.append(int(stat.parent.name))
        return out

    def kill(self, with_children: bool = False) -> None:
        assert self.process is not None
        doomed = self.children() if with_children else []
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def signal(self, signum: int) -> None:
        """SIGSTOP / SIGCONT: a pause the process does not see coming (a GC, a VM freeze)."""
        assert self.process is not None
        self.process.send_signal(signum)

    def fenced(self) -> int:
        """Writes the broker refused as fenced (a zombie's), as its log counts them so far."""
        if not self.log_path.exists():
            return 0
        return self.log_path.read_text(errors="replace").count("writes fenced")

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""


async def wait_ready(session: aiohttp.ClientSession, proc: Proc, timeout: float = 120) -> float:
    """Seconds until ``/readyz`` answers 200 (tables recovered, backlog read)."""
    t0 = time.monotonic()
    last = "no answer"
    while time.monotonic() - t0 < timeout:
        assert proc.process is not None
        if proc.process.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.process.returncode}:\n{proc.tail()}")
        try:
            async with session.get(f"{proc.url}/readyz", timeout=aiohttp.ClientTimeout(total=2)) as response:
                if response.status == 200:
                    return time.monotonic() - t0
                last = f"{response.status} {await response.text()}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            last = f"no answer ({exc!r})"
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{proc.name} not ready after {timeout:.0f} s (/readyz: {last}):\n{proc.tail()}")


# --- clients ---------------------------------------------------------------------------------

@dataclass
class Accepted:
    done_at: float  # seconds since the start of the load
    latency: float
    command: str
    ticket_id: str
    events: list[str]
    replayed: bool


@dataclass
class Tally:
    accepted: list[Accepted] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)  # HTTP status (or "no answer") per command
    not_answered: int = 0  # sent, never answered even after retries: may or may not have been applied
    resent: int = 0  # provably not sent (refused, 503) and sent again
    retried: int = 0  # sent, no answer (cut, 504), sent again with the same idempotency key
    filed: list[str] = field(default_factory=list)


class Unanswered(Exception):
    """The request may have reached the API, but no answer came."""


class Client:
    def __init__(self, n: int, urls: list[str], token: str, session: aiohttp.ClientSession, tally: Tally,
                 t0: float, stop_at: float, sla_seconds: float, seed: int) -> None:
        self.n, self.urls, self.session, self.tally = n, urls, session, tally
        self.home = n % len(urls)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.t0, self.stop_at, self.sla_seconds = t0, stop_at, sla_seconds
        self.rng = random.Random(seed * 1000 + n)
        self.parked: list[tuple[float, str]] = []

    async def call(self, method: str, path: str, body: Any = None, key: str | None = None) -> tuple[int, Any]:
        """One request; retried (on the other worker too) only while nothing can have been sent."""
        headers = {**self.headers, "Idempotency-Key": key} if key else self.headers
        while True:
            url = self.urls[self.home]
            try:
                async with self.session.request(method, url + path, json=body, headers=headers,
                                                timeout=aiohttp.ClientTimeout(total=20)) as response:
                    raw = await response.read()
                    if response.status != 503:
                        try:
                            return response.status, json.loads(raw)
                        except ValueError:
                            return response.status, raw.decode("utf-8", "replace")
            except aiohttp.ClientConnectorError:
                pass  # refused: nothing sent
            except (aiohttp.ClientError, TimeoutError) as exc:
                # cut mid-request (a stale keep-alive connection to a killed worker included)
                raise Unanswered(str(exc)) from None
            if time.monotonic() > self.stop_at + 30:  # (the end moves while faults are injected)
                raise Unanswered("no worker accepted the connection")
            self.tally.resent += 1
            self.home = (self.home + 1) % len(self.urls)
            await asyncio.sleep(0.2)

    async def command(self, name: str, path: str, body: dict[str, Any]) -> tuple[int | None, dict[str, Any]]:
        """A command: (HTTP status, answer); status None when no answer came. Sent again
        with its idempotency key while no answer comes (latency counts from the first send)."""
        started = time.monotonic()
        key = uuid.uuid4().hex
        while True:
            try:
                status, payload = await self.call("POST", path, body, key)
            except Unanswered:
                status, payload = None, {}
            self.tally.answers["no answer" if status is None else str(status)] += 1
            if status not in (None, 504):
                break
            if time.monotonic() > self.stop_at + 30:
                self.tally.not_answered += 1
                return None, {}
            self.tally.retried += 1
            self.home = (self.home + 1) % len(self.urls)
            await asyncio.sleep(0.2)
        if status not in (200, 201):
            return status, {}
        now = time.monotonic()
        ticket_id = payload["ticket"]["id"]
        self.tally.accepted.append(Accepted(now - self.t0, now - started, name, ticket_id, list(payload["events"]),
                                            bool(payload.get("replayed"))))
        return status, dict(payload)

    async def status_of(self, ticket_id: str) -> str | None:
        try:
            status, payload = await self.call("GET", f"/api/tickets/{ticket_id}")
        except Unanswered:
            return None
        return str(payload["status"]) if status == 200 else None

    def body(self) -> dict[str, Any]:
        product = "local-trust-mpe" if self.rng.random() < 0.05 else self.rng.choice(["ent", "parapheur", "messagerie"])
        return {"kind": self.rng.choice(KINDS), "channel": self.rng.choice(CHANNELS),
                "member": self.rng.choice(MEMBERS), "product": product,
                "subject": f"Charge {self.n}-{uuid.uuid4().hex[:6]}"}

    async def run(self) -> None:
        while time.monotonic() < self.stop_at:
            if self.parked and self.parked[0][0] <= time.monotonic():
                _, ticket_id = self.parked.pop(0)
                await self.work(ticket_id, "open", late=True)
                continue
            _, answer = await self.command("file", "/api/tickets", self.body())
            if answer:
                ticket_id = answer["ticket"]["id"]
                self.tally.filed.append(ticket_id)
                await self.work(ticket_id, answer["ticket"]["status"])

    async def work(self, ticket_id: str, status: str | None, late: bool = False) -> None:
        for _ in range(8):
            if status is None or status not in ACTIONS or time.monotonic() >= self.stop_at:
                return
            if status == "open" and not late and self.rng.random() < PARK_RATIO:
                self.parked.append((time.monotonic() + self.sla_seconds + 1, ticket_id))
                return
            choices = ACTIONS[status]
            action, _, body = self.rng.choices(choices, weights=[w for _, w, _ in choices])[0]
            code, answer = await self.command(action, f"/api/tickets/{ticket_id}/{action}", body)
            if answer:
                status = answer["ticket"]["status"]
            elif code == 404:
                return  # lost with a crashed broker (dev-embedded): give it up
            else:  # refused (stale view) or unanswered: ask where the ticket stands
                status = await self.status_of(ticket_id)


# --- the run ---------------------------------------------------------------------------------

@dataclass
class Fault:
    at: float
    what: str
    restarted_after: float
    ready_after: float | None = None
    fenced: int | None = None  # writes the broker refused as a zombie's (partition suite)
    figures: dict[str, float] = field(default_factory=dict)  # of the commands answered until the next fault


class Rig:
    """The processes of one mode, their database and broker."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args, self.workdir = args, workdir
        self.token = "slt_load_" + secrets.token_urlsafe(18)
        self.created_db: str | None = None
        self.broker: EmbeddedBroker | KafkaCluster | None = None
        self.workers: list[Proc] = []
        self.projector: Proc | None = None
        self.net: PartitionNet | None = None
        self.database = self._database()
        self.engine: Engine = create_engine(self.database, pool_pre_ping=True)
        try:
            self._prepare()
        except BaseException:
            self.stop()  # no database or broker left behind
            raise

    def _prepare(self) -> None:
        args, workdir = self.args, self.workdir
        self.policy_file = workdir / "policy.toml"
        self.policy_file.write_text(short_intake_policy(args.sla_seconds, policy_id="load-1",
                                                        title="Prise en compte (charge)"))
        if args.mode == "partitions":
            self.net = PartitionNet()
            self.broker = self.net.cluster(workdir / "kafka").start()
        elif args.mode == "kafka-ha":
            self.broker = KafkaCluster(workdir / "kafka", 3).start()
        elif args.mode != "dev-embedded" and args.broker == "kafka":
            self.broker = KafkaCluster(workdir / "kafka", 1).start()
        elif args.mode != "dev-embedded":
            self.broker = EmbeddedBroker(log_path=workdir / "tansu.log").start()
        if self.broker is not None:  # topics and ACLs; this process is the cluster's admin
            provision(self.broker, args.partitions)
        embedded = "1" if self.broker is not None and self.broker.embedded else "0"
        create_schema(self.engine)
        ensure_token(self.engine, self.token, "agent", "load")
        base = {**os.environ, "SLALEDGER_DATABASE_URL": self.database, "SLALEDGER_POLICY_FILE": str(self.policy_file),
                "SLALEDGER_LOG_LEVEL": args.log_level, "SLALEDGER_TIMER_INTERVAL": "0.2",
                "SLALEDGER_PARTITIONS": str(args.partitions), "SLALEDGER_DEV_TOKEN": self.token}
        if args.mode in ("two-workers", "kafka-ha", "partitions"):
            assert self.broker is not None
            net = self.net
            if net is not None:  # in namespaces: PostgreSQL through the relay on the bridge
                base["SLALEDGER_DATABASE_URL"] = net.database_url(self.database)
            for i, name in enumerate(("worker-a", "worker-b")):
                port = free_port()
                host = net.workers[i].address if net else "127.0.0.1"
                env = {**base, "SLALEDGER_BROKER_URL": self.broker.url, "SLALEDGER_WEB_PORT": str(port),
                       "SLALEDGER_WEB_HOST": host,
                       "SLALEDGER_DATA_DIR": str(workdir / name), "SLALEDGER_EMBEDDED": embedded,
                       "SLALEDGER_SESSION_TIMEOUT": "4", "SLALEDGER_HEARTBEAT_INTERVAL": "0.5",
                       "SLALEDGER_REBALANCE_TIMEOUT": "2", "SLALEDGER_COMMIT_INTERVAL": "1",
                       **self.broker.client_env(WORKER)}
                self.workers.append(Proc(name, ["worker"], env, workdir, f"http://{host}:{port}",
                                         net.workers[i].prefix if net else None))
            self.projector = Proc("projector", ["project", "--metrics-port", "0"],
                                  {**base, "SLALEDGER_BROKER_URL": self.broker.url,
                                   **self.broker.client_env(PROJECTOR)}, workdir, None,
                                  net.projector.prefix if net else None)
        else:
            port = free_port()
            argv = ["dev", "--port", str(port), "--data-dir", str(workdir / "dev")]
            env = dict(base)
            if self.broker is not None:
                argv += ["--broker", self.broker.url]
                # one process in every role (worker, projector, topic creation): the admin
                env.update(SLALEDGER_EMBEDDED=embedded, **self.broker.client_env(ADMIN))
            self.workers.append(Proc("dev", argv, env, workdir, f"http://127.0.0.1:{port}"))

    def _database(self) -> str:
        if self.args.database == "sqlite":
            return f"sqlite:///{self.workdir / 'slaledger.db'}"
        if self.args.database:
            return str(self.args.database)
        name = f"slaledger_load_{uuid.uuid4().hex[:10]}"
        admin = create_engine(self.args.pg_admin, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        self.created_db = name
        return self.args.pg_admin.rsplit("/", 1)[0] + "/" + name

    @property
    def bootstrap(self) -> str:
        """The broker now holding the log (dev-embedded: the one of the last dev start)."""
        if self.broker is not None:
            return self.broker.bootstrap
        found = re.findall(r"broker (127\.0\.0\.1:\d+)", self.workers[0].log_path.read_text(errors="replace"))
        return found[-1]

    def start(self) -> None:
        for proc in [*self.workers, *([self.projector] if self.projector else [])]:
            proc.start()

    def stop(self) -> None:
        for proc in [*self.workers, *([self.projector] if self.projector else [])]:
            children = proc.children()
            proc.stop()
            for pid in children:  # dev-embedded: its broker, if dev did not stop it
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.broker is not None:
            self.broker.stop()
        if self.net is not None:
            self.net.close()
        self.engine.dispose()
        if self.created_db and not self.args.keep:
            admin = create_engine(self.args.pg_admin, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.created_db}" WITH (FORCE)'))
            admin.dispose()


def leading_node(cluster: KafkaCluster) -> int:
    """The node that leads most partitions of the commands and events topics."""
    from kafka.admin import KafkaAdminClient

    from streams.kafka_security import client_options

    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap, client_id="slaledger-load-fault",
                             **client_options())
    try:
        described = admin.describe_topics([COMMANDS, EVENTS])
    finally:
        admin.close()
    leaders = Counter(p["leader_id"] for topic in described for p in topic["partitions"] if p["leader_id"] >= 0)
    return leaders.most_common(1)[0][0]


async def inject_broker_faults(rig: Rig, t0: float, seconds: float, delay: float, faults: list[Fault]) -> None:
    """kafka-ha: SIGKILL the leading node at M/5 and 2M/5, restart it ``delay`` s later; stop
    the whole cluster at 3M/5 and start it again ``delay`` s later. A fault starts 3 s after
    the previous one has recovered at the earliest (a restart takes seconds on 2 cores)."""
    cluster = rig.broker
    assert isinstance(cluster, KafkaCluster)
    recovered = t0
    for i in (1, 2, 3):
        await asyncio.sleep(max(0.0, t0 + i * seconds / 5 - time.monotonic(), recovered + 3 - time.monotonic()))
        at = time.monotonic() - t0
        if i < 3:
            node = await asyncio.to_thread(leading_node, cluster)
            cluster.kill_node(node)
            await asyncio.sleep(delay)
            started = time.monotonic()
            await asyncio.to_thread(cluster.start_node, node)
            what = f"SIGKILL broker leading commands/events (node {node})"
        else:
            await asyncio.to_thread(cluster.stop)
            await asyncio.sleep(delay)
            started = time.monotonic()
            await asyncio.to_thread(cluster.start)
            what = "stop whole cluster (data on disk)"
        recovered = time.monotonic()
        faults.append(Fault(at, what, delay, round(recovered - started, 1)))


def hold_on(clients: list[Client], stop_at: float) -> None:
    """The faults are over (a restart can push the last one past the planned end): the load
    stops at the planned end, or 5 s after the last recovery, so every fault hits a working
    pipeline and the pipeline is seen working after it."""
    for client in clients:
        client.stop_at = max(stop_at, time.monotonic() + 5)


async def inject(rig: Rig, session: aiohttp.ClientSession, t0: float, seconds: float, delay: float,
                 faults: list[Fault]) -> None:
    """SIGKILL, wait, restart: a worker at M/3 and the projector at 2M/3 (dev modes: the dev
    process both times, its broker with it in dev-embedded; kafka-ha: brokers)."""
    if rig.args.mode == "kafka-ha":
        await inject_broker_faults(rig, t0, seconds, rig.args.broker_restart_delay, faults)
        return
    if rig.net is not None:
        assert isinstance(rig.broker, KafkaCluster)

        async def recovered() -> None:
            await asyncio.gather(*(wait_ready(session, w) for w in rig.workers))

        done = await inject_partitions(rig.net, rig.broker, rig.workers, rig.args.faults, t0, rig.args.fault_hold,
                                       recovered)
        faults.extend(Fault(**f) for f in done)
        return
    if rig.projector is not None:
        plan = [(rig.workers[0], "worker"), (rig.projector, "projector")]
    else:
        plan = [(rig.workers[0], "dev process"), (rig.workers[0], "dev process")]
    whole = rig.args.mode == "dev-embedded"
    for i, (proc, what) in enumerate(plan, start=1):
        await asyncio.sleep(max(0.0, t0 + i * seconds / 3 - time.monotonic()))
        at = time.monotonic() - t0
        proc.kill(with_children=whole)
        await asyncio.sleep(delay)
        proc.start()
        fault = Fault(at, f"SIGKILL {what}{' and its broker' if whole else ''} ({proc.name})", delay)
        faults.append(fault)
        if proc.url:
            fault.ready_after = round(await wait_ready(session, proc), 1)


def end_offsets(bootstrap: str) -> dict[int, int]:
    from kafka import KafkaConsumer

    from streams.kafka_security import client_options

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             **client_options())
    try:
        tps = partitions_of(consumer, EVENTS)
        consumer.assign(tps)
        return {tp.partition: end for tp, end in true_end_offsets(consumer, tps).items()}
    finally:
        consumer.close()


def projected_to_end(bootstrap: str, done: dict[int, int], ends: dict[int, int]) -> bool:
    """The projector has checkpointed every committed event up to ``ends``. With a fenced
    (transactional) worker, a partition ends with a transaction's marker and may hold aborted
    batches, neither of them an event: what lies beyond the checkpoint is read committed, and
    must hold no record."""
    behind = [p for p, end in ends.items() if end > 0 and done.get(p, -1) != end - 1]
    if not behind:
        return True
    from kafka import KafkaConsumer, TopicPartition

    from streams.kafka_security import client_options

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             isolation_level="read_committed", **client_options())
    try:
        tps = [TopicPartition(EVENTS, p) for p in behind]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, done.get(tp.partition, -1) + 1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if any(consumer.poll(timeout_ms=200).values()):
                return False  # a committed event the projector has not checkpointed
            if all(consumer.position(tp) >= ends[tp.partition] for tp in tps):
                return True
        return False  # an open transaction holds the stable end below the end
    finally:
        consumer.close()


async def settle(rig: Rig, timeout: float = 180) -> float:
    """Wait until the events topic stops growing and the projector has checkpointed its end."""
    t0 = time.monotonic()
    previous: dict[int, int] | None = None
    quiet = 0
    while time.monotonic() - t0 < timeout:
        ends = await asyncio.to_thread(end_offsets, rig.bootstrap)
        done = await asyncio.to_thread(checkpoints, rig.engine)
        projected = await asyncio.to_thread(projected_to_end, rig.bootstrap, done, ends)
        # quiet for 3 s: an unanswered command still queued (rebalance, gap repair) has landed
        quiet = quiet + 1 if projected and ends == previous else 0
        if quiet >= 3:
            return time.monotonic() - t0
        previous = ends
        await asyncio.sleep(1.0)
    raise TimeoutError("the pipeline did not settle")


async def worker_state(session: aiohttp.ClientSession, url: str, token: str, tickets: list[str]) -> dict[str, int]:
    """Each ticket's version as the worker holds it (its Faust table, not SQL)."""
    out: dict[str, int] = {}
    gate = asyncio.Semaphore(8)
    headers = {"Authorization": f"Bearer {token}"}

    async def one(ticket_id: str) -> None:
        # a worker that rejoined after a fault may still recover a partition (503, or a 404 from
        # an owner whose table is not back yet): ask again for up to ~30 s before calling the
        # ticket unreadable
        async with gate:
            for _ in range(60):
                try:
                    async with session.get(f"{url}/api/tickets/{ticket_id}", headers=headers,
                                           timeout=aiohttp.ClientTimeout(total=10)) as response:
                        if response.status == 200:
                            out[ticket_id] = int((await response.json())["version"])
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.5)

    await asyncio.gather(*(one(t) for t in tickets))
    return out


def verify(rig: Rig, tally: Tally, versions: dict[str, int]) -> dict[str, Any]:
    policy = load_policy(rig.policy_file)
    # the topic: every record, then each event once (first record wins, as for every consumer)
    records = 0
    first: dict[str, bytes] = {}
    resent_same = resent_other = 0
    events: dict[str, Event] = {}
    for record in read_topic(rig.bootstrap, EVENTS, timeout=600):
        if is_tree_head(record.key):  # a signed tree head the projector published (dev signs them)
            continue
        records += 1
        event = decode_event(record.value)
        eid = str(event.event_id)
        if eid in first:
            resent_same += first[eid] == record.value
            resent_other += first[eid] != record.value
            continue
        first[eid] = record.value
        events[eid] = event
    with rig.engine.connect() as conn:
        archived = Counter(conn.scalars(select(ARCHIVE.c.event_id)))
        archive_rows = int(conn.scalar(select(func.count()).select_from(ARCHIVE)) or 0)
        archived_facts = [decode_event(e.encode()) for e in conn.scalars(
            select(ARCHIVE.c.envelope).where(ARCHIVE.c.type == str(EventType.SLA_BREACHED)))]

    answered = Counter(e for a in tally.accepted for e in a.events)
    accepted_ids = set(answered)
    missing_topic = accepted_ids - set(events)
    missing_archive = accepted_ids - set(archived)
    no_event = sum(1 for a in tally.accepted if not a.events)
    lost = len(missing_topic | missing_archive) + no_event

    breaches: dict[tuple[str, str, datetime], set[str]] = defaultdict(set)
    for eid, event in events.items():
        if event.type is EventType.SLA_BREACHED:
            breaches[(event.ticket_id, event.payload["sla"], event.payload["deadline"])].add(eid)
    archived_breaches: Counter[tuple[str, str, datetime]] = Counter(
        (e.ticket_id, e.payload["sla"], e.payload["deadline"]) for e in archived_facts)
    dup = {
        "archived_twice": sum(n - 1 for n in archived.values() if n > 1),
        "event_answered_twice": sum(n - 1 for n in answered.values() if n > 1),
        "command_with_several_events": sum(1 for a in tally.accepted if len(a.events) > 1),
        "deadline_with_several_breaches": sum(1 for ids in breaches.values() if len(ids) > 1)
        + sum(1 for n in archived_breaches.values() if n > 1),
    }
    # commands applied without an answer (allowed: at most the unanswered requests)
    command_events = {eid for eid, e in events.items() if e.type not in FACT_TYPES}
    applied_unanswered = len(command_events - accepted_ids)

    # replay from the topic: the worker's state and the SLA facts due
    tickets: dict[str, Ticket] = {}
    last: dict[str, Event] = {}
    for event in events.values():
        tickets.setdefault(event.ticket_id, Ticket(event.ticket_id)).apply(event)
        last[event.ticket_id] = event
    now = datetime.now(UTC)
    missed_facts = 0
    for ticket in tickets.values():
        if not ticket.exists:
            continue
        with contextlib.suppress(PolicyError):
            missed_facts += len(due_facts(ticket, evaluate(ticket, policy, now), now))
    state_differs = sorted(t for t, v in versions.items() if tickets.get(t) is None or tickets[t].version != v)
    # how: the version the worker holds against the log's, and the log's last event
    state_differs_how = [f"{t}: worker version {versions[t]}, log version " + (
        f"{tickets[t].version} (status {tickets[t].status}; last event {last[t].type} {last[t].event_id} "
        f"recorded {last[t].recorded_at:%H:%M:%S.%f})" if t in tickets else "none") for t in state_differs]
    state_unreadable = [t for t in tally.filed if t not in versions]

    archive_diff = verify_projection(rig.engine, archive_records(rig.engine), policy, source="archive")
    kafka_diff = verify_projection(rig.engine, kafka_records(rig.bootstrap), policy, source="kafka")
    return {
        "records": records, "distinct_events": len(events), "resent_identical": resent_same,
        "resent_reencoded": resent_other, "archive_rows": archive_rows,
        "lost": lost, "lost_from_topic": len(missing_topic), "lost_from_archive": len(missing_archive),
        "answers_without_event": no_event, "lost_examples": sorted(missing_topic | missing_archive)[:5],
        "duplicates": sum(dup.values()), "duplicate_kinds": dup,
        "applied_unanswered": applied_unanswered,
        "deadlines_breached": len(breaches), "breach_events": sum(len(v) for v in breaches.values()),
        "missed_sla_facts": missed_facts,
        "tickets_in_log": len(tickets), "state_checked": len(versions), "state_differs": len(state_differs),
        "state_differs_examples": state_differs_how[:10], "state_unreadable": len(state_unreadable),
        "verify_archive": archive_diff[:10], "verify_archive_count": len(archive_diff),
        "verify_kafka": kafka_diff[:10], "verify_kafka_count": len(kafka_diff),
        **check_decisions(rig.bootstrap, policy),
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="slaledger-load-"))
    workdir.mkdir(parents=True, exist_ok=True)
    throwaway = not args.workdir and not args.keep  # a directory given is never deleted
    rig = Rig(args, workdir)
    broker = {"kafka-ha": "Apache Kafka x3", "partitions": "Apache Kafka x3 in network namespaces",
              "dev-embedded": "tansu (in dev)"}.get(
        args.mode, "Apache Kafka" if args.broker == "kafka" else "tansu")
    report: dict[str, Any] = {"mode": args.mode, "broker": broker, "clients": args.clients, "seconds": args.seconds,
                              "database": rig.engine.dialect.name, "workdir": str(workdir)}
    try:
        rig.start()
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(*(wait_ready(session, w) for w in rig.workers))
            tally, faults = Tally(), list[Fault]()
            t0 = time.monotonic()
            stop_at = t0 + args.seconds
            urls = [w.url for w in rig.workers if w.url]
            clients = [Client(i, urls, rig.token, session, tally, t0, stop_at, args.sla_seconds, args.seed)
                       for i in range(args.clients)]
            for client in clients:  # the load goes on until every fault has been injected and recovered
                client.stop_at = float("inf")
            injector = asyncio.create_task(inject(rig, session, t0, args.seconds, args.restart_delay, faults))
            injector.add_done_callback(lambda _: hold_on(clients, stop_at))
            await asyncio.gather(*(c.run() for c in clients))
            elapsed = time.monotonic() - t0
            await injector
            await asyncio.gather(*(wait_ready(session, w) for w in rig.workers))
            await asyncio.sleep(args.sla_seconds + 1.5)  # the last parked tickets' deadlines pass
            settled = await settle(rig)
            versions = await worker_state(session, urls[-1], rig.token, tally.filed)
        report.update(verify(rig, tally, versions))
    finally:
        rig.stop()
        if throwaway:
            shutil.rmtree(workdir, ignore_errors=True)
    latencies = [a.latency for a in tally.accepted]
    # recovery: answers that came within 30 s of a fault, and the longest silence
    near_fault = [a.latency for a in tally.accepted if any(0 <= a.done_at - f.at <= 30 for f in faults)]
    done = sorted(a.done_at for a in tally.accepted)
    gaps = [b - a for a, b in zip([0.0, *done], done, strict=False)]
    windows = Counter(int(a.done_at // 5) for a in tally.accepted if a.done_at < args.seconds)
    for i, fault in enumerate(faults):  # each fault's window: from it to the next one (or the end)
        end = faults[i + 1].at if i + 1 < len(faults) else elapsed
        window = sorted((a.done_at, a.latency) for a in tally.accepted if fault.at <= a.done_at < end)
        silences = [b - a for a, b in zip([fault.at, *(d for d, _ in window)], [d for d, _ in window], strict=False)]
        fault.figures = {"answered": len(window), "p99_s": round(percentile([lat for _, lat in window], 0.99), 3),
                         "longest_without_answer_s": round(max(silences, default=end - fault.at), 1)}
    report.update({
        "elapsed": round(elapsed, 1), "accepted": len(tally.accepted),
        "commands_per_s": round(len(tally.accepted) / elapsed, 1),
        "lowest_5s_window_per_s": round(min(windows.get(i, 0) for i in range(int(args.seconds // 5))) / 5, 1)
        if args.seconds >= 5 else None,
        "filed": len(tally.filed), "replayed_answers": sum(a.replayed for a in tally.accepted),
        "p50_s": round(percentile(latencies, 0.50), 3), "p99_s": round(percentile(latencies, 0.99), 3),
        "max_s": round(max(latencies, default=float("nan")), 3),
        "p99_near_fault_s": round(percentile(near_fault, 0.99), 3),
        "longest_without_answer_s": round(max(gaps, default=0.0), 1),
        "answers": dict(sorted(tally.answers.items())), "not_answered": tally.not_answered, "resent": tally.resent,
        "retried": tally.retried,
        "faults": [f.__dict__ for f in faults], "settled_in_s": round(settled, 1),
    })
    report["ok"] = (report["lost"] == 0 and report["duplicates"] == 0 and report["verify_archive_count"] == 0
                    and report["verify_kafka_count"] == 0 and report["state_differs"] == 0
                    and report["missed_sla_facts"] == 0 and report["applied_unanswered"] <= report["not_answered"]
                    and report["two_decisions"] == 0 and report["off_log_decisions"] == 0
                    and len(faults) == {"kafka-ha": 3, "partitions": len(args.faults)}.get(args.mode, 2))
    return report


def partition_fault_line(f: dict[str, Any]) -> str:
    figures = f["figures"]
    return (f"t={f['at']:.1f} s {f['what']}; healed, workers ready {f['ready_after']:g} s later; writes fenced: "
            f"{f['fenced']}; until the next fault {figures['answered']:,} commands answered, p99 "
            f"{figures['p99_s']:.3f} s, longest without an answer {figures['longest_without_answer_s']} s")


def print_figures(r: dict[str, Any]) -> None:
    faults = "; ".join(f"t={f['at']:.1f} s {f['what']}, restarted {f['restarted_after']:g} s later"
                       + (f", ready {f['ready_after']:g} s after restart" if f["ready_after"] is not None else "")
                       for f in r["faults"] if f.get("fenced") is None)
    faults += "".join(f"\n  {partition_fault_line(f)}" for f in r["faults"] if f.get("fenced") is not None)
    answers = ", ".join(f"{k}: {v:,}" for k, v in r["answers"].items())
    dup = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in r["duplicate_kinds"].items())
    lines = [
        f"load and fault run: mode {r['mode']} on {r['broker']}, {r['clients']} clients, {r['seconds']:g} s, "
        f"{r['database']}",
        f"commands/s held     {r['commands_per_s']:,.1f} accepted/s over {r['elapsed']:.1f} s "
        f"({r['accepted']:,} commands, {r['filed']:,} tickets filed); lowest 5-s window "
        f"{r['lowest_5s_window_per_s']}/s",
        f"latency (accepted)  p50 {r['p50_s']:.3f} s, p99 {r['p99_s']:.3f} s, max {r['max_s']:.3f} s; "
        f"p99 within 30 s of a fault {r['p99_near_fault_s']:.3f} s; longest time without an accepted answer "
        f"{r['longest_without_answer_s']:.1f} s",
        f"answers             {answers}",
        f"not answered        {r['not_answered']:,} (outcome unknown; {r['applied_unanswered']:,} commands were "
        f"applied without an answer); sent again with their key after no answer/504: {r['retried']:,} "
        f"({r['replayed_answers']:,} answered as replays); after refusal/503: {r['resent']:,}",
        f"faults injected     {len(r['faults'])}: {faults}",
        f"events topic        {r['records']:,} records, {r['distinct_events']:,} distinct events "
        f"(re-sent records: {r['resent_identical']:,} identical, {r['resent_reencoded']:,} re-encoded); "
        f"archive {r['archive_rows']:,} rows",
        f"lost                {r['lost']} (missing from topic {r['lost_from_topic']}, from archive "
        f"{r['lost_from_archive']}, answers naming no event {r['answers_without_event']})"
        + (f" e.g. {', '.join(r['lost_examples'])}" if r["lost_examples"] else ""),
        f"duplicates          {r['duplicates']} ({dup})",
        f"breaches            {r['deadlines_breached']:,} deadlines breached, {r['breach_events']:,} breach events; "
        f"SLA facts due but missing: {r['missed_sla_facts']}",
        f"projection = replay archive: {r['verify_archive_count']} difference(s); "
        f"kafka: {r['verify_kafka_count']} difference(s)",
        f"worker state = log  {r['state_checked']:,} tickets read back, {r['state_differs']} differ, "
        f"{r['state_unreadable']} unreadable",
        f"decisions           {r['commands_checked']:,} commands; two decisions for one command: "
        f"{r['two_decisions']}; decided on a state the log does not contain: {r['off_log_decisions']}",
        f"verdict             {'OK' if r['ok'] else 'FAILED'}",
    ]
    for line in r["verify_archive"] + r["verify_kafka"]:
        lines.append(f"  difference: {line}")
    for line in r["state_differs_examples"]:
        lines.append(f"  worker state differs: {line}")
    for line in r["two_decisions_examples"]:
        lines.append(f"  two decisions: {line}")
    for line in r["off_log_examples"]:
        lines.append(f"  off the log: {line}")
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--mode", choices=["dev", "two-workers", "dev-embedded", "kafka-ha", "partitions"],
                        default="two-workers", help="partitions: implied by --faults")
    parser.add_argument("--broker", choices=["tansu", "kafka"], default="tansu",
                        help="engine of the two-workers and dev modes (kafka-ha: three Apache Kafka nodes)")
    parser.add_argument("--broker-restart-delay", type=float, default=5.0,
                        help="kafka-ha: seconds a killed node (or the stopped cluster) stays down")
    parser.add_argument("--database", default="",
                        help="SQLAlchemy URL of an empty database, or 'sqlite' (default: a fresh PostgreSQL "
                             "database on --pg-admin's server, dropped afterwards)")
    parser.add_argument("--pg-admin", default=PG_ADMIN, help="where throwaway databases are created")
    parser.add_argument("--sla-seconds", type=float, default=3.0, help="the intake SLA of the test policy")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--restart-delay", type=float, default=2.0, help="seconds between a kill and the restart")
    parser.add_argument("--log-level", default="warning", help="of the slaledger processes")
    parser.add_argument("--faults", type=lambda v: v.split(","), default=[],
                        help=f"partition suite (root, `ip netns`): comma-separated, in order, of {', '.join(FAULTS)}")
    parser.add_argument("--fault-hold", type=float, default=12.0,
                        help="seconds each partition fault lasts (3x the workers' 4 s session timeout)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", help="run directory, kept (default: a temporary one, deleted)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory and database")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.faults:
        unknown = set(args.faults) - set(FAULTS)
        if unknown:
            parser.error(f"--faults: unknown {', '.join(sorted(unknown))} (choose among {', '.join(FAULTS)})")
        args.mode = "partitions"
    report = asyncio.run(run(args))
    print_figures(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

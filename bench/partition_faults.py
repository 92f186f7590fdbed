"""The partition suite's rig and faults (issue 30), for ``load_fault.py --faults``.

Three Apache Kafka nodes, two workers and the projector each run in a network namespace
of their own on a bridge (``netns.Sandbox``); the brokers listen on and advertise their
bridge addresses; PostgreSQL, on the host's loopback, is reached through a relay on the
host's bridge address. Every process keeps running while a fault cuts its links:

- ``coordinator``: worker-a cut from the group coordinator only (a blackhole route to that
  node's address), still reaching the leaders on the other nodes;
- ``isolate``: worker-a cut from every broker (its HTTP callers get 503/504 and retry with
  their keys on worker-b);
- ``minority``: the node leading most events partitions cut from the other two nodes (a
  minority leader: the controller quorum moves leadership away, acks=all writes to it fail);
- ``projector-pg``: the projector cut from PostgreSQL while it writes its batches;
- ``pause``: worker-a SIGSTOPped, then SIGCONTed without a restart.

Each lasts ``hold`` seconds (3× the session timeout by default), then heals.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from netns import Member, PortForward, Sandbox

from slaledger.brokers.kafka_cluster import KafkaCluster
from slaledger.brokers.process import free_port
from streams.topics import APP_ID, COMMANDS, EVENTS

FAULTS = ("coordinator", "isolate", "minority", "projector-pg", "pause")


class Process(Protocol):
    name: str

    def signal(self, signum: int) -> None: ...

    def fenced(self) -> int: ...


class PartitionNet:
    """The namespaces of a partition run, their cluster and the database relay."""

    def __init__(self) -> None:
        self.sandbox = Sandbox()
        try:
            self.nodes = [self.sandbox.add(f"node{i}") for i in (1, 2, 3)]
            self.workers = [self.sandbox.add(name) for name in ("worker-a", "worker-b")]
            self.projector = self.sandbox.add("projector")
            self.forward = PortForward((self.sandbox.host_address, free_port()), ("127.0.0.1", 5432))
        except BaseException:
            self.sandbox.close()
            raise

    def cluster(self, data_dir: Path) -> KafkaCluster:
        return KafkaCluster(data_dir, 3, hosts=[n.address for n in self.nodes],
                            prefixes=[n.prefix for n in self.nodes])

    def database_url(self, url: str) -> str:
        """``url`` (PostgreSQL on 127.0.0.1:5432) as the namespaces reach it."""
        host, port = self.forward.listen
        return url.replace("127.0.0.1:5432", f"{host}:{port}")

    def close(self) -> None:
        self.forward.close()
        self.sandbox.close()


def _admin(cluster: KafkaCluster) -> Any:
    from kafka.admin import KafkaAdminClient

    from streams.kafka_security import client_options

    return KafkaAdminClient(bootstrap_servers=cluster.bootstrap, client_id="slaledger-partitions",
                            **client_options())


def leaders(cluster: KafkaCluster, topics: tuple[str, ...]) -> Counter[int]:
    """How many partitions of ``topics`` each node leads."""
    admin = _admin(cluster)
    try:
        described = admin.describe_topics(list(topics))
    finally:
        admin.close()
    return Counter(p["leader_id"] for topic in described for p in topic["partitions"] if p["leader_id"] >= 0)


def coordinator(cluster: KafkaCluster) -> int:
    """The node coordinating the workers' consumer group."""
    admin = _admin(cluster)
    try:
        deadline = time.monotonic() + 30
        while True:  # right after the group forms, the lookup may answer "not available" for a while
            try:
                return int(admin._manager.run(admin._find_coordinator_id, APP_ID))
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        admin.close()


async def inject_partitions(net: PartitionNet, cluster: KafkaCluster, workers: list[Process], names: list[str],
                            t0: float, hold: float, recovered: Callable[[], Awaitable[None]]) -> list[dict[str, Any]]:
    """Each fault of ``names`` in turn, under load: cut (or pause), hold, heal, wait until
    the workers answer ready again, then 3 s more before the next one."""
    done: list[dict[str, Any]] = []
    zombie, zombie_ns = workers[0], net.workers[0]
    await asyncio.sleep(max(0.0, t0 + 4 - time.monotonic()))
    for name in names:
        at = time.monotonic() - t0
        fenced_before = sum(w.fenced() for w in workers)
        cuts: list[tuple[Member, str]] = []
        if name == "coordinator":
            node = await asyncio.to_thread(coordinator, cluster)
            led = (await asyncio.to_thread(leaders, cluster, (COMMANDS, EVENTS)))[node]
            cuts = [(zombie_ns, cluster.node(node).host)]
            what = (f"cut {zombie.name} from the group coordinator (node {node}, leader of {led} commands/events "
                    f"partitions, unreachable too) for {hold:g} s")
        elif name == "isolate":
            cuts = [(zombie_ns, n.address) for n in net.nodes]
            what = f"cut {zombie.name} from every broker for {hold:g} s"
        elif name == "minority":
            node = (await asyncio.to_thread(leaders, cluster, (EVENTS,))).most_common(1)[0][0]
            leader = net.nodes[node - 1]
            cuts = [(leader, n.address) for n in net.nodes if n is not leader]
            what = f"cut node {node} (leading most events partitions) from the other two for {hold:g} s"
        elif name == "projector-pg":
            cuts = [(net.projector, net.sandbox.host_address)]
            what = f"cut the projector from PostgreSQL for {hold:g} s"
        elif name == "pause":
            what = f"SIGSTOP {zombie.name} for {hold:g} s, then SIGCONT"
        else:
            raise ValueError(f"unknown fault {name!r} (one of {', '.join(FAULTS)})")
        print(f"t={at:.1f} s: {what}", flush=True)
        if name == "pause":
            zombie.signal(signal.SIGSTOP)
        for member, address in cuts:
            net.sandbox.cut(member, address)
        try:
            await asyncio.sleep(hold)
        finally:
            for member, address in cuts:
                net.sandbox.heal(member, address)
            if name == "pause":
                zombie.signal(signal.SIGCONT)
        healed = time.monotonic()
        await recovered()
        done.append({"at": at, "what": what, "restarted_after": hold,
                     "ready_after": round(time.monotonic() - healed, 1),
                     "fenced": sum(w.fenced() for w in workers) - fenced_before})
        await asyncio.sleep(3)
    return done

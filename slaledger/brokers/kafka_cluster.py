"""Apache Kafka (KRaft) on loopback, from the jars pinned in ``infra/kafka/pom.xml``.

The production engine, for the tests, the benches and ``slaledger dev --kafka``: one
combined controller+broker node, or three (replication 3, ``min.insync.replicas=2``,
unclean leader election off, as the ``ha`` profile of ``docker-compose.yml``). The jars are
resolved once by Maven into a cache outside the repository (``SLALEDGER_KAFKA_CACHE``,
default ``~/.cache/slaledger``); each node has its own data directory, ports and log file,
and survives a restart on the same directory (storage is formatted only once).

Secured by default, as production is (``docker-compose.yml``): clients and brokers talk
SASL_SSL (SCRAM-SHA-512 over TLS) with the KRaft ``StandardAuthorizer`` and no access without
an ACL; one SCRAM user per principal of ``streams.kafka_acls`` (created when the storage is
formatted), passwords and a loopback CA made at first start under ``data_dir/secrets``. The
controller listener is TLS too, with SASL PLAIN for the ``admin`` super user only: SCRAM
credentials live in the metadata log the controllers serve, so controllers cannot use them
among themselves. There is no plaintext mode: nothing needs one (``slaledger dev --kafka`` is
the cluster's admin), and the tests then run what production runs.

Nothing here patches a client: the Tansu workarounds of ``streams.tansu`` are for the
embedded broker only.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from streams import kafka_security
from streams.kafka_acls import ADMIN, PRINCIPALS, apply_acls
from streams.kafka_certs import LOOPBACK, write_certificates, write_loopback_certificates
from streams.kafka_security import ClientSecurity
from streams.topics import create_topics

from .embedded import EmbeddedBroker
from .process import die_with_parent, free_port

log = structlog.get_logger(__name__)

POM = Path(__file__).resolve().parents[2] / "infra" / "kafka" / "pom.xml"
LOG4J = POM.with_name("log4j2.properties")


class BrokerError(RuntimeError):
    """A broker that could not be fetched or started; the message carries the log tail."""


def kafka_version(pom: Path = POM) -> str:
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom.read_text(encoding="utf-8"))
    if not match:
        raise BrokerError(f"{pom}: no <kafka.version>")
    return match.group(1)


def java_binary() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def kafka_libs(cache: Path | None = None, pom: Path = POM) -> Path:
    """The directory of the broker's jars, resolved by Maven on first use (about 10 s)."""
    if not pom.exists():
        raise BrokerError(f"{pom} not found: the Apache Kafka launcher runs from a source checkout")
    cache = cache or Path(os.environ.get("SLALEDGER_KAFKA_CACHE", Path.home() / ".cache" / "slaledger"))
    libs = cache / f"kafka-{kafka_version(pom)}" / "libs"
    stamp = libs / ".complete"
    if stamp.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven (mvn) is needed once to fetch Apache Kafka's jars: apt-get install maven")
    staging = libs.with_name(f"libs.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={staging}"],
        capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BrokerError(f"mvn could not resolve Apache Kafka's jars:\n{(result.stdout + result.stderr)[-3000:]}")
    (staging / ".complete").touch()
    if not stamp.exists():  # another process may have finished first
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
    else:
        shutil.rmtree(staging, ignore_errors=True)
    return libs


@dataclass
class Node:
    """One KRaft node (controller and broker in one process)."""

    node_id: int
    port: int
    controller_port: int
    data_dir: Path
    host: str = "127.0.0.1"  # the address it listens on and advertises
    prefix: list[str] = field(default_factory=list)  # run the JVM under it (e.g. `ip netns exec NS`)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log_start: int = 0  # the log file's size when the process was started

    def started(self) -> bool:
        """The broker logged its start since this process was launched."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_start)
                return b"Kafka Server started" in f.read()
        except OSError:
            return False

    @property
    def log_path(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def properties(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class KafkaCluster:
    """``nodes`` Apache Kafka nodes on 127.0.0.1 under ``data_dir``; a context manager.

    Ports are chosen once (free ones, or those recorded in ``data_dir/ports``), so a cluster
    restarted on the same directory answers on the same addresses with its data.

    ``hosts`` (one per node) puts each node on an address of its own instead, which it
    listens on, advertises and has in its certificate, and ``prefixes`` runs each node's
    JVM under a command (``ip netns exec NS``): the partition suite gives each node a
    network namespace so that its links can be cut (``bench/netns.py``).
    """

    embedded = False  # no Tansu workaround applies
    MECHANISM = "SCRAM-SHA-512"

    def __init__(self, data_dir: Path, nodes: int = 1, *, heap: str = "512m", port: int | None = None,
                 hosts: list[str] | None = None, prefixes: list[list[str]] | None = None) -> None:
        if nodes not in (1, 3):
            raise ValueError("a cluster of 1 or 3 nodes")
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.heap = heap
        ports = self._ports(nodes, port)
        hosts = hosts or ["127.0.0.1"] * nodes
        prefixes = prefixes or [[] for _ in range(nodes)]
        self.nodes = [Node(i + 1, ports[2 * i], ports[2 * i + 1], self.data_dir / f"node{i + 1}", hosts[i],
                           prefixes[i]) for i in range(nodes)]
        self.cluster_id = self._cluster_id()
        if not self.secrets_dir.exists() and any((n.data_dir / "logs" / "meta.properties").exists()
                                                 for n in self.nodes):
            raise BrokerError(f"{self.data_dir} holds a cluster formatted without its SCRAM users (before "
                              "Kafka was secured): remove that directory to start afresh")
        if set(hosts) == {"127.0.0.1"}:
            self.ca_file, self.keystore = write_loopback_certificates(self.secrets_dir)
        elif (self.secrets_dir / "broker.pem").exists():
            self.ca_file, self.keystore = self.secrets_dir / "ca.pem", self.secrets_dir / "broker.pem"
        else:
            self.ca_file, self.keystore = write_certificates(self.secrets_dir, [*LOOPBACK, *hosts], 30)
        self._write_passwords()

    # --- security ----------------------------------------------------------------------
    @property
    def secrets_dir(self) -> Path:
        return self.data_dir / "secrets"

    def password_file(self, principal: str) -> Path:
        """The file holding ``principal``'s SCRAM password (what a Compose secret is)."""
        if principal not in PRINCIPALS:
            raise ValueError(f"unknown Kafka principal {principal!r} (one of {', '.join(PRINCIPALS)})")
        return self.secrets_dir / f"{principal}.password"

    def client_env(self, principal: str) -> dict[str, str]:
        """The ``SLALEDGER_KAFKA_*`` settings of a process that runs as ``principal`` (the
        password as a file, like a Compose secret)."""
        return {"SLALEDGER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "SLALEDGER_KAFKA_SASL_MECHANISM": self.MECHANISM,
                "SLALEDGER_KAFKA_SASL_USERNAME": principal,
                "SLALEDGER_KAFKA_SASL_PASSWORD_FILE": str(self.password_file(principal)),
                "SLALEDGER_KAFKA_SSL_CAFILE": str(self.ca_file)}

    def security(self, principal: str) -> ClientSecurity:
        """The same settings as a value, for ``streams.kafka_security`` in this process."""
        return ClientSecurity("SASL_SSL", self.MECHANISM, principal,
                              self.password_file(principal).read_text(encoding="utf-8"), str(self.ca_file))

    def _write_passwords(self) -> None:
        for principal in PRINCIPALS:
            path = self.password_file(principal)
            if not path.exists():
                path.touch(mode=0o600)
                path.write_text(secrets.token_urlsafe(24), encoding="utf-8")

    # --- addresses ---------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return ",".join(f"{n.host}:{n.port}" for n in self.nodes)

    @property
    def url(self) -> str:
        return "kafka://" + self.bootstrap

    @property
    def replication(self) -> int:
        return len(self.nodes)

    def node(self, node_id: int) -> Node:
        return self.nodes[node_id - 1]

    # --- lifecycle ---------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> KafkaCluster:
        for node in self.nodes:
            self.start_node(node.node_id, wait=False)
        for node in self.nodes:
            self._wait_listening(node, timeout)
        log.info("apache kafka started", bootstrap=self.bootstrap, nodes=len(self.nodes), data_dir=str(self.data_dir))
        return self

    def start_node(self, node_id: int, *, wait: bool = True, timeout: float = 120.0) -> None:
        # ``timeout``: a node restarted after a SIGKILL first recovers its logs; measured
        # 68 s from launch to "started" with the two cores under a load of 10
        node = self.node(node_id)
        if node.running:
            return
        java = java_binary()
        if java is None:
            raise BrokerError("Java 17+ is needed to run Apache Kafka (apt-get install openjdk-17-jre-headless)")
        libs = kafka_libs()
        node.data_dir.mkdir(parents=True, exist_ok=True)
        node.properties.touch(mode=0o600)  # it holds the admin's password
        node.properties.write_text(self._properties(node), encoding="utf-8")
        classpath = f"{libs}/*"
        base = [java, f"-Xms{self.heap}", f"-Xmx{self.heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={LOG4J}", "-cp", classpath]
        if not (node.data_dir / "logs" / "meta.properties").exists():
            # The SCRAM users exist from the first record of the metadata log: nobody, not even
            # the brokers among themselves, ever connects without a password.
            users = [arg for p in PRINCIPALS for arg in (
                "--add-scram", f"{self.MECHANISM}=[name={p},password={self.password_file(p).read_text()}]")]
            fmt = subprocess.run([*base, "kafka.tools.StorageTool", "format", f"--cluster-id={self.cluster_id}",
                                  "--config", str(node.properties), "--ignore-formatted", *users],
                                 capture_output=True, text=True, check=False)
            if fmt.returncode != 0:
                raise BrokerError(f"formatting node {node_id}'s storage failed:\n{(fmt.stdout + fmt.stderr)[-3000:]}")
        out = open(node.log_path, "ab")  # noqa: SIM115 - the child keeps it
        node.log_start = out.tell()
        node.process = subprocess.Popen([*node.prefix, *base, "kafka.Kafka", str(node.properties)], stdout=out,
                                        stderr=out, start_new_session=True, preexec_fn=die_with_parent)
        out.close()
        if wait:
            self._wait_listening(node, timeout)

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one node (a crash: no controlled shutdown)."""
        node = self.node(node_id)
        if node.process is not None:
            node.process.kill()
            node.process.wait()
            node.process = None
            log.info("apache kafka node killed", node=node_id)

    def stop_node(self, node_id: int, timeout: float = 20.0) -> None:
        """SIGTERM one node: a controlled shutdown (leadership moved first)."""
        node = self.node(node_id)
        if node.process is None:
            return
        if node.process.poll() is None:
            node.process.send_signal(signal.SIGTERM)
            try:
                node.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
        node.process = None

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            self.stop_node(node.node_id)
        log.info("apache kafka stopped", bootstrap=self.bootstrap)

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- internals ---------------------------------------------------------------------
    def _ports(self, nodes: int, port: int | None) -> list[int]:
        recorded = self.data_dir / "ports"
        if recorded.exists():
            ports = [int(p) for p in recorded.read_text().split()]
            if len(ports) == 2 * nodes:
                return ports
        ports = []
        for i in range(2 * nodes):
            ports.append(port if (port and i == 0) else _unused_port(ports))
        recorded.write_text(" ".join(map(str, ports)))
        return ports

    def _cluster_id(self) -> str:
        recorded = self.data_dir / "cluster-id"
        if not recorded.exists():
            # 16 random bytes, base64url without padding: the format StorageTool expects.
            import base64

            recorded.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))
        return recorded.read_text().strip()

    def _properties(self, node: Node) -> str:
        voters = ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in self.nodes)
        n = len(self.nodes)
        isr = 2 if n == 3 else 1
        return "\n".join([
            "process.roles=broker,controller",
            f"node.id={node.node_id}",
            f"controller.quorum.voters={voters}",
            f"listeners=SASL_SSL://{node.host}:{node.port},CONTROLLER://{node.host}:{node.controller_port}",
            f"advertised.listeners=SASL_SSL://{node.host}:{node.port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=SASL_SSL",
            "listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SASL_SSL",
            *self._security_properties(),
            f"log.dirs={node.data_dir / 'logs'}",
            "num.partitions=1",
            f"default.replication.factor={n}",
            f"min.insync.replicas={isr}",
            f"offsets.topic.replication.factor={n}",
            f"transaction.state.log.replication.factor={n}",
            f"transaction.state.log.min.isr={isr}",
            "unclean.leader.election.enable=false",
            # Topics are created by `slaledger topics create` and by Faust, never on first use.
            "auto.create.topics.enable=false",
            "group.initial.rebalance.delay.ms=0",
            # The tests' workers use 4 s sessions (the default floor is 6 s).
            "group.min.session.timeout.ms=1000",
            # Loopback test clusters: a killed node's partitions move within a few seconds.
            "broker.session.timeout.ms=6000",
            "broker.heartbeat.interval.ms=1000",
            "controller.quorum.election.timeout.ms=1000",
            "controller.quorum.fetch.timeout.ms=2000",
            "log.flush.interval.messages=9223372036854775807",
            "",
        ])

    def _security_properties(self) -> list[str]:
        """TLS on both listeners; SCRAM for clients and brokers, PLAIN (admin only, from this
        file) between controllers; the StandardAuthorizer, deny by default, admin the super user."""
        admin = self.password_file(ADMIN).read_text(encoding="utf-8")
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
        plain = "org.apache.kafka.common.security.plain.PlainLoginModule"
        return [
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={self.keystore}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={self.ca_file}",
            f"sasl.enabled.mechanisms={self.MECHANISM}",
            f"sasl.mechanism.inter.broker.protocol={self.MECHANISM}",
            f"listener.name.sasl_ssl.{self.MECHANISM.lower()}.sasl.jaas.config={scram} required "
            f'username="{ADMIN}" password="{admin}";',
            "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
            "sasl.mechanism.controller.protocol=PLAIN",
            f'listener.name.controller.plain.sasl.jaas.config={plain} required username="{ADMIN}" '
            f'password="{admin}" user_{ADMIN}="{admin}";',
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found=false",
            f"super.users=User:{ADMIN}",
        ]

    def _wait_listening(self, node: Node, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node.process is None or node.process.poll() is not None:
                code = None if node.process is None else node.process.returncode
                raise BrokerError(f"Apache Kafka node {node.node_id} exited (code {code}); "
                                  f"{node.log_path}:\n{node.tail()}")
            if node.started() and _listens(node.host, node.port):
                return
            time.sleep(0.1)
        raise BrokerError(f"Apache Kafka node {node.node_id} did not start within {timeout:.0f}s; "
                          f"{node.log_path}:\n{node.tail()}")


def _listens(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _unused_port(taken: list[int]) -> int:
    while True:
        port = free_port()
        if port not in taken:
            return port


@contextmanager
def running_broker(kind: str, workdir: Path, nodes: int = 1) -> Iterator[EmbeddedBroker | KafkaCluster]:
    """A started broker of ``kind`` (``tansu`` or ``kafka``) under ``workdir`` with the
    product's topics (4 partitions, replicated on every node of a Kafka cluster) and, on
    Kafka, the product's ACLs: what the tests and the benches run against. This process's
    own kafka-python clients run as ``admin`` meanwhile (``kafka_security.configure``)."""
    broker: EmbeddedBroker | KafkaCluster = (EmbeddedBroker(log_path=workdir / "tansu.log") if kind == "tansu"
                                             else KafkaCluster(workdir / "kafka", nodes))
    with broker:
        try:
            provision(broker, 4)
            yield broker
        finally:
            kafka_security.configure(ClientSecurity())


def provision(broker: EmbeddedBroker | KafkaCluster, partitions: int) -> None:
    """Make this process the cluster's ``admin`` (its kafka-python clients), create the
    product's topics and, on Apache Kafka, grant the principals their ACLs: what
    ``slaledger topics create --acls`` does in production."""
    kafka_security.configure(broker.security(ADMIN) if isinstance(broker, KafkaCluster) else ClientSecurity())
    create_topics(broker.bootstrap, partitions, replication=broker.replication)
    if isinstance(broker, KafkaCluster):
        apply_acls(broker.bootstrap)

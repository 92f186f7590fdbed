"""Real components for integration tests: both brokers (the embedded Tansu and Apache Kafka),
worker processes and PostgreSQL databases.

The module-scoped ``broker`` fixture is parametrized: every test that uses it runs once on
Tansu and once on a single-node Apache Kafka (KRaft). ``broker.embedded`` tells which, and
decides whether a worker or a producer applies the Tansu workarounds (never on Kafka)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from slaledger.brokers.embedded import EmbeddedBroker
from slaledger.brokers.kafka_cluster import KafkaCluster
from slaledger.brokers.kafka_cluster import running_broker as start_broker
from slaledger.brokers.process import free_port
from slaledger.devdb import fresh_database
from slaledger.fixtures import write_short_intake_policy
from streams.kafka_acls import ADMIN, WORKER
from streams.kafka_tools import producer
from tests.conftest import call_failed, system_tool

Broker = EmbeddedBroker | KafkaCluster
BROKERS = ["tansu", "kafka"]


@contextmanager
def running_broker(kind: str, workdir: Path, nodes: int = 1) -> Iterator[Broker]:
    """``slaledger.brokers.kafka_cluster.running_broker``, once the Kafka engine's tools are found (a
    missing one skips locally and fails in CI). Apache Kafka runs secured (SASL_SSL and
    ACLs): the test process is its ``admin`` meanwhile, in its own clients and in the
    environment its in-process ``main([...])`` calls read; every product process a test
    starts runs as its own principal (``broker.client_env``)."""
    if kind == "kafka":
        system_tool("java", package="openjdk-17-jre-headless")
        system_tool("mvn", package="maven")
    with start_broker(kind, workdir, nodes) as broker, environment(broker.client_env(ADMIN)):
        yield broker


@contextmanager
def running_as(broker: Broker, principal: str) -> Iterator[None]:
    """The test's in-process ``main([...])`` calls run as ``principal`` meanwhile (they read
    their settings from the environment); then this process is the admin again."""
    from streams import kafka_security

    with environment(broker.client_env(principal)):
        try:
            yield
        finally:
            kafka_security.configure(broker.security(ADMIN) if isinstance(broker, KafkaCluster)
                                     else kafka_security.ClientSecurity())


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in ``os.environ`` for the duration, then as before."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module", params=BROKERS)
def broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with running_broker(request.param, tmp_path_factory.mktemp(f"broker-{request.param}")) as b:
        yield b


def api(method: str, url: str, body: Any = None, *, raw: bytes | None = None,
        headers: dict[str, str] | None = None, timeout: float = 30, token: str | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if token:
        headers = {**(headers or {}), "Authorization": f"Bearer {token}"}
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = response.read()
            status = response.status
    except urllib.error.HTTPError as err:
        payload, status = err.read(), err.code
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, payload.decode("utf-8", "replace")


class Worker:
    """``slaledger worker`` in its own process, as production runs it."""

    def __init__(self, broker: Broker, workdir: Path, *, policy_file: Path | None = None,
                 name: str = "w1", extra_env: dict[str, str] | None = None) -> None:
        self.broker, self.workdir, self.name = broker, workdir, name
        self.port = free_port()
        self.policy_file = policy_file
        self.extra_env = extra_env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "SLALEDGER_BROKER_URL": self.broker.url,
            "SLALEDGER_WEB_PORT": str(self.port),
            "SLALEDGER_DATA_DIR": str(self.workdir / self.name),
            "SLALEDGER_EMBEDDED": "1" if self.broker.embedded else "0",
            "SLALEDGER_SESSION_TIMEOUT": "4",
            "SLALEDGER_HEARTBEAT_INTERVAL": "0.5",
            "SLALEDGER_REBALANCE_TIMEOUT": "2",
            "SLALEDGER_COMMIT_INTERVAL": "1",
            "SLALEDGER_TIMER_INTERVAL": "0.2",
            "SLALEDGER_STORE_URL": "memory://",
            "SLALEDGER_AUTH": "off",
            "SLALEDGER_LOG_LEVEL": os.environ.get("SLALEDGER_TEST_LOG_LEVEL", "info"),
            **self.broker.client_env(WORKER),
            **self.extra_env,
        }
        if self.policy_file:
            env["SLALEDGER_POLICY_FILE"] = str(self.policy_file)
        return env

    def start(self, wait: bool = True) -> Worker:
        out = open(self.log_path, "ab")  # noqa: SIM115
        self.process = subprocess.Popen([sys.executable, "-m", "slaledger.cli", "worker"], env=self.env(),
                                        stdout=out, stderr=out, start_new_session=True)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited: {self.log_path.read_text()[-3000:]}")
            try:
                status, body = api("GET", f"{self.url}/readyz", timeout=2)
                if status == 200 and body["partitions"]:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"worker {self.name} not ready: {self.log_path.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code


@pytest.fixture
def workers(broker: Broker, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop(signal.SIGKILL)
    if call_failed(request):  # CI keeps only the output: the workers' logs tell why
        for path in sorted({w.log_path for w in started}):
            if path.exists():
                print(f"----- {path.name} (last 150 lines) -----")
                print("\n".join(path.read_text(errors="replace").splitlines()[-150:]))


def tiny_policy(tmp_path: Path, seconds: float = 2) -> Path:
    return write_short_intake_policy(tmp_path, seconds)


def send_records(broker: Broker, topic: str, records: Iterable[tuple[bytes, bytes]]) -> None:
    """Each (key, value) to ``topic``, through a plain producer, flushed."""
    kafka = producer(broker.bootstrap, embedded=False)
    for key, value in records:
        kafka.send(topic, key=key, value=value)
    kafka.flush()
    kafka.close()


def wait_for(predicate: Any, timeout: float = 30, interval: float = 0.2, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")


PG = "postgresql+psycopg://postgres@127.0.0.1:5432/"


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh PostgreSQL database on the local server, dropped afterwards."""
    with fresh_database(PG, "slaledger_t_", admin_db="test") as url:
        yield url



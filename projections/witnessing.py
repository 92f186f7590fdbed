"""The projector's side of the witnesses (C2SP ``tlog-witness``): each configured witness
gets the latest signed checkpoint with a consistency proof from the last one it cosigned,
and its cosignature is stored with the head (``heads.add_cosignature``), so that dispute
files and monthly statements carry the cosigned checkpoint.

One thread per witness: a witness that is down or slow delays neither the projection nor the
other witnesses; it is retried every ``interval`` seconds, and the metrics below (served on
the projector's /metrics) show it: ``slaledger_witness_last_cosigned_size{witness}`` and
``slaledger_witness_failures_total{witness}`` (alert ``WitnessNotCosigning``).

``SLALEDGER_WITNESSES``: comma-separated ``URL VKEY`` pairs (see ``parse_witnesses``). A URL
carrying credentials or a query is refused: secrets never go in a URL (nor in a log line).
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from . import checkpoint, tree
from .heads import SignedHead, add_cosignature, latest_head
from .witness import SIZE_TYPE, request_body

log = structlog.get_logger(__name__)
TIMEOUT = 10.0  # seconds for one request


class WitnessError(Exception):
    """A submission that got no cosignature (down, refused, or an invalid answer)."""


@dataclass
class WitnessClient:
    url: str  # the submission prefix
    key: checkpoint.VerifierKey  # its cosignature key (0x04)
    cosigned_size: int | None = None  # the size it last cosigned, as far as we know
    cosigned_at: float | None = None
    failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return self.key.name

    def _post(self, body: bytes) -> tuple[int, str, str]:
        request = urllib.request.Request(self.url.rstrip("/") + "/add-checkpoint", data=body, method="POST",
                                         headers={"Content-Type": "text/plain; charset=utf-8"})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
                return answer.status, answer.headers.get("Content-Type", ""), answer.read(65536).decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Content-Type", ""), exc.read(65536).decode(errors="replace")

    def submit(self, engine: Engine, head: SignedHead) -> str:
        """The witness's cosignature line of ``head`` (a checkpoint), proving its consistency
        with what the witness cosigned last; raises WitnessError otherwise."""
        old = self.cosigned_size or 0
        for _ in range(2):  # a 409 tells the size the witness holds: once more from there
            if old > head.tree_size:
                raise WitnessError(f"the witness cosigned {old} leaves, more than this checkpoint's {head.tree_size}")
            proof: list[bytes] = []
            if 0 < old < head.tree_size:
                with engine.connect() as conn:
                    proof = tree.consistency(conn, old, head.tree_size)
            status, kind, body = self._post(request_body(old, proof, head.note()))
            if status == 409 and kind.startswith(SIZE_TYPE) and body.strip().isdigit() and int(body) != old:
                old = int(body)
                continue
            if status != 200:
                raise WitnessError(f"HTTP {status}: {body.strip()[:200]}")
            text = head.checkpoint_text()
            for raw in body.splitlines():
                try:
                    line = checkpoint.parse_signature_line(raw)
                except checkpoint.NoteError:
                    continue
                if checkpoint.verify_cosignature(text, line, self.key) is not None:
                    return line.line()
            raise WitnessError("the answer carries no valid cosignature by the witness's key")
        raise WitnessError(f"the witness's size changed twice (now {old})")

    def feed(self, engine: Engine) -> None:
        """Submit the latest head unless this witness already cosigned it."""
        head = latest_head(engine)
        if head is None or head.origin is None or head.witnessed_by([self.key]):
            return
        try:
            line = self.submit(engine, head)
        except (WitnessError, OSError, ValueError) as exc:  # ValueError: a bad answer's encoding
            with self._lock:
                self.failures += 1
            log.warning("witness: checkpoint not cosigned; retried", witness=self.name, tree_size=head.tree_size,
                        error=str(exc))
            return
        assert head.head_id is not None
        add_cosignature(engine, head.head_id, line)
        with self._lock:
            self.cosigned_size, self.cosigned_at = head.tree_size, time.time()
        log.info("witness: checkpoint cosigned", witness=self.name, head_id=head.head_id, tree_size=head.tree_size)


def parse_witnesses(value: str) -> list[WitnessClient]:
    """``URL VKEY[, URL VKEY …]``: ValueError (one line, naming the setting) when malformed."""
    out = []
    for n, item in enumerate(i.strip() for i in value.split(",")):
        if not item:
            continue
        parts = item.split()
        if len(parts) != 2:
            raise ValueError(f"SLALEDGER_WITNESSES entry {n + 1}: expected `URL VKEY`")
        url, vkey = parts
        where = urlsplit(url)
        if where.scheme not in ("http", "https") or not where.hostname:
            raise ValueError(f"SLALEDGER_WITNESSES entry {n + 1}: the URL is not http(s)://host/…")
        if where.username or where.password or where.query or where.fragment:
            raise ValueError(f"SLALEDGER_WITNESSES entry {n + 1}: no credentials, query or fragment in a witness "
                             "URL (a URL is logged and proxied: it must hold no secret)")
        try:
            key = checkpoint.VerifierKey.parse(vkey)
        except checkpoint.NoteError as exc:
            raise ValueError(f"SLALEDGER_WITNESSES entry {n + 1}: {exc}") from None
        if key.alg != checkpoint.COSIGNATURE_V1:
            raise ValueError(f"SLALEDGER_WITNESSES entry {n + 1}: not a cosignature key (algorithm 0x04)")
        out.append(WitnessClient(url, key))
    return out


def start_witness_feeds(engine: Engine, witnesses: list[WitnessClient], stop: threading.Event,
                        interval: float = 5.0) -> list[threading.Thread]:
    def loop(witness: WitnessClient) -> None:
        while not stop.is_set():
            try:
                witness.feed(engine)
            except Exception:  # a database hiccup: next round
                log.exception("witness feed failed; retried", witness=witness.name)
            stop.wait(interval)

    threads = [threading.Thread(target=loop, args=(w,), name=f"witness-{w.name}", daemon=True) for w in witnesses]
    for thread in threads:
        thread.start()
    log.info("witness feeds started", witnesses=[w.name for w in witnesses])
    return threads


class WitnessCollector(Collector):
    """The witnesses' state as the projector knows it, at scrape time."""

    def __init__(self, witnesses: list[WitnessClient]) -> None:
        self.witnesses = witnesses

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        size = GaugeMetricFamily("slaledger_witness_last_cosigned_size",
                                 "Tree size of the last checkpoint each witness cosigned (since the projector started)",
                                 labels=["witness"])
        at = GaugeMetricFamily("slaledger_witness_last_cosigned_timestamp_seconds",
                               "When each witness last returned a cosignature", labels=["witness"])
        failures = CounterMetricFamily("slaledger_witness_failures", "Submissions to a witness that got no "
                                       "cosignature (down, refused, invalid answer)", labels=["witness"])
        for w in self.witnesses:
            with w._lock:
                if w.cosigned_size is not None:
                    size.add_metric([w.name], w.cosigned_size)
                if w.cosigned_at is not None:
                    at.add_metric([w.name], w.cosigned_at)
                failures.add_metric([w.name], w.failures)
        yield from (size, at, failures)

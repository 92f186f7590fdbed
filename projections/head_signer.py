"""The projector's head signer: signs a tree head on schedule and publishes every stored
head on the tree-heads topic. A runner (it reaches Kafka); the heads themselves, their
keys and storage are ``heads``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine

from sla.log_names import TREE_HEAD_KEY, TREE_HEADS
from sla.policy import Policy
from streams.kafka_tools import producer

from . import tree
from .heads import (
    DEFAULT_ORIGIN,
    MAX_HEAD_AGE,
    SignedHead,
    canonical,
    latest_head,
    mark_published,
    sign_head,
    unpublished_heads,
)

log = structlog.get_logger(__name__)


@dataclass
class HeadSigner:
    """The projector's schedule: a head when ``interval`` passed since the last one and the
    tree grew, and at least daily; every stored head not yet published goes on the tree-heads
    topic under ``TREE_HEAD_KEY`` (heads signed on demand by ``slaledger audit sign-head``
    or by a dispute file too)."""

    key: Ed25519PrivateKey
    policy: Policy
    interval: timedelta = timedelta(hours=1)
    origin: str = DEFAULT_ORIGIN
    bootstrap: str | None = None  # None: not published (no broker)
    embedded: bool = False
    _producer: Any = None

    def tick(self, engine: Engine, now: datetime | None = None) -> SignedHead | None:
        now = now or datetime.now(UTC)
        last = latest_head(engine)
        signed = None
        with engine.connect() as conn:
            size = tree.tree_size(conn)
        if last is None or (now - last.timestamp >= self.interval and size > last.tree_size) \
                or now - last.timestamp >= MAX_HEAD_AGE:
            signed = sign_head(engine, self.key, self.policy, now, self.origin)
        self.publish(engine)
        return signed

    def publish(self, engine: Engine) -> int:
        if self.bootstrap is None:
            return 0
        pending = unpublished_heads(engine)
        if not pending:
            return 0
        if self._producer is None:
            self._producer = producer(self.bootstrap, embedded=self.embedded)
        for head in pending:
            self._producer.send(TREE_HEADS, key=TREE_HEAD_KEY, value=canonical(head.to_dict()))
        self._producer.flush()
        mark_published(engine, [h.head_id for h in pending])
        log.info("tree heads published", heads=[h.head_id for h in pending])
        return len(pending)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None

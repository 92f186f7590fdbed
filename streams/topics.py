"""Every Kafka topic of slaledger, declared once, with explicit partition counts.

Topics are created by ``slaledger topics create`` before any producer runs; Faust is told
not to declare any (``topic_allow_declare=False``) so nothing is ever auto-created with a
broker default. Records are keyed by ticket id so a ticket's records stay in one
partition, in order. Commands, events and the ticket table's changelog have the same
partition count: Faust then assigns partition *p* of all three to the same worker, which
is the single writer of those tickets.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from sla.log_names import COMMANDS as COMMANDS
from sla.log_names import DEAD_LETTERS as DEAD_LETTERS
from sla.log_names import EVENTS as EVENTS
from sla.log_names import OUTCOMES as OUTCOMES
from sla.log_names import TREE_HEAD_KEY as TREE_HEAD_KEY
from sla.log_names import TREE_HEADS as TREE_HEADS
from sla.log_names import is_tree_head as is_tree_head
from sla.log_names import tree_head_shaped as tree_head_shaped

log = structlog.get_logger(__name__)


class TopicLayoutError(RuntimeError):
    """A topic exists with another partition count than the one asked for: keys would map
    to other partitions, so nothing is changed (Kafka cannot reduce partitions anyway)."""

APP_ID = "slaledger"
TICKET_TABLE = "tickets"
POSITION_TABLE = "positions"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]
    purpose: str


def _forever() -> dict[str, str]:
    return {"cleanup.policy": "delete", "retention.ms": "-1"}


def topic_specs(partitions: int = 4) -> list[TopicSpec]:
    """All topics, for a deployment whose ticket topics have ``partitions`` partitions."""
    return [
        TopicSpec(COMMANDS, partitions, _forever(), "ticket commands, keyed by ticket id"),
        TopicSpec(EVENTS, partitions, _forever(), "the immutable ticket event log, keyed by ticket id"),
        TopicSpec(OUTCOMES, partitions, {"cleanup.policy": "delete", "retention.ms": str(3_600_000)},
                  "command outcomes for the HTTP caller waiting on them, keyed by command id"),
        TopicSpec(DEAD_LETTERS, 1, _forever(), "records that could not be read: record, reason, origin offset"),
        TopicSpec(TREE_HEADS, 1, _forever(), "the archive's signed tree heads, published by the projector"),
        TopicSpec(f"{APP_ID}-{TICKET_TABLE}-changelog", partitions, {"cleanup.policy": "compact"},
                  "changelog of the Faust ticket table"),
        TopicSpec(f"{APP_ID}-{POSITION_TABLE}-changelog", partitions, {"cleanup.policy": "compact"},
                  "changelog of the agent's processed positions (see streams.positions, streams.recovery: gap repair)"),
        TopicSpec(f"{APP_ID}-__assignor-__leader", 1, {"cleanup.policy": "delete"}, "Faust leader election"),
    ]


def create_topics(bootstrap: str, partitions: int = 4, *, replication: int = 1,
                  client_options: dict[str, object] | None = None) -> list[str]:
    """Create the missing topics; returns the names created. Existing topics are left
    alone, but one with another partition count is an error (it would break co-partitioning).
    ``replication`` is 3 on the production cluster (with the brokers' min.insync.replicas=2)."""
    from kafka.admin import KafkaAdminClient, NewTopic

    from .kafka_security import client_options as security_options

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="slaledger-admin",
                             **{**security_options(), **(client_options or {})})
    try:
        existing = set(admin.list_topics())
        specs = topic_specs(partitions)
        missing = [s for s in specs if s.name not in existing]
        if missing:
            admin.create_topics(
                [NewTopic(s.name, s.partitions, replication, topic_configs=s.config) for s in missing],
                wait_for_metadata=True,
            )
        present = [s for s in specs if s.name in existing]
        if present:
            described = admin.describe_topics([s.name for s in present])
            counts = {d["name"]: len(d["partitions"]) for d in described}
            wrong = [f"{s.name} has {counts.get(s.name)} partitions, expected {s.partitions}"
                     for s in present if counts.get(s.name) != s.partitions]
            if wrong:
                raise TopicLayoutError("; ".join(wrong))
        for spec in missing:
            log.info("topic created", topic=spec.name, partitions=spec.partitions, replication=replication,
                     config=spec.config)
        return [s.name for s in missing]
    finally:
        admin.close()

"""The names the event log is written and read under: its topics, the key of the records
in it that are not events (signed tree heads) and the schemas of those records.

Shared by the writer (``streams/``, which declares the topics in ``streams.topics``), the
readers (``projections/``) and the offline verifier of dispute files, which may import
nothing but pure code: so they live here, in one place none of them has to reach Kafka for.
"""

from __future__ import annotations

import json

COMMANDS = "slaledger.ticket-commands"
EVENTS = "slaledger.ticket-events"
OUTCOMES = "slaledger.command-outcomes"
DEAD_LETTERS = "slaledger.dead-letters"
# The archive's signed tree heads (projections.heads) have their own topic: the events
# topic is written by the ticket agent only. Heads are keyed by this key, which no ticket id
# can take (a ticket id starts with a letter or digit); logs written before 2026-12-04 carry
# them on the events topic, so every reader of that topic still skips the key.
TREE_HEADS = "slaledger.tree-heads"
TREE_HEAD_KEY = b"__tree_head__"
TREE_HEAD_SCHEMA = "slaledger.tree-head/1"  # the former JSON form, still read
CHECKPOINT_SCHEMA = "slaledger.checkpoint/1"  # a C2SP checkpoint (projections.heads)


def is_tree_head(key: bytes | None) -> bool:
    return key == TREE_HEAD_KEY


def tree_head_shaped(data: bytes | None) -> bool:
    """A record under the tree-head key is a JSON object of a tree-head schema (its
    signature is for the audit to check, with the public key the worker does not hold)."""
    try:
        body = json.loads(data or b"")
    except (ValueError, TypeError):
        return False
    return isinstance(body, dict) and body.get("schema") in (TREE_HEAD_SCHEMA, CHECKPOINT_SCHEMA)

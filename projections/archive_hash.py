"""The archive's hashing, in one place: every writer (the projector) and every checker (the
audit replay, the dispute file) computes a row's hash here.

The archive is a hash chain: ``hash = sha256(prev_hash || envelope)`` from ``GENESIS_HASH``,
so an altered, deleted, inserted or reordered row breaks every later link.
"""

from __future__ import annotations

import hashlib

GENESIS_HASH = "0" * 64  # the previous hash of the first archived row


def chain_hash(prev_hash: str, envelope: bytes) -> str:
    """The hash of an archive row whose predecessor's hash is ``prev_hash``."""
    return hashlib.sha256(prev_hash.encode() + envelope).hexdigest()


def digest(data: bytes) -> str:
    """The SHA-256 of a record's bytes (a topic record, a re-sent copy)."""
    return hashlib.sha256(data).hexdigest()

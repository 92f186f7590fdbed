"""A ticket's whole history as one hash, and its entry in the map of every ticket (#26).

No I/O and nothing but ``hashlib``: the projector's map (``projections.ticket_map``) and the
offline verifier (``projections.dispute_check``) compute the same bytes from here.

- History hash over a ticket's leaves in log order (the archive tree's leaf hashes, so no
  event and no leaf changes, and events written before this existed are covered alike):
  ``h_0 = SHA-256("slaledger.ticket-history/1")``, ``h_n = SHA-256(h_{n-1} || leaf_n)``.
  Equal count and hash mean the same leaves in the same order: nothing dropped (in the
  middle or at the end), added, swapped or shown twice.
- Map entry: the canonical JSON ``{"count":n,"history_hash":"<hex>","ticket_id":"<id>"}``
  (sorted keys, no spaces, ASCII); its map leaf is ``SHA-256(0x00 || entry)``, in an RFC
  6962 tree whose leaves are the tickets in the order of their first event in the log.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

HISTORY_START = hashlib.sha256(b"slaledger.ticket-history/1").digest()


def history_hash(leaves: Iterable[bytes], start: bytes = HISTORY_START) -> bytes:
    """The history hash after ``leaves`` (leaf hashes, log order), from ``start``."""
    out = start
    for leaf in leaves:
        out = hashlib.sha256(out + leaf).digest()
    return out


def entry_bytes(ticket_id: str, count: int, history: bytes) -> bytes:
    return json.dumps({"count": count, "history_hash": history.hex(), "ticket_id": ticket_id},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def map_leaf(ticket_id: str, count: int, history: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry_bytes(ticket_id, count, history)).digest()

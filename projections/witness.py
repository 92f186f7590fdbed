"""A witness (C2SP ``tlog-witness``): it cosigns a log's checkpoint only when it extends the
last one it cosigned for that log, so that a log showing one tree to a member and another to
someone else (a split view) cannot have both cosigned by the same witness.

Run by a member or a third party (``slaledger witness serve``), with its own key and its own
state: an SQLite file holding, per log origin, the last checkpoint it cosigned. The logs it
serves are given by their verifier keys; a request is authenticated by the log's signature
on the checkpoint (the C2SP protocol has no other authentication), an unknown log is refused.

``add_checkpoint`` is the protocol's ``add-checkpoint`` (HTTP status, content type, body):
``old <size>``, the consistency proof lines (base64), a blank line, the checkpoint. 404
unknown log, 403 no valid log signature, 400 malformed, 409 ``old`` is not the size it
cosigned last (its body says that size) or the same size with another root, 422 the
consistency proof fails; 200 with its cosignature line (tlog-cosignature/v1).
"""

from __future__ import annotations

import base64
import binascii
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from . import checkpoint, merkle

log = structlog.get_logger(__name__)
MAX_PROOF = 63  # lines, as the protocol allows
SIZE_TYPE = "text/x.tlog.size"


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    content_type: str = "text/plain; charset=utf-8"


class Witness:
    def __init__(self, state: str | Path, name: str, key: Ed25519PrivateKey, logs: Sequence[checkpoint.VerifierKey],
                 clock: Callable[[], float] = time.time) -> None:
        if not checkpoint.valid_name(name):
            raise checkpoint.NoteError(f"witness name {name!r}: no whitespace nor plus sign allowed")
        self.name, self.key, self.clock = name, key, clock
        self.logs: dict[str, list[checkpoint.VerifierKey]] = {}
        for k in logs:
            if k.alg != checkpoint.ED25519:
                raise checkpoint.NoteError(f"log key {k.name}: not a log's Ed25519 key (algorithm 0x01)")
            self.logs.setdefault(k.name, []).append(k)
        self.db = sqlite3.connect(str(state), check_same_thread=False, isolation_level=None)
        self.db.execute("CREATE TABLE IF NOT EXISTS cosigned (origin TEXT PRIMARY KEY, size INTEGER NOT NULL, "
                        "root BLOB NOT NULL, checkpoint TEXT NOT NULL)")
        self.lock = threading.Lock()  # check-then-store is atomic (the protocol requires it)

    def vkey(self) -> str:
        return checkpoint.VerifierKey(self.name, checkpoint.COSIGNATURE_V1, self.key.public_key()).vkey()

    def add_checkpoint(self, body: bytes) -> Answer:
        try:
            old, proof, note = _parse_request(body)
            parsed = checkpoint.parse_note(note)
            point = checkpoint.parse_checkpoint(parsed.text)
        except (checkpoint.NoteError, UnicodeDecodeError) as exc:
            return Answer(400, f"malformed request: {exc}\n")
        keys = self.logs.get(point.origin)
        if keys is None:
            return Answer(404, f"unknown log {point.origin}\n")
        if not any(checkpoint.verify_signature(parsed.text, s, k) for s in parsed.signatures for k in keys):
            return Answer(403, "no valid signature of the log's key on this checkpoint\n")
        if old > point.size:
            return Answer(400, f"old size {old} is larger than the checkpoint's {point.size}\n")
        if old == 0 and proof:
            return Answer(400, "a consistency proof from size 0 must be empty\n")
        with self.lock:
            row = self.db.execute("SELECT size, root, checkpoint FROM cosigned WHERE origin = ?",
                                  (point.origin,)).fetchone()
            size, root = (int(row[0]), bytes(row[1])) if row else (0, b"")
            if old != size:
                return Answer(409, f"{size}\n", SIZE_TYPE)
            # the same size must say the same, extension lines included (but the time it was signed):
            # they sign what a member relies on beside the root (the map of every ticket's history,
            # the policies); a quiet log's daily head repeats its size with a new time only
            same_say = row is None or _lasting(checkpoint.parse_checkpoint(checkpoint.parse_note(row[2]).text)) \
                == _lasting(point)
            if size == point.size and size and (root != point.root or not same_say):
                log.warning("witness: another root for a size already cosigned (split view)", origin=point.origin,
                            size=size)
                return Answer(409, f"{size}\n", SIZE_TYPE)
            if size and not merkle.verify_consistency(size, point.size, root, point.root, proof):
                log.warning("witness: the consistency proof fails", origin=point.origin, old=size, new=point.size)
                return Answer(422, f"the consistency proof from {size} to {point.size} leaves does not verify\n")
            self.db.execute("INSERT INTO cosigned (origin, size, root, checkpoint) VALUES (?, ?, ?, ?) "
                            "ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root = excluded.root, "
                            "checkpoint = excluded.checkpoint", (point.origin, point.size, point.root, note))
        line = checkpoint.cosign(parsed.text, self.name, self.key, int(self.clock()))
        log.info("witness: checkpoint cosigned", origin=point.origin, size=point.size)
        return Answer(200, line.line())

    def close(self) -> None:
        self.db.close()


def _lasting(point: checkpoint.Checkpoint) -> dict[str, object]:
    """What a checkpoint says that another of the same size must say too: all but its time."""
    return {k: v for k, v in point.extensions.items() if k != "timestamp"}


def _parse_request(body: bytes) -> tuple[int, list[bytes], str]:
    text = body.decode("utf-8")
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise checkpoint.NoteError("no blank line after the old size and the proof")
    lines = head.split("\n")
    word, _, number = lines[0].partition(" ")
    if word != "old" or not number.isascii() or not number.isdigit() or (number != "0" and number[0] == "0") \
            or len(number) > 19 or int(number) > 2**63 - 1:
        raise checkpoint.NoteError("the first line is not `old <size>`")
    if len(lines) - 1 > MAX_PROOF:
        raise checkpoint.NoteError(f"more than {MAX_PROOF} proof lines")
    proof = []
    for line in lines[1:]:
        try:
            node = base64.b64decode(line, validate=True)
        except (ValueError, binascii.Error):
            node = b""
        if len(node) != 32:
            raise checkpoint.NoteError("a proof line is not a base64 SHA-256 hash")
        proof.append(node)
    return int(number), proof, note


def request_body(old: int, proof: Sequence[bytes], note: str) -> bytes:
    """An ``add-checkpoint`` request (the projector's side)."""
    lines = [f"old {old}", *(base64.b64encode(p).decode() for p in proof)]
    return ("\n".join(lines) + "\n\n" + note).encode()

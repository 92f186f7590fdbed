"""Signed tree heads: the operator's Ed25519 key vouching for the archive's Merkle root.

The archive is kept by one party of any dispute; a head signed at a moment and handed out
(published on the tree-heads topic, carried by every dispute file and monthly statement)
pins the history up to then: a later rewrite of the archive, even re-hashed throughout, no
longer matches it (its consistency proof fails, and the same leaf shows other bytes in two
signed files).

A head is a C2SP ``tlog-checkpoint`` signed note (``projections.checkpoint``): the origin
(``SLALEDGER_LOG_ORIGIN``), the tree size, the base64 root, then one extension line per
other signed field (``signed_fields`` minus origin, size and root, in that order), a blank
line and the operator's signature line, its key name being the origin; witnesses add their
cosignature lines. Heads signed before 2026-12-07 keep their former form, which is still
read and verified: the JSON object ``{"key_id", "policy_versions", "root_hash", "schema",
"timestamp", "tree_size"}`` with sorted keys, no whitespace, ASCII only, signed as such
(``origin`` is None for them). ``key_id`` is the SHA-256 (hex) of the raw 32-byte public key;
``timestamp`` is UTC ``YYYY-MM-DDTHH:MM:SSZ``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Engine, insert, select, text, update
from sqlalchemy.engine import Connection

from sla.events import EventDecodeError, format_instant, parse_instant
from sla.log_names import CHECKPOINT_SCHEMA, TREE_HEAD_SCHEMA
from sla.policy import Policy

from . import checkpoint, ticket_map, tree
from .dispute_check import differing_copies, distinct_witnesses, witness_shortfall
from .models import HEADS
from .projection import ARCHIVE_LOCK

log = structlog.get_logger(__name__)
PRIVATE_FILE, PUBLIC_FILE, VKEY_FILE = "signing-key", "signing-key.pub", "signing-key.vkey"
DEFAULT_ORIGIN = "localhost/slaledger"  # SLALEDGER_LOG_ORIGIN, else derived from the public URL
MAX_HEAD_AGE = timedelta(days=1)  # a head at least daily, even when the archive did not grow


class HeadError(ValueError):
    """A key or a head that cannot be read (one line, for the command line)."""


@dataclass(frozen=True)
class SignedHead:
    tree_size: int
    root_hash: str  # hex
    timestamp: datetime
    policy_versions: list[dict[str, str]]
    key_id: str
    signature: str  # base64: the signature line's key hash and signature (a legacy head: the signature)
    head_id: int | None = field(default=None, compare=False)
    # hex root of every ticket's event count and history hash (``projections.ticket_map``);
    # None in heads signed before it existed, which then sign no such field
    ticket_map_root: str | None = None
    origin: str | None = None  # the log's name; None for a head signed in the former JSON form
    cosignatures: tuple[str, ...] = field(default=(), compare=False)  # witnesses' signature lines

    def signed_fields(self) -> dict[str, Any]:
        fields = {"tree_size": self.tree_size, "root_hash": self.root_hash,
                  "timestamp": format_instant(self.timestamp), "policy_versions": self.policy_versions,
                  "key_id": self.key_id}
        if self.ticket_map_root is not None:
            fields["ticket_map_root"] = self.ticket_map_root
        return {"schema": TREE_HEAD_SCHEMA, **fields} if self.origin is None else {"origin": self.origin, **fields}

    def extensions(self) -> dict[str, Any]:
        """The checkpoint's extension lines: every signed field but its first three lines'."""
        return {k: v for k, v in self.signed_fields().items() if k not in ("origin", "tree_size", "root_hash")}

    def checkpoint_text(self) -> str:
        if self.origin is None:
            raise HeadError(f"tree head {self.head_id} was signed in the former JSON form, not as a checkpoint")
        return checkpoint.checkpoint_text(self.origin, self.tree_size, bytes.fromhex(self.root_hash),
                                          self.extensions())

    def signed_bytes(self) -> bytes:
        return canonical(self.signed_fields()) if self.origin is None else self.checkpoint_text().encode()

    def signature_line(self) -> checkpoint.SignatureLine:
        try:
            raw = base64.b64decode(self.signature, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        return checkpoint.SignatureLine(self.origin or "", raw[:4], raw[4:])

    def note(self) -> str:
        """The checkpoint as a signed note: the operator's signature line, then the
        witnesses' cosignatures (what ``golang.org/x/mod/sumdb/note.Open`` reads)."""
        return self.checkpoint_text() + "\n" + self.signature_line().line() + "".join(self.cosignatures)

    def to_dict(self) -> dict[str, Any]:
        """The head as published and as carried by dispute files (and monthly statements):
        the readable fields and, for a checkpoint, the signed note that is the evidence."""
        if self.origin is None:
            return {**self.signed_fields(), "signature": self.signature, "head_id": self.head_id}
        return {"schema": CHECKPOINT_SCHEMA, **self.signed_fields(), "signature": self.signature,
                "checkpoint": self.note(), "head_id": self.head_id}

    @classmethod
    def from_dict(cls, data: Any) -> SignedHead:
        """A head as ``to_dict`` wrote it; a checkpoint is read from its signed note alone."""
        try:
            if data.get("schema") == CHECKPOINT_SCHEMA:
                head = cls.from_note(data["checkpoint"], data.get("head_id"))
                shown = head.to_dict()
                differ = differing_copies(data, {name: shown[name] for name in ("signature", *head.signed_fields())})
                if differ:
                    raise HeadError(f"checkpoint: its {differ[0]} as written beside it ({str(data[differ[0]])[:80]!r}) "
                                    "is not the signed value")
                return head
            if data.get("schema") != TREE_HEAD_SCHEMA:
                raise HeadError(f"not a tree head (schema {data.get('schema')!r})")
            size, root = data["tree_size"], str(data["root_hash"])
            map_root = data.get("ticket_map_root")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or len(bytes.fromhex(root)) != 32 or (
                    map_root is not None and len(bytes.fromhex(str(map_root))) != 32):
                raise HeadError("tree head: bad size or root hash")
            return cls(size, root, parse_instant(data["timestamp"], "timestamp"), list(data["policy_versions"]),
                       str(data["key_id"]), str(data["signature"]), _head_id(data.get("head_id")),
                       None if map_root is None else str(map_root))
        except (AttributeError, KeyError, TypeError, ValueError, EventDecodeError) as exc:
            if isinstance(exc, HeadError):
                raise
            raise HeadError(f"malformed tree head: {exc}") from None

    @classmethod
    def from_note(cls, note: Any, head_id: Any = None) -> SignedHead:
        """A head from its checkpoint (signed note); its signature is checked by ``verify``."""
        try:
            parsed = checkpoint.parse_note(note)
            point = checkpoint.parse_checkpoint(parsed.text)
            ext = point.extensions
            mine = [s for s in parsed.signatures if s.name == point.origin]
            if len(mine) != 1:
                raise HeadError(f"checkpoint: {len(mine)} signature line(s) of the log {point.origin!r}, expected one")
            versions = ext.get("policy_versions")
            if not isinstance(versions, list) or not all(isinstance(v, dict) for v in versions):
                raise HeadError("checkpoint: policy_versions is not a list of objects")
            head = cls(point.size, point.root.hex(), parse_instant(str(ext.get("timestamp")), "timestamp"), versions,
                       str(ext.get("key_id")), base64.b64encode(mine[0].key_hash + mine[0].signature).decode(),
                       _head_id(head_id), _map_root(ext.get("ticket_map_root")), point.origin,
                       tuple(s.line() for s in parsed.signatures if s.name != point.origin))
        except (checkpoint.NoteError, EventDecodeError, TypeError, ValueError) as exc:
            if isinstance(exc, HeadError):
                raise
            raise HeadError(f"malformed checkpoint: {exc}") from None
        if head.checkpoint_text() != parsed.text:
            raise HeadError("checkpoint: its text is not the canonical form of its fields (an unknown or "
                            "reordered extension line, or a value written another way)")
        return head

    def verify(self, public: Ed25519PublicKey) -> bool:
        """The signature is the key's over ``signed_bytes`` and the key id is that key's."""
        if self.key_id != key_id(public):
            return False
        if self.origin is not None:
            log_key = checkpoint.VerifierKey(self.origin, checkpoint.ED25519, public)
            return checkpoint.verify_signature(self.checkpoint_text(), self.signature_line(), log_key)
        try:
            public.verify(base64.b64decode(self.signature, validate=True), self.signed_bytes())
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True

    def witnessed_by(self, witnesses: Sequence[checkpoint.VerifierKey]) -> list[checkpoint.VerifierKey]:
        """The witnesses (tlog-cosignature/v1 keys) whose cosignature of this checkpoint
        verifies; a legacy head has none."""
        if self.origin is None:
            return []
        text = self.checkpoint_text()
        lines = []
        for raw in self.cosignatures:
            try:
                lines.append(checkpoint.parse_signature_line(raw.rstrip("\n")))
            except checkpoint.NoteError:
                continue
        distinct = distinct_witnesses(witnesses)  # a key counts once, whatever the names given
        return [w for w in distinct if any(checkpoint.verify_cosignature(text, line, w) is not None
                                           for line in lines)]


def _head_id(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise HeadError(f"tree head: head_id {value!r} is not a whole number")
    return value


def witness_problems(head: SignedHead, witnesses: Sequence[checkpoint.VerifierKey], required: int) -> list[str]:
    """One line when fewer than ``required`` of the given witnesses cosigned the head (the
    dispute-file verifier's wording, ``dispute_check.witness_shortfall``)."""
    if required <= 0:
        return []
    return witness_shortfall(head.head_id, head.tree_size, head.witnessed_by(witnesses), required)


def canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


# --- keys -------------------------------------------------------------------------------------

def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def _raw32(data: bytes) -> bytes | None:
    """32 raw bytes, or their hex or base64 text."""
    text_ = data.strip()
    if len(data) == 32:
        return data
    for decode in (bytes.fromhex, lambda t: base64.b64decode(t, validate=True)):
        try:
            raw = decode(text_.decode("ascii"))
        except (ValueError, UnicodeDecodeError, binascii.Error):
            continue
        if len(raw) == 32:
            return raw
    return None


def load_private_key(data: bytes) -> Ed25519PrivateKey:
    """An Ed25519 private key: PEM (PKCS#8, as ``slaledger keys create`` writes it), or the
    raw 32-byte seed (raw, hex or base64)."""
    if b"-----BEGIN" in data:
        key = _pem(data, "signing key", lambda pem: serialization.load_pem_private_key(pem, password=None))
        if not isinstance(key, Ed25519PrivateKey):
            raise HeadError("signing key: not an Ed25519 key")
        return key
    return Ed25519PrivateKey.from_private_bytes(_raw_key(data, "signing key", "a 32-byte Ed25519 seed"))


def load_public_key(data: bytes) -> Ed25519PublicKey:
    """PEM, 32 raw bytes (raw, hex or base64), or a C2SP verifier key (``name+hash+key``)."""
    if data.count(b"+") >= 2 and b"-----BEGIN" not in data:
        try:
            return checkpoint.VerifierKey.parse(data.decode("ascii")).public
        except (checkpoint.NoteError, UnicodeDecodeError) as exc:
            raise HeadError(f"public key: {exc}") from None
    if b"-----BEGIN" in data:
        key = _pem(data, "public key", serialization.load_pem_public_key)
        if not isinstance(key, Ed25519PublicKey):
            raise HeadError("public key: not an Ed25519 key")
        return key
    return Ed25519PublicKey.from_public_bytes(_raw_key(data, "public key", "32 raw bytes"))


def _pem(data: bytes, what: str, load: Callable[[bytes], object]) -> object:
    try:
        return load(data)
    except (ValueError, TypeError) as exc:
        raise HeadError(f"{what}: {exc}") from None


def _raw_key(data: bytes, what: str, expected: str) -> bytes:
    raw = _raw32(data)
    if raw is None:
        raise HeadError(f"{what}: neither PEM nor {expected}")
    return raw


def read_key_file(path: str | Path, public: bool = False) -> Any:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise HeadError(f"{'public' if public else 'signing'} key file {path}: {exc.strerror}") from None
    return load_public_key(data) if public else load_private_key(data)


def operator_key(key_file: str, key_value: str) -> Ed25519PrivateKey | None:
    """The operator's key: ``SLALEDGER_SIGNING_KEY_FILE`` or ``SLALEDGER_SIGNING_KEY`` (never in
    the repository); None when neither is set (heads are then not signed)."""
    if key_file:
        key: Ed25519PrivateKey = read_key_file(key_file)
        return key
    if key_value:
        return load_private_key(key_value.encode())
    return None


def create_key_pair(directory: str | Path, origin: str = DEFAULT_ORIGIN) -> tuple[Path, Path]:
    """``signing-key`` (PEM PKCS#8, mode 0600), ``signing-key.pub`` (PEM) and
    ``signing-key.vkey`` (the C2SP verifier key of the log ``origin``) in ``directory``; an
    existing pair is never overwritten."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    private, public = folder / PRIVATE_FILE, folder / PUBLIC_FILE
    if private.exists() or public.exists():
        raise HeadError(f"{private} or {public} exists already: not overwritten")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    public.write_bytes(public_pem(key.public_key()))
    (folder / VKEY_FILE).write_text(log_vkey(origin, key.public_key()) + "\n", encoding="ascii")
    return private, public


def log_vkey(origin: str, public: Ed25519PublicKey) -> str:
    """The log's verifier key in the signed-note form (``note.NewVerifier`` reads it)."""
    if not checkpoint.valid_name(origin):
        raise HeadError(f"log origin {origin!r}: no whitespace nor plus sign allowed")
    return checkpoint.VerifierKey(origin, checkpoint.ED25519, public).vkey()


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


# --- the store --------------------------------------------------------------------------------

def policy_versions(policy: Policy) -> list[dict[str, str]]:
    """Each version's id, start and the SHA-256 of its text (the one dispute files quote)."""
    return [{"id": v.id, "effective_from": format_instant(v.effective_from),
             "sha256": hashlib.sha256(v.text.encode()).hexdigest()} for v in policy.versions]


def lock_archive(conn: Connection) -> None:
    """The archive writer's lock: a head read under it sees a whole batch or none of it."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ARCHIVE_LOCK})


def sign_head(engine: Engine, key: Ed25519PrivateKey, policy: Policy, now: datetime | None = None,
              origin: str = DEFAULT_ORIGIN) -> SignedHead:
    """Sign the tree as it is now as a checkpoint of the log ``origin``, store the head (the
    projector publishes it and submits it to the witnesses)."""
    with engine.begin() as conn:
        lock_archive(conn)
        size = tree.tree_size(conn)
        root = tree.root(conn, size).hex()
        map_root = ticket_map.commit(conn, size).hex()
        at = (now or datetime.now(UTC)).replace(microsecond=0)
        unsigned = SignedHead(size, root, at, policy_versions(policy), key_id(key.public_key()), "",
                              ticket_map_root=map_root, origin=origin)
        line = checkpoint.sign_note(unsigned.checkpoint_text(), origin, key)
        signature = base64.b64encode(line.key_hash + line.signature).decode()
        head_id = conn.execute(insert(HEADS).values(
            tree_size=size, root_hash=root, signed_at=at, policy_versions=unsigned.policy_versions,
            key_id=unsigned.key_id, signature=signature, ticket_map_root=map_root, origin=origin, cosignatures=[])
            .returning(HEADS.c.head_id)).scalar_one()
    head = replace(unsigned, signature=signature, head_id=int(head_id))
    log.info("tree head signed", head_id=head.head_id, tree_size=size, root_hash=root, origin=origin)
    return head


def add_cosignature(engine: Engine, head_id: int, line: str) -> None:
    """Keep a witness's cosignature line with the head (one per witness name: a newer
    cosignature of the same checkpoint replaces the older)."""
    name = line.split(" ", 2)[1] if line.count(" ") >= 2 else ""
    with engine.begin() as conn:
        current = conn.scalar(select(HEADS.c.cosignatures).where(HEADS.c.head_id == head_id).with_for_update())
        kept = [c for c in (current or []) if c.split(" ", 2)[1:2] != [name]]
        conn.execute(update(HEADS).where(HEADS.c.head_id == head_id).values(cosignatures=[*kept, line]))


def _map_root(value: Any) -> str | None:
    """A checkpoint's ``ticket_map_root`` extension: 64 hex digits, or absent (a head signed
    before the map existed)."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 64 or bytes.fromhex(value).hex() != value:
        raise HeadError("checkpoint: ticket_map_root is not 64 lower-case hex digits")
    return value


def _head(row: Any) -> SignedHead:
    at = row.signed_at if row.signed_at.tzinfo else row.signed_at.replace(tzinfo=UTC)
    return SignedHead(int(row.tree_size), row.root_hash, at, list(row.policy_versions), row.key_id, row.signature,
                      int(row.head_id), row.ticket_map_root, row.origin, tuple(row.cosignatures or ()))


def get_head(engine: Engine, head_id: int) -> SignedHead | None:
    with engine.connect() as conn:
        row = conn.execute(select(HEADS).where(HEADS.c.head_id == head_id)).first()
    return _head(row) if row else None


def latest_head(engine: Engine) -> SignedHead | None:
    with engine.connect() as conn:
        row = conn.execute(select(HEADS).order_by(HEADS.c.head_id.desc()).limit(1)).first()
    return _head(row) if row else None


def head_for_proofs(engine: Engine, size: int, recent: int = 50) -> SignedHead | None:
    """The head a dispute file's proofs lead to: among the latest ``recent`` heads, the
    newest a witness cosigned that covers ``size`` leaves (a member checking witnesses then
    finds it cosigned), else the latest head (no witness, or none cosigned it yet)."""
    with engine.connect() as conn:
        rows = conn.execute(select(HEADS).order_by(HEADS.c.head_id.desc()).limit(recent)).all()
    for row in rows:
        if row.cosignatures and row.tree_size >= size:
            return _head(row)
    return _head(rows[0]) if rows else None


def head_at(engine: Engine, instant: datetime) -> SignedHead | None:
    """The last head signed at or before ``instant`` (e.g. a month's end, for its statement);
    None when none was signed by then."""
    with engine.connect() as conn:
        row = conn.execute(select(HEADS).where(HEADS.c.signed_at <= instant)
                           .order_by(HEADS.c.signed_at.desc(), HEADS.c.head_id.desc()).limit(1)).first()
    return _head(row) if row else None


def head_covering(engine: Engine, instant: datetime) -> SignedHead | None:
    """The first head signed at or after ``instant``, which covers everything archived
    before it (a month's statement: the whole month); else the last one before it."""
    with engine.connect() as conn:
        row = conn.execute(select(HEADS).where(HEADS.c.signed_at >= instant)
                           .order_by(HEADS.c.signed_at, HEADS.c.head_id).limit(1)).first()
    return _head(row) if row else head_at(engine, instant)


def list_heads(engine: Engine) -> list[SignedHead]:
    with engine.connect() as conn:
        return [_head(r) for r in conn.execute(select(HEADS).order_by(HEADS.c.head_id))]


def unpublished_heads(engine: Engine) -> list[SignedHead]:
    """The stored heads not yet on the tree-heads topic, oldest first."""
    with engine.connect() as conn:
        return [_head(r) for r in conn.execute(select(HEADS).where(HEADS.c.published_at.is_(None))
                                               .order_by(HEADS.c.head_id))]


def mark_published(engine: Engine, head_ids: Sequence[int | None]) -> None:
    with engine.begin() as conn:
        conn.execute(update(HEADS).where(HEADS.c.head_id.in_(head_ids)).values(published_at=datetime.now(UTC)))

"""C2SP signed notes, checkpoints and cosignatures (no I/O): the standard form of a signed
tree head, which tools other than ours read (Go's ``golang.org/x/mod/sumdb/note``,
Sigsum, witnesses).

- ``signed-note`` (https://c2sp.org/signed-note): a UTF-8 text ending in a newline, a blank
  line, then one line per signature ``— <key name> base64(4-byte key hash || signature)``.
  The key hash is ``SHA-256(name || 0x0A || alg || public key)[:4]``; a verifier key (vkey)
  is ``name+hex(key hash)+base64(alg || public key)``. ``alg`` 0x01: Ed25519 over the text.
- ``tlog-checkpoint`` (https://c2sp.org/tlog-checkpoint): the text is the origin (the log's
  name), the tree size in decimal, the base64 root hash, then extension lines.
- ``tlog-cosignature`` (https://c2sp.org/tlog-cosignature): a witness's signature line,
  ``alg`` 0x04, over ``cosignature/v1\\ntime <unix seconds>\\n`` followed by the checkpoint
  text; the signature is the 8-byte big-endian time followed by the Ed25519 signature.

Our extension lines are ``<field> <value>``: a string as itself unless it reads as JSON
(then JSON-quoted), anything else as canonical JSON (sorted keys, no whitespace, ASCII).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ED25519, COSIGNATURE_V1 = 0x01, 0x04
DASH = "\u2014 "  # em dash and space: the start of every signature line
MAX_NOTE = 1 << 20  # bytes; a checkpoint is a few hundred


class NoteError(ValueError):
    """A note, checkpoint, signature line or verifier key that cannot be read (one line)."""


def raw_public(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def valid_name(name: str) -> bool:
    """A key name or origin: non-empty, no whitespace, no plus sign (signed-note)."""
    return bool(name) and not any(c.isspace() or c == "+" for c in name)


def key_hash(name: str, alg: int, public: Ed25519PublicKey) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + raw_public(public)).digest()[:4]


@dataclass(frozen=True)
class VerifierKey:
    """A named Ed25519 public key of one algorithm: the log's (0x01) or a witness's (0x04)."""

    name: str
    alg: int
    public: Ed25519PublicKey

    @property
    def hash(self) -> bytes:
        return key_hash(self.name, self.alg, self.public)

    def vkey(self) -> str:
        return f"{self.name}+{self.hash.hex()}+{base64.b64encode(bytes([self.alg]) + raw_public(self.public)).decode()}"

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        parts = text.strip().split("+", 2)
        if len(parts) != 3 or not valid_name(parts[0]) or len(parts[1]) != 8:
            raise NoteError("verifier key: expected name+hash+base64 key (C2SP signed-note vkey)")
        try:
            raw = base64.b64decode(parts[2], validate=True)
            claimed = bytes.fromhex(parts[1])
        except (ValueError, binascii.Error):
            raise NoteError("verifier key: the hash is not hex or the key not base64") from None
        if len(raw) != 33 or raw[0] not in (ED25519, COSIGNATURE_V1):
            raise NoteError("verifier key: not an Ed25519 key (algorithm 0x01 or 0x04, 32 bytes)")
        key = cls(parts[0], raw[0], Ed25519PublicKey.from_public_bytes(raw[1:]))
        if key.hash != claimed:
            raise NoteError(f"verifier key {parts[0]}: its hash does not match its name and key")
        return key


@dataclass(frozen=True)
class SignatureLine:
    name: str
    key_hash: bytes
    signature: bytes  # what follows the key hash

    def line(self) -> str:
        return f"{DASH}{self.name} {base64.b64encode(self.key_hash + self.signature).decode()}\n"


@dataclass(frozen=True)
class Note:
    text: str  # ends with a newline
    signatures: tuple[SignatureLine, ...]

    def __str__(self) -> str:
        return self.text + "\n" + "".join(s.line() for s in self.signatures)


def parse_signature_line(line: str) -> SignatureLine:
    if not line.startswith(DASH):
        raise NoteError(f"signature line does not start with an em dash: {line[:40]!r}")
    name, _, encoded = line[len(DASH):].partition(" ")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (ValueError, binascii.Error):
        raw = b""
    if not valid_name(name) or len(raw) < 5:
        raise NoteError(f"signature line of {name!r}: not name and base64(key hash || signature)")
    return SignatureLine(name, raw[:4], raw[4:])


def parse_note(note: Any) -> Note:
    """Split a signed note into its text and signature lines (nothing verified yet)."""
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        raise NoteError("signed note: not a text (or too long)")
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise NoteError("signed note: control characters")
    text, sep, signatures = note.rpartition("\n\n")
    if not sep or not signatures.endswith("\n"):
        raise NoteError("signed note: no blank line before signature lines ending in a newline")
    return Note(text + "\n", tuple(parse_signature_line(line) for line in signatures[:-1].split("\n")))


def sign_note(text: str, name: str, key: Ed25519PrivateKey) -> SignatureLine:
    hash_ = key_hash(name, ED25519, key.public_key())
    return SignatureLine(name, hash_, key.sign(text.encode()))


def verify_signature(text: str, line: SignatureLine, key: VerifierKey) -> bool:
    """The line is ``key``'s (name and key hash) and its signature verifies on ``text``."""
    if key.alg != ED25519 or line.name != key.name or line.key_hash != key.hash or len(line.signature) != 64:
        return False
    try:
        key.public.verify(line.signature, text.encode())
    except InvalidSignature:
        return False
    return True


# --- cosignatures (tlog-cosignature/v1) --------------------------------------------------------

def _cosigned_message(text: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n{text}".encode()


def cosign(text: str, name: str, key: Ed25519PrivateKey, timestamp: int) -> SignatureLine:
    hash_ = key_hash(name, COSIGNATURE_V1, key.public_key())
    return SignatureLine(name, hash_, struct.pack(">Q", timestamp) + key.sign(_cosigned_message(text, timestamp)))


def verify_cosignature(text: str, line: SignatureLine, key: VerifierKey) -> int | None:
    """The cosignature's time (Unix seconds) when ``line`` is ``key``'s cosignature of
    ``text``, else None."""
    if key.alg != COSIGNATURE_V1 or line.name != key.name or line.key_hash != key.hash or len(line.signature) != 72:
        return None
    (timestamp,) = struct.unpack(">Q", line.signature[:8])
    if timestamp >= 1 << 63:
        return None
    try:
        key.public.verify(line.signature[8:], _cosigned_message(text, timestamp))
    except InvalidSignature:
        return None
    return int(timestamp)


# --- checkpoints (tlog-checkpoint) ------------------------------------------------------------

def _encode_value(value: Any) -> str:
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            if value and "\n" not in value and value == value.strip():
                return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _decode_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
    except RecursionError:  # « [[[[… »: no checkpoint field nests that deep
        raise NoteError("checkpoint: an extension value nested too deep") from None


def checkpoint_text(origin: str, size: int, root: bytes, extensions: dict[str, Any]) -> str:
    """The checkpoint's note text; one extension line per field, in the given order."""
    if not valid_name(origin):
        raise NoteError(f"origin {origin!r}: no whitespace nor plus sign allowed")
    lines = [origin, str(size), base64.b64encode(root).decode()]
    for name, value in extensions.items():
        if not name or any(c.isspace() for c in name):
            raise NoteError(f"extension field {name!r}: not one word")
        lines.append(f"{name} {_encode_value(value)}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: dict[str, Any]


def parse_checkpoint(text: str) -> Checkpoint:
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise NoteError("checkpoint: fewer than three lines (origin, size, root)")
    origin, size_text, root_text = lines[:3]
    if not valid_name(origin):
        raise NoteError("checkpoint: the origin line is not a log name")
    if not size_text.isascii() or not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")) \
            or len(size_text) > 19 or int(size_text) > 2**63 - 1:
        raise NoteError(f"checkpoint: tree size {size_text[:30]!r} is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except (ValueError, binascii.Error):
        root = b""
    if len(root) != 32:
        raise NoteError("checkpoint: the root hash is not 32 bytes in base64")
    extensions: dict[str, Any] = {}
    for line in lines[3:]:
        name, sep, value = line.partition(" ")
        if not sep or not name or name in extensions:
            raise NoteError(f"checkpoint: extension line {line[:40]!r} is not a new `field value`")
        extensions[name] = _decode_value(value)
    return Checkpoint(origin, int(size_text), root, extensions)
